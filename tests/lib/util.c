/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stwrite.h"
#include "util.h"

void ut_fill(uint8_t *p, size_t n, uint8_t seed)
{
        for (size_t i = 0; i < n; i++)
                p[i] = ut_pat(seed, i);
}

uint8_t *ut_st_raw(uint64_t n, const char *json, size_t jlen, size_t dlen, uint8_t seed,
                   size_t *len)
{
        uint8_t *b = stw_raw(n, json, jlen, dlen, len);

        ck_assert_ptr_nonnull(b);
        ut_fill(b + 8 + jlen, dlen, seed);
        return b;
}

uint8_t *ut_st_bytes(const char *json, size_t jlen, size_t dlen, uint8_t seed, size_t *len)
{
        return ut_st_raw(jlen, json, jlen, dlen, seed, len);
}

void ut_write_file(const char *path, const void *buf, size_t len)
{
        int r = stw_put(path, buf, len);

        ck_assert_msg(r == 0, "cannot write %s: %s", path, strerror(-r));
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

/* The data of ut_write_st_u8: the pattern seeded with 3 across the data section. */
static void fill_seed3(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        for (size_t k = 0; k < len; k++)
                p[k] = ut_pat(3, at + k);
}

void ut_write_st_u8(const char *path, const struct ut_tensor *t, size_t n, time_t mtime)
{
        struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
        struct stw_tensor *st = calloc(n ? n : 1, sizeof(*st));

        ck_assert_ptr_nonnull(st);
        for (size_t i = 0; i < n; i++)
                st[i] = (struct stw_tensor){.name = t[i].name, .rank = 1, .shape = {t[i].size}};
        ut_write_st(path, &(struct stw_file){.t = st, .n = n, .fill = fill_seed3});
        ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
        free(st);
}

void ut_write_st(const char *path, const struct stw_file *f)
{
        int r = stw_write(path, f);

        ck_assert_msg(r == 0, "cannot write %s: %s", path, strerror(-r));
}

int ut_run(Suite *s)
{
        SRunner *sr = srunner_create(s);
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
