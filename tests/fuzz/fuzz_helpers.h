/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_FUZZ_HELPERS_H
#define STF_FUZZ_HELPERS_H

/*
 * Shared by the fuzz targets (fuzz_*.c), the replay driver and the case
 * runner. A target is one function, LLVMFuzzerTestOneInput, linked either
 * with libFuzzer (clang -fsanitize=fuzzer) or with replay.c (any compiler),
 * as zstd's tests/fuzz does. A target checks the invariants of its parser
 * and calls FUZZ_ASSERT, which abort()s, on a violation: libFuzzer saves the
 * input as a crash, the replay test fails.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry points. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Print "FILE:LINE: invariant COND violated[: MSG]" and abort(). */
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

#define FUZZ_ASSERT(cond)                                                                          \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        fuzz_fail(__FILE__, __LINE__, #cond, NULL);                                \
        } while (0)

#define FUZZ_ASSERT_MSG(cond, ...)                                                                 \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                         \
        } while (0)

/* @len bytes at @s are well-formed UTF-8 (no overlong, surrogate or > U+10FFFF). */
bool fuzz_utf8_valid(const char *s, size_t len);

/*
 * @s (NUL terminated) holds something a message must not put on a terminal:
 * a C0 or C1 control character (U+0000-U+001F, U+007F-U+009F, the 8-bit CSI
 * U+009B among them), a bidirectional control (U+061C, U+200E, U+200F,
 * U+202A-U+202E, U+2066-U+2069), or a byte that is not well-formed UTF-8.
 */
bool fuzz_has_control(const char *s);

/* Little-endian 64-bit value at @p. */
uint64_t fuzz_le64(const uint8_t *p);

/*
 * A valid safetensors file in memory: one U8 tensor of @sizes[i] bytes per
 * name (names written into the JSON as they are: no quote, backslash or
 * control byte in them), laid out in the given order, data bytes 0, 1, ...
 * Returns a malloc'ed buffer of *@len bytes, or NULL when out of memory.
 */
uint8_t *fuzz_st_build(const char *const *names, const size_t *sizes, size_t n, size_t *len);

#endif
