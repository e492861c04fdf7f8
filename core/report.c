/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "report.h"

bool stf_sink_forward(struct stf_sink *s, const struct stf_problem *p)
{
        s->count++;
        if (s->report) {
                s->report(s->ctx, p);
                return false;
        }
        if (s->diag && s->diag->msg != p->msg)
                snprintf(s->diag->msg, sizeof(s->diag->msg), "%s", p->msg);
        return true;
}

/*
 * Control bytes of a message as \xHH. Names are quoted where they are
 * formatted (stf_diag_quote), but a message also holds text the parser does
 * not write itself: jansson's error echoes the bytes near the error ("near
 * '\x1b'"), file names come from directories. stfs prints the message on a
 * terminal or to syslog, so a hostile header must not put an escape
 * sequence there.
 */
static void escape_controls(const char *in, char *out, size_t cap)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;

        for (; *in && o + 1 < cap; in++) {
                unsigned char c = (unsigned char)*in;

                if (c >= 0x20 && c != 0x7f) {
                        out[o++] = (char)c;
                } else if (o + 5 < cap) {
                        out[o++] = '\\';
                        out[o++] = 'x';
                        out[o++] = hex[c >> 4];
                        out[o++] = hex[c & 15];
                } else {
                        break;
                }
        }
        out[o] = '\0';
}

bool stf_sink_report(struct stf_sink *s, const char *file, const char *tensor, int64_t offset,
                     const char *fmt, ...)
{
        struct stf_diag raw, d;
        struct stf_problem p = {file, tensor, offset, d.msg};
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(raw.msg, sizeof(raw.msg), fmt, ap);
        va_end(ap);
        escape_controls(raw.msg, d.msg, sizeof(d.msg));
        return stf_sink_forward(s, &p);
}
