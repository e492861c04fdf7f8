/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/cache: which source pages the single-copy policy lets
 * go of after a range is served. The policy cases record the drops on a
 * model of bare shard sizes; "file" drops a real file's pages and looks at
 * them with mincore (run alone with --file: it exits 77 on a file system
 * that keeps dropped pages, tmpfs say).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "cache.h"
#include "model.h"
#include "view.h"
#include "util.h"

#define PG 4096u
#define MIB (1u << 20)
#define MAXD 4096

struct drops {
        size_t n;
        struct {
                uint32_t shard;
                uint64_t begin, end;
        } d[MAXD];
};

static void record(void *ctx, uint32_t shard, uint64_t begin, uint64_t end)
{
        struct drops *r = ctx;

        ck_assert_uint_lt(r->n, MAXD);
        r->d[r->n].shard = shard;
        r->d[r->n].begin = begin;
        r->d[r->n].end = end;
        r->n++;
}

/* A model of @n shards of @size bytes each, nothing mapped. */
static struct stf_model *fake_model(uint32_t n, uint64_t size)
{
        struct stf_model *m = calloc(1, sizeof(*m));

        ck_assert_ptr_nonnull(m);
        m->nshards = n;
        m->shards = calloc(n, sizeof(*m->shards));
        ck_assert_ptr_nonnull(m->shards);
        for (uint32_t i = 0; i < n; i++)
                m->shards[i].size = size;
        return m;
}

static void fake_free(struct stf_model *m)
{
        free(m->shards);
        free(m);
}

static struct stf_cache *policy(struct stf_model *m, enum stf_cache_mode mode, struct drops *r)
{
        struct stf_cache *c;

        if (getpagesize() != (int)PG)
                ck_abort_msg("these cases assume 4 KiB pages");
        memset(r, 0, sizeof(*r));
        ck_assert_int_eq(stf_cache_new(m, mode, record, r, &c), 0);
        return c;
}

static void assert_drop(const struct drops *r, size_t i, uint32_t shard, uint64_t b, uint64_t e)
{
        ck_assert_uint_gt(r->n, i);
        ck_assert_uint_eq(r->d[i].shard, shard);
        ck_assert_uint_eq(r->d[i].begin, b);
        ck_assert_uint_eq(r->d[i].end, e);
}

START_TEST(test_mode_parse)
{
        enum stf_cache_mode m = STF_CACHE_DOUBLE;

        ck_assert_int_eq(stf_cache_mode_parse("single", &m), 0);
        ck_assert_int_eq(m, STF_CACHE_SINGLE);
        ck_assert_int_eq(stf_cache_mode_parse("double", &m), 0);
        ck_assert_int_eq(m, STF_CACHE_DOUBLE);
        ck_assert_int_eq(stf_cache_mode_parse("Single", &m), -EINVAL);
        ck_assert_int_eq(stf_cache_mode_parse("", &m), -EINVAL);
        ck_assert_str_eq(stf_cache_mode_name(STF_CACHE_SINGLE), "single");
        ck_assert_str_eq(stf_cache_mode_name(STF_CACHE_DOUBLE), "double");
}
END_TEST

/* Whole pages inside the range go; the partial pages at its ends stay. */
START_TEST(test_whole_pages_only)
{
        struct stf_model *m = fake_model(2, 4 * MIB);
        struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_SINGLE, &r);

        stf_cache_served(c, 1, 100, 100 * PG + 50);
        ck_assert_uint_eq(r.n, 1);
        assert_drop(&r, 0, 1, PG, 100 * PG);
        /* a range inside one page drops nothing */
        stf_cache_served(c, 0, 10, 20);
        ck_assert_uint_eq(r.n, 1);
        /* nor, at once, a few whole pages (less than STF_CACHE_MIN_DROP) */
        stf_cache_served(c, 0, 200 * PG, 202 * PG);
        ck_assert_uint_eq(r.n, 1);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

/*
 * A page shared by two tensors stays until both parts are served, then
 * goes; the other shard is untouched; a 2 MiB block served whole goes
 * whole (page 0, served last and alone, with it).
 */
START_TEST(test_neighbour_page_kept_until_served)
{
        struct stf_model *m = fake_model(2, 4 * MIB);
        struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_SINGLE, &r);

        stf_cache_served(c, 0, 100, 100 * PG + 50); /* tensor A ends inside page 100 */
        assert_drop(&r, 0, 0, PG, 100 * PG);
        stf_cache_served(c, 0, 100 * PG + 50, 100 * PG + 60); /* a tiny tensor after it */
        ck_assert_uint_eq(r.n, 1);
        stf_cache_served(c, 1, 100 * PG + 60, 200 * PG); /* same offsets, other shard */
        ck_assert_uint_eq(r.n, 2);
        assert_drop(&r, 1, 1, 101 * PG, 200 * PG);
        stf_cache_served(c, 0, 100 * PG + 60, 200 * PG); /* tensor B: page 100 is whole */
        ck_assert_uint_eq(r.n, 3);
        assert_drop(&r, 2, 0, 100 * PG, 200 * PG);
        /* page 0 was served from byte 100: its prefix completes it, alone */
        stf_cache_served(c, 0, 0, 100);
        ck_assert_uint_eq(r.n, 3);
        stf_cache_served(c, 0, 200 * PG, 512 * PG);
        ck_assert_uint_eq(r.n, 4);
        assert_drop(&r, 3, 0, 0, 2 * MIB);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

/* A reply boundary inside a page: sequential replies drop every page. */
START_TEST(test_sequential_replies)
{
        struct stf_model *m = fake_model(1, 64 * MIB);
        struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_SINGLE, &r);
        const uint64_t base = 8 + 1000; /* unaligned, as a tensor after a header */

        for (uint64_t k = 0; k < 8; k++)
                stf_cache_served(c, 0, base + k * MIB, base + (k + 1) * MIB);
        ck_assert_uint_eq(r.n, 8);
        /* the first reply: its whole pages */
        assert_drop(&r, 0, 0, PG, MIB);
        /* the second completes the page split between them */
        assert_drop(&r, 1, 0, MIB, 2 * MIB);
        assert_drop(&r, 2, 0, 2 * MIB, 3 * MIB);
        /* the 2 MiB block [2, 4) MiB is served whole: it goes whole (a
         * large folio of the source); block [0, 2) lacks page 0's head */
        assert_drop(&r, 3, 0, 2 * MIB, 4 * MIB);
        assert_drop(&r, 7, 0, 6 * MIB, 8 * MIB);
        stf_cache_served(c, 0, 0, base);
        assert_drop(&r, 8, 0, 0, 2 * MIB);
        /* read again (the mount's pages were evicted): a block served whole
         * before goes no further than what this call served, the rest of it
         * may be on its way to the next reply */
        stf_cache_served(c, 0, MIB / 2, MIB / 2 + MIB);
        ck_assert_uint_eq(r.n, 10);
        assert_drop(&r, 9, 0, MIB / 2, MIB / 2 + MIB);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

/* The last page of a shard is whole once its last byte is served. */
START_TEST(test_last_page)
{
        struct stf_model *m = fake_model(1, 10000);
        struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_SINGLE, &r);

        stf_cache_served(c, 0, 9000, 10000);
        stf_cache_served(c, 0, 2 * PG, 9000); /* page 2 is whole */
        ck_assert_uint_eq(r.n, 0);            /* one page: its block waits */
        stf_cache_served(c, 0, 0, 2 * PG);
        ck_assert_uint_eq(r.n, 1); /* the block (the whole shard) is served */
        assert_drop(&r, 0, 0, 0, 3 * PG);
        /* past the end and past the shards: nothing */
        stf_cache_served(c, 0, 20000, 30000);
        stf_cache_served(c, 1, 0, PG);
        ck_assert_uint_eq(r.n, 1);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

START_TEST(test_double_drops_nothing)
{
        struct stf_model *m = fake_model(1, 4 * MIB);
        struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_DOUBLE, &r);

        stf_cache_served(c, 0, 0, 4 * MIB);
        ck_assert_uint_eq(r.n, 0);
        stf_cache_free(c);
        stf_cache_free(NULL);
        fake_free(m);
}
END_TEST

/*
 * Pages split at random points, pieces served in random order (the partial
 * table, its collisions and removals): each page is whole when its second
 * piece comes, and each 2 MiB block goes whole in the call that serves its
 * last page, never before.
 */
START_TEST(test_split_pages_random_order)
{
        enum { NP = 3 * 512 };
        struct stf_model *m = fake_model(1, (uint64_t)NP * PG);
        static struct drops r;
        struct stf_cache *c = policy(m, STF_CACHE_SINGLE, &r);
        static uint32_t order[2 * NP], cut[NP];
        static unsigned char seen[NP];
        unsigned whole[3] = {0}, seed = 7;

        for (uint32_t i = 0; i < NP; i++)
                cut[i] = 1 + (uint32_t)(rand_r(&seed) % (PG - 1));
        for (uint32_t i = 0; i < 2 * NP; i++)
                order[i] = i;
        for (uint32_t i = 2 * NP - 1; i > 0; i--) {
                uint32_t j = (uint32_t)(rand_r(&seed) % (i + 1)), t = order[i];

                order[i] = order[j];
                order[j] = t;
        }
        for (uint32_t i = 0; i < 2 * NP; i++) {
                uint32_t p = order[i] / 2, b = p / 512;
                uint64_t ps = (uint64_t)p * PG;
                size_t before = r.n;

                if (order[i] % 2)
                        stf_cache_served(c, 0, ps + cut[p], ps + PG);
                else
                        stf_cache_served(c, 0, ps, ps + cut[p]);
                whole[b] += seen[p]++ == 1;
                ck_assert_uint_eq(r.n, before + (whole[b] == 512 && seen[p] == 2));
                if (r.n > before)
                        assert_drop(&r, before, 0, (uint64_t)b * 2 * MIB,
                                    (uint64_t)(b + 1) * 2 * MIB);
        }
        ck_assert_uint_eq(r.n, 3);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

/* A view of memory and shard extents: only the shard bytes count. */
START_TEST(test_view_extents)
{
        struct stf_model *m = fake_model(2, 4 * MIB);
        static uint8_t fake_map[2][16];
        uint8_t hdr[64] = {0};
        struct stf_extent ext[3] = {
            {.off = 0, .len = sizeof(hdr), .ptr = hdr, .shard = -1},
            {.off = 64, .len = 100 * PG, .ptr = fake_map[1] + 8, .shard = 1},
            {.off = 64 + 100 * PG, .len = 100 * PG, .ptr = fake_map[0], .shard = 0},
        };
        struct stf_view v = {.size = 64 + 200 * PG, .n = 3, .ext = ext};
        struct drops r;
        struct stf_cache *c;

        m->shards[0].map = fake_map[0];
        m->shards[1].map = fake_map[1];
        c = policy(m, STF_CACHE_SINGLE, &r);
        stf_cache_served_view(c, &v, 0, v.size);
        ck_assert_uint_eq(r.n, 2);
        assert_drop(&r, 0, 1, PG, 100 * PG); /* shard 1 bytes [8, 8 + 100 pages) */
        assert_drop(&r, 1, 0, 0, 100 * PG);
        stf_cache_served_view(NULL, &v, 0, v.size);
        stf_cache_free(c);
        fake_free(m);
}
END_TEST

static Suite *cache_suite(void)
{
        Suite *s = suite_create("cache");
        TCase *tc = tcase_create("policy");

        tcase_add_test(tc, test_mode_parse);
        tcase_add_test(tc, test_whole_pages_only);
        tcase_add_test(tc, test_neighbour_page_kept_until_served);
        tcase_add_test(tc, test_sequential_replies);
        tcase_add_test(tc, test_last_page);
        tcase_add_test(tc, test_double_drops_nothing);
        tcase_add_test(tc, test_split_pages_random_order);
        tcase_add_test(tc, test_view_extents);
        suite_add_tcase(s, tc);
        return s;
}

/* Touch every page of shard 0's mapping; its page count. */
static size_t touch(const struct stf_model *m)
{
        volatile uint8_t sum = 0;

        for (uint64_t i = 0; i < m->shards[0].size; i += PG)
                sum += m->shards[0].map[i];
        (void)sum;
        return (m->shards[0].size + PG - 1) / PG;
}

/* Pages resident in the page cache of those [@p, @p + @len) touches. */
static size_t resident(const uint8_t *p, size_t len)
{
        size_t skew = (uintptr_t)p % PG, n = (skew + len + PG - 1) / PG, k = 0;
        unsigned char *vec = malloc(n);

        p -= skew;
        len += skew;

        if (!vec || mincore((void *)p, len, vec))
                abort();
        for (size_t i = 0; i < n; i++)
                k += vec[i] & 1;
        free(vec);
        return k;
}

/*
 * Put @path in the page cache in 4 KiB folios, as a cold mount's reads do:
 * the kernel drops a large folio only whole, and the one holding a shard's
 * header stays (the daemon maps the header), which is right but not what
 * this case counts.
 */
static void read_all(int fd)
{
        char buf[PG];

        for (off_t o = 0; pread(fd, buf, sizeof(buf), o) > 0; o += PG)
                ;
}

/* ... and say whether its file system drops pages when asked (not tmpfs). */
static bool cache_small_folios(const char *path)
{
        int fd = open(path, O_RDONLY);
        struct stat st;
        bool dropped;
        void *map;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fstat(fd, &st), 0);
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        ck_assert_ptr_ne(map, MAP_FAILED);
        ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
        read_all(fd);
        ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
        dropped = resident(map, (size_t)st.st_size) == 0;
        read_all(fd);
        munmap(map, (size_t)st.st_size);
        close(fd);
        return dropped;
}

static bool file_keeps_pages; /* set by test_file (run without fork) */

/*
 * The real drop on a real file: a tensor served whole leaves the file's
 * page cache, except the page it shares with the next tensor; in double
 * mode everything stays. Where the file system keeps dropped pages (tmpfs)
 * it sets file_keeps_pages and checks nothing: main then exits 77.
 */
START_TEST(test_file)
{
        struct ut_tensor t[2] = {{"a", 300000}, {"b", 5000}};
        const char *tmp = getenv("TMPDIR");
        char *dir = ut_printf("%s/stfs-cache-XXXXXX", tmp && *tmp ? tmp : "/var/tmp");
        char *path;
        struct stf_model *m;
        struct stf_diag diag;
        struct stf_view v;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        path = ut_printf("%s/m.safetensors", dir);
        ut_write_st_u8(path, t, 2, 1000000000);
        sync(); /* dirty pages are not dropped */
        file_keeps_pages = !cache_small_folios(path);
        ck_assert_int_eq(stf_model_open(path, &m, &diag), 0);
        for (int mode = STF_CACHE_SINGLE; mode <= STF_CACHE_DOUBLE && !file_keeps_pages; mode++) {
                const uint8_t *map = m->shards[0].map;
                uint64_t size = m->shards[0].size;
                uint64_t begin = m->tensors[0].begin, end = begin + 300000;
                size_t pages = touch(m), whole = end / PG - (begin + PG - 1) / PG;
                struct stf_cache *c;

                ck_assert_uint_eq(resident(map, size), pages);
                ck_assert_int_eq(stf_cache_new(m, (enum stf_cache_mode)mode, NULL, NULL, &c), 0);
                stf_view_init_tensor(&v, m, 0);
                stf_cache_served_view(c, &v, 0, v.size);
                stf_cache_free(c);
                if (mode == STF_CACHE_DOUBLE) {
                        ck_assert_uint_eq(resident(map, size), pages);
                } else {
                        ck_assert_uint_eq(resident(map, size), pages - whole);
                        ck_assert_uint_eq(resident(map + end, 1), 1); /* b's first page */
                }
        }
        stf_model_close(m);
        unlink(path);
        free(path);
        rmdir(dir);
        free(dir);
}
END_TEST

int main(int argc, char **argv)
{
        bool file = argc > 1 && !strcmp(argv[1], "--file");
        SRunner *sr;
        int failed;

        if (file) {
                Suite *s = suite_create("cache-file");
                TCase *tc = tcase_create("file");

                tcase_add_test(tc, test_file);
                suite_add_tcase(s, tc);
                sr = srunner_create(s);
                srunner_set_fork_status(sr, CK_NOFORK);
        } else {
                sr = srunner_create(cache_suite());
        }
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        if (!failed && file_keeps_pages) {
                fprintf(stderr, "this file system keeps dropped pages: nothing checked\n");
                return 77;
        }
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
