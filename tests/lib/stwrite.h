/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_TEST_STWRITE_H
#define STF_TEST_STWRITE_H

/*
 * The one safetensors writer of the C tests (unit, views, control, ctl,
 * fuzz, gpu). It needs neither Check nor jansson (only core's strbuf), so
 * the fuzz drivers and GPU checks use it too; callers turn its errors into
 * their own failures.
 *
 * A file is the 8-byte little-endian header length, the header, then the
 * data. The header is compact JSON: "__metadata__" first when given, then
 * one entry a tensor in the order given, with names escaped as jansson's
 * json_dumps escapes them ('"', '\\' and bytes below 0x20).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STW_RANK_MAX 8

/* One tensor of a file. */
struct stw_tensor {
        const char *name;
        const char *dtype; /* NULL: "U8" */
        unsigned rank;
        uint64_t shape[STW_RANK_MAX];
        unsigned bits; /* bits per element; 0: 8 */
};

/*
 * Fill @len bytes at @p: the data of tensor @i, which starts @at bytes into
 * the data section.
 */
typedef void (*stw_fill_fn)(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len);

/* A whole file. */
struct stw_file {
        const struct stw_tensor *t;
        size_t n;
        const char *meta;    /* "__metadata__": JSON object text written as is, or NULL */
        const size_t *order; /* data order, n indices into t; NULL: header order */
        bool pad;            /* pad the header with spaces to a multiple of 8 bytes */
        stw_fill_fn fill;    /* NULL: zero bytes */
        void *arg;
};

/* The data bytes of @t: its elements times its bits, rounded down to bytes. */
uint64_t stw_size(const struct stw_tensor *t);

/* The header of @f (NUL-terminated, malloc'ed), or NULL when out of memory. */
char *stw_header(const struct stw_file *f);

/*
 * The file @f in memory: a malloc'ed buffer of *@len bytes, or NULL when
 * out of memory.
 */
uint8_t *stw_build(const struct stw_file *f, size_t *len);

/*
 * A file from parts, well-formed or not: the size field @n, @hlen bytes of
 * @hdr, then @dlen zero bytes (one more byte is allocated). A malloc'ed
 * buffer of *@len bytes, or NULL when out of memory.
 */
uint8_t *stw_raw(uint64_t n, const void *hdr, size_t hlen, size_t dlen, size_t *len);

/* Write @len bytes to @path (created or truncated, mode 0644): 0 or -errno. */
int stw_put(const char *path, const void *buf, size_t len);

/* stw_build, then stw_put: 0 or -errno. */
int stw_write(const char *path, const struct stw_file *f);

/*
 * A model.safetensors.index.json at @path: "metadata" the JSON object text
 * @meta written as is (left out when NULL), "weight_map" the @n pairs
 * name, shard file of @map (names escaped as in stw_header), compact.
 * 0 or -errno.
 */
int stw_write_index(const char *path, const char *const *map, size_t n, const char *meta);

#endif
