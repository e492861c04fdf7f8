/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/shard's reopen (issue 15): the same file put back
 * under the same mapping address and descriptor number; a file that is not
 * the same (size, mtime, header, kind) refused with ESTALE and the old
 * mapping left serving; and readers of the mapping that run across many
 * reopens never see a wrong byte nor fault.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "model.h"
#include "shard.h"
#include "util.h"

#define MTIME 1000

struct fixture {
        char *dir, *path;
        struct stf_model *m;
        struct stf_shard *s;
        uint8_t *orig; /* the file's bytes at open */
};

static const struct ut_tensor tensors[] = {{"a", 100000}, {"b", 3000}, {"c", 1}};

static uint8_t *slurp(const char *path, size_t *len)
{
        FILE *f = fopen(path, "rb");
        uint8_t *buf;
        long n;

        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
        n = ftell(f);
        rewind(f);
        buf = malloc((size_t)n);
        ck_assert_ptr_nonnull(buf);
        ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
        fclose(f);
        *len = (size_t)n;
        return buf;
}

static void setup(struct fixture *f)
{
        struct stf_diag diag = {{0}};
        size_t len;

        f->dir = ut_mkdtemp();
        f->path = ut_printf("%s/model.safetensors", f->dir);
        ut_write_st_u8(f->path, tensors, 3, MTIME);
        ck_assert_int_eq(stf_model_open(f->path, &f->m, &diag), 0);
        f->s = &f->m->shards[0];
        f->orig = slurp(f->path, &len);
        ck_assert_uint_eq(len, f->s->size);
}

static void teardown(struct fixture *f)
{
        stf_model_close(f->m);
        free(f->orig);
        free(f->path);
        ut_rmtree(f->dir);
}

/* Put @bytes (@n) at @path through a new file renamed over it, mtime @mtime. */
static void replace_file(const char *path, const uint8_t *bytes, size_t n, time_t mtime)
{
        char *tmp = ut_printf("%s.new", path);
        struct timespec t[2] = {{mtime, 0}, {mtime, 0}};

        ut_write_file(tmp, bytes, n);
        ck_assert_int_eq(utimensat(AT_FDCWD, tmp, t, 0), 0);
        ck_assert_int_eq(rename(tmp, path), 0);
        free(tmp);
}

static ino_t ino_of_fd(int fd)
{
        struct stat st;

        ck_assert_int_eq(fstat(fd, &st), 0);
        return st.st_ino;
}

/* A copy of the same bytes and mtime (a new inode): reopened in place. */
START_TEST(test_same_file)
{
        struct fixture f;
        const uint8_t *map;
        struct stat st;
        int fd;

        setup(&f);
        map = f.s->map;
        fd = f.s->fd;
        ck_assert_int_eq(stf_shard_reopen(f.s), 0); /* the very same file */
        replace_file(f.path, f.orig, f.s->size, MTIME);
        ck_assert_int_eq(stat(f.path, &st), 0);
        ck_assert_uint_ne(ino_of_fd(f.s->fd), st.st_ino);
        ck_assert_int_eq(stf_shard_reopen(f.s), 0);
        ck_assert_ptr_eq(f.s->map, map);
        ck_assert_int_eq(f.s->fd, fd);
        ck_assert_uint_eq(ino_of_fd(f.s->fd), st.st_ino); /* the new file, same number */
        ck_assert_int_eq(fcntl(f.s->fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_mem_eq(f.s->map, f.orig, f.s->size);
        ck_assert_int_eq(stf_shard_stat_now(f.s->fd, &st), 0);
        ck_assert(stf_shard_unchanged(f.s, &st));
        teardown(&f);
}
END_TEST

/* Not the same file: ESTALE, and the old file stays mapped and open. */
START_TEST(test_changed_files)
{
        struct fixture f;
        uint8_t *b;
        ino_t ino;
        size_t hdr;

        setup(&f);
        ino = ino_of_fd(f.s->fd);
        hdr = (size_t)f.s->hdr->data_start;
        b = malloc(f.s->size + 1);
        ck_assert_ptr_nonnull(b);
        memcpy(b, f.orig, f.s->size);
        replace_file(f.path, b, f.s->size, MTIME + 1); /* mtime */
        ck_assert_int_eq(stf_shard_reopen(f.s), -ESTALE);
        replace_file(f.path, b, f.s->size - 1, MTIME); /* size */
        ck_assert_int_eq(stf_shard_reopen(f.s), -ESTALE);
        b[hdr - 2] ^= 0x20; /* a header byte (JSON padding or text), same size and mtime */
        replace_file(f.path, b, f.s->size, MTIME);
        ck_assert_int_eq(stf_shard_reopen(f.s), -ESTALE);
        b[hdr - 2] ^= 0x20;
        b[hdr + 5] ^= 0xff; /* a data byte: not read, so not seen (shard.h) */
        replace_file(f.path, b, f.s->size, MTIME);
        ck_assert_int_eq(stf_shard_reopen(f.s), 0);
        ck_assert_int_eq(unlink(f.path), 0);
        ck_assert_int_eq(stf_shard_reopen(f.s), -ENOENT);
        ck_assert_int_eq(mkdir(f.path, 0700), 0);
        ck_assert_int_eq(stf_shard_reopen(f.s), -ESTALE);
        ck_assert_int_eq(rmdir(f.path), 0);
        /* the last good reopen's file stays: the data byte it changed */
        ck_assert_uint_ne(ino_of_fd(f.s->fd), ino);
        ck_assert_uint_eq(f.s->map[hdr + 5], (uint8_t)(f.orig[hdr + 5] ^ 0xff));
        free(b);
        teardown(&f);
}
END_TEST

START_TEST(test_never_mapped)
{
        struct stf_shard s;

        ck_assert_int_eq(stf_shard_init(&s, "/nonexistent/x.safetensors"), 0);
        ck_assert_int_eq(stf_shard_reopen(&s), -EINVAL);
        stf_shard_close(&s);
}
END_TEST

struct reader {
        const struct fixture *f;
        int stop;
        unsigned long rounds, bad;
};

static void *read_loop(void *arg)
{
        struct reader *r = arg;
        const struct stf_shard *s = r->f->s;
        uint8_t buf[4096];

        while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
                /* through the mapping and through the descriptor */
                if (memcmp(s->map, r->f->orig, s->size))
                        __atomic_add_fetch(&r->bad, 1, __ATOMIC_RELAXED);
                if (pread(s->fd, buf, sizeof(buf), 8) != (ssize_t)sizeof(buf) ||
                    memcmp(buf, r->f->orig + 8, sizeof(buf)))
                        __atomic_add_fetch(&r->bad, 1, __ATOMIC_RELAXED);
                __atomic_add_fetch(&r->rounds, 1, __ATOMIC_RELAXED);
        }
        return NULL;
}

/* Readers keep reading right while the file under them is swapped 200 times. */
START_TEST(test_reopen_under_readers)
{
        struct fixture f;
        struct reader r = {.f = &f};
        pthread_t th[3];

        setup(&f);
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, read_loop, &r), 0);
        for (int i = 0; i < 200; i++) {
                replace_file(f.path, f.orig, f.s->size, MTIME);
                ck_assert_int_eq(stf_shard_reopen(f.s), 0);
        }
        __atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
        for (int i = 0; i < 3; i++)
                pthread_join(th[i], NULL);
        ck_assert_uint_gt(r.rounds, 0);
        ck_assert_uint_eq(r.bad, 0);
        teardown(&f);
}
END_TEST

static Suite *shard_suite(void)
{
        Suite *s = suite_create("shard");
        TCase *tc = tcase_create("reopen");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_same_file);
        tcase_add_test(tc, test_changed_files);
        tcase_add_test(tc, test_never_mapped);
        tcase_add_test(tc, test_reopen_under_readers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        SRunner *sr = srunner_create(shard_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
