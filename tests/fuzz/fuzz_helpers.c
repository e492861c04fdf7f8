/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "stwrite.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s:%d: invariant '%s' violated", file, line, cond);
        if (fmt) {
                fputs(": ", stderr);
                va_start(ap, fmt);
                vfprintf(stderr, fmt, ap);
                va_end(ap);
        }
        fputc('\n', stderr);
        abort();
}

bool fuzz_utf8_valid(const char *str, size_t len)
{
        const unsigned char *s = (const unsigned char *)str;
        size_t i = 0;

        while (i < len) {
                unsigned c = s[i], n, cp;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xC2 && c <= 0xDF) {
                        n = 1;
                        cp = c & 0x1F;
                } else if (c >= 0xE0 && c <= 0xEF) {
                        n = 2;
                        cp = c & 0x0F;
                } else if (c >= 0xF0 && c <= 0xF4) {
                        n = 3;
                        cp = c & 0x07;
                } else {
                        return false;
                }
                if (len - i <= n)
                        return false;
                for (unsigned k = 1; k <= n; k++) {
                        if ((s[i + k] & 0xC0) != 0x80)
                                return false;
                        cp = (cp << 6) | (s[i + k] & 0x3F);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
                    (cp >= 0xD800 && cp <= 0xDFFF))
                        return false;
                i += n + 1;
        }
        return true;
}

/*
 * Written independently of core/text.c on purpose: this is the oracle the
 * escaping is tested against. The code point of the UTF-8 sequence at @s,
 * or -1 when the bytes there are not well-formed UTF-8.
 */
static long utf8_cp(const unsigned char *s, size_t left, size_t *n)
{
        char tmp[4];

        for (*n = 1; *n <= 4 && *n <= left; ++*n) {
                memcpy(tmp, s, *n);
                if (fuzz_utf8_valid(tmp, *n))
                        break;
        }
        if (*n > 4 || *n > left) {
                *n = 1;
                return -1;
        }
        if (*n == 1)
                return s[0];
        if (*n == 2)
                return ((long)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if (*n == 3)
                return ((long)(s[0] & 0x0F) << 12) | ((long)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return ((long)(s[0] & 0x07) << 18) | ((long)(s[1] & 0x3F) << 12) |
               ((long)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

bool fuzz_has_control(const char *str)
{
        const unsigned char *s = (const unsigned char *)str;
        size_t len = strlen(str), n;

        for (size_t i = 0; i < len; i += n) {
                long cp = utf8_cp(s + i, len - i, &n);

                if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c ||
                    cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
                    (cp >= 0x2066 && cp <= 0x2069))
                        return true;
        }
        return false;
}

uint64_t fuzz_le64(const uint8_t *p)
{
        uint64_t v = 0;

        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

/* Data byte i of the data section is (uint8_t)i. */
static void fill_index(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        for (size_t k = 0; k < len; k++)
                p[k] = (uint8_t)(at + k);
}

uint8_t *fuzz_st_build(const char *const *names, const size_t *sizes, size_t n, size_t *len)
{
        struct stw_tensor *t = calloc(n ? n : 1, sizeof(*t));
        uint8_t *buf;

        if (!t)
                return NULL;
        for (size_t i = 0; i < n; i++)
                t[i] = (struct stw_tensor){.name = names[i], .rank = 1, .shape = {sizes[i]}};
        buf = stw_build(
            &(struct stw_file){.t = t, .n = n, .meta = "{\"format\":\"pt\"}", .fill = fill_index},
            len);
        free(t);
        return buf;
}
