/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_UNIT_UTIL_H
#define STF_UNIT_UTIL_H

/*
 * Helpers shared by the unit tests: safetensors files built in memory or
 * on disk (over the test library's writer, tests/lib/stwrite.h), scratch
 * directories, and diagnostic assertions.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "stwrite.h"

/* Assert that @msg (a C string) contains @frag. */
#define ut_assert_has(msg, frag)                                                                   \
        ck_assert_msg(strstr((msg), (frag)) != NULL, "diag \"%s\" lacks \"%s\"", (msg), (frag))

/* Byte @i of the data pattern seeded with @seed. */
static inline uint8_t ut_pat(uint8_t seed, size_t i)
{
        return (uint8_t)(seed + i * 7u + (i >> 8));
}

/* Fill @n bytes at @p with the pattern seeded with @seed. */
void ut_fill(uint8_t *p, size_t n, uint8_t seed);

/*
 * A safetensors file in memory: the 8-byte little-endian value @n, then
 * @jlen bytes of @json, then @dlen bytes of the pattern seeded with @seed.
 * Returns a malloc'ed buffer of *@len bytes.
 */
uint8_t *ut_st_raw(uint64_t n, const char *json, size_t jlen, size_t dlen, uint8_t seed,
                   size_t *len);

/* The same with n = jlen (a well-formed size field). */
uint8_t *ut_st_bytes(const char *json, size_t jlen, size_t dlen, uint8_t seed, size_t *len);

/* Write @len bytes to @path (created or truncated); aborts the test on error. */
void ut_write_file(const char *path, const void *buf, size_t len);

/* A fresh scratch directory (malloc'ed path); remove with ut_rmtree. */
char *ut_mkdtemp(void);

/* Remove @dir and everything below it, then free @dir. */
void ut_rmtree(char *dir);

/* asprintf that aborts the test on failure. */
char *ut_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A tensor of ut_write_st_u8: U8, shape [size]. */
struct ut_tensor {
        const char *name;
        size_t size;
};

/*
 * Write a safetensors file of @n U8 tensors at @path (laid out in the order
 * given; data the pattern seeded with 3) and set its mtime to @mtime.
 * Aborts the test on error.
 */
void ut_write_st_u8(const char *path, const struct ut_tensor *t, size_t n, time_t mtime);

/* Run @s (every test case, Check's usual forking): the exit status of main. */
int ut_run(Suite *s);

/* stw_write(@path, @f); aborts the test on error. */
void ut_write_st(const char *path, const struct stw_file *f);

#endif
