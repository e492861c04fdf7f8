/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bytes.h"
#include "util.h"

void ut_fill(uint8_t *p, size_t n, uint8_t seed)
{
        for (size_t i = 0; i < n; i++)
                p[i] = ut_pat(seed, i);
}

uint8_t *ut_st_raw(uint64_t n, const char *json, size_t jlen, size_t dlen, uint8_t seed,
                   size_t *len)
{
        uint8_t *b = malloc(8 + jlen + dlen + 1);

        ck_assert_ptr_nonnull(b);
        stf_put_le64(b, n);
        memcpy(b + 8, json, jlen);
        ut_fill(b + 8 + jlen, dlen, seed);
        *len = 8 + jlen + dlen;
        return b;
}

uint8_t *ut_st_bytes(const char *json, size_t jlen, size_t dlen, uint8_t seed, size_t *len)
{
        return ut_st_raw(jlen, json, jlen, dlen, seed, len);
}

void ut_write_file(const char *path, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        size_t done = 0;

        ck_assert_msg(fd >= 0, "cannot create %s", path);
        while (done < len) {
                ssize_t r = write(fd, (const char *)buf + done, len - done);

                ck_assert_msg(r > 0, "cannot write %s", path);
                done += (size_t)r;
        }
        ck_assert_int_eq(close(fd), 0);
}

char *ut_mkdtemp(void)
{
        const char *tmp = getenv("TMPDIR");
        char *d = ut_printf("%s/stfs-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp");

        ck_assert_ptr_nonnull(mkdtemp(d));
        return d;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path);
}

void ut_rmtree(char *dir)
{
        if (!dir)
                return;
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
}

char *ut_printf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        ck_assert_int_ge(r, 0);
        return s;
}

void ut_write_st_u8(const char *path, const struct ut_tensor *t, size_t n, time_t mtime)
{
        struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
        json_t *root = json_object();
        size_t off = 0, len;
        uint8_t *buf;
        char *text;

        for (size_t i = 0; i < n; i++) {
                json_t *e = json_pack("{s:s, s:[I], s:[I,I]}", "dtype", "U8", "shape",
                                      (json_int_t)t[i].size, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + t[i].size));

                ck_assert_int_eq(json_object_set_new(root, t[i].name, e), 0);
                off += t[i].size;
        }
        text = json_dumps(root, JSON_COMPACT);
        ck_assert_ptr_nonnull(text);
        buf = ut_st_bytes(text, strlen(text), off, 3, &len);
        ut_write_file(path, buf, len);
        ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
        free(buf);
        free(text);
        json_decref(root);
}
