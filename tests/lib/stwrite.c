/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "strbuf.h"
#include "stwrite.h"

uint64_t stw_size(const struct stw_tensor *t)
{
        uint64_t n = 1;

        for (unsigned d = 0; d < t->rank; d++)
                n *= t->shape[d];
        return n * (t->bits ? t->bits : 8) / 8;
}

static void put_name(struct stf_strbuf *h, const char *s)
{
        stf_strbuf_puts(h, "\"");
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                const char *esc = c == '"'    ? "\\\""
                                  : c == '\\' ? "\\\\"
                                  : c == '\b' ? "\\b"
                                  : c == '\f' ? "\\f"
                                  : c == '\n' ? "\\n"
                                  : c == '\r' ? "\\r"
                                  : c == '\t' ? "\\t"
                                              : NULL;

                if (esc)
                        stf_strbuf_puts(h, esc);
                else if (c < 0x20)
                        stf_strbuf_printf(h, "\\u%04X", c);
                else
                        stf_strbuf_append(h, s, 1);
        }
        stf_strbuf_puts(h, "\"");
}

/* Where each tensor's data starts, in the data order of @f. */
static uint64_t *data_offsets(const struct stw_file *f)
{
        uint64_t *off = malloc((f->n ? f->n : 1) * sizeof(*off)), at = 0;

        for (size_t k = 0; off && k < f->n; k++) {
                size_t i = f->order ? f->order[k] : k;

                off[i] = at;
                at += stw_size(&f->t[i]);
        }
        return off;
}

static void put_entry(struct stf_strbuf *h, const struct stw_tensor *t, uint64_t off)
{
        put_name(h, t->name);
        stf_strbuf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", t->dtype ? t->dtype : "U8");
        for (unsigned d = 0; d < t->rank; d++)
                stf_strbuf_printf(h, d ? ",%" PRIu64 : "%" PRIu64, t->shape[d]);
        stf_strbuf_printf(h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
                          off + stw_size(t));
}

char *stw_header(const struct stw_file *f)
{
        uint64_t *off = data_offsets(f);
        struct stf_strbuf h = {0};
        char *hdr;
        size_t len;

        if (!off)
                return NULL;
        stf_strbuf_puts(&h, "{");
        if (f->meta)
                stf_strbuf_printf(&h, "\"__metadata__\":%s%s", f->meta, f->n ? "," : "");
        for (size_t i = 0; i < f->n; i++) {
                put_entry(&h, &f->t[i], off[i]);
                if (i + 1 < f->n)
                        stf_strbuf_puts(&h, ",");
        }
        stf_strbuf_puts(&h, "}");
        while (f->pad && h.len % 8)
                stf_strbuf_puts(&h, " ");
        free(off);
        return stf_strbuf_finish(&h, &hdr, &len) ? NULL : hdr;
}

uint8_t *stw_raw(uint64_t n, const void *hdr, size_t hlen, size_t dlen, size_t *len)
{
        uint8_t *b = calloc(1, 8 + hlen + dlen + 1);

        if (!b)
                return NULL;
        stf_put_le64(b, n);
        memcpy(b + 8, hdr, hlen);
        *len = 8 + hlen + dlen;
        return b;
}

uint8_t *stw_build(const struct stw_file *f, size_t *len)
{
        char *hdr = stw_header(f);
        size_t hlen = hdr ? strlen(hdr) : 0;
        uint64_t dlen = 0;
        uint8_t *b;

        for (size_t i = 0; i < f->n; i++)
                dlen += stw_size(&f->t[i]);
        b = hdr ? stw_raw(hlen, hdr, hlen, dlen, len) : NULL;
        free(hdr);
        if (!b || !f->fill)
                return b;
        for (size_t k = 0, at = 0; k < f->n; k++) {
                size_t i = f->order ? f->order[k] : k;
                uint64_t sz = stw_size(&f->t[i]);

                f->fill(f->arg, i, at, b + 8 + hlen + at, sz);
                at += sz;
        }
        return b;
}

int stw_put(const char *path, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        size_t done = 0;
        int ret = 0;

        if (fd < 0)
                return -errno;
        while (!ret && done < len) {
                ssize_t r = write(fd, (const char *)buf + done, len - done);

                if (r > 0)
                        done += (size_t)r;
                else
                        ret = r < 0 ? -errno : -EIO;
        }
        if (close(fd) && !ret)
                ret = -errno;
        return ret;
}

int stw_write(const char *path, const struct stw_file *f)
{
        size_t len;
        uint8_t *b = stw_build(f, &len);
        int ret = b ? stw_put(path, b, len) : -ENOMEM;

        free(b);
        return ret;
}

int stw_write_index(const char *path, const char *const *map, size_t n, const char *meta)
{
        struct stf_strbuf h = {0};
        char *text;
        size_t len;
        int ret;

        stf_strbuf_puts(&h, "{");
        if (meta)
                stf_strbuf_printf(&h, "\"metadata\":%s,", meta);
        stf_strbuf_puts(&h, "\"weight_map\":{");
        for (size_t i = 0; i < n; i++) {
                if (i)
                        stf_strbuf_puts(&h, ",");
                put_name(&h, map[2 * i]);
                stf_strbuf_puts(&h, ":");
                put_name(&h, map[2 * i + 1]);
        }
        stf_strbuf_puts(&h, "}}");
        ret = stf_strbuf_finish(&h, &text, &len);
        if (ret)
                return ret;
        ret = stw_put(path, text, len);
        free(text);
        return ret;
}
