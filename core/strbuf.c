/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static bool reserve(struct stf_strbuf *sb, size_t extra)
{
        size_t want, ncap;
        char *nbuf;

        if (sb->failed)
                return false;
        if (extra > SIZE_MAX - sb->len - 1)
                goto fail;
        want = sb->len + extra + 1;
        if (want <= sb->cap)
                return true;
        ncap = sb->cap ? sb->cap : 256;
        while (ncap < want)
                ncap = ncap > SIZE_MAX / 2 ? want : ncap * 2;
        nbuf = realloc(sb->buf, ncap);
        if (!nbuf)
                goto fail;
        sb->buf = nbuf;
        sb->cap = ncap;
        return true;
fail:
        sb->failed = true;
        return false;
}

void stf_strbuf_append(struct stf_strbuf *sb, const char *s, size_t len)
{
        if (!reserve(sb, len))
                return;
        memcpy(sb->buf + sb->len, s, len);
        sb->len += len;
        sb->buf[sb->len] = '\0';
}

void stf_strbuf_puts(struct stf_strbuf *sb, const char *s)
{
        stf_strbuf_append(sb, s, strlen(s));
}

void stf_strbuf_printf(struct stf_strbuf *sb, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0 || !reserve(sb, (size_t)n))
                return;
        va_start(ap, fmt);
        vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        sb->len += (size_t)n;
}

int stf_strbuf_finish(struct stf_strbuf *sb, char **out, size_t *len)
{
        if (!reserve(sb, 0)) {
                stf_strbuf_reset(sb);
                return -ENOMEM;
        }
        *out = sb->buf;
        if (len)
                *len = sb->len;
        sb->buf = NULL;
        sb->len = sb->cap = 0;
        return 0;
}

void stf_strbuf_reset(struct stf_strbuf *sb)
{
        free(sb->buf);
        sb->buf = NULL;
        sb->len = sb->cap = 0;
        sb->failed = false;
}
