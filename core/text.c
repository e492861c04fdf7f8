/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

size_t stf_utf8_seq(const char *str, size_t len)
{
        const unsigned char *s = (const unsigned char *)str;
        unsigned char lo = 0x80, hi = 0xbf;
        size_t n;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4;
        else
                return 0;
        if (len < n)
                return 0;
        /* The second byte's range excludes overlongs, surrogates, > U+10FFFF. */
        if (s[0] == 0xe0)
                lo = 0xa0;
        else if (s[0] == 0xed)
                hi = 0x9f;
        else if (s[0] == 0xf0)
                lo = 0x90;
        else if (s[0] == 0xf4)
                hi = 0x8f;
        if (s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return n;
}

bool stf_utf8_valid(const char *s, size_t len)
{
        for (size_t i = 0, n; i < len; i += n) {
                n = stf_utf8_seq(s + i, len - i);
                if (!n)
                        return false;
        }
        return true;
}

bool stf_text_unsafe(const char *str, size_t len, size_t *n)
{
        const unsigned char *s = (const unsigned char *)str;

        *n = stf_utf8_seq(str, len);
        if (*n == 0) {
                *n = 1;
                return true;
        }
        if (*n == 1)
                return s[0] < 0x20 || s[0] == 0x7f;
        if (*n == 2) /* C1: U+0080-U+009F; U+061C (ALM) */
                return (s[0] == 0xc2 && s[1] <= 0x9f) || (s[0] == 0xd8 && s[1] == 0x9c);
        if (*n == 3 && s[0] == 0xe2 && s[1] == 0x80) /* U+200E, U+200F, U+202A-U+202E */
                return s[2] == 0x8e || s[2] == 0x8f || (s[2] >= 0xaa && s[2] <= 0xae);
        if (*n == 3 && s[0] == 0xe2 && s[1] == 0x81) /* U+2066-U+2069 */
                return s[2] >= 0xa6 && s[2] <= 0xa9;
        return false;
}

/* "\xHH" for each of the @n bytes at @s into @out (4 * @n bytes). */
static void hex_bytes(const char *s, size_t n, char *out)
{
        static const char hex[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                out[4 * i] = '\\';
                out[4 * i + 1] = 'x';
                out[4 * i + 2] = hex[c >> 4];
                out[4 * i + 3] = hex[c & 15];
        }
}

void stf_text_escape(struct stf_strbuf *sb, const char *s, size_t len)
{
        size_t run = 0, n;

        for (size_t i = 0; i < len; i += n) {
                char esc[16];

                if (!stf_text_unsafe(s + i, len - i, &n))
                        continue;
                stf_strbuf_append(sb, s + run, i - run);
                hex_bytes(s + i, n, esc);
                stf_strbuf_append(sb, esc, 4 * n);
                run = i + n;
        }
        stf_strbuf_append(sb, s + run, len - run);
}

void stf_text_escape_buf(const char *in, char *out, size_t cap)
{
        size_t len = strlen(in), o = 0, n;

        for (size_t i = 0; i < len; i += n) {
                bool bad = stf_text_unsafe(in + i, len - i, &n);
                size_t need = bad ? 4 * n : n;

                if (o + need + 1 > cap)
                        break;
                if (bad)
                        hex_bytes(in + i, n, out + o);
                else
                        memcpy(out + o, in + i, n);
                o += need;
        }
        out[o] = '\0';
}

void stf_text_put(FILE *f, const char *s, size_t len)
{
        size_t run = 0, n;

        for (size_t i = 0; i < len; i += n) {
                char esc[16];

                if (!stf_text_unsafe(s + i, len - i, &n))
                        continue;
                fwrite(s + run, 1, i - run, f);
                hex_bytes(s + i, n, esc);
                fwrite(esc, 1, 4 * n, f);
                run = i + n;
        }
        fwrite(s + run, 1, len - run, f);
}

void stf_text_json_escape(struct stf_strbuf *sb, const char *s, size_t n)
{
        const unsigned char *c = (const unsigned char *)s;
        unsigned cp;

        if (stf_utf8_seq(s, n) != n) {
                stf_strbuf_append(sb, "\\ufffd", 6);
                return;
        }
        /* Unsafe characters are 1-3 bytes long. */
        cp = n == 1   ? c[0]
             : n == 2 ? (c[0] & 0x1fu) << 6 | (c[1] & 0x3fu)
                      : (c[0] & 0x0fu) << 12 | (c[1] & 0x3fu) << 6 | (c[2] & 0x3fu);
        stf_strbuf_printf(sb, "\\u%04x", cp);
}

int stf_text_json_inert(const char *json, size_t len, char **out, size_t *outlen)
{
        struct stf_strbuf sb = {0};
        size_t run = 0, n;

        for (size_t i = 0; i < len; i += n) {
                /* C0 bytes are the text's own newlines: jansson escapes them in strings. */
                if (!stf_text_unsafe(json + i, len - i, &n) || (unsigned char)json[i] < 0x20)
                        continue;
                stf_strbuf_append(&sb, json + run, i - run);
                stf_text_json_escape(&sb, json + i, n);
                run = i + n;
        }
        stf_strbuf_append(&sb, json + run, len - run);
        return stf_strbuf_finish(&sb, out, outlen);
}

bool stf_ends_with(const char *s, size_t len, const char *suffix)
{
        size_t n = strlen(suffix);

        return len >= n && !memcmp(s + len - n, suffix, n);
}

bool stf_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
        unsigned long long v;
        char *end;

        if (*s < '0' || *s > '9')
                return false;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end || v > max)
                return false;
        *out = v;
        return true;
}

void stf_strbuf_json_str(struct stf_strbuf *sb, const char *s, size_t len)
{
        size_t run = 0, n;

        stf_strbuf_append(sb, "\"", 1);
        for (size_t i = 0; i < len; i += n) {
                if (!stf_text_unsafe(s + i, len - i, &n) && s[i] != '"' && s[i] != '\\')
                        continue;
                stf_strbuf_append(sb, s + run, i - run);
                run = i + n;
                if (s[i] == '"' || s[i] == '\\') {
                        stf_strbuf_append(sb, "\\", 1);
                        stf_strbuf_append(sb, s + i, 1);
                } else {
                        stf_text_json_escape(sb, s + i, n);
                }
        }
        stf_strbuf_append(sb, s + run, len - run);
        stf_strbuf_append(sb, "\"", 1);
}
