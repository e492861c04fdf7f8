/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/model: sources (file, index, directory, diffusers-style
 * sub-directories), the index <-> shard contract, and stf_index_parse.
 * Models are written into a fresh mkdtemp directory per test; every tensor
 * is U8 data filled with a pattern seeded by its name, so the bytes at
 * map + begin can be checked.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "index.h"
#include "model.h"
#include "tree.h"
#include "util.h"

struct ts {
        const char *name;
        size_t size;
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint8_t seed_of(const char *name)
{
        uint8_t s = 17;

        for (; *name; name++)
                s = (uint8_t)(s * 31 + (uint8_t)*name);
        return s;
}

/* Each tensor's data: the pattern seeded with a hash of its name. */
static void fill_by_name(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        const struct ts *t = arg;

        ut_fill(p, len, seed_of(t[i].name));
}

/*
 * Write a safetensors file of U8 tensors, the header padded to 8 bytes as
 * writers do; @meta: JSON object text or NULL.
 */
static void write_st(const char *path, const struct ts *t, size_t n, const char *meta)
{
        struct stw_tensor st[16];

        ck_assert_uint_le(n, N(st));
        for (size_t i = 0; i < n; i++)
                st[i] = (struct stw_tensor){.name = t[i].name, .rank = 1, .shape = {t[i].size}};
        ut_write_st(path, &(struct stw_file){.t = st,
                                             .n = n,
                                             .meta = meta,
                                             .pad = true,
                                             .fill = fill_by_name,
                                             .arg = (void *)t});
}

/* An index: @map is n pairs name, shard; @meta: JSON text of "metadata" or NULL. */
static void write_index(const char *path, const char *const *map, size_t n, const char *meta)
{
        ck_assert_int_eq(stw_write_index(path, map, n, meta), 0);
}

static void write_text(const char *path, const char *text)
{
        ut_write_file(path, text, strlen(text));
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
        struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};

        ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static char *mkdir_in(const char *dir, const char *name)
{
        char *p = ut_printf("%s/%s", dir, name);

        ck_assert_int_eq(mkdir(p, 0755), 0);
        return p;
}

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static struct stf_model *open_ok(const char *source)
{
        struct stf_model *m = NULL;
        struct stf_diag d = {{0}};
        int ret = stf_model_open(source, &m, &d);

        ck_assert_msg(ret == 0, "open %s: %d: %s", source, ret, d.msg);
        ck_assert_ptr_nonnull(m);
        return m;
}

/* Open must fail with @want; diag contains each fragment; nothing stays open. */
static void open_fails(const char *source, int want, const char *f1, const char *f2, const char *f3)
{
        struct stf_model *m = (struct stf_model *)(uintptr_t)1;
        struct stf_diag d;
        int fds = count_fds(), ret;

        memset(&d, 0, sizeof(d));
        ret = stf_model_open(source, &m, &d);
        ck_assert_msg(ret == want, "open %s: got %d, want %d (%s)", source, ret, want, d.msg);
        ck_assert_ptr_null(m);
        ck_assert_msg(d.msg[0], "no diagnostic");
        if (f1)
                ut_assert_has(d.msg, f1);
        if (f2)
                ut_assert_has(d.msg, f2);
        if (f3)
                ut_assert_has(d.msg, f3);
        ck_assert_int_eq(count_fds(), fds);
        m = (struct stf_model *)(uintptr_t)1;
        ck_assert_int_eq(stf_model_open(source, &m, NULL), want);
        ck_assert_ptr_null(m);
}

static const struct stf_tensor *find(const struct stf_model *m, uint32_t comp, const char *name)
{
        for (size_t i = 0; i < m->ntensors; i++)
                if (m->tensors[i].comp == comp && !strcmp(m->tensors[i].name, name))
                        return &m->tensors[i];
        ck_abort_msg("tensor '%s' not in component %u", name, comp);
        return NULL;
}

static uint32_t comp_index(const struct stf_model *m, const char *name)
{
        for (uint32_t i = 0; i < m->ncomps; i++)
                if (!strcmp(m->comps[i].name, name))
                        return i;
        ck_abort_msg("no component '%s'", name);
        return 0;
}

/* The invariants any open model holds; the data of every tensor is its pattern. */
static void check_model(const struct stf_model *m)
{
        uint64_t total = 0;
        size_t seen = 0;

        ck_assert_uint_ge(m->ncomps, 1);
        ck_assert_uint_ge(m->nshards, 1);
        for (uint32_t s = 0; s < m->nshards; s++) {
                const struct stf_shard *sh = &m->shards[s];
                struct stat st;

                ck_assert_int_ge(sh->fd, 0);
                ck_assert_ptr_nonnull(sh->map);
                ck_assert_ptr_nonnull(sh->hdr);
                ck_assert_int_eq(fstat(sh->fd, &st), 0);
                ck_assert_uint_eq(sh->size, (uint64_t)st.st_size);
                ck_assert_int_eq(sh->mtime.tv_sec, st.st_mtim.tv_sec);
                ck_assert_int_eq(sh->mtime.tv_nsec, st.st_mtim.tv_nsec);
                ck_assert_ptr_eq(sh->name,
                                 strrchr(sh->path, '/') ? strrchr(sh->path, '/') + 1 : sh->path);
                ck_assert_uint_eq(sh->hdr->file_size, sh->size);
        }
        for (uint32_t c = 0; c < m->ncomps; c++) {
                const struct stf_component *comp = &m->comps[c];

                ck_assert_ptr_nonnull(comp->name);
                ck_assert_ptr_nonnull(comp->source);
                ck_assert_uint_eq(comp->first_tensor, seen);
                seen += comp->ntensors;
                ck_assert_uint_le(comp->first_shard + comp->nshards, m->nshards);
                if (m->ncomps == 1)
                        ck_assert_str_eq(comp->name, "");
                else
                        ck_assert_str_ne(comp->name, "");
                for (uint32_t i = comp->first_tensor; i < comp->first_tensor + comp->ntensors; i++)
                        ck_assert_uint_eq(m->tensors[i].comp, c);
        }
        ck_assert_uint_eq(seen, m->ntensors);
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *t = &m->tensors[i];
                const struct stf_shard *sh;
                const struct stf_component *comp;

                ck_assert_uint_lt(t->shard, m->nshards);
                ck_assert_uint_lt(t->comp, m->ncomps);
                sh = &m->shards[t->shard];
                comp = &m->comps[t->comp];
                ck_assert_uint_ge(t->shard, comp->first_shard);
                ck_assert_uint_lt(t->shard, comp->first_shard + comp->nshards);
                ck_assert_uint_le(t->begin + t->size, sh->size);
                ck_assert_uint_eq(t->dtype, STF_DT_U8);
                for (size_t k = 0; k < t->size; k++)
                        ck_assert_msg(sh->map[t->begin + k] == ut_pat(seed_of(t->name), k),
                                      "tensor '%s' byte %zu", t->name, k);
                total += t->size;
                /* By component, then by name (bytewise). */
                if (i > 0 && m->tensors[i - 1].comp == t->comp)
                        ck_assert_msg(strcmp(m->tensors[i - 1].name, t->name) < 0,
                                      "'%s' before '%s'", m->tensors[i - 1].name, t->name);
                if (i > 0)
                        ck_assert_uint_le(m->tensors[i - 1].comp, t->comp);
        }
        ck_assert_uint_eq(m->total_bytes, total);
}

static void expect_tree_path(const struct stf_tree *t, const struct stf_model *m, uint32_t comp,
                             const char *name, const char *want)
{
        char path[4096];
        size_t i = (size_t)(find(m, comp, name) - m->tensors);

        ck_assert_int_ge(stf_tree_path(t, stf_tree_tensor_ino(t, i), path, sizeof(path)), 0);
        ck_assert_str_eq(path, want);
}

/* ---- sources --------------------------------------------------------- */

START_TEST(test_single_file)
{
        static const struct ts ts[] = {{"b.w", 10}, {"a.w", 5}, {"c", 0}, {"emb", 100}};
        char *dir = ut_mkdtemp(), *path = ut_printf("%s/model.safetensors", dir);
        struct stf_model *m;
        struct stf_tree *t;
        struct stf_diag d;

        write_st(path, ts, N(ts), "{\"format\":\"pt\"}");
        set_mtime(path, 1500000000, 123456789);
        m = open_ok(path);
        check_model(m);
        ck_assert_uint_eq(m->nshards, 1);
        ck_assert_uint_eq(m->ncomps, 1);
        ck_assert_str_eq(m->comps[0].name, "");
        ck_assert_str_eq(m->comps[0].source, path);
        ck_assert_ptr_null(m->comps[0].index_meta);
        ck_assert_uint_eq(m->comps[0].first_shard, 0);
        ck_assert_uint_eq(m->comps[0].nshards, 1);
        ck_assert_uint_eq(m->comps[0].ntensors, 4);
        ck_assert_uint_eq(m->ntensors, 4);
        ck_assert_uint_eq(m->total_bytes, 115);
        ck_assert_str_eq(m->tensors[0].name, "a.w");
        ck_assert_str_eq(m->tensors[1].name, "b.w");
        ck_assert_str_eq(m->tensors[2].name, "c");
        ck_assert_str_eq(m->tensors[3].name, "emb");
        ck_assert_str_eq(m->shards[0].path, path);
        ck_assert_str_eq(m->shards[0].name, "model.safetensors");
        ck_assert_int_eq(m->shards[0].mtime.tv_sec, 1500000000);
        ck_assert_int_eq(m->shards[0].mtime.tv_nsec, 123456789);
        ck_assert_str_eq(json_string_value(json_object_get(m->shards[0].hdr->metadata, "format")),
                         "pt");
        ck_assert_uint_eq(find(m, 0, "emb")->size, 100);
        ck_assert_uint_eq(find(m, 0, "c")->size, 0);

        ck_assert_int_eq(stf_tree_build_model(m, 0, &t, &d), 0);
        expect_tree_path(t, m, 0, "a.w", "a/w");
        expect_tree_path(t, m, 0, "emb", "emb");
        stf_tree_free(t);
        stf_model_close(m);
        free(path);
        ut_rmtree(dir);
}
END_TEST

static const char *const shard_names[] = {"model-00001-of-00003.safetensors",
                                          "model-00002-of-00003.safetensors",
                                          "model-00003-of-00003.safetensors"};

/* Three shards and their index in @dir; returns the index path. */
static char *make_sharded(const char *dir, const char *index_name)
{
        static const struct ts s1[] = {{"model.embed.weight", 64}, {"model.layers.0.w", 16}};
        static const struct ts s2[] = {
            {"model.layers.1.w", 16}, {"model.layers.10.w", 16}, {"model.layers.2.w", 16}};
        static const struct ts s3[] = {{"lm_head.weight", 64}, {"model.norm", 8}};
        static const char *const map[] = {
            "model.layers.10.w",  shard_names[1], "lm_head.weight",   shard_names[2],
            "model.embed.weight", shard_names[0], "model.layers.1.w", shard_names[1],
            "model.norm",         shard_names[2], "model.layers.0.w", shard_names[0],
            "model.layers.2.w",   shard_names[1],
        };
        char *p;

        for (int i = 0; i < 3; i++) {
                const struct ts *ts = i == 0 ? s1 : i == 1 ? s2 : s3;
                size_t n = i == 0 ? N(s1) : i == 1 ? N(s2) : N(s3);

                p = ut_printf("%s/%s", dir, shard_names[i]);
                write_st(p, ts, n, NULL);
                set_mtime(p, 1600000000 + i, 1000 * i);
                free(p);
        }
        p = ut_printf("%s/%s", dir, index_name);
        write_index(p, map, N(map) / 2, "{\"total_size\":200}");
        return p;
}

static void check_sharded(const struct stf_model *m, const char *index_path)
{
        static const struct {
                const char *name;
                int shard;
        } want[] = {{"lm_head.weight", 2},   {"model.embed.weight", 0}, {"model.layers.0.w", 0},
                    {"model.layers.1.w", 1}, {"model.layers.10.w", 1},  {"model.layers.2.w", 1},
                    {"model.norm", 2}};

        check_model(m);
        ck_assert_uint_eq(m->nshards, 3);
        ck_assert_uint_eq(m->ncomps, 1);
        ck_assert_uint_eq(m->ntensors, 7);
        ck_assert_uint_eq(m->total_bytes, 200);
        ck_assert_str_eq(m->comps[0].source, index_path);
        ck_assert_ptr_nonnull(m->comps[0].index_meta);
        ck_assert_int_eq(json_integer_value(json_object_get(m->comps[0].index_meta, "total_size")),
                         200);
        for (int i = 0; i < 3; i++) {
                ck_assert_str_eq(m->shards[i].name, shard_names[i]);
                ck_assert_int_eq(m->shards[i].mtime.tv_sec, 1600000000 + i);
                ck_assert_int_eq(m->shards[i].mtime.tv_nsec, 1000 * i);
        }
        for (size_t i = 0; i < N(want); i++) {
                ck_assert_str_eq(m->tensors[i].name, want[i].name);
                ck_assert_str_eq(m->shards[m->tensors[i].shard].name, shard_names[want[i].shard]);
        }
}

START_TEST(test_index_three_shards)
{
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "model.safetensors.index.json");
        struct stf_model *m = open_ok(index);
        struct stf_tree *t;

        check_sharded(m, index);
        ck_assert_int_eq(stf_tree_build_model(m, 0, &t, NULL), 0);
        expect_tree_path(t, m, 0, "model.layers.10.w", "model/layers/10/w");
        expect_tree_path(t, m, 0, "lm_head.weight", "lm_head/weight");
        stf_tree_free(t);
        stf_model_close(m);
        free(index);
        ut_rmtree(dir);
}
END_TEST

/* An index is recognised by its content's role, whatever it is called. */
START_TEST(test_index_other_name)
{
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "weights.index.json");
        struct stf_model *m = open_ok(index);

        check_sharded(m, index);
        stf_model_close(m);
        free(index);
        ut_rmtree(dir);
}
END_TEST

/* A relative index path: shards resolve against the index's directory. */
START_TEST(test_index_relative_path)
{
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "model.safetensors.index.json");
        char cwd[4096];
        struct stf_model *m;

        ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
        ck_assert_int_eq(chdir(dir), 0);
        m = open_ok("model.safetensors.index.json");
        check_model(m);
        ck_assert_uint_eq(m->nshards, 3);
        stf_model_close(m);
        ck_assert_int_eq(chdir(cwd), 0);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_dir_single_file)
{
        static const struct ts ts[] = {{"x", 3}, {"y.z", 4}};
        char *dir = ut_mkdtemp(), *path = ut_printf("%s/anything.safetensors", dir);
        struct stf_model *m;

        write_st(path, ts, N(ts), NULL);
        {
                char *readme = ut_printf("%s/README.md", dir);

                write_text(readme, "not a model\n");
                free(readme);
        }
        m = open_ok(dir);
        check_model(m);
        ck_assert_uint_eq(m->ncomps, 1);
        ck_assert_str_eq(m->comps[0].name, "");
        ck_assert_uint_eq(m->nshards, 1);
        ck_assert_str_eq(m->shards[0].name, "anything.safetensors");
        ck_assert_uint_eq(m->ntensors, 2);
        ck_assert_uint_eq(m->total_bytes, 7);
        stf_model_close(m);
        free(path);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_dir_index)
{
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "model.safetensors.index.json");
        struct stf_model *m = open_ok(dir);

        /* The listed shards are not sets of their own. */
        ck_assert_uint_eq(m->ncomps, 1);
        ck_assert_str_eq(m->comps[0].name, "");
        ck_assert_ptr_nonnull(strstr(m->comps[0].source, "model.safetensors.index.json"));
        check_sharded(m, m->comps[0].source);
        stf_model_close(m);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_dir_subdirs)
{
        static const struct ts unet[] = {{"down.0.w", 12}, {"up.0.w", 6}, {"mid", 2}};
        static const struct ts te[] = {{"embed", 9}, {"down.0.w", 1}};
        char *dir = ut_mkdtemp(), *u = mkdir_in(dir, "unet"), *e = mkdir_in(dir, "text_encoder");
        char *p1 = ut_printf("%s/diffusion_pytorch_model.safetensors", u),
             *p2 = ut_printf("%s/model.safetensors", e);
        struct stf_model *m;
        struct stf_tree *t;
        uint32_t cu, ce;

        write_st(p1, unet, N(unet), NULL);
        write_st(p2, te, N(te), NULL);
        m = open_ok(dir);
        check_model(m);
        ck_assert_uint_eq(m->ncomps, 2);
        ck_assert_uint_eq(m->nshards, 2);
        ck_assert_uint_eq(m->ntensors, 5);
        ck_assert_uint_eq(m->total_bytes, 30);
        cu = comp_index(m, "unet");
        ce = comp_index(m, "text_encoder");
        ck_assert_uint_eq(m->comps[cu].ntensors, 3);
        ck_assert_uint_eq(m->comps[ce].ntensors, 2);
        ck_assert_str_eq(m->comps[cu].source, p1);
        ck_assert_str_eq(m->shards[find(m, cu, "mid")->shard].path, p1);
        ck_assert_str_eq(m->shards[find(m, ce, "embed")->shard].path, p2);
        /* The same name in two components is two tensors. */
        ck_assert_ptr_ne(find(m, cu, "down.0.w"), find(m, ce, "down.0.w"));
        ck_assert_uint_eq(find(m, cu, "down.0.w")->size, 12);
        ck_assert_uint_eq(find(m, ce, "down.0.w")->size, 1);

        ck_assert_int_eq(stf_tree_build_model(m, 0, &t, NULL), 0);
        expect_tree_path(t, m, cu, "down.0.w", "unet/down/0/w");
        expect_tree_path(t, m, ce, "down.0.w", "text_encoder/down/0/w");
        expect_tree_path(t, m, cu, "mid", "unet/mid");
        stf_tree_free(t);
        ck_assert_int_eq(stf_tree_build_model(m, STF_TREE_FLAT, &t, NULL), 0);
        expect_tree_path(t, m, cu, "down.0.w", "unet/down.0.w");
        stf_tree_free(t);
        stf_model_close(m);
        free(p1);
        free(p2);
        free(u);
        free(e);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_dir_subdir_index_and_two_sets)
{
        static const struct ts a[] = {{"w", 4}};
        static const struct ts b[] = {{"w", 5}};
        char *dir = ut_mkdtemp(), *u = mkdir_in(dir, "unet"), *v = mkdir_in(dir, "vae");
        char *index = make_sharded(u, "diffusion_pytorch_model.safetensors.index.json");
        char *pa = ut_printf("%s/a.safetensors", v), *pb = ut_printf("%s/b.safetensors", v);
        struct stf_model *m;
        struct stf_tree *t;
        uint32_t cu, ca, cb;

        write_st(pa, a, 1, NULL);
        write_st(pb, b, 1, NULL);
        m = open_ok(dir);
        check_model(m);
        ck_assert_uint_eq(m->ncomps, 3);
        ck_assert_uint_eq(m->nshards, 5);
        cu = comp_index(m, "unet");
        ca = comp_index(m, "vae/a");
        cb = comp_index(m, "vae/b");
        ck_assert_uint_eq(m->comps[cu].nshards, 3);
        ck_assert_uint_eq(m->comps[cu].ntensors, 7);
        ck_assert_str_eq(m->comps[cu].source, index);
        ck_assert_ptr_nonnull(m->comps[cu].index_meta);
        ck_assert_uint_eq(find(m, ca, "w")->size, 4);
        ck_assert_uint_eq(find(m, cb, "w")->size, 5);
        ck_assert_int_eq(stf_tree_build_model(m, 0, &t, NULL), 0);
        expect_tree_path(t, m, ca, "w", "vae/a/w");
        expect_tree_path(t, m, cb, "w", "vae/b/w");
        expect_tree_path(t, m, cu, "model.layers.2.w", "unet/model/layers/2/w");
        stf_tree_free(t);
        stf_model_close(m);
        free(index);
        free(pa);
        free(pb);
        free(u);
        free(v);
        ut_rmtree(dir);
}
END_TEST

/*
 * An index beside a .safetensors file it does not list (Mistral's
 * consolidated.safetensors beside the HF shards): by default the
 * conventional set alone, at the root; with all_sets two sets.
 */
START_TEST(test_dir_index_plus_unlisted)
{
        static const struct ts x[] = {{"extra.w", 6}};
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "model.safetensors.index.json");
        char *p = ut_printf("%s/extra.safetensors", dir);
        struct stf_diag d = {{0}};
        struct stf_model *m;
        uint32_t cm, cx;

        write_st(p, x, 1, NULL);
        m = open_ok(dir);
        ck_assert_uint_eq(m->ncomps, 1);
        ck_assert_str_eq(m->comps[0].name, "");
        ck_assert_str_eq(m->comps[0].whole, "model.safetensors");
        ck_assert_uint_eq(m->comps[0].ntensors, 7);
        stf_model_close(m);
        ck_assert_int_eq(
            stf_model_open_opts(dir, &(struct stf_model_opts){.all_sets = true}, &m, &d), 0);
        check_model(m);
        ck_assert_uint_eq(m->ncomps, 2);
        ck_assert_uint_eq(m->nshards, 4);
        cm = comp_index(m, "model");
        cx = comp_index(m, "extra");
        ck_assert_uint_eq(m->comps[cm].ntensors, 7);
        ck_assert_uint_eq(m->comps[cx].ntensors, 1);
        ck_assert_uint_eq(find(m, cx, "extra.w")->size, 6);
        stf_model_close(m);
        free(p);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_close_null)
{
        stf_model_close(NULL);
}
END_TEST

/* ---- source errors --------------------------------------------------- */

START_TEST(test_missing_source)
{
        char *dir = ut_mkdtemp(), *p = ut_printf("%s/nope.safetensors", dir);

        open_fails(p, -ENOENT, p, NULL, NULL);
        free(p);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_empty_dir)
{
        char *dir = ut_mkdtemp(), *sub;

        open_fails(dir, -EINVAL, dir, "no .safetensors", NULL);
        {
                char *readme = ut_printf("%s/README", dir);

                write_text(readme, "x");
                free(readme);
        }
        sub = mkdir_in(dir, "empty");
        open_fails(dir, -EINVAL, dir, "no .safetensors", NULL);
        free(sub);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_corrupt_file)
{
        char *dir = ut_mkdtemp(), *p = ut_printf("%s/bad.safetensors", dir);
        static const char body[] = "\x02\0\0\0\0\0\0\0{}X";

        write_text(p, "");
        open_fails(p, -EINVAL, p, "too short", NULL);
        write_text(p, "abc");
        open_fails(p, -EINVAL, p, "too short", NULL);
        ut_write_file(p, body, sizeof(body) - 1);
        open_fails(p, -EINVAL, p, "trailing", NULL);
        /* The same through the directory. */
        open_fails(dir, -EINVAL, p, "trailing", NULL);
        free(p);
        ut_rmtree(dir);
}
END_TEST

/* ---- index rules ----------------------------------------------------- */

/* A directory with shard s1 (a, b) and s2 (c) and an index given as @map. */
static char *index_case(char **dirp, const char *const *map, size_t n)
{
        static const struct ts s1[] = {{"a", 3}, {"b", 4}};
        static const struct ts s2[] = {{"c", 5}};
        char *dir = ut_mkdtemp(), *p;

        p = ut_printf("%s/s1.safetensors", dir);
        write_st(p, s1, N(s1), NULL);
        free(p);
        p = ut_printf("%s/s2.safetensors", dir);
        write_st(p, s2, N(s2), NULL);
        free(p);
        p = ut_printf("%s/model.safetensors.index.json", dir);
        write_index(p, map, n, NULL);
        *dirp = dir;
        return p;
}

START_TEST(test_index_ok_baseline)
{
        static const char *const map[] = {"a", "s1.safetensors", "b", "s1.safetensors",
                                          "c", "s2.safetensors"};
        char *dir, *index = index_case(&dir, map, 3);
        struct stf_model *m = open_ok(index);

        check_model(m);
        ck_assert_uint_eq(m->ntensors, 3);
        ck_assert_ptr_null(m->comps[0].index_meta);
        stf_model_close(m);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_path_traversal)
{
        static const char *const bad[] = {
            "../s1.safetensors", "sub/s1.safetensors", "..", ".", "", "/etc/passwd",
            "./s1.safetensors",  "s1.safetensors/"};

        for (size_t i = 0; i < N(bad); i++) {
                const char *map[] = {"a", "s1.safetensors", "b", "s1.safetensors", "c", bad[i]};
                char *dir, *index = index_case(&dir, map, 3), *sub = mkdir_in(dir, "sub"), *p;
                static const struct ts s1[] = {{"c", 5}};

                /* The file the traversal points at exists. */
                p = ut_printf("%s/s1.safetensors", sub);
                write_st(p, s1, 1, NULL);
                free(p);
                open_fails(index, -EINVAL, index, "'c'", "not a plain file name");
                if (bad[i][0]) {
                        struct stf_diag d = {{0}};
                        struct stf_model *m;

                        stf_model_open(index, &m, &d);
                        ut_assert_has(d.msg, bad[i]);
                }
                open_fails(dir, -EINVAL, "not a plain file name", NULL, NULL);
                free(sub);
                free(index);
                ut_rmtree(dir);
        }
}
END_TEST

START_TEST(test_index_missing_shard)
{
        static const char *const map[] = {"a", "s1.safetensors", "b", "s1.safetensors",
                                          "c", "s3.safetensors"};
        char *dir, *index = index_case(&dir, map, 3);

        open_fails(index, -ENOENT, index, "'s3.safetensors'", "does not exist");
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_listed_not_in_shard)
{
        static const char *const map[] = {"a", "s1.safetensors", "b",     "s1.safetensors",
                                          "c", "s2.safetensors", "ghost", "s2.safetensors"};
        char *dir, *index = index_case(&dir, map, 4);

        open_fails(index, -EINVAL, index, "'ghost'", "'s2.safetensors'");
        open_fails(index, -EINVAL, "not in shard", NULL, NULL);
        free(index);
        ut_rmtree(dir);
}
END_TEST

/* Listed under the wrong shard: in s1 but the index says s2. */
START_TEST(test_index_wrong_shard)
{
        static const char *const map[] = {"a", "s2.safetensors", "b", "s1.safetensors",
                                          "c", "s2.safetensors"};
        char *dir, *index = index_case(&dir, map, 3);

        open_fails(index, -EINVAL, "'a'", "s1.safetensors", "s2.safetensors");
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_shard_tensor_not_listed)
{
        static const char *const map[] = {"a", "s1.safetensors", "c", "s2.safetensors"};
        char *dir, *index = index_case(&dir, map, 2);

        open_fails(index, -EINVAL, "'b'", "not listed", "s1.safetensors");
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_same_tensor_two_shards)
{
        static const struct ts s2[] = {{"c", 5}, {"a", 3}};
        static const char *const map[] = {"a", "s1.safetensors", "b", "s1.safetensors",
                                          "c", "s2.safetensors"};
        char *dir, *index = index_case(&dir, map, 3), *p = ut_printf("%s/s2.safetensors", dir);

        write_st(p, s2, N(s2), NULL);
        open_fails(index, -EINVAL, "'a'", "s2.safetensors", NULL);
        free(p);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_bad_shard_header)
{
        static const char *const map[] = {"a", "s1.safetensors", "b", "s1.safetensors",
                                          "c", "s2.safetensors"};
        static const char body[] = "\x04\0\0\0\0\0\0\0[]  ";
        char *dir, *index = index_case(&dir, map, 3), *p = ut_printf("%s/s2.safetensors", dir);

        ut_write_file(p, body, sizeof(body) - 1);
        open_fails(index, -EINVAL, p, "not a JSON object", NULL);
        free(p);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_index_not_json)
{
        static const char *const texts[] = {"", "{", "not json", "{\"weight_map\":{\"a\":1,}}",
                                            "{\"weight_map\":{\"a\":\"s1.safetensors\","
                                            "\"a\":\"s1.safetensors\"}}"};

        for (size_t i = 0; i < N(texts); i++) {
                static const char *const map[] = {"a", "s1.safetensors"};
                char *dir, *index = index_case(&dir, map, 1);

                write_text(index, texts[i]);
                open_fails(index, -EINVAL, index, "not valid JSON", NULL);
                open_fails(dir, -EINVAL, index, "not valid JSON", NULL);
                free(index);
                ut_rmtree(dir);
        }
}
END_TEST

START_TEST(test_index_bad_shape)
{
        static const char *const texts[] = {"[]",
                                            "{}",
                                            "{\"weight_map\":[]}",
                                            "{\"weight_map\":\"s1.safetensors\"}",
                                            "{\"weight_map\":{}}",
                                            "{\"metadata\":{}}"};

        for (size_t i = 0; i < N(texts); i++) {
                static const char *const map[] = {"a", "s1.safetensors"};
                char *dir, *index = index_case(&dir, map, 1);

                write_text(index, texts[i]);
                open_fails(index, -EINVAL, index, "weight_map", NULL);
                free(index);
                ut_rmtree(dir);
        }
}
END_TEST

/* ---- directory naming ------------------------------------------------ */

/* "unet.safetensors" beside a sub-directory "unet/" holding one set: one name. */
START_TEST(test_dir_same_name_twice)
{
        static const struct ts a[] = {{"w", 4}};
        char *dir = ut_mkdtemp(), *u = mkdir_in(dir, "unet");
        char *p1 = ut_printf("%s/unet.safetensors", dir), *p2 = ut_printf("%s/m.safetensors", u);

        write_st(p1, a, 1, NULL);
        write_st(p2, a, 1, NULL);
        open_fails(dir, -EINVAL, "'unet'", p1, p2);
        free(p1);
        free(p2);
        free(u);
        ut_rmtree(dir);
}
END_TEST

/*
 * "vae.safetensors" (tensor "x.w") beside "vae/" holding x.safetensors
 * (tensor "w") and y.safetensors: components "vae", "vae/x", "vae/y", and
 * both tensors would be vae/x/w. A model that opens must also mount: either
 * the open refuses the clash or the tree keeps the two apart.
 */
START_TEST(test_dir_nested_component_names)
{
        static const struct ts top[] = {{"x.w", 4}};
        static const struct ts w[] = {{"w", 5}};
        char *dir = ut_mkdtemp(), *v = mkdir_in(dir, "vae");
        char *p1 = ut_printf("%s/vae.safetensors", dir), *p2 = ut_printf("%s/x.safetensors", v),
             *p3 = ut_printf("%s/y.safetensors", v);
        struct stf_model *m = NULL;
        struct stf_diag d = {{0}};
        int ret;

        write_st(p1, top, 1, NULL);
        write_st(p2, w, 1, NULL);
        write_st(p3, w, 1, NULL);
        ret = stf_model_open(dir, &m, &d);
        if (ret == 0) {
                struct stf_tree *t = NULL;
                struct stf_diag td = {{0}};

                ret = stf_tree_build_model(m, 0, &t, &td);
                ck_assert_msg(ret == 0,
                              "the model opens (components '%s', '%s', '%s') but its tree fails: "
                              "%d: %s",
                              m->comps[0].name, m->comps[1].name, m->comps[2].name, ret, td.msg);
                for (size_t i = 0; i < m->ntensors; i++)
                        for (size_t j = i + 1; j < m->ntensors; j++)
                                ck_assert_uint_ne(stf_tree_tensor_ino(t, i),
                                                  stf_tree_tensor_ino(t, j));
                stf_tree_free(t);
                stf_model_close(m);
        } else {
                ck_assert_int_eq(ret, -EINVAL);
                ut_assert_has(d.msg, "vae");
        }
        free(p1);
        free(p2);
        free(p3);
        free(v);
        ut_rmtree(dir);
}
END_TEST

/* ---- check mode ------------------------------------------------------ */

struct plist {
        size_t n;
        struct {
                char *file, *tensor, *msg;
                int64_t offset;
        } v[64];
};

static void collect(void *ctx, const struct stf_problem *p)
{
        struct plist *l = ctx;

        ck_assert_uint_lt(l->n, 64);
        l->v[l->n].file = strdup(p->file);
        l->v[l->n].tensor = p->tensor ? strdup(p->tensor) : NULL;
        l->v[l->n].msg = strdup(p->msg);
        l->v[l->n].offset = p->offset;
        l->n++;
}

static void plist_free(struct plist *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].file);
                free(l->v[i].tensor);
                free(l->v[i].msg);
        }
        l->n = 0;
}

static void expect_problem(const struct plist *l, size_t i, const char *file, const char *tensor,
                           const char *frag)
{
        ck_assert_msg(i < l->n, "problem %zu of %zu", i, l->n);
        ck_assert_msg(!strcmp(l->v[i].file, file), "problem %zu (%s): file %s, want %s", i,
                      l->v[i].msg, l->v[i].file, file);
        if (tensor)
                ck_assert_msg(l->v[i].tensor && !strcmp(l->v[i].tensor, tensor),
                              "problem %zu (%s): tensor %s, want %s", i, l->v[i].msg,
                              l->v[i].tensor ? l->v[i].tensor : "NULL", tensor);
        ut_assert_has(l->v[i].msg, frag);
}

START_TEST(test_check_sound_model)
{
        char *dir = ut_mkdtemp(), *index = make_sharded(dir, "model.safetensors.index.json");
        struct plist l = {0};
        struct stf_model *m = NULL;

        ck_assert_int_eq(stf_model_check(index, collect, &l, &m), 0);
        ck_assert_uint_eq(l.n, 0);
        ck_assert_ptr_nonnull(m);
        check_sharded(m, index);
        stf_model_close(m);
        ck_assert_int_eq(stf_model_check(dir, collect, &l, NULL), 0);
        ck_assert_uint_eq(l.n, 0);
        free(index);
        ut_rmtree(dir);
}
END_TEST

/* Every index problem, once, in order; what cannot be checked is skipped. */
START_TEST(test_check_index_problems)
{
        static const char *const map[] = {"a", "s1.safetensors", "b",     "../s1.safetensors",
                                          "c", "s2.safetensors", "ghost", "s2.safetensors",
                                          "e", "s3.safetensors"};
        char *dir, *index = index_case(&dir, map, 5);
        struct plist l = {0};
        struct stf_model *m = (struct stf_model *)(uintptr_t)1;
        int fds = count_fds();

        ck_assert_int_eq(stf_model_check(index, collect, &l, &m), -EINVAL);
        ck_assert_ptr_null(m);
        ck_assert_int_eq(count_fds(), fds);
        ck_assert_msg(l.n == 3, "%zu problems, want 3 (first: %s)", l.n, l.n ? l.v[0].msg : "");
        expect_problem(&l, 0, index, "b", "not a plain file name");
        expect_problem(&l, 1, index, NULL, "'s3.safetensors'");
        expect_problem(&l, 2, index, "ghost", "not in shard 's2.safetensors'");
        /* The first problem is what stf_model_open says. */
        {
                struct stf_diag d = {{0}};

                ck_assert_int_eq(stf_model_open(index, &m, &d), -EINVAL);
                ck_assert_str_eq(d.msg, l.v[0].msg);
        }
        plist_free(&l);
        free(index);
        ut_rmtree(dir);
}
END_TEST

/* Problems of several sets and shards, in set order; a bad shard is not cross-checked. */
START_TEST(test_check_several_sets)
{
        static const char *const map[] = {"a", "s1.safetensors", "b", "s1.safetensors",
                                          "c", "s2.safetensors"};
        static const char bad[] = "\x02\0\0\0\0\0\0\0{}XYZ";
        char *dir, *index = index_case(&dir, map, 3);
        char *s2 = ut_printf("%s/s2.safetensors", dir), *z = ut_printf("%s/z.safetensors", dir);
        struct plist l = {0};

        ut_write_file(s2, bad, sizeof(bad) - 1); /* 3 trailing bytes; "c" is then missing */
        ut_write_file(z, bad, sizeof(bad) - 1);
        ck_assert_int_eq(stf_model_check(dir, collect, &l, NULL), -EINVAL);
        ck_assert_msg(l.n == 2, "%zu problems, want 2 (first: %s)", l.n, l.n ? l.v[0].msg : "");
        expect_problem(&l, 0, s2, NULL, "3 trailing bytes");
        expect_problem(&l, 1, z, NULL, "3 trailing bytes");
        ck_assert_int_eq(l.v[0].offset, 10);
        plist_free(&l);
        free(s2);
        free(z);
        free(index);
        ut_rmtree(dir);
}
END_TEST

START_TEST(test_check_missing_source)
{
        char *dir = ut_mkdtemp(), *p = ut_printf("%s/nope", dir);
        struct plist l = {0};
        struct stf_model *m = (struct stf_model *)(uintptr_t)1;

        ck_assert_int_eq(stf_model_check(p, collect, &l, &m), -EINVAL);
        ck_assert_ptr_null(m);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, p, NULL, p);
        plist_free(&l);
        ck_assert_int_eq(stf_model_check(dir, collect, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, dir, NULL, "no .safetensors");
        plist_free(&l);
        free(p);
        ut_rmtree(dir);
}
END_TEST

/* ---- stf_index_parse ------------------------------------------------- */

static void index_parse_fails(const char *text, const char *f1, const char *f2)
{
        struct stf_diag d;
        json_t *wm = (json_t *)(uintptr_t)1, *names = wm, *meta = wm;
        int ret;

        memset(&d, 0, sizeof(d));
        ret = stf_index_parse("idx.json", text, strlen(text), &wm, &names, &meta, &d);
        ck_assert_msg(ret == -EINVAL, "'%s': got %d (%s)", text, ret, d.msg);
        ck_assert_msg(!strncmp(d.msg, "idx.json: ", 10), "'%s': diag \"%s\" lacks the file", text,
                      d.msg);
        if (f1)
                ut_assert_has(d.msg, f1);
        if (f2)
                ut_assert_has(d.msg, f2);
        ck_assert_int_eq(stf_index_parse("idx.json", text, strlen(text), NULL, NULL, NULL, NULL),
                         -EINVAL);
}

START_TEST(test_index_parse_ok)
{
        const char *text = "{\"metadata\":{\"total_size\":12},\"weight_map\":{\"b\":\"s2."
                           "safetensors\",\"a\":\"s1.safetensors\",\"c\":\"s1.safetensors\","
                           "\"d\":\"s0.safetensors\"}}";
        json_t *wm = NULL, *names = NULL, *meta = NULL;
        struct stf_diag d = {{0}};

        ck_assert_int_eq(stf_index_parse("i", text, strlen(text), &wm, &names, &meta, &d), 0);
        ck_assert(json_is_object(wm));
        ck_assert_uint_eq(json_object_size(wm), 4);
        ck_assert_str_eq(json_string_value(json_object_get(wm, "b")), "s2.safetensors");
        ck_assert(json_is_array(names));
        ck_assert_uint_eq(json_array_size(names), 3);
        ck_assert_str_eq(json_string_value(json_array_get(names, 0)), "s0.safetensors");
        ck_assert_str_eq(json_string_value(json_array_get(names, 1)), "s1.safetensors");
        ck_assert_str_eq(json_string_value(json_array_get(names, 2)), "s2.safetensors");
        ck_assert_int_eq(json_integer_value(json_object_get(meta, "total_size")), 12);
        json_decref(wm);
        json_decref(names);
        json_decref(meta);
        /* Every output is optional. */
        ck_assert_int_eq(stf_index_parse("i", text, strlen(text), NULL, NULL, NULL, NULL), 0);
}
END_TEST

START_TEST(test_index_parse_no_metadata_and_len)
{
        const char *text = "{\"weight_map\":{\"a\":\"s.safetensors\"}}GARBAGE";
        json_t *wm = NULL, *names = NULL, *meta = (json_t *)(uintptr_t)1;

        ck_assert_int_eq(stf_index_parse("i", text, strlen(text) - 7, &wm, &names, &meta, NULL), 0);
        ck_assert_ptr_null(meta);
        ck_assert_uint_eq(json_array_size(names), 1);
        json_decref(wm);
        json_decref(names);
        /* With the garbage it is not JSON. */
        index_parse_fails(text, "not valid JSON", "byte ");
}
END_TEST

START_TEST(test_index_parse_errors)
{
        index_parse_fails("", "not valid JSON", NULL);
        index_parse_fails("{\"weight_map\":{\"a\":\"x\",}}", "not valid JSON", "byte ");
        index_parse_fails("{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}", "not valid JSON",
                          "duplicate");
        index_parse_fails("{\"weight_map\":{\"a\\u0000\":\"x\"}}", "not valid JSON", NULL);
        index_parse_fails("{\"weight_map\":{\"a\":\"x\xff\"}}", "not valid JSON", NULL);
        index_parse_fails("[]", "weight_map", NULL);
        index_parse_fails("{}", "weight_map", NULL);
        index_parse_fails("{\"weight_map\":[]}", "weight_map", NULL);
        index_parse_fails("{\"weight_map\":{}}", "weight_map", "empty");
        index_parse_fails("{\"weight_map\":{\"a\":1}}", "tensor 'a'", "not a string");
        index_parse_fails("{\"weight_map\":{\"a\":null}}", "tensor 'a'", "not a string");
        index_parse_fails("{\"weight_map\":{\"a\":\"../x\"}}", "tensor 'a'", "'../x'");
        index_parse_fails("{\"weight_map\":{\"a\":\"..\"}}", "tensor 'a'", "not a plain file");
        index_parse_fails("{\"weight_map\":{\"a\":\".\"}}", "tensor 'a'", "not a plain file");
        index_parse_fails("{\"weight_map\":{\"a\":\"\"}}", "tensor 'a'", "not a plain file");
        index_parse_fails("{\"weight_map\":{\"a\":\"/abs\"}}", "tensor 'a'", "'/abs'");
        index_parse_fails("{\"weight_map\":{\"a\":\"d/x\"}}", "tensor 'a'", "'d/x'");
        index_parse_fails("{\"weight_map\":{\"ok\":\"s\",\"a\":\"d\\\\..\\/x\"}}", "tensor 'a'",
                          "not a plain file");
}
END_TEST

static Suite *model_suite(void)
{
        Suite *s = suite_create("model");
        TCase *tc = tcase_create("sources");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_single_file);
        tcase_add_test(tc, test_index_three_shards);
        tcase_add_test(tc, test_index_other_name);
        tcase_add_test(tc, test_index_relative_path);
        tcase_add_test(tc, test_dir_single_file);
        tcase_add_test(tc, test_dir_index);
        tcase_add_test(tc, test_dir_subdirs);
        tcase_add_test(tc, test_dir_subdir_index_and_two_sets);
        tcase_add_test(tc, test_dir_index_plus_unlisted);
        tcase_add_test(tc, test_close_null);
        tcase_add_test(tc, test_missing_source);
        tcase_add_test(tc, test_empty_dir);
        tcase_add_test(tc, test_corrupt_file);
        suite_add_tcase(s, tc);

        tc = tcase_create("index");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_index_ok_baseline);
        tcase_add_test(tc, test_index_path_traversal);
        tcase_add_test(tc, test_index_missing_shard);
        tcase_add_test(tc, test_index_listed_not_in_shard);
        tcase_add_test(tc, test_index_wrong_shard);
        tcase_add_test(tc, test_index_shard_tensor_not_listed);
        tcase_add_test(tc, test_index_same_tensor_two_shards);
        tcase_add_test(tc, test_index_bad_shard_header);
        tcase_add_test(tc, test_index_not_json);
        tcase_add_test(tc, test_index_bad_shape);
        suite_add_tcase(s, tc);

        tc = tcase_create("naming");
        tcase_add_test(tc, test_dir_same_name_twice);
        tcase_add_test(tc, test_dir_nested_component_names);
        suite_add_tcase(s, tc);

        tc = tcase_create("check");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_check_sound_model);
        tcase_add_test(tc, test_check_index_problems);
        tcase_add_test(tc, test_check_several_sets);
        tcase_add_test(tc, test_check_missing_source);
        suite_add_tcase(s, tc);

        tc = tcase_create("index_parse");
        tcase_add_test(tc, test_index_parse_ok);
        tcase_add_test(tc, test_index_parse_no_metadata_and_len);
        tcase_add_test(tc, test_index_parse_errors);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(model_suite());
}
