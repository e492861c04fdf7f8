/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "diag.h"

void stf_diag_set(struct stf_diag *d, const char *fmt, ...)
{
        va_list ap;

        if (!d)
                return;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
        va_end(ap);
}

const char *stf_diag_quote(const char *s, size_t len, char *out, size_t cap)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;

        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];

                if (i == 80 || o + 8 >= cap) {
                        out[o++] = '.';
                        out[o++] = '.';
                        out[o++] = '.';
                        break;
                }
                if (c >= 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\') {
                        out[o++] = (char)c;
                } else {
                        out[o++] = '\\';
                        out[o++] = 'x';
                        out[o++] = hex[c >> 4];
                        out[o++] = hex[c & 15];
                }
        }
        out[o] = '\0';
        return out;
}
