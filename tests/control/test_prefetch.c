/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the prefetch machinery of core/: pattern matching
 * (stf_glob), selections (stf_select), chunk planning (stf_plan_build) and
 * the job engine, driven by a fake backend that copies every chunk into a
 * plain buffer and checks that no destination byte is written twice.
 *
 * The model is a two-shard set written to a scratch directory by each
 * test case's fixture (unchecked: made and removed by the parent process,
 * so a failing test leaves nothing behind). Its data is a byte pattern
 * seeded per shard, and the data buffers are laid out in an order other
 * than name order, so "sorted by shard, then offset" differs from "sorted
 * by name".
 * Expected slices are computed element by element from the shapes, not
 * with the row formula prefetch.c uses.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "dtype.h"
#include "model.h"
#include "prefetch.h"
#include "select.h"
#include "tree.h"
#include "util.h"
#include "wire.h"

/* ------------------------------------------------------------ the model */

#define SHARD_A "model-00001-of-00002.safetensors"
#define SHARD_B "model-00002-of-00002.safetensors"

/* In data order (not name order). */
static const struct stw_tensor shard_a[] = {
    {"model.layers.1.attn.weight", "F32", 2, {4, 6}, 32},
    {"model.layers.0.norm.weight", "F32", 1, {6}, 32},
    {"model.layers.0.attn.weight", "F32", 2, {4, 6}, 32},
    {"model.layers.10.attn.weight", "F32", 2, {2, 6}, 32},
    {"model.layers.0.conv.weight", "F16", 3, {2, 4, 6}, 16},
};
static const struct stw_tensor shard_b[] = {
    {"scalar", "F32", 0, {0}, 32},
    {"lm_head.weight", "U8", 2, {8, 16}, 8},
    {"empty.weight", "F32", 2, {0, 4}, 32},
    {"model.embed.weight", "BF16", 2, {8, 4}, 16},
    {"model.layers.1.norm.weight", "F32", 1, {6}, 32},
    {"f4.weight", "F4", 2, {2, 4}, 4},
    {"big.weight", "U8", 2, {64, 40}, 8},
};

#define NA (sizeof(shard_a) / sizeof(shard_a[0]))
#define NB (sizeof(shard_b) / sizeof(shard_b[0]))
#define NALL (NA + NB)

static uint8_t pat(uint8_t seed, size_t i)
{
        return (uint8_t)(seed + i * 7u + (i >> 8) * 13u);
}

static void fill_pat(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        for (size_t k = 0; k < len; k++)
                p[k] = pat(*(const uint8_t *)arg, at + k);
}

static void write_shard(const char *dir, const char *file, const struct stw_tensor *t, size_t n,
                        uint8_t seed)
{
        char *path = ut_printf("%s/%s", dir, file);

        ut_write_st(path, &(struct stw_file){.t = t, .n = n, .fill = fill_pat, .arg = &seed});
        free(path);
}

static char *tmpdir;
static struct stf_model *M;
static struct stf_tree *T;

static void write_model(const char *dir)
{
        const char *map[2 * NALL];
        char *path;

        write_shard(dir, SHARD_A, shard_a, NA, 11);
        write_shard(dir, SHARD_B, shard_b, NB, 97);
        for (size_t i = 0; i < NALL; i++) {
                map[2 * i] = i < NA ? shard_a[i].name : shard_b[i - NA].name;
                map[2 * i + 1] = i < NA ? SHARD_A : SHARD_B;
        }
        path = ut_printf("%s/model.safetensors.index.json", dir);
        ck_assert_int_eq(stw_write_index(path, map, NALL, "{}"), 0);
        free(path);
}

static void setup(void)
{
        struct stf_diag diag = {{0}};
        char *src;

        tmpdir = ut_mkdtemp();
        write_model(tmpdir);
        src = ut_printf("%s/model.safetensors.index.json", tmpdir);
        ck_assert_msg(stf_model_open(src, &M, &diag) == 0, "model: %s", diag.msg);
        free(src);
        ck_assert_uint_eq(M->ntensors, NALL);
        ck_assert_uint_eq(M->nshards, 2);
        ck_assert_int_eq(stf_tree_build_model(M, 0, &T, &diag), 0);
}

static void teardown(void)
{
        stf_tree_free(T);
        stf_model_close(M);
        T = NULL;
        M = NULL;
        ut_rmtree(tmpdir);
}

/* Index of tensor @name in the model. */
static uint32_t idx_of(const char *name)
{
        for (size_t i = 0; i < M->ntensors; i++)
                if (!strcmp(M->tensors[i].name, name))
                        return (uint32_t)i;
        ck_abort_msg("no tensor %s", name);
        return 0;
}

/* --------------------------------------------------------------- stf_glob */

static bool glob(const char *p, const char *s, bool cross)
{
        return stf_glob(p, strlen(p), s, strlen(s), cross);
}

START_TEST(glob_literals_and_wildcards)
{
        ck_assert(glob("abc", "abc", true));
        ck_assert(!glob("abc", "abcd", true)); /* whole string, no prefix rule */
        ck_assert(!glob("abcd", "abc", true));
        ck_assert(glob("", "", false));
        ck_assert(!glob("", "a", false));
        ck_assert(glob("*", "", false));
        ck_assert(glob("**", "", false));
        ck_assert(!glob("?", "", true));
        ck_assert(glob("?", "x", true));
        ck_assert(glob("a*c", "ac", true));
        ck_assert(glob("a*c", "abbbc", true));
        ck_assert(!glob("a*c", "abbbd", true));
        ck_assert(glob("*.weight", "model.layers.0.weight", true));
        ck_assert(glob("model.*.weight", "model.layers.0.weight", true));
        ck_assert(glob("a?c", "abc", false));
        ck_assert(!glob("a?c", "abbc", false));
        ck_assert(glob("*a*b*c*", "xxaxxbxxcxx", true));
        ck_assert(!glob("*a*b*c*", "xxaxxcxxbxx", true));
}
END_TEST

START_TEST(glob_name_vs_path)
{
        /* names (cross): '*' and '?' match '/' too */
        ck_assert(glob("a*c", "a/c", true));
        ck_assert(glob("a?c", "a/c", true));
        /* paths: '*' and '?' stay inside one component */
        ck_assert(!glob("a*c", "a/c", false));
        ck_assert(!glob("a?c", "a/c", false));
        ck_assert(glob("a/*/c", "a/b/c", false));
        ck_assert(!glob("a/*/c", "a/b/x/c", false));
        ck_assert(!glob("a/*", "a/b/c", false));
        /* '**' crosses components */
        ck_assert(glob("a/**/c", "a/b/x/c", false));
        ck_assert(glob("a**c", "a/b/c", false));
        ck_assert(glob("**", "a/b/c", false));
        ck_assert(glob("**/c", "a/b/c", false));
        ck_assert(glob("a/***", "a/b/c", false)); /* a run of stars is '**' */
        ck_assert(!glob("**/d", "a/b/c", false));
}
END_TEST

START_TEST(glob_hostile_pattern_is_linear)
{
        /* exponential in a backtracking matcher; must be instant here */
        char pat[200], s[4001];

        for (int i = 0; i < 100; i++) {
                pat[2 * i] = 'a';
                pat[2 * i + 1] = '*';
        }
        pat[199] = 'b';
        memset(s, 'a', 4000);
        s[4000] = '\0';
        ck_assert(!stf_glob(pat, 200, s, 4000, true));
        ck_assert(!stf_glob(pat, 200, s, 4000, false));
}
END_TEST

/* The matcher as one bool per state (the reference the bit-parallel one
 * must agree with). */
static bool ref_glob(const char *p, size_t pl, const char *s, size_t sl, bool cross)
{
        /* m[i][j]: p[0..i) matches s[0..j) */
        bool *m = calloc((pl + 1) * (sl + 1), sizeof(*m));
        bool r;

        ck_assert_ptr_nonnull(m);
        m[0] = true;
        for (size_t i = 1; i <= pl; i++) {
                bool star = p[i - 1] == '*',
                     dbl = star && ((i >= 2 && p[i - 2] == '*') || (i < pl && p[i] == '*'));

                for (size_t j = 0; j <= sl; j++) {
                        bool v = false;
                        char c = j ? s[j - 1] : 0;

                        if (star)
                                v = m[(i - 1) * (sl + 1) + j] ||
                                    (j && m[i * (sl + 1) + j - 1] && (dbl || cross || c != '/'));
                        else if (j && p[i - 1] == '?')
                                v = m[(i - 1) * (sl + 1) + j - 1] && (cross || c != '/');
                        else if (j)
                                v = m[(i - 1) * (sl + 1) + j - 1] && c == p[i - 1];
                        m[i * (sl + 1) + j] = v;
                }
        }
        r = m[pl * (sl + 1) + sl];
        free(m);
        return r;
}

/* Random patterns and strings of a, b, slash, star and ?: patterns long enough to span
 * several 64-bit words of states, against the reference. */
START_TEST(glob_matches_reference)
{
        static const char alpha[] = "ab/*?", salpha[] = "ab/";
        unsigned seed = 12345;
        char p[300], s[300];

        for (int round = 0; round < 20000; round++) {
                size_t pl = (size_t)(rand_r(&seed) % (round % 10 == 0 ? 280 : 12));
                size_t sl = (size_t)(rand_r(&seed) % (round % 10 == 0 ? 280 : 14));

                for (size_t i = 0; i < pl; i++)
                        p[i] = alpha[rand_r(&seed) % (round % 3 ? 5 : 3)];
                for (size_t i = 0; i < sl; i++)
                        s[i] = salpha[rand_r(&seed) % 3];
                if (round % 10 == 0) /* a pattern that matches, mostly */
                        memcpy(p, s, pl < sl ? pl : sl);
                for (int cross = 0; cross < 2; cross++)
                        ck_assert_msg(stf_glob(p, pl, s, sl, cross) ==
                                          ref_glob(p, pl, s, sl, cross),
                                      "'%.*s' vs '%.*s' cross=%d", (int)pl, p, (int)sl, s, cross);
        }
}
END_TEST

/*
 * A 4 KiB pattern of stars against long names: linear in pattern x name
 * (a matcher that backtracks took 80 s for one request of a 4 KiB pattern
 * against a model of long names; 120 names of 4000 bytes here would take
 * hours). No clock is read: the tcase's timeout (60 s, for valgrind) is the
 * guard, so a loaded machine cannot fail it; this takes ~0.1 s.
 */
START_TEST(glob_long_pattern_long_names)
{
        static char pat[4095], s[4000];

        /* "*a*a...*ac": every state stays live, and nothing matches */
        for (size_t i = 0; i < sizeof(pat); i++)
                pat[i] = i % 2 ? 'a' : '*';
        pat[sizeof(pat) - 1] = 'c';
        memset(s, 'a', sizeof(s));
        for (int n = 0; n < 120; n++)
                ck_assert(!stf_glob(pat, sizeof(pat), s, sizeof(s), n % 2));
        s[sizeof(s) - 1] = 'c';
        ck_assert(stf_glob(pat, sizeof(pat), s, sizeof(s), true));
}
END_TEST

/* -------------------------------------------------------------- stf_select */

/* Select @text; returns the number of tensors, fills @names (sorted by name). */
static int sel(const char *text, char names[][64], size_t cap)
{
        uint32_t *v = NULL;
        size_t n = 0;
        int ret = stf_select(M, T, text, strlen(text) + 1, &v, &n);

        if (ret)
                return ret;
        ck_assert_uint_le(n, cap);
        for (size_t i = 0; i < n; i++)
                snprintf(names[i], 64, "%s", M->tensors[v[i]].name);
        qsort(names, n, 64, (int (*)(const void *, const void *))strcmp);
        free(v);
        return (int)n;
}

#define SEL_IS(text, ...)                                                                          \
        do {                                                                                       \
                const char *want_[] = {__VA_ARGS__};                                               \
                size_t nw_ = sizeof(want_) / sizeof(want_[0]);                                     \
                char got_[NALL][64];                                                               \
                int n_ = sel(text, got_, NALL);                                                    \
                ck_assert_msg(n_ == (int)nw_, "'%s': %d tensors, want %zu", text, n_, nw_);        \
                qsort(want_, nw_, sizeof(char *), cmp_str);                                        \
                for (size_t i_ = 0; i_ < nw_; i_++)                                                \
                        ck_assert_str_eq(got_[i_], want_[i_]);                                     \
        } while (0)

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(select_plain_names)
{
        SEL_IS("lm_head.weight", "lm_head.weight");
        SEL_IS("scalar", "scalar");
        SEL_IS("model.layers.0.norm.weight", "model.layers.0.norm.weight");
}
END_TEST

START_TEST(select_name_prefix_at_dots)
{
        SEL_IS("model.layers.1", "model.layers.1.attn.weight", "model.layers.1.norm.weight");
        SEL_IS("model.layers.10", "model.layers.10.attn.weight");
        SEL_IS("model.layers.0", "model.layers.0.attn.weight", "model.layers.0.conv.weight",
               "model.layers.0.norm.weight");
        SEL_IS("lm_head", "lm_head.weight");
        /* a prefix must end at a '.': "model.lay" is not "model.layers" */
        ck_assert_int_eq(sel("model.lay", NULL, 0), -ENOENT);
        ck_assert_int_eq(sel("model.layers.1.attn.w", NULL, 0), -ENOENT);
        ck_assert_int_eq(sel("lm_head.weightX", NULL, 0), -ENOENT);
}
END_TEST

START_TEST(select_name_globs)
{
        SEL_IS("*.norm.weight", "model.layers.0.norm.weight", "model.layers.1.norm.weight");
        SEL_IS("model.layers.?.attn.weight", "model.layers.0.attn.weight",
               "model.layers.1.attn.weight");
        SEL_IS("model.layers.*.attn", "model.layers.0.attn.weight", "model.layers.1.attn.weight",
               "model.layers.10.attn.weight");
        SEL_IS("*head*", "lm_head.weight");
        SEL_IS("m*.embed", "model.embed.weight");
}
END_TEST

START_TEST(select_path_globs_and_dirs)
{
        SEL_IS("model/layers/*/attn/weight", "model.layers.0.attn.weight",
               "model.layers.1.attn.weight", "model.layers.10.attn.weight");
        SEL_IS("model/*/weight", "model.embed.weight");
        SEL_IS("model/layers/?/norm/weight", "model.layers.0.norm.weight",
               "model.layers.1.norm.weight");
        /* a directory selects everything under it, at '/' boundaries only */
        SEL_IS("model/layers/1", "model.layers.1.attn.weight", "model.layers.1.norm.weight");
        SEL_IS("model/layers/0/conv", "model.layers.0.conv.weight");
        ck_assert_int_eq(sel("model/lay", NULL, 0), -ENOENT);
        ck_assert_int_eq(sel("model/layers/1/att", NULL, 0), -ENOENT);
        SEL_IS("**/norm/weight", "model.layers.0.norm.weight", "model.layers.1.norm.weight");
        SEL_IS("lm_head/weight", "lm_head.weight");
        /* a '/' makes it a path: "lm_head.weight/" is no path of the tree */
        ck_assert_int_eq(sel("model.embed/weight", NULL, 0), -ENOENT);
}
END_TEST

START_TEST(select_dir_with_slashes)
{
        /* a directory written as one (shell completion adds the '/') */
        SEL_IS("model/layers/1/", "model.layers.1.attn.weight", "model.layers.1.norm.weight");
        /* a path from the mount's root */
        SEL_IS("/model/layers/10", "model.layers.10.attn.weight");
        SEL_IS("/lm_head/weight", "lm_head.weight");
        {
                char got[NALL][64];

                ck_assert_int_eq(sel("/", got, NALL), (int)NALL);
        }
}
END_TEST

START_TEST(select_several_patterns)
{
        SEL_IS("lm_head scalar\nmodel.embed", "lm_head.weight", "scalar", "model.embed.weight");
        SEL_IS("scalar scalar\tscalar", "scalar");
        SEL_IS("model.layers.1 model/layers/1/norm", "model.layers.1.attn.weight",
               "model.layers.1.norm.weight");
        /* one pattern matching nothing among others that match is fine */
        SEL_IS("nothing.here scalar", "scalar");
        SEL_IS("\n\n  scalar  \n", "scalar");
}
END_TEST

START_TEST(select_empty_is_all)
{
        char got[NALL][64];

        ck_assert_int_eq(sel("", got, NALL), (int)NALL);
        ck_assert_int_eq(sel("  \n\t \n", got, NALL), (int)NALL);
}
END_TEST

START_TEST(select_errors)
{
        char big[5000];
        uint32_t *v = (uint32_t *)0x1;
        size_t n = 77;

        ck_assert_int_eq(sel("no.such.tensor", NULL, 0), -ENOENT);
        ck_assert_int_eq(sel("zzz*", NULL, 0), -ENOENT);
        ck_assert_int_eq(sel("model/layers/2", NULL, 0), -ENOENT);
        /* not NUL terminated within cap */
        ck_assert_int_eq(stf_select(M, T, "scalar", 6, &v, &n), -EINVAL);
        ck_assert_int_eq(stf_select(M, T, "scalar", 3, &v, &n), -EINVAL);
        ck_assert_ptr_eq(v, (uint32_t *)0x1);
        ck_assert_uint_eq(n, 77);
        /* terminated exactly at cap - 1 */
        {
                uint32_t *w = NULL;

                ck_assert_int_eq(stf_select(M, T, "scalar", 7, &w, &n), 0);
                ck_assert_uint_eq(n, 1);
                free(w);
        }
        /* a pattern of 4 KiB or more */
        memset(big, '*', sizeof(big));
        big[4096] = '\0';
        ck_assert_int_eq(stf_select(M, T, big, sizeof(big), &v, &n), -EINVAL);
        big[4095] = '\0';
        {
                uint32_t *w = NULL;

                ck_assert_int_eq(stf_select(M, T, big, sizeof(big), &w, &n), 0);
                ck_assert_uint_eq(n, NALL);
                free(w);
        }
}
END_TEST

START_TEST(select_sorted_by_shard_then_offset)
{
        uint32_t *v = NULL;
        size_t n = 0;

        ck_assert_int_eq(stf_select(M, T, "", 1, &v, &n), 0);
        ck_assert_uint_eq(n, NALL);
        for (size_t i = 1; i < n; i++) {
                const struct stf_tensor *a = &M->tensors[v[i - 1]], *b = &M->tensors[v[i]];

                ck_assert_msg(a->shard < b->shard || (a->shard == b->shard && a->begin <= b->begin),
                              "%s before %s", a->name, b->name);
        }
        /* data order of shard A, which is not name order */
        ck_assert_str_eq(M->tensors[v[0]].name, shard_a[0].name);
        ck_assert_str_eq(M->tensors[v[1]].name, shard_a[1].name);
        ck_assert_str_eq(M->tensors[v[2]].name, shard_a[2].name);
        ck_assert_str_eq(M->shards[M->tensors[v[0]].shard].name, SHARD_A);
        ck_assert_str_eq(M->shards[M->tensors[v[n - 1]].shard].name, SHARD_B);
        free(v);
}
END_TEST

/* --------------------------------------------------------- stf_plan_build */

static struct stf_plan *plan_of(const char *const *names, size_t n, const struct stf_slice *s,
                                uint64_t chunk)
{
        uint32_t idx[NALL];
        struct stf_plan *p = NULL;
        char msg[256] = "";
        int ret;

        for (size_t i = 0; i < n; i++)
                idx[i] = idx_of(names[i]);
        ret = stf_plan_build(M, idx, n, s, chunk, &p, msg, sizeof(msg));
        ck_assert_msg(ret == 0, "plan: %d %s", ret, msg);
        ck_assert_ptr_nonnull(p);
        return p;
}

/* Chunk @k is a contiguous range of tensor @t: file bytes [off, off + w) to @dst. */
static void assert_flat(const struct stf_plan *p, size_t k, uint32_t t, uint64_t dst, uint64_t off,
                        uint64_t w)
{
        const struct stf_chunk *c = &p->chunks[k];

        ck_assert_uint_eq(c->tensor, t);
        ck_assert_uint_eq(c->shard, M->tensors[t].shard);
        ck_assert_uint_eq(c->height, 1);
        ck_assert_uint_eq(c->width, w);
        ck_assert_uint_eq(c->src, M->tensors[t].begin + off);
        ck_assert_uint_eq(c->file_off, off);
        ck_assert_uint_eq(c->dst, dst);
}

START_TEST(plan_chunks_at_exact_boundaries)
{
        static const char *const one[] = {"big.weight"};
        uint32_t t = idx_of("big.weight");
        static const struct {
                uint64_t chunk;
                size_t n;
        } cases[] = {{1000, 3}, {1280, 2}, {2559, 2}, {2560, 1},
                     {2561, 1}, {0, 1},    {1, 2560}, {512, 5}};

        ck_assert_uint_eq(M->tensors[t].size, 2560);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct stf_plan *p = plan_of(one, 1, NULL, cases[i].chunk);
                uint64_t ch = cases[i].chunk ? cases[i].chunk : STF_CHUNK_DEFAULT, off = 0;

                ck_assert_msg(p->nchunks == cases[i].n, "chunk %" PRIu64 ": %zu chunks",
                              cases[i].chunk, p->nchunks);
                for (size_t k = 0; k < p->nchunks; k++) {
                        uint64_t w = 2560 - off < ch ? 2560 - off : ch;

                        assert_flat(p, k, t, off, off, w);
                        off += w;
                }
                ck_assert_uint_eq(off, 2560);
                ck_assert_uint_eq(p->total, 2560);
                ck_assert_uint_eq(p->ntensors, 1);
                ck_assert_uint_eq(p->tensor_size[0], 2560);
                stf_plan_free(p);
        }
}
END_TEST

START_TEST(plan_many_tensors_layout)
{
        static const char *const names[] = {"model.layers.0.norm.weight", "scalar", "empty.weight",
                                            "lm_head.weight", "big.weight"};
        struct stf_plan *p = plan_of(names, 5, NULL, 100);
        uint64_t end = 0;
        size_t k = 0;

        ck_assert_uint_eq(p->ntensors, 5);
        for (size_t i = 0; i < 5; i++) {
                uint32_t t = idx_of(names[i]);

                ck_assert_uint_eq(p->tensors[i], t);
                ck_assert_uint_eq(p->tensor_size[i], M->tensors[t].size);
                ck_assert_uint_eq(p->tensor_dst[i] % 256, 0);
                ck_assert_uint_ge(p->tensor_dst[i], end);
                end = p->tensor_dst[i] + p->tensor_size[i];
                /* this tensor's chunks, in order */
                for (uint64_t off = 0; off < M->tensors[t].size; off += 100, k++) {
                        uint64_t w =
                            M->tensors[t].size - off < 100 ? M->tensors[t].size - off : 100;

                        ck_assert_uint_lt(k, p->nchunks);
                        assert_flat(p, k, t, p->tensor_dst[i] + off, off, w);
                }
        }
        ck_assert_uint_eq(k, p->nchunks);
        ck_assert_uint_eq(p->total, end);
        stf_plan_free(p);
}
END_TEST

START_TEST(plan_zero_size_tensor)
{
        static const char *const one[] = {"empty.weight"};
        static const struct stf_slice s = {1, 0, 3}; /* 4 % 3 != 0, but there is nothing */
        struct stf_plan *p = plan_of(one, 1, NULL, 1);

        ck_assert_uint_eq(p->nchunks, 0);
        ck_assert_uint_eq(p->ntensors, 1);
        ck_assert_uint_eq(p->tensor_size[0], 0);
        ck_assert_uint_eq(p->total, 0);
        stf_plan_free(p);
        p = plan_of(one, 1, &s, 1);
        ck_assert_uint_eq(p->nchunks, 0);
        stf_plan_free(p);
        /* no tensor at all */
        ck_assert_int_eq(stf_plan_build(M, NULL, 0, NULL, 0, &p, (char[64]){0}, 64), 0);
        ck_assert_uint_eq(p->nchunks, 0);
        ck_assert_uint_eq(p->total, 0);
        stf_plan_free(p);
}
END_TEST

START_TEST(plan_slice_dim0_contiguous)
{
        static const char *const one[] = {"model.layers.0.attn.weight"};
        static const struct stf_slice s1 = {0, 1, 2}, s0 = {0, 0, 2}, s3 = {0, 3, 4};
        uint32_t t = idx_of(one[0]);
        struct stf_plan *p;

        p = plan_of(one, 1, &s1, 0);
        ck_assert_uint_eq(p->nchunks, 1);
        assert_flat(p, 0, t, 0, 48, 48);
        ck_assert_uint_eq(p->tensor_size[0], 48);
        ck_assert_uint_eq(p->total, 48);
        stf_plan_free(p);
        p = plan_of(one, 1, &s0, 20); /* 48 bytes in 20-byte chunks */
        ck_assert_uint_eq(p->nchunks, 3);
        assert_flat(p, 0, t, 0, 0, 20);
        assert_flat(p, 1, t, 20, 20, 20);
        assert_flat(p, 2, t, 40, 40, 8);
        stf_plan_free(p);
        p = plan_of(one, 1, &s3, 0); /* the last of 4 rows */
        ck_assert_uint_eq(p->nchunks, 1);
        assert_flat(p, 0, t, 0, 72, 24);
        stf_plan_free(p);
}
END_TEST

static void assert_rows(const struct stf_chunk *c, uint32_t t, uint64_t src_off, uint64_t w,
                        uint64_t h, uint64_t pitch, uint64_t dst)
{
        ck_assert_uint_eq(c->tensor, t);
        ck_assert_uint_eq(c->shard, M->tensors[t].shard);
        ck_assert_uint_eq(c->src, M->tensors[t].begin + src_off);
        ck_assert_uint_eq(c->file_off, src_off);
        ck_assert_uint_eq(c->width, w);
        ck_assert_uint_eq(c->height, h);
        ck_assert_uint_eq(c->src_pitch, pitch);
        ck_assert_uint_eq(c->dst, dst);
}

START_TEST(plan_slice_dim1_strided)
{
        static const char *const attn[] = {"model.layers.0.attn.weight"};
        static const char *const conv[] = {"model.layers.0.conv.weight"};
        static const struct stf_slice r1 = {1, 1, 2}, r2of3 = {1, 2, 3}, c1 = {1, 1, 2},
                                      c2 = {2, 0, 3};
        uint32_t ta = idx_of(attn[0]), tc = idx_of(conv[0]);
        struct stf_plan *p;

        /* F32 [4,6], columns 3..5: 4 rows of 12 bytes, pitch 24 */
        p = plan_of(attn, 1, &r1, 0);
        ck_assert_uint_eq(p->nchunks, 1);
        assert_rows(&p->chunks[0], ta, 12, 12, 4, 24, 0);
        ck_assert_uint_eq(p->tensor_size[0], 48);
        ck_assert_uint_eq(p->total, 48);
        stf_plan_free(p);
        /* 48-byte chunks: two rows of source span each */
        p = plan_of(attn, 1, &r1, 48);
        ck_assert_uint_eq(p->nchunks, 2);
        assert_rows(&p->chunks[0], ta, 12, 12, 2, 24, 0);
        assert_rows(&p->chunks[1], ta, 2 * 24 + 12, 12, 2, 24, 24);
        stf_plan_free(p);
        /* a chunk smaller than a row: each row in pieces of at most a chunk
         * (a chunk's span bounds a CUDA worker's staging buffers) */
        p = plan_of(attn, 1, &r1, 10);
        ck_assert_uint_eq(p->nchunks, 8);
        for (uint64_t r = 0; r < 4; r++) {
                assert_rows(&p->chunks[2 * r], ta, r * 24 + 12, 10, 1, 10, r * 12);
                assert_rows(&p->chunks[2 * r + 1], ta, r * 24 + 22, 2, 1, 2, r * 12 + 10);
        }
        stf_plan_free(p);
        /* a chunk of one row, pitch wider: one row each */
        p = plan_of(attn, 1, &r1, 12);
        ck_assert_uint_eq(p->nchunks, 4);
        for (uint64_t r = 0; r < 4; r++)
                assert_rows(&p->chunks[r], ta, r * 24 + 12, 12, 1, 24, r * 12);
        stf_plan_free(p);
        /* 3 parts: columns 4..5 */
        p = plan_of(attn, 1, &r2of3, 0);
        assert_rows(&p->chunks[0], ta, 16, 8, 4, 24, 0);
        stf_plan_free(p);
        /* F16 [2,4,6] dim 1: 2 outer rows of 2*6*2 = 24 bytes, pitch 48 */
        p = plan_of(conv, 1, &c1, 0);
        ck_assert_uint_eq(p->nchunks, 1);
        assert_rows(&p->chunks[0], tc, 24, 24, 2, 48, 0);
        stf_plan_free(p);
        /* dim 2 of 3: 8 rows of 2 elements (4 bytes), pitch 12 */
        p = plan_of(conv, 1, &c2, 0);
        assert_rows(&p->chunks[0], tc, 0, 4, 8, 12, 0);
        ck_assert_uint_eq(p->tensor_size[0], 32);
        stf_plan_free(p);
}
END_TEST

START_TEST(plan_slice_replicated_low_rank)
{
        static const char *const names[] = {"model.layers.0.norm.weight", "scalar",
                                            "model.layers.0.attn.weight"};
        static const struct stf_slice d1 = {1, 1, 2}, d0 = {0, 1, 2}, d5 = {5, 1, 3};
        struct stf_plan *p;

        /* rank 1 under dim 1, rank 0 under dim 1: whole */
        p = plan_of(names, 2, &d1, 0);
        ck_assert_uint_eq(p->nchunks, 2);
        assert_flat(p, 0, idx_of(names[0]), 0, 0, 24);
        assert_flat(p, 1, idx_of(names[1]), p->tensor_dst[1], 0, 4);
        stf_plan_free(p);
        /* a scalar (rank 0) under dim 0: whole */
        p = plan_of(names + 1, 1, &d0, 0);
        assert_flat(p, 0, idx_of("scalar"), 0, 0, 4);
        stf_plan_free(p);
        /* dim past every rank: everything whole, even non-divisible shapes */
        p = plan_of(names, 3, &d5, 0);
        ck_assert_uint_eq(p->tensor_size[2], 96);
        stf_plan_free(p);
}
END_TEST

START_TEST(plan_slice_errors)
{
        static const struct {
                const char *name;
                struct stf_slice s;
                const char *frag;
        } bad[] = {
            {"model.layers.0.attn.weight", {0, 0, 3}, "does not divide"},
            {"model.layers.0.attn.weight", {1, 0, 4}, "does not divide"},
            {"model.layers.0.attn.weight", {0, 2, 2}, "not below"},
            {"model.layers.0.attn.weight", {0, 7, 2}, "not below"},
            {"model.layers.0.attn.weight", {0, 0, 0}, "world"},
            {"scalar", {0, 2, 2}, "not below"}, /* checked even for a whole tensor */
            {"f4.weight", {1, 0, 4}, "whole number of bytes"},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint32_t t = idx_of(bad[i].name);
                struct stf_plan *p = (struct stf_plan *)0x1;
                char msg[256] = "";

                ck_assert_int_eq(stf_plan_build(M, &t, 1, &bad[i].s, 0, &p, msg, sizeof(msg)),
                                 -EINVAL);
                ck_assert_ptr_null(p);
                ck_assert_msg(strstr(msg, bad[i].frag), "case %zu: '%s' lacks '%s'", i, msg,
                              bad[i].frag);
        }
        /* the failing tensor after good ones: nothing leaks (valgrind), -EINVAL */
        {
                uint32_t v[3] = {idx_of("big.weight"), idx_of("lm_head.weight"),
                                 idx_of("model.layers.10.attn.weight")};
                struct stf_slice s = {1, 0, 5};
                struct stf_plan *p;
                char msg[256];

                ck_assert_int_eq(stf_plan_build(M, v, 3, &s, 0, &p, msg, sizeof(msg)), -EINVAL);
                ck_assert(strstr(msg, "lm_head.weight"));
        }
        /* F4 [2,4] split in 2 along dim 1: one byte per row is fine */
        {
                static const char *const one[] = {"f4.weight"};
                static const struct stf_slice s = {1, 1, 2};
                struct stf_plan *p = plan_of(one, 1, &s, 0);

                assert_rows(&p->chunks[0], idx_of("f4.weight"), 1, 1, 2, 2, 0);
                stf_plan_free(p);
        }
}
END_TEST

/* ------------------------------------------------ the engine, fake backend */

struct fake {
        uint8_t *dst, *written;
        uint64_t total;
        unsigned threads; /* as the job was started with */
        /* faults, counted with atomics, asserted on the test's thread */
        int twice, oob, bad_src, bad_worker, concurrent;
        int busy[STF_THREADS_MAX];
        /* behaviour */
        unsigned sleep_us;
        long fail_at; /* chunk number that fails, -1: none */
        int fail_err;
        const char *fail_msg;
        int begin_err, worker_begin_err, worker_end_err, end_err;
        /* calls */
        long chunks;
        int begins, worker_begins, worker_ends, ends, end_status;
};

static int fk_begin(void *ctx, const struct stf_job_info *job, void **state, char *msg, size_t cap)
{
        struct fake *f = ctx;

        __atomic_add_fetch(&f->begins, 1, __ATOMIC_SEQ_CST);
        if (f->begin_err)
                snprintf(msg, cap, "fake: begin refused");
        return f->begin_err;
}

static int fk_worker_begin(void *ctx, const struct stf_job_info *job, unsigned w, char *msg,
                           size_t cap)
{
        struct fake *f = ctx;

        __atomic_add_fetch(&f->worker_begins, 1, __ATOMIC_SEQ_CST);
        if (w >= f->threads)
                __atomic_add_fetch(&f->bad_worker, 1, __ATOMIC_SEQ_CST);
        if (f->worker_begin_err && w == 0) {
                snprintf(msg, cap, "fake: no staging for worker %u", w);
                return f->worker_begin_err;
        }
        return 0;
}

static int fk_chunk(void *ctx, const struct stf_job_info *job, unsigned w,
                    const struct stf_chunk *c, char *msg, size_t cap)
{
        struct fake *f = ctx;
        const struct stf_tensor *t = &job->model->tensors[c->tensor];
        const uint8_t *map = job->model->shards[c->shard].map;
        long k = __atomic_fetch_add(&f->chunks, 1, __ATOMIC_SEQ_CST);
        int ret = 0;

        if (w >= f->threads || w >= STF_THREADS_MAX) {
                __atomic_add_fetch(&f->bad_worker, 1, __ATOMIC_SEQ_CST);
                return -EINVAL;
        }
        if (__atomic_exchange_n(&f->busy[w], 1, __ATOMIC_SEQ_CST))
                __atomic_add_fetch(&f->concurrent, 1, __ATOMIC_SEQ_CST);
        if (k == f->fail_at) {
                if (f->fail_msg)
                        snprintf(msg, cap, "%s", f->fail_msg);
                ret = f->fail_err;
                goto out;
        }
        if (c->shard != t->shard || c->src != t->begin + c->file_off ||
            c->src + (c->height - 1) * c->src_pitch + c->width > t->begin + t->size)
                __atomic_add_fetch(&f->bad_src, 1, __ATOMIC_SEQ_CST);
        for (uint64_t r = 0; r < c->height; r++) {
                for (uint64_t b = 0; b < c->width; b++) {
                        uint64_t o = c->dst + r * c->width + b;

                        if (o >= f->total) {
                                __atomic_add_fetch(&f->oob, 1, __ATOMIC_SEQ_CST);
                                continue;
                        }
                        if (__atomic_exchange_n(&f->written[o], 1, __ATOMIC_SEQ_CST))
                                __atomic_add_fetch(&f->twice, 1, __ATOMIC_SEQ_CST);
                        f->dst[o] = map[c->src + r * c->src_pitch + b];
                }
        }
        if (f->sleep_us)
                usleep(f->sleep_us);
out:
        __atomic_store_n(&f->busy[w], 0, __ATOMIC_SEQ_CST);
        return ret;
}

static int fk_worker_end(void *ctx, const struct stf_job_info *job, unsigned w, char *msg,
                         size_t cap)
{
        struct fake *f = ctx;

        __atomic_add_fetch(&f->worker_ends, 1, __ATOMIC_SEQ_CST);
        if (f->worker_end_err && w == 0) {
                snprintf(msg, cap, "fake: flush failed");
                return f->worker_end_err;
        }
        return 0;
}

static int fk_end(void *ctx, const struct stf_job_info *job, int status, char *msg, size_t cap)
{
        struct fake *f = ctx;

        __atomic_add_fetch(&f->ends, 1, __ATOMIC_SEQ_CST);
        f->end_status = status;
        if (f->end_err)
                snprintf(msg, cap, "fake: end failed");
        return f->end_err;
}

static const struct stf_backend fake_backend = {
    .begin = fk_begin,
    .worker_begin = fk_worker_begin,
    .chunk = fk_chunk,
    .worker_end = fk_worker_end,
    .end = fk_end,
};

/* A backend with only chunk(): the optional callbacks may be NULL. */
static const struct stf_backend fake_chunk_only = {.chunk = fk_chunk};

static void fake_init(struct fake *f, const struct stf_plan *p, unsigned threads)
{
        memset(f, 0, sizeof(*f));
        f->total = p->total;
        f->dst = calloc(p->total + 1, 1);
        f->written = calloc(p->total + 1, 1);
        ck_assert(f->dst && f->written);
        f->threads = threads ? threads : STF_THREADS_DEFAULT;
        if (f->threads > STF_THREADS_MAX)
                f->threads = STF_THREADS_MAX;
        f->fail_at = -1;
}

static void fake_free(struct fake *f)
{
        free(f->dst);
        free(f->written);
}

static void assert_no_faults(const struct fake *f)
{
        ck_assert_int_eq(f->twice, 0);
        ck_assert_int_eq(f->oob, 0);
        ck_assert_int_eq(f->bad_src, 0);
        ck_assert_int_eq(f->bad_worker, 0);
        ck_assert_int_eq(f->concurrent, 0);
}

/* Bit @i of @p, LSB first (any fixed order will do: slices are whole bytes). */
static int getbit(const uint8_t *p, uint64_t i)
{
        return (p[i / 8] >> (i % 8)) & 1;
}

static void setbit(uint8_t *p, uint64_t i, int v)
{
        if (v)
                p[i / 8] |= (uint8_t)(1u << (i % 8));
}

/*
 * What the destination of tensor @t must hold under @s, element by element:
 * every element whose index along s->dim falls in this rank's part, in
 * row-major order. Returns a calloc'ed buffer and its size.
 */
static uint8_t *expected(const struct stf_tensor *t, const struct stf_slice *s, uint64_t *len)
{
        const uint8_t *src = M->shards[t->shard].map + t->begin;
        unsigned bits = stf_dtype_info(t->dtype)->bits;
        bool whole = !s || s->dim < 0 || (uint32_t)s->dim >= t->rank || t->size == 0;
        uint64_t part = whole ? 0 : t->shape[s->dim] / s->world, kept = 0;
        uint8_t *out = calloc(t->size + 1, 1);

        ck_assert_ptr_nonnull(out);
        for (uint64_t e = 0; e < t->nelem && t->size; e++) {
                uint64_t rest = e, idx = 0;

                if (!whole) {
                        /* index of element e along dim */
                        for (uint32_t k = t->rank; k-- > 0;) {
                                if (k == (uint32_t)s->dim)
                                        idx = rest % t->shape[k];
                                rest /= t->shape[k];
                        }
                        if (idx / part != s->rank)
                                continue;
                }
                for (unsigned b = 0; b < bits; b++)
                        setbit(out, kept * bits + b, getbit(src, e * bits + b));
                kept++;
        }
        ck_assert_uint_eq(kept * bits % 8, 0);
        *len = kept * bits / 8;
        return out;
}

static void assert_destination(const struct fake *f, const struct stf_plan *p,
                               const struct stf_slice *s)
{
        uint64_t written = 0, want = 0;

        for (uint64_t i = 0; i < f->total; i++)
                written += f->written[i];
        for (size_t i = 0; i < p->ntensors; i++) {
                const struct stf_tensor *t = &M->tensors[p->tensors[i]];
                uint64_t len;
                uint8_t *exp = expected(t, s, &len);

                ck_assert_msg(len == p->tensor_size[i], "%s: size %" PRIu64 ", want %" PRIu64,
                              t->name, p->tensor_size[i], len);
                for (uint64_t b = 0; b < len; b++)
                        ck_assert_msg(f->written[p->tensor_dst[i] + b],
                                      "%s: byte %" PRIu64 " not written", t->name, b);
                ck_assert_msg(!memcmp(f->dst + p->tensor_dst[i], exp, len),
                              "%s: destination differs", t->name);
                want += len;
                free(exp);
        }
        ck_assert_uint_eq(written, want); /* nothing outside the tensors */
}

/* Start a host job of @p (owned) with id @id. */
static int job_start(struct stf_plan *p, const struct stf_backend *be, void *ctx, unsigned threads,
                     const char *sel, uint64_t id, struct stf_job **job)
{
        struct stf_job_params params = {
            .id = id, .target = STF_TARGET_HOST, .threads = threads, .selection = sel};

        return stf_job_start(M, p, be, ctx, &params, job);
}

/* The job's progress as the status ioctl reports it. */
static void stf_job_status(struct stf_job *job, struct stfs_status_req *st)
{
        struct stf_job_progress p;

        stf_job_progress(job, &p);
        stf_wire_status(&p, st);
}

static unsigned job_threads(struct stf_job *job)
{
        struct stf_job_progress p;

        stf_job_progress(job, &p);
        return p.threads;
}

static struct stf_job *run_job(struct fake *f, struct stf_plan *p, const struct stf_backend *be,
                               unsigned threads)
{
        struct stf_job *job = NULL;
        struct stfs_status_req st;

        ck_assert_int_eq(job_start(p, be, f, threads, "sel", 7, &job), 0);
        ck_assert_ptr_nonnull(job);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.job, 7);
        stf_job_wait(job);
        return job;
}

static void engine_case(const char *text, const struct stf_slice *s, uint64_t chunk,
                        unsigned threads)
{
        uint32_t *v = NULL;
        size_t n = 0;
        struct stf_plan *p = NULL;
        struct stf_job *job;
        struct stfs_status_req st;
        struct fake f;
        char msg[256] = "";

        ck_assert_int_eq(stf_select(M, T, text, strlen(text) + 1, &v, &n), 0);
        ck_assert_msg(stf_plan_build(M, v, n, s, chunk, &p, msg, sizeof(msg)) == 0, "%s", msg);
        free(v);
        fake_init(&f, p, threads);
        job = run_job(&f, p, &fake_backend, threads);
        stf_job_status(job, &st);
        ck_assert_msg(st.state == STFS_JOB_DONE, "state %u: %s", st.state, st.message);
        ck_assert_int_eq(st.error, 0);
        ck_assert_str_eq(st.message, "");
        ck_assert_uint_eq(st.version, STFS_IOC_VERSION);
        ck_assert_uint_eq(st.job, 7);
        ck_assert_uint_eq(st.tensors, n);
        ck_assert_msg(st.bytes_done == st.bytes_total,
                      "a done job: %" PRIu64 " of %" PRIu64 " bytes", st.bytes_done,
                      st.bytes_total);
        ck_assert_uint_eq(f.chunks, (long)p->nchunks);
        ck_assert_int_eq(f.begins, 1);
        ck_assert_int_eq(f.ends, 1);
        ck_assert_int_eq(f.end_status, 0);
        ck_assert_int_eq(f.worker_begins, f.worker_ends);
        ck_assert_int_le(f.worker_begins, (int)f.threads);
        assert_no_faults(&f);
        assert_destination(&f, p, s);
        stf_job_free(job); /* frees the plan */
        fake_free(&f);
}

static const unsigned thread_counts[] = {1, 2, 8};
static const uint64_t chunk_sizes[] = {1, 7, 64, 1000, 0};

START_TEST(engine_whole_tensors)
{
        for (size_t c = 0; c < sizeof(chunk_sizes) / sizeof(chunk_sizes[0]); c++)
                engine_case("", NULL, chunk_sizes[c], thread_counts[_i]);
}
END_TEST

START_TEST(engine_sliced_tensors)
{
        static const struct stf_slice slices[] = {
            {0, 0, 2}, {0, 1, 2}, {1, 0, 2}, {1, 1, 2}, {2, 2, 3}, {-1, 0, 0},
        };

        for (size_t s = 0; s < sizeof(slices) / sizeof(slices[0]); s++)
                for (size_t c = 0; c < sizeof(chunk_sizes) / sizeof(chunk_sizes[0]); c++)
                        engine_case(slices[s].world == 3 ? "model.layers.0.conv model.layers.0.norm"
                                                         : "",
                                    &slices[s], chunk_sizes[c], thread_counts[_i]);
}
END_TEST

START_TEST(engine_optional_callbacks_and_defaults)
{
        static const char *const names[] = {"big.weight", "lm_head.weight"};
        struct stf_plan *p = plan_of(names, 2, NULL, 16);
        struct stfs_status_req st;
        struct stf_job *job;
        struct fake f;

        /* threads 0: the default; only chunk() given */
        fake_init(&f, p, 0);
        job = run_job(&f, p, &fake_chunk_only, 0);
        ck_assert_uint_eq(job_threads(job), STF_THREADS_DEFAULT);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_DONE);
        assert_no_faults(&f);
        assert_destination(&f, p, NULL);
        stf_job_free(job);
        fake_free(&f);
        /* more than the maximum: capped */
        p = plan_of(names, 2, NULL, 16);
        fake_init(&f, p, 1000);
        job = run_job(&f, p, &fake_backend, 1000);
        ck_assert_uint_eq(job_threads(job), STF_THREADS_MAX);
        assert_no_faults(&f);
        stf_job_free(job);
        fake_free(&f);
}
END_TEST

START_TEST(engine_empty_plan)
{
        struct stf_plan *p = NULL;
        struct stfs_status_req st;
        struct stf_job *job;
        struct fake f;

        ck_assert_int_eq(stf_plan_build(M, NULL, 0, NULL, 0, &p, (char[64]){0}, 64), 0);
        fake_init(&f, p, 3);
        job = run_job(&f, p, &fake_backend, 3);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_DONE);
        ck_assert_uint_eq(st.tensors, 0);
        ck_assert_uint_eq(st.bytes_total, 0);
        ck_assert_uint_eq(st.bytes_done, 0);
        ck_assert_int_eq(f.chunks, 0);
        ck_assert_int_eq(f.ends, 1);
        stf_job_free(job);
        fake_free(&f);
}
END_TEST

START_TEST(engine_cancel_midway)
{
        static const char *const names[] = {"big.weight"};
        struct stf_plan *p = plan_of(names, 1, NULL, 1); /* 2560 one-byte chunks */
        unsigned threads = _i ? 4 : 1;
        struct stfs_status_req st, st2;
        struct stf_job *job = NULL;
        uint64_t written = 0;
        struct fake f;

        fake_init(&f, p, threads);
        f.sleep_us = 2000; /* ~5 s of work for one thread */
        ck_assert_int_eq(job_start(p, &fake_backend, &f, threads, "big", 3, &job), 0);
        while (__atomic_load_n(&f.chunks, __ATOMIC_SEQ_CST) < 5)
                usleep(1000);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_RUNNING);
        ck_assert_uint_lt(st.bytes_done, st.bytes_total);
        stf_job_cancel(job);
        stf_job_wait(job);
        stf_job_status(job, &st);
        ck_assert_msg(st.state == STFS_JOB_CANCELLED, "state %u", st.state);
        ck_assert_int_eq(st.error, 0);
        ck_assert_uint_gt(st.bytes_done, 0);
        ck_assert_uint_lt(st.bytes_done, st.bytes_total);
        ck_assert_uint_eq(st.bytes_total, 2560);
        ck_assert_uint_lt(f.chunks, 2560 / 2);
        for (uint64_t i = 0; i < f.total; i++)
                written += f.written[i];
        ck_assert_uint_eq(written, st.bytes_done); /* progress = chunks finished */
        ck_assert_int_eq(f.worker_begins, f.worker_ends);
        ck_assert_int_eq(f.ends, 1);
        assert_no_faults(&f);
        /* the clock stopped */
        usleep(20000);
        stf_job_status(job, &st2);
        ck_assert_uint_eq(st2.elapsed_ns, st.elapsed_ns);
        /* cancel again, wait again: nothing changes */
        stf_job_cancel(job);
        stf_job_wait(job);
        stf_job_status(job, &st2);
        ck_assert_uint_eq(st2.state, STFS_JOB_CANCELLED);
        ck_assert_uint_eq(st2.bytes_done, st.bytes_done);
        stf_job_free(job);
        fake_free(&f);
}
END_TEST

START_TEST(engine_cancel_after_done)
{
        static const char *const names[] = {"lm_head.weight"};
        struct stf_plan *p = plan_of(names, 1, NULL, 0);
        struct stfs_status_req st;
        struct stf_job *job;
        struct fake f;

        fake_init(&f, p, 2);
        job = run_job(&f, p, &fake_backend, 2);
        stf_job_cancel(job);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_DONE);
        ck_assert_uint_eq(st.bytes_done, 128);
        stf_job_free(job);
        fake_free(&f);
}
END_TEST

/* Run a failing job over big.weight in 1-byte chunks; returns its status. */
static void failing(struct fake *f, void (*arm)(struct fake *), unsigned threads,
                    struct stfs_status_req *st)
{
        static const char *const names[] = {"big.weight"};
        struct stf_plan *p = plan_of(names, 1, NULL, 1);
        struct stf_job *job;

        fake_init(f, p, threads);
        arm(f);
        job = run_job(f, p, &fake_backend, threads);
        stf_job_status(job, st);
        ck_assert_int_eq(f->ends, 1);
        ck_assert_int_eq(f->worker_begins, f->worker_ends);
        assert_no_faults(f);
        stf_job_free(job);
}

static void arm_chunk_msg(struct fake *f)
{
        f->fail_at = 5;
        f->fail_err = -EIO;
        f->fail_msg = "fake: boom at chunk 5";
}

static void arm_chunk_nomsg(struct fake *f)
{
        f->fail_at = 0;
        f->fail_err = -ENOSPC;
}

static void arm_begin(struct fake *f)
{
        f->begin_err = -ENODEV;
}

static void arm_worker_begin(struct fake *f)
{
        f->worker_begin_err = -ENOMEM;
        f->sleep_us = 100;
}

static void arm_worker_end(struct fake *f)
{
        f->worker_end_err = -EIO;
}

static void arm_end(struct fake *f)
{
        f->end_err = -EXDEV;
}

START_TEST(engine_backend_errors)
{
        unsigned threads = _i ? 4 : 1;
        struct stfs_status_req st;
        struct fake f;

        failing(&f, arm_chunk_msg, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, EIO);
        ck_assert_str_eq(st.message, "fake: boom at chunk 5");
        ck_assert_uint_lt(st.bytes_done, st.bytes_total);
        ck_assert_int_eq(f.end_status, -EIO);
        ck_assert_uint_lt(f.chunks, 2560); /* the others stopped */
        fake_free(&f);

        failing(&f, arm_chunk_nomsg, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, ENOSPC);
        ck_assert_str_eq(st.message, strerror(ENOSPC));
        fake_free(&f);

        failing(&f, arm_begin, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, ENODEV);
        ck_assert_str_eq(st.message, "fake: begin refused");
        ck_assert_int_eq(f.chunks, 0);
        ck_assert_int_eq(f.worker_begins, 0);
        ck_assert_int_eq(f.end_status, -ENODEV);
        ck_assert_uint_eq(st.bytes_done, 0);
        fake_free(&f);

        failing(&f, arm_worker_begin, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, ENOMEM);
        ck_assert_str_eq(st.message, "fake: no staging for worker 0");
        fake_free(&f);

        failing(&f, arm_worker_end, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, EIO);
        ck_assert_str_eq(st.message, "fake: flush failed");
        fake_free(&f);

        failing(&f, arm_end, threads, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_FAILED);
        ck_assert_int_eq(st.error, EXDEV);
        ck_assert_str_eq(st.message, "fake: end failed");
        ck_assert_uint_eq(st.bytes_done, st.bytes_total); /* every chunk went, then end failed */
        fake_free(&f);
}
END_TEST

START_TEST(engine_free_running_job)
{
        static const char *const names[] = {"big.weight"};
        struct stf_plan *p = plan_of(names, 1, NULL, 1);
        struct stf_job *job;
        struct fake f;

        fake_init(&f, p, 2);
        f.sleep_us = 1000;
        ck_assert_int_eq(job_start(p, &fake_backend, &f, 2, NULL, 1, &job), 0);
        ck_assert_str_eq(stf_job_selection(job), "");
        usleep(5000);
        stf_job_free(job); /* cancels and waits */
        ck_assert_int_eq(f.ends, 1);
        ck_assert_int_eq(f.worker_begins, f.worker_ends);
        stf_job_free(NULL);
        fake_free(&f);
}
END_TEST

/* A backend whose chunks wait until released, as on a stalled source. */
struct stuck {
        int release, in_chunk, ends, end_status, on_ends, on_end_status;
};

static int stuck_chunk(void *ctx, const struct stf_job_info *job, unsigned w,
                       const struct stf_chunk *c, char *msg, size_t cap)
{
        struct stuck *s = ctx;

        __atomic_add_fetch(&s->in_chunk, 1, __ATOMIC_SEQ_CST);
        while (!__atomic_load_n(&s->release, __ATOMIC_SEQ_CST))
                usleep(1000);
        return 0;
}

static int stuck_end(void *ctx, const struct stf_job_info *job, int status, char *msg, size_t cap)
{
        struct stuck *s = ctx;

        s->end_status = status;
        __atomic_add_fetch(&s->ends, 1, __ATOMIC_SEQ_CST);
        return 0;
}

static void stuck_on_end(void *arg, struct stf_job *job, int status)
{
        struct stuck *s = arg;

        s->on_end_status = status;
        __atomic_add_fetch(&s->on_ends, 1, __ATOMIC_SEQ_CST);
}

static const struct stf_backend stuck_backend = {.chunk = stuck_chunk, .end = stuck_end};

/*
 * Cancel a job whose two workers wait in a chunk: it reads as cancelled
 * STF_JOB_CANCEL_GRACE_MS after the cancel (stf_job_wait returns), without
 * its end() or on_end; once the chunks come back it finishes, cancelled
 * still, its end() and on_end told -ECANCELED, and it can be freed.
 */
START_TEST(engine_cancel_gives_up_on_stuck_chunks)
{
        static const char *const names[] = {"big.weight"};
        struct stf_plan *p = plan_of(names, 1, NULL, 1);
        struct stuck s = {0};
        struct stf_job_params params = {.id = 3,
                                        .target = STF_TARGET_HOST,
                                        .threads = 2,
                                        .on_end = stuck_on_end,
                                        .on_end_arg = &s};
        struct stfs_status_req st;
        struct stf_job *job;
        uint64_t t0, waited;

        ck_assert_int_eq(stf_job_start(M, p, &stuck_backend, &s, &params, &job), 0);
        while (__atomic_load_n(&s.in_chunk, __ATOMIC_SEQ_CST) < 2)
                usleep(1000);
        t0 = stf_now_ns();
        stf_job_cancel(job);
        ck_assert(!stf_job_ended(job));
        stf_job_wait(job);
        waited = (stf_now_ns() - t0) / 1000000u;
        ck_assert_uint_ge(waited, STF_JOB_CANCEL_GRACE_MS);
        ck_assert_uint_lt(waited, STF_JOB_CANCEL_GRACE_MS + 5000);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_CANCELLED);
        ck_assert(stf_job_ended(job));
        ck_assert(!stf_job_finished(job));
        ck_assert_int_eq(__atomic_load_n(&s.ends, __ATOMIC_SEQ_CST), 0);
        ck_assert_int_eq(__atomic_load_n(&s.on_ends, __ATOMIC_SEQ_CST), 0);
        __atomic_store_n(&s.release, 1, __ATOMIC_SEQ_CST);
        for (int i = 0; i < 5000 && !stf_job_finished(job); i++)
                usleep(1000);
        ck_assert(stf_job_finished(job));
        ck_assert_int_eq(s.ends, 1);
        ck_assert_int_eq(s.end_status, -ECANCELED);
        ck_assert_int_eq(s.on_ends, 1);
        ck_assert_int_eq(s.on_end_status, -ECANCELED);
        stf_job_status(job, &st);
        ck_assert_uint_eq(st.state, STFS_JOB_CANCELLED);
        ck_assert_uint_eq(st.bytes_done, 0); /* as when it was given up on */
        stf_job_free(job);
}
END_TEST

/* ------------------------------------------------------------------ main */

static Suite *suite(void)
{
        Suite *s = suite_create("prefetch");
        TCase *tc;

        tc = tcase_create("glob");
        tcase_add_test(tc, glob_literals_and_wildcards);
        tcase_add_test(tc, glob_name_vs_path);
        tcase_add_test(tc, glob_hostile_pattern_is_linear);
        tcase_add_test(tc, glob_matches_reference);
        tcase_add_test(tc, glob_long_pattern_long_names);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);

        tc = tcase_create("select");
        tcase_add_unchecked_fixture(tc, setup, teardown);
        tcase_add_test(tc, select_plain_names);
        tcase_add_test(tc, select_name_prefix_at_dots);
        tcase_add_test(tc, select_name_globs);
        tcase_add_test(tc, select_path_globs_and_dirs);
        tcase_add_test(tc, select_dir_with_slashes);
        tcase_add_test(tc, select_several_patterns);
        tcase_add_test(tc, select_empty_is_all);
        tcase_add_test(tc, select_errors);
        tcase_add_test(tc, select_sorted_by_shard_then_offset);
        suite_add_tcase(s, tc);

        tc = tcase_create("plan");
        tcase_add_unchecked_fixture(tc, setup, teardown);
        tcase_add_test(tc, plan_chunks_at_exact_boundaries);
        tcase_add_test(tc, plan_many_tensors_layout);
        tcase_add_test(tc, plan_zero_size_tensor);
        tcase_add_test(tc, plan_slice_dim0_contiguous);
        tcase_add_test(tc, plan_slice_dim1_strided);
        tcase_add_test(tc, plan_slice_replicated_low_rank);
        tcase_add_test(tc, plan_slice_errors);
        suite_add_tcase(s, tc);

        tc = tcase_create("engine");
        tcase_add_unchecked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_loop_test(tc, engine_whole_tensors, 0, 3);
        tcase_add_loop_test(tc, engine_sliced_tensors, 0, 3);
        tcase_add_test(tc, engine_optional_callbacks_and_defaults);
        tcase_add_test(tc, engine_empty_plan);
        tcase_add_loop_test(tc, engine_cancel_midway, 0, 2);
        tcase_add_test(tc, engine_cancel_after_done);
        tcase_add_loop_test(tc, engine_backend_errors, 0, 2);
        tcase_add_test(tc, engine_free_running_job);
        tcase_add_test(tc, engine_cancel_gives_up_on_stuck_chunks);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(suite());
}
