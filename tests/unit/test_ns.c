/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/ns, the mount namespace: what every inode is, lookups
 * by name and by view suffix (and what they refuse), listings with and
 * without listviews and resumed at every offset, the attributes policy
 * decides, extended attributes, the view cache (one copy even under racing first uses), names
 * at the 255-byte limit, and a tree 5000 directories deep. Expected values
 * come from the tree, the model and the view builders called directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <check.h>

#include "describe.h"
#include "ns.h"
#include "util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct fixture {
        char *dir;
        struct stf_model *m;
        struct stf_tree *t;
        struct stf_ns *ns;
};

static void open_fixture(struct fixture *f, const char *source, unsigned tree_flags,
                         unsigned ns_flags)
{
        struct stf_diag diag = {{0}};
        int ret = stf_model_open(source, &f->m, &diag);

        ck_assert_msg(ret == 0, "open %s: %d %s", source, ret, diag.msg);
        ck_assert_int_eq(stf_tree_build_model(f->m, tree_flags, &f->t, &diag), 0);
        ck_assert_int_eq(stf_ns_new(f->m, f->t, ns_flags, &f->ns), 0);
}

static void close_fixture(struct fixture *f)
{
        stf_ns_free(f->ns);
        stf_tree_free(f->t);
        stf_model_close(f->m);
        ut_rmtree(f->dir);
}

/*
 * Two shards behind an index: shard 1 (mtime 1000) holds model.*, shard 2
 * (mtime 2000) lm_head.weight and the empty tensor "empty".
 */
static const struct ut_tensor shard1[] = {
    {"model.embed.weight", 16},        {"model.layers.0.attn.weight", 8},
    {"model.layers.0.attn.bias", 4},   {"model.layers.10.attn.weight", 8},
    {"model.layers.2.attn.weight", 8},
};
static const struct ut_tensor shard2[] = {{"lm_head.weight", 32}, {"empty", 0}};

static void make_llama(struct fixture *f, unsigned ns_flags)
{
        static const char index[] =
            "{\"weight_map\": {\"model.embed.weight\": \"a.safetensors\","
            " \"model.layers.0.attn.weight\": \"a.safetensors\","
            " \"model.layers.0.attn.bias\": \"a.safetensors\","
            " \"model.layers.10.attn.weight\": \"a.safetensors\","
            " \"model.layers.2.attn.weight\": \"a.safetensors\","
            " \"lm_head.weight\": \"b.safetensors\", \"empty\": \"b.safetensors\"}}";
        char *p;

        f->dir = ut_mkdtemp();
        p = ut_printf("%s/a.safetensors", f->dir);
        ut_write_st_u8(p, shard1, N(shard1), 1000);
        free(p);
        p = ut_printf("%s/b.safetensors", f->dir);
        ut_write_st_u8(p, shard2, N(shard2), 2000);
        free(p);
        p = ut_printf("%s/model.safetensors.index.json", f->dir);
        ut_write_file(p, index, strlen(index));
        free(p);
        open_fixture(f, f->dir, 0, ns_flags);
}

/* One safetensors file of @n tensors, mtime 1000. */
static void make_single(struct fixture *f, const struct ut_tensor *t, size_t n, unsigned tree_flags,
                        unsigned ns_flags)
{
        char *p;

        f->dir = ut_mkdtemp();
        p = ut_printf("%s/m.safetensors", f->dir);
        ut_write_st_u8(p, t, n, 1000);
        open_fixture(f, p, tree_flags, ns_flags);
        free(p);
}

/* Walk @path ('/'-separated, "" the root) with stf_ns_lookup. */
static uint64_t resolve(struct stf_ns *ns, const char *path)
{
        uint64_t ino = STF_ROOT_INO;

        while (*path) {
                const char *slash = strchr(path, '/');
                size_t len = slash ? (size_t)(slash - path) : strlen(path);
                int ret = stf_ns_lookup(ns, ino, path, len, &ino);

                ck_assert_msg(ret == 0, "lookup of '%.*s': %d", (int)len, path, ret);
                path += len + (slash != NULL);
        }
        return ino;
}

static size_t tensor_index(const struct stf_model *m, const char *name)
{
        for (size_t i = 0; i < m->ntensors; i++)
                if (!strcmp(m->tensors[i].name, name))
                        return i;
        ck_abort_msg("no tensor %s", name);
        return 0;
}

static void check_entry(struct stf_ns *ns, const char *path, enum stf_ns_kind kind, uint64_t node,
                        uint32_t index)
{
        struct stf_ns_entry e;

        ck_assert_int_eq(stf_ns_entry(ns, resolve(ns, path), &e), 0);
        ck_assert_msg(e.kind == kind, "%s: kind %d, want %d", path, e.kind, kind);
        ck_assert_uint_eq(e.node, node);
        ck_assert_uint_eq(e.index, index);
}

START_TEST(test_entry_kinds)
{
        struct fixture f = {0};
        uint64_t attn, layers;
        size_t w;

        make_llama(&f, 0);
        w = tensor_index(f.m, "model.layers.0.attn.weight");
        attn = resolve(f.ns, "model/layers/0/attn");
        layers = resolve(f.ns, "model/layers");
        check_entry(f.ns, "", STF_NS_DIR, STF_ROOT_INO, 0);
        check_entry(f.ns, "model/layers/0/attn", STF_NS_DIR, attn, 0);
        check_entry(f.ns, "model/layers/0/attn/weight", STF_NS_TENSOR, stf_tree_tensor_ino(f.t, w),
                    (uint32_t)w);
        check_entry(f.ns, "model/layers/0/attn/weight.npy", STF_NS_NPY, stf_tree_tensor_ino(f.t, w),
                    (uint32_t)w);
        check_entry(f.ns, "model/layers.part.safetensors", STF_NS_SUBSET, layers, 0);
        check_entry(f.ns, "model/layers/0/attn.part.safetensors", STF_NS_SUBSET, attn, 0);
        check_entry(f.ns, "model.part.safetensors", STF_NS_SUBSET, resolve(f.ns, "model"), 0);
        /* the name transformers opens is the whole set, never model/ */
        check_entry(f.ns, "model.safetensors", STF_NS_WHOLE, STF_ROOT_INO, 0);
        check_entry(f.ns, ".stfs", STF_NS_DIR, resolve(f.ns, ".stfs"), 0);
        check_entry(f.ns, ".stfs/model.safetensors", STF_NS_MODEL, STF_ROOT_INO,
                    STF_SPECIAL_MODEL_SAFETENSORS);
        check_entry(f.ns, ".stfs/header.json", STF_NS_DOC, resolve(f.ns, ".stfs/header.json"),
                    STF_SPECIAL_HEADER_JSON);
        check_entry(f.ns, ".stfs/metadata.json", STF_NS_DOC, resolve(f.ns, ".stfs/metadata.json"),
                    STF_SPECIAL_METADATA_JSON);
        check_entry(f.ns, ".stfs/control", STF_NS_CONTROL, resolve(f.ns, ".stfs/control"),
                    STF_SPECIAL_CONTROL);
        check_entry(f.ns, ".stfs/status", STF_NS_STATUS, resolve(f.ns, ".stfs/status"),
                    STF_SPECIAL_STATUS);
        for (size_t i = 0; i < f.m->ntensors; i++) {
                uint64_t ino = stf_tree_tensor_ino(f.t, i);

                ck_assert_uint_eq(stf_ns_npy_ino(f.ns, i), ino + stf_tree_count(f.t));
        }
        ck_assert_uint_eq(stf_ns_npy_ino(f.ns, f.m->ntensors), 0);
        close_fixture(&f);
}
END_TEST

/* Numbers of the inode space that are no inode. */
START_TEST(test_entry_unused)
{
        struct fixture f = {0};
        struct stf_ns_entry e;
        uint64_t n, tensor, dir;

        make_llama(&f, STF_NS_LISTVIEWS);
        n = stf_tree_count(f.t);
        tensor = resolve(f.ns, "lm_head/weight");
        dir = resolve(f.ns, "lm_head");
        ck_assert_int_eq(stf_ns_entry(f.ns, 0, &e), -ENOENT);
        ck_assert_int_eq(stf_ns_entry(f.ns, n + dir, &e), -ENOENT);        /* dir has no .npy */
        ck_assert_int_eq(stf_ns_entry(f.ns, 2 * n + tensor, &e), -ENOENT); /* no tensor subset */
        ck_assert_int_eq(stf_ns_entry(f.ns, 2 * n + resolve(f.ns, ".stfs"), &e), -ENOENT);
        ck_assert_int_eq(stf_ns_entry(f.ns, n + resolve(f.ns, ".stfs/status"), &e), -ENOENT);
        ck_assert_int_eq(stf_ns_entry(f.ns, 3 * n + dir, &e), -ENOENT); /* no set there */
        ck_assert_int_eq(stf_ns_entry(f.ns, 3 * n + 1, &e), 0);         /* the root's */
        ck_assert_int_eq(stf_ns_entry(f.ns, 4 * n + 1, &e), 0);         /* .stfs/shards */
        ck_assert_int_eq(stf_ns_entry(f.ns, 4 * n + 100, &e), -ENOENT);
        ck_assert_int_eq(stf_ns_entry(f.ns, UINT64_MAX, &e), -ENOENT);
        close_fixture(&f);
}
END_TEST

static int lookup(struct stf_ns *ns, uint64_t parent, const char *name)
{
        uint64_t ino = 0;

        return stf_ns_lookup(ns, parent, name, strlen(name), &ino);
}

START_TEST(test_lookup_refused)
{
        struct fixture f = {0};
        uint64_t attn;

        make_llama(&f, 0);
        attn = resolve(f.ns, "model/layers/0/attn");
        ck_assert_int_eq(lookup(f.ns, attn, "weight.safetensors"), -ENOENT); /* tensor */
        ck_assert_int_eq(lookup(f.ns, attn, "weight.part.safetensors"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, STF_ROOT_INO, "lm_head.safetensors"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, "model"), "model.safetensors"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, STF_ROOT_INO, "model.npy"), -ENOENT); /* directory */
        ck_assert_int_eq(lookup(f.ns, STF_ROOT_INO, ".stfs.safetensors"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, ".stfs"), "status.npy"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, ".stfs"), "model.safetensors.npy"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, attn, "nothing.npy"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, attn, ".npy"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, STF_ROOT_INO, ".safetensors"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, attn, "weight.NPY"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, attn, "weight.npy.npy"), -ENOENT);
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, "model/layers/0/attn/weight"), "x"), -ENOTDIR);
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, "model/layers/0/attn/weight"), "x.npy"),
                         -ENOTDIR);
        ck_assert_int_eq(lookup(f.ns, 0, "model"), -ENOENT);
        /* lookups in a view: no such directory */
        ck_assert_int_eq(lookup(f.ns, resolve(f.ns, "model.safetensors"), "embed"), -ENOENT);
        close_fixture(&f);
}
END_TEST

/* Flat: "w.npy" is a tensor of its own; real names win over views. */
START_TEST(test_lookup_real_name_wins)
{
        static const struct ut_tensor t[] = {{"w", 4}, {"w.npy", 8}, {"d.safetensors", 2}};
        struct fixture f = {0};
        struct stf_ns_entry e;

        make_single(&f, t, N(t), STF_TREE_FLAT, 0);
        ck_assert_int_eq(stf_ns_entry(f.ns, resolve(f.ns, "w.npy"), &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_TENSOR);
        ck_assert_uint_eq(e.index, tensor_index(f.m, "w.npy"));
        ck_assert_int_eq(stf_ns_entry(f.ns, resolve(f.ns, "w.npy.npy"), &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_NPY);
        ck_assert_uint_eq(e.index, tensor_index(f.m, "w.npy"));
        ck_assert_int_eq(stf_ns_entry(f.ns, resolve(f.ns, "d.safetensors"), &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_TENSOR);
        ck_assert_int_eq(stf_ns_entry(f.ns, resolve(f.ns, "d.safetensors.npy"), &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_NPY);
        close_fixture(&f);
}
END_TEST

/* The names of the listing of @path from offset @from, joined by ' '. */
static char *listing(struct stf_ns *ns, const char *path, uint64_t from)
{
        uint64_t dir = resolve(ns, path);
        struct stf_ns_dirent d;
        char *out = strdup(""), *next;
        int ret;

        for (uint64_t off = from; (ret = stf_ns_readdir(ns, dir, off, &d)) == 0; off = d.next) {
                ck_assert_uint_gt(d.next, off);
                ck_assert_uint_eq(strlen(d.name), d.name_len);
                /* every entry resolves to the inode the listing gives */
                if (strcmp(d.name, ".") && strcmp(d.name, "..")) {
                        uint64_t ino = 0;

                        ck_assert_int_eq(stf_ns_lookup(ns, dir, d.name, d.name_len, &ino), 0);
                        ck_assert_uint_eq(ino, d.ino);
                } else if (!strcmp(d.name, ".")) {
                        ck_assert_uint_eq(d.ino, dir); /* ".." is checked by its callers */
                }
                next = ut_printf("%s%s%s", out, *out ? " " : "", d.name);
                free(out);
                out = next;
        }
        ck_assert_int_eq(ret, 1);
        ck_assert_int_eq(stf_ns_readdir(ns, dir, from + 1000, &d), 1);
        return out;
}

/* The listing of @path is @want, and resumed at every offset its tail. */
static void check_listing(struct stf_ns *ns, const char *path, const char *want)
{
        uint64_t dir = resolve(ns, path);
        struct stf_ns_dirent d;
        char *all = listing(ns, path, 0);

        ck_assert_str_eq(all, want);
        for (uint64_t off = 0; stf_ns_readdir(ns, dir, off, &d) == 0; off = d.next) {
                char *tail = listing(ns, path, d.next);
                size_t tl = strlen(tail);

                ck_assert_msg(
                    tl == 0 || (strlen(all) > tl && !strcmp(all + strlen(all) - tl, tail) &&
                                all[strlen(all) - tl - 1] == ' '),
                    "from %llu: '%s' not a tail of '%s'", (unsigned long long)d.next, tail, all);
                free(tail);
        }
        free(all);
}

START_TEST(test_listing)
{
        struct fixture f = {0};
        struct stf_ns_dirent d;

        make_llama(&f, 0);
        check_listing(f.ns, "", ". .. .stfs empty lm_head model");
        check_listing(f.ns, ".stfs", ". .. control header.json metadata.json status");
        check_listing(f.ns, "model/layers", ". .. 0 2 10");
        check_listing(f.ns, "model/layers/0/attn", ". .. bias weight");
        ck_assert_int_eq(stf_ns_readdir(f.ns, resolve(f.ns, "lm_head/weight"), 0, &d), -ENOTDIR);
        ck_assert_int_eq(stf_ns_readdir(f.ns, resolve(f.ns, "lm_head.part.safetensors"), 0, &d),
                         -ENOTDIR);
        ck_assert_int_eq(stf_ns_readdir(f.ns, 0, 0, &d), -ENOENT);
        /* ".." */
        ck_assert_int_eq(stf_ns_readdir(f.ns, resolve(f.ns, "model/layers"), 1, &d), 0);
        ck_assert_uint_eq(d.ino, resolve(f.ns, "model"));
        ck_assert_int_eq(stf_ns_readdir(f.ns, STF_ROOT_INO, 1, &d), 0);
        ck_assert_uint_eq(d.ino, STF_ROOT_INO);
        close_fixture(&f);
}
END_TEST

START_TEST(test_listing_listviews)
{
        struct fixture f = {0};

        make_llama(&f, STF_NS_LISTVIEWS);
        check_listing(f.ns, "",
                      ". .. .stfs empty lm_head model empty.npy lm_head.part.safetensors "
                      "model.part.safetensors model.safetensors");
        check_listing(f.ns, ".stfs",
                      ". .. control header.json metadata.json model.safetensors status shards");
        check_listing(f.ns, "model/layers",
                      ". .. 0 2 10 0.part.safetensors 2.part.safetensors 10.part.safetensors");
        check_listing(f.ns, "model/layers/0/attn", ". .. bias weight bias.npy weight.npy");
        close_fixture(&f);
}
END_TEST

static void check_attr(struct stf_ns *ns, const char *path, uint32_t mode, uint64_t size,
                       time_t mtime)
{
        struct stf_ns_attr a;

        ck_assert_int_eq(stf_ns_attr(ns, resolve(ns, path), &a), 0);
        ck_assert_msg(a.mode == mode, "%s: mode %o, want %o", path, a.mode, mode);
        ck_assert_msg(a.size == size, "%s: size %llu, want %llu", path, (unsigned long long)a.size,
                      (unsigned long long)size);
        ck_assert_int_eq(a.nlink, S_ISDIR(mode) ? 2 : 1);
        ck_assert_int_eq(a.mtime.tv_sec, mtime);
        ck_assert_int_eq(a.mtime.tv_nsec, 0);
}

static uint64_t npy_size(struct fixture *f, const char *name)
{
        struct stf_view *v;
        uint64_t size;

        ck_assert_int_eq(stf_view_npy(f->m, tensor_index(f->m, name), &v), 0);
        size = v->size;
        stf_view_free(v);
        return size;
}

static uint64_t subset_size(struct fixture *f, const char *dir, bool full)
{
        struct stf_view *v;
        uint64_t size;

        ck_assert_int_eq(stf_view_subset(f->m, f->t, resolve(f->ns, dir), full, &v), 0);
        size = v->size;
        stf_view_free(v);
        return size;
}

static void check_attrs(unsigned flags)
{
        const uint32_t dir = S_IFDIR | 0555, file = S_IFREG | 0444;
        struct fixture f = {0};
        struct stf_ns_attr a;
        size_t hlen, mlen;
        char *text;

        make_llama(&f, flags);
        ck_assert_int_eq(stf_describe_header(f.m, f.t, &text, &hlen), 0);
        free(text);
        ck_assert_int_eq(stf_describe_metadata(f.m, &text, &mlen), 0);
        free(text);
        check_attr(f.ns, "", dir, 0, 2000);
        check_attr(f.ns, "model/layers", dir, 0, 2000);
        check_attr(f.ns, ".stfs", dir, 0, 2000);
        check_attr(f.ns, "model/layers/0/attn/weight", file, 8, 1000);
        check_attr(f.ns, "lm_head/weight", file, 32, 2000);
        check_attr(f.ns, "empty", file, 0, 2000);
        check_attr(f.ns, "model/embed/weight.npy", file, npy_size(&f, "model.embed.weight"), 1000);
        check_attr(f.ns, "empty.npy", file, npy_size(&f, "empty"), 2000);
        check_attr(f.ns, "model/layers.part.safetensors", file,
                   subset_size(&f, "model/layers", flags & STF_NS_FULLNAMES), 2000);
        check_attr(f.ns, "model.part.safetensors", file,
                   subset_size(&f, "model", flags & STF_NS_FULLNAMES), 2000);
        check_attr(f.ns, "model.safetensors", file, subset_size(&f, "", true), 2000);
        check_attr(f.ns, ".stfs/model.safetensors", file, subset_size(&f, "", true), 2000);
        check_attr(f.ns, ".stfs/header.json", file, hlen, 2000);
        check_attr(f.ns, ".stfs/metadata.json", file, mlen, 2000);
        check_attr(f.ns, ".stfs/control", S_IFREG | 0600, 0, 2000);
        check_attr(f.ns, ".stfs/status", file, 0, 2000);
        ck_assert_int_eq(stf_ns_attr(f.ns, 0, &a), -ENOENT);
        ck_assert_int_eq(stf_ns_attr(f.ns, 4 * stf_tree_count(f.t) + 100, &a), -ENOENT);
        close_fixture(&f);
}

START_TEST(test_attr)
{
        check_attrs(0);
}
END_TEST

START_TEST(test_attr_fullnames)
{
        check_attrs(STF_NS_FULLNAMES);
        /* full names are longer: the headers differ */
        {
                struct fixture f = {0};

                make_llama(&f, 0);
                ck_assert_uint_lt(subset_size(&f, "model/layers", false),
                                  subset_size(&f, "model/layers", true));
                close_fixture(&f);
        }
}
END_TEST

START_TEST(test_view)
{
        struct fixture f = {0};
        const struct stf_view *v, *v2;
        struct stf_view tmp, tmp2;
        size_t w;
        const struct stf_tensor *t;
        char *text, *want;
        size_t len, wlen;

        make_llama(&f, 0);
        w = tensor_index(f.m, "model.layers.2.attn.weight");
        t = &f.m->tensors[w];
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, "model"), &tmp, &v), -EISDIR);
        ck_assert_int_eq(stf_ns_view(f.ns, 0, &tmp, &v), -ENOENT);
        /* a raw tensor: built in tmp, pointing into the mapping */
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, "model/layers/2/attn/weight"), &tmp, &v),
                         0);
        ck_assert_ptr_eq(v, &tmp);
        ck_assert_uint_eq(v->size, 8);
        ck_assert_uint_eq(v->n, 1);
        ck_assert_ptr_eq(v->ext[0].ptr, f.m->shards[t->shard].map + t->begin);
        /* cached views: built once, the same copy every time */
        ck_assert_int_eq(
            stf_ns_view(f.ns, resolve(f.ns, "model/layers/2/attn/weight.npy"), &tmp, &v), 0);
        ck_assert_int_eq(
            stf_ns_view(f.ns, resolve(f.ns, "model/layers/2/attn/weight.npy"), &tmp2, &v2), 0);
        ck_assert_ptr_eq(v, v2);
        ck_assert_ptr_ne(v, &tmp);
        ck_assert_uint_eq(v->ext[v->n - 1].len, 8);
        ck_assert_ptr_eq(v->ext[v->n - 1].ptr, f.m->shards[t->shard].map + t->begin);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, ".stfs/model.safetensors"), &tmp, &v), 0);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, ".stfs/model.safetensors"), &tmp, &v2), 0);
        ck_assert_ptr_eq(v, v2);
        ck_assert_uint_eq(v->size, subset_size(&f, "", true));
        /* live files and documents: bytes of the open file, empty here */
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, ".stfs/header.json"), &tmp, &v), 0);
        ck_assert_uint_eq(v->size, 0);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, ".stfs/control"), &tmp, &v), 0);
        ck_assert_uint_eq(v->size, 0);
        /* documents */
        ck_assert_int_eq(stf_ns_doc(f.ns, STF_SPECIAL_HEADER_JSON, &text, &len), 0);
        ck_assert_int_eq(stf_describe_header(f.m, f.t, &want, &wlen), 0);
        ck_assert_uint_eq(len, wlen);
        ck_assert_mem_eq(text, want, len);
        free(text);
        free(want);
        ck_assert_int_eq(stf_ns_doc(f.ns, STF_SPECIAL_METADATA_JSON, &text, &len), 0);
        ck_assert_int_eq(stf_describe_metadata(f.m, &want, &wlen), 0);
        ck_assert_uint_eq(len, wlen);
        ck_assert_mem_eq(text, want, len);
        free(text);
        free(want);
        ck_assert_int_eq(stf_ns_doc(f.ns, STF_SPECIAL_CONTROL, &text, &len), -EINVAL);
        ck_assert_int_eq(stf_ns_doc(f.ns, STF_SPECIAL_MODEL_SAFETENSORS, &text, &len), -EINVAL);
        close_fixture(&f);
}
END_TEST

#define RACERS 8

struct race {
        struct stf_ns *ns;
        uint64_t ino[3];
        const struct stf_view *got[3];
        uint64_t size;
        pthread_barrier_t *go;
};

static void *race_run(void *arg)
{
        struct race *r = arg;
        struct stf_ns_attr a;
        struct stf_view tmp;

        pthread_barrier_wait(r->go);
        for (int i = 0; i < 3; i++)
                if (stf_ns_view(r->ns, r->ino[i], &tmp, &r->got[i]))
                        r->got[i] = NULL;
        r->size = stf_ns_attr(r->ns, r->ino[0], &a) ? 0 : a.size;
        return NULL;
}

/* Threads racing on the first use of views all get the one copy kept. */
START_TEST(test_view_race)
{
        struct fixture f = {0};
        struct race r[RACERS];
        pthread_t th[RACERS];
        pthread_barrier_t go;

        make_llama(&f, 0);
        pthread_barrier_init(&go, NULL, RACERS);
        for (int i = 0; i < RACERS; i++) {
                r[i] = (struct race){.ns = f.ns, .go = &go};
                r[i].ino[0] = resolve(f.ns, ".stfs/model.safetensors");
                r[i].ino[1] = resolve(f.ns, "model/layers.part.safetensors");
                r[i].ino[2] = resolve(f.ns, "lm_head/weight.npy");
                ck_assert_int_eq(pthread_create(&th[i], NULL, race_run, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++)
                pthread_join(th[i], NULL);
        for (int i = 0; i < RACERS; i++) {
                for (int k = 0; k < 3; k++) {
                        ck_assert_ptr_nonnull(r[i].got[k]);
                        ck_assert_ptr_eq(r[i].got[k], r[0].got[k]);
                }
                ck_assert_uint_eq(r[i].size, r[0].got[0]->size);
        }
        pthread_barrier_destroy(&go);
        close_fixture(&f);
}
END_TEST

static char *repeat(char c, size_t n)
{
        char *s = malloc(n + 1);

        ck_assert_ptr_nonnull(s);
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

/*
 * Components of exactly 238 bytes (tree rule 5: 255 less ".part.safetensors"),
 * and one of 239 (cut): every name the namespace lists, views included, fits in
 * 255.
 */
START_TEST(test_name_limit)
{
        char *a238 = repeat('a', 238), *b238 = repeat('b', 238), *c239 = repeat('c', 239);
        char *n1 = ut_printf("%s.w", a238), *n2 = ut_printf("x.%s", b238);
        char *n3 = ut_printf("y.%s", c239), *path, *view;
        struct ut_tensor t[] = {{n1, 4}, {n2, 8}, {n3, 2}};
        struct fixture f = {0};
        struct stf_ns_dirent d;
        struct stf_ns_entry e;
        uint64_t y, ino;

        make_single(&f, t, N(t), 0, STF_NS_LISTVIEWS);
        path = ut_printf("%s/w", a238);
        check_entry(f.ns, path, STF_NS_TENSOR, stf_tree_tensor_ino(f.t, tensor_index(f.m, n1)),
                    (uint32_t)tensor_index(f.m, n1));
        free(path);
        path = ut_printf("x/%s", b238);
        check_attr(f.ns, path, S_IFREG | 0444, 8, 1000);
        free(path);
        /* the views of 238-byte names are at most 255 bytes long */
        view = ut_printf("%s.part.safetensors", a238);
        ck_assert_int_eq(lookup(f.ns, STF_ROOT_INO, view), 0);
        path = ut_printf("x/%s.npy", b238);
        check_entry(f.ns, path, STF_NS_NPY, stf_tree_tensor_ino(f.t, tensor_index(f.m, n2)),
                    (uint32_t)tensor_index(f.m, n2));
        free(path);
        /* and a listing gives them whole */
        for (uint64_t off = 0; stf_ns_readdir(f.ns, STF_ROOT_INO, off, &d) == 0; off = d.next)
                if (d.name_len == strlen(view) && !strcmp(d.name, view))
                        break;
        ck_assert_str_eq(d.name, view);
        ck_assert_uint_eq(d.name_len, 255);
        ck_assert_int_eq(stf_ns_entry(f.ns, d.ino, &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_SUBSET);
        free(view);
        /* 239 bytes: not found as is; the listed (cut) name is */
        y = resolve(f.ns, "y");
        ck_assert_int_eq(lookup(f.ns, y, c239), -ENOENT);
        ck_assert_int_eq(stf_ns_readdir(f.ns, y, 2, &d), 0);
        ck_assert_uint_le(d.name_len, 238);
        ck_assert_int_eq(stf_ns_lookup(f.ns, y, d.name, d.name_len, &ino), 0);
        ck_assert_uint_eq(ino, d.ino);
        ck_assert_int_eq(stf_ns_entry(f.ns, ino, &e), 0);
        ck_assert_uint_eq(e.index, tensor_index(f.m, n3));
        close_fixture(&f);
        free(n1);
        free(n2);
        free(n3);
        free(a238);
        free(b238);
        free(c239);
}
END_TEST

#define DEPTH 5000

/* A tensor 5000 directories deep, beside a shallow one. */
START_TEST(test_deep)
{
        char *name = malloc(2 * DEPTH + 2), *path = malloc(2 * DEPTH + 8);
        struct ut_tensor t[] = {{name, 4}, {"top", 2}};
        struct fixture f = {0};
        struct stf_ns_dirent d;
        struct stf_ns_attr a;
        uint64_t ino = STF_ROOT_INO, parent = 0;

        for (int i = 0; i < DEPTH; i++)
                memcpy(name + 2 * i, "d.", 2);
        strcpy(name + 2 * DEPTH, "w");
        make_single(&f, t, N(t), 0, STF_NS_LISTVIEWS);
        for (int i = 0; i < DEPTH; i++) {
                parent = ino;
                ck_assert_int_eq(stf_ns_lookup(f.ns, ino, "d", 1, &ino), 0);
                ck_assert_int_eq(stf_ns_readdir(f.ns, ino, 1, &d), 0);
                ck_assert_uint_eq(d.ino, parent);
        }
        check_listing(f.ns, "", ". .. .stfs d top d.part.safetensors top.npy m.safetensors");
        ck_assert_int_eq(stf_ns_readdir(f.ns, ino, 2, &d), 0);
        ck_assert_str_eq(d.name, "w");
        ck_assert_int_eq(stf_ns_readdir(f.ns, ino, 3, &d), 0);
        ck_assert_str_eq(d.name, "w.npy");
        ck_assert_int_eq(stf_ns_readdir(f.ns, ino, 4, &d), 1);
        /* the deepest directory's subset view, and the root's holding it */
        ck_assert_int_eq(stf_ns_lookup(f.ns, parent, "d.part.safetensors", 18, &ino), 0);
        ck_assert_int_eq(stf_ns_attr(f.ns, ino, &a), 0);
        ck_assert_int_eq(a.kind, STF_NS_SUBSET);
        ck_assert_uint_gt(a.size, 4);
        ck_assert_int_eq(stf_ns_attr(f.ns, resolve(f.ns, "d.part.safetensors"), &a), 0);
        ck_assert_uint_gt(a.size, 2 * DEPTH + 4);
        for (int i = 0; i < DEPTH; i++)
                memcpy(path + 2 * i, "d/", 2);
        strcpy(path + 2 * DEPTH, "w.npy");
        check_entry(f.ns, path, STF_NS_NPY, stf_tree_tensor_ino(f.t, tensor_index(f.m, name)),
                    (uint32_t)tensor_index(f.m, name));
        close_fixture(&f);
        free(name);
        free(path);
}
END_TEST

/* The value of xattr @name of @path, NUL-terminated in @out; its length. */
static int xattr(struct stf_ns *ns, const char *path, const char *name, char *out, size_t cap)
{
        struct stf_ns_entry e;
        const char *val;
        char *buf;
        int len;

        ck_assert_int_eq(stf_ns_entry(ns, resolve(ns, path), &e), 0);
        buf = malloc(cap ? cap : stf_ns_xattr_cap(ns, &e));
        ck_assert_ptr_nonnull(buf);
        len = stf_ns_xattr(ns, &e, name, buf, cap ? cap : stf_ns_xattr_cap(ns, &e), &val);
        if (len >= 0) {
                memcpy(out, val, (size_t)len);
                out[len] = '\0';
        }
        free(buf);
        return len;
}

static void check_xattr(struct stf_ns *ns, const char *path, const char *name, const char *want)
{
        char out[4096];
        int len = xattr(ns, path, name, out, 0);

        ck_assert_msg(len >= 0, "%s %s: %d", path, name, len);
        ck_assert_str_eq(out, want);
}

static void check_xattr_list(struct stf_ns *ns, const char *path, const char *want, size_t len)
{
        struct stf_ns_entry e;
        const char *list;
        size_t got;

        ck_assert_int_eq(stf_ns_entry(ns, resolve(ns, path), &e), 0);
        stf_ns_xattr_list(&e, &list, &got);
        ck_assert_uint_eq(got, len);
        ck_assert_mem_eq(list, want, len);
}

START_TEST(test_xattr)
{
        static const char tensor_list[] =
            "user.safetensors.name\0user.safetensors.dtype\0user.safetensors.shape\0"
            "user.safetensors.shard\0user.safetensors.offset";
        static const char view_list[] = "user.stfs.view\0user.stfs.of";
        const struct stf_tensor *t;
        struct fixture f = {0};
        char out[4096], want[64];

        make_llama(&f, 0);
        t = &f.m->tensors[tensor_index(f.m, "model.layers.10.attn.weight")];
        check_xattr(f.ns, "model/layers/10/attn/weight", "user.safetensors.name",
                    "model.layers.10.attn.weight");
        check_xattr(f.ns, "model/layers/10/attn/weight", "user.safetensors.dtype", "U8");
        check_xattr(f.ns, "model/layers/10/attn/weight", "user.safetensors.shape", "[8]");
        check_xattr(f.ns, "model/layers/10/attn/weight", "user.safetensors.shard", "a.safetensors");
        snprintf(want, sizeof(want), "%llu", (unsigned long long)t->begin);
        check_xattr(f.ns, "model/layers/10/attn/weight", "user.safetensors.offset", want);
        check_xattr(f.ns, "lm_head/weight", "user.safetensors.shard", "b.safetensors");
        check_xattr(f.ns, "model/layers/10/attn/weight.npy", "user.stfs.view", "npy");
        check_xattr(f.ns, "model/layers/10/attn/weight.npy", "user.stfs.of",
                    "model/layers/10/attn/weight");
        check_xattr(f.ns, "model/layers.part.safetensors", "user.stfs.view", "safetensors");
        check_xattr(f.ns, "model/layers.part.safetensors", "user.stfs.of", "model/layers");
        check_xattr(f.ns, "model.safetensors", "user.stfs.view", "safetensors"); /* whole set */
        check_xattr(f.ns, "model.safetensors", "user.stfs.of", "");
        check_xattr(f.ns, ".stfs/model.safetensors", "user.stfs.view", "safetensors");
        check_xattr(f.ns, ".stfs/model.safetensors", "user.stfs.of", "");
        /* what has none, and names nobody has */
        ck_assert_int_eq(xattr(f.ns, "model", "user.stfs.of", out, 0), -ENODATA);
        ck_assert_int_eq(xattr(f.ns, ".stfs/header.json", "user.stfs.view", out, 0), -ENODATA);
        ck_assert_int_eq(xattr(f.ns, ".stfs/control", "user.safetensors.name", out, 0), -ENODATA);
        ck_assert_int_eq(xattr(f.ns, "lm_head/weight", "user.stfs.view", out, 0), -ENODATA);
        ck_assert_int_eq(xattr(f.ns, "lm_head/weight", "user.safetensors.nam", out, 0), -ENODATA);
        ck_assert_int_eq(xattr(f.ns, "lm_head/weight.npy", "user.safetensors.name", out, 0),
                         -ENODATA);
        /* too small a buffer */
        ck_assert_int_eq(xattr(f.ns, "model/layers.part.safetensors", "user.stfs.of", out, 4),
                         -E2BIG);
        ck_assert_int_eq(xattr(f.ns, "lm_head/weight", "user.safetensors.shape", out, 3), -E2BIG);
        ck_assert_int_eq(xattr(f.ns, "lm_head/weight", "user.safetensors.offset", out, 1), -E2BIG);
        check_xattr_list(f.ns, "lm_head/weight", tensor_list, sizeof(tensor_list));
        check_xattr_list(f.ns, "lm_head/weight.npy", view_list, sizeof(view_list));
        check_xattr_list(f.ns, "lm_head.part.safetensors", view_list, sizeof(view_list));
        check_xattr_list(f.ns, "model.safetensors", view_list, sizeof(view_list));
        check_xattr_list(f.ns, ".stfs/model.safetensors", view_list, sizeof(view_list));
        check_xattr_list(f.ns, "lm_head", "", 0);
        check_xattr_list(f.ns, ".stfs/status", "", 0);
        close_fixture(&f);
}
END_TEST

/*
 * A name of 300,000 dotted parts: far deeper than any stack could walk
 * recursively (the daemon died of SIGSEGV here when the subset view
 * collected its tensors by recursion). Every walk is iterative; the depth
 * is bounded only by the header size.
 */
#define VERY_DEEP 300000

START_TEST(test_very_deep)
{
        char *name = malloc(2 * VERY_DEEP + 2);
        struct ut_tensor t[] = {{name, 4}, {"top", 2}};
        struct fixture f = {0};
        const struct stf_view *v;
        struct stf_view tmp;
        struct stf_ns_attr a;
        char *text;
        size_t len;

        for (int i = 0; i < VERY_DEEP; i++)
                memcpy(name + 2 * i, "d.", 2);
        strcpy(name + 2 * VERY_DEEP, "w");
        make_single(&f, t, N(t), 0, 0);
        ck_assert_int_eq(stf_ns_attr(f.ns, resolve(f.ns, "d.part.safetensors"), &a), 0);
        ck_assert_uint_gt(a.size, 2 * VERY_DEEP + 4);
        /* one file: .stfs/model.safetensors is that file */
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, ".stfs/model.safetensors"), &tmp, &v), 0);
        ck_assert_uint_eq(v->size, f.m->shards[0].size);
        stf_ns_view_put(f.ns, v);
        ck_assert_int_eq(stf_ns_doc(f.ns, STF_SPECIAL_HEADER_JSON, &text, &len), 0);
        ck_assert_uint_gt(len, 4 * VERY_DEEP);
        free(text);
        close_fixture(&f);
        free(name);
}
END_TEST

/* The bytes of @v (one extent, or memory) equal the file at @path. */
static void check_view_is_file(const struct stf_view *v, const char *path)
{
        FILE *fp = fopen(path, "rb");
        uint8_t *buf;
        size_t got;

        ck_assert_ptr_nonnull(fp);
        buf = malloc(v->size + 1);
        got = fread(buf, 1, v->size + 1, fp);
        fclose(fp);
        ck_assert_uint_eq(got, v->size);
        ck_assert_uint_eq(v->n, 1);
        ck_assert_int_eq(memcmp(v->ext[0].ptr, buf, v->size), 0);
        free(buf);
}

/* The shard of @path: its index, its file under .stfs/shards a whole shard. */
static void check_shard_file(struct fixture *f, const char *path, const char *file, time_t mtime)
{
        uint64_t ino = resolve(f->ns, path);
        const struct stf_view *v;
        struct stf_ns_entry e;
        struct stf_view tmp;
        char *src = ut_printf("%s/%s", f->dir, file);
        int64_t shard = stf_ns_whole_shard(f->ns, ino);

        ck_assert_int_ge(shard, 0);
        ck_assert_str_eq(f->m->shards[shard].rel, file);
        ck_assert_uint_eq(stf_ns_shard_ino(f->ns, (uint32_t)shard), ino);
        ck_assert_int_eq(stf_ns_entry(f->ns, ino, &e), 0);
        ck_assert_int_eq(e.kind, STF_NS_SHARD);
        ck_assert_uint_eq(e.index, shard);
        check_attr(f->ns, path, S_IFREG | 0444, f->m->shards[shard].size, mtime);
        ck_assert_int_eq(stf_ns_view(f->ns, ino, &tmp, &v), 0);
        ck_assert_ptr_eq(v, &tmp);
        ck_assert_int_eq(v->ext[0].shard, shard);
        check_view_is_file(v, src);
        stf_ns_view_put(f->ns, v);
        free(src);
}

START_TEST(test_shards)
{
        struct fixture f = {0};
        struct stf_ns_dirent d;
        struct stf_ns_entry e;
        uint64_t dir, ino, n;

        make_llama(&f, STF_NS_LISTVIEWS);
        n = stf_tree_count(f.t);
        dir = resolve(f.ns, ".stfs/shards");
        ck_assert_uint_eq(dir, 4 * n + 1);
        check_attr(f.ns, ".stfs/shards", S_IFDIR | 0555, 0, 2000);
        check_listing(f.ns, ".stfs/shards", ". .. a.safetensors b.safetensors");
        ck_assert_int_eq(stf_ns_readdir(f.ns, dir, 1, &d), 0);
        ck_assert_uint_eq(d.ino, resolve(f.ns, ".stfs"));
        check_shard_file(&f, ".stfs/shards/a.safetensors", "a.safetensors", 1000);
        check_shard_file(&f, ".stfs/shards/b.safetensors", "b.safetensors", 2000);
        /* the shards' own tree has a .stfs: never seen, by name or number */
        ck_assert_int_eq(stf_ns_lookup(f.ns, dir, ".stfs", 5, &ino), -ENOENT);
        for (uint64_t i = 4 * n + 1, live = 0; i < 4 * n + 100; i++) {
                live += stf_ns_entry(f.ns, i, &e) == 0;
                ck_assert_uint_le(live, 3);
        }
        ck_assert_int_eq(stf_ns_lookup(f.ns, dir, "c.safetensors", 13, &ino), -ENOENT);
        ck_assert_int_eq(
            stf_ns_lookup(f.ns, resolve(f.ns, ".stfs/shards/a.safetensors"), "x", 1, &ino),
            -ENOTDIR);
        ck_assert_int_eq(stf_ns_lookup(f.ns, resolve(f.ns, "model"), "shards", 6, &ino), -ENOENT);
        /* no whole file but the shards: two shards, no tensor, no view */
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, resolve(f.ns, ".stfs/model.safetensors")), -1);
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, resolve(f.ns, "model.safetensors")), -1);
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, resolve(f.ns, "lm_head/weight")), -1);
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, dir), -1);
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, 0), -1);
        ck_assert_uint_eq(stf_ns_shard_ino(f.ns, 2), 0);
        close_fixture(&f);
}
END_TEST

/* One file: .stfs/model.safetensors is that file as it is, a whole shard. */
START_TEST(test_shards_one_file)
{
        static const struct ut_tensor t[] = {{"b.w", 3}, {"a.w", 5}};
        struct fixture f = {0};
        const struct stf_view *v;
        struct stf_view tmp;
        uint64_t model;
        char *src;

        make_single(&f, t, N(t), 0, 0);
        src = ut_printf("%s/m.safetensors", f.dir);
        model = resolve(f.ns, ".stfs/model.safetensors");
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, model), 0);
        check_attr(f.ns, ".stfs/model.safetensors", S_IFREG | 0444, f.m->shards[0].size, 1000);
        ck_assert_int_eq(stf_ns_view(f.ns, model, &tmp, &v), 0);
        check_view_is_file(v, src);
        stf_ns_view_put(f.ns, v);
        check_listing(f.ns, ".stfs/shards", ". .. m.safetensors");
        check_shard_file(&f, ".stfs/shards/m.safetensors", "m.safetensors", 1000);
        free(src);
        close_fixture(&f);
}
END_TEST

/* Components: each shard at its path under .stfs/shards, escaped as any
 * part ('%' is %25). */
START_TEST(test_shards_components)
{
        static const struct ut_tensor t[] = {{"w", 4}};
        struct fixture f = {0};
        char *p;

        f.dir = ut_mkdtemp();
        p = ut_printf("%s/unet", f.dir);
        ck_assert_int_eq(mkdir(p, 0755), 0);
        free(p);
        p = ut_printf("%s/a%%b", f.dir);
        ck_assert_int_eq(mkdir(p, 0755), 0);
        free(p);
        p = ut_printf("%s/unet/m.safetensors", f.dir);
        ut_write_st_u8(p, t, N(t), 1000);
        free(p);
        p = ut_printf("%s/a%%b/m.safetensors", f.dir);
        ut_write_st_u8(p, t, N(t), 2000);
        free(p);
        open_fixture(&f, f.dir, 0, 0);
        check_listing(f.ns, ".stfs/shards", ". .. a%25b unet");
        check_listing(f.ns, ".stfs/shards/unet", ". .. m.safetensors");
        check_shard_file(&f, ".stfs/shards/unet/m.safetensors", "unet/m.safetensors", 1000);
        check_shard_file(&f, ".stfs/shards/a%25b/m.safetensors", "a%b/m.safetensors", 2000);
        /* one file per component, two in all: the whole model is a view */
        ck_assert_int_eq(stf_ns_whole_shard(f.ns, resolve(f.ns, ".stfs/model.safetensors")), -1);
        close_fixture(&f);
}
END_TEST

/*
 * The view cache keeps to its budget: views are evicted least recently used
 * first and rebuilt equal; a view a reader holds survives its eviction
 * until the reader's put; one view larger than the budget is kept alone.
 */
START_TEST(test_view_cache_budget)
{
        static const char *const views[] = {
            "model/layers/0/attn/weight.npy",
            "model/layers/0/attn/bias.npy",
            "model/layers/2/attn/weight.npy",
            "model/layers/10/attn/weight.npy",
            "model/layers.part.safetensors",
            "model.part.safetensors",
            "lm_head/weight.npy",
            "model/embed/weight.npy",
        };
        const struct stf_view *held, *v, *again;
        struct fixture f = {0};
        struct stf_view tmp;
        uint64_t held_size, size0;
        uint8_t *copy;
        size_t one, budget;

        make_llama(&f, 0);
        ck_assert_uint_eq(stf_ns_view_cache_bytes(f.ns), 0);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, views[0]), &tmp, &v), 0);
        one = stf_ns_view_cache_bytes(f.ns);
        ck_assert_uint_gt(one, v->size);
        size0 = v->size;
        stf_ns_view_put(f.ns, v);
        /* room for about two .npy views */
        budget = 2 * one + one / 2;
        stf_ns_set_view_cache(f.ns, budget);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, "model.safetensors"), &tmp, &held), 0);
        held_size = held->size;
        copy = malloc(held_size);
        ck_assert_int_eq(stf_view_pread(held, f.m, 0, held_size, copy), 0);
        for (size_t i = 0; i < N(views); i++) {
                ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, views[i]), &tmp, &v), 0);
                /* a subset view is larger than the budget: kept alone */
                if (strstr(views[i], ".npy"))
                        ck_assert_uint_le(stf_ns_view_cache_bytes(f.ns), budget);
                stf_ns_view_put(f.ns, v);
        }
        /* the held view was evicted, and is still whole */
        ck_assert_int_eq(stf_view_pread(held, f.m, 0, held_size, copy), 0);
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, "model.safetensors"), &tmp, &again), 0);
        ck_assert_ptr_ne(again, held);
        ck_assert_uint_eq(again->size, held_size);
        {
                uint8_t *b = malloc(held_size);

                ck_assert_int_eq(stf_view_pread(again, f.m, 0, held_size, b), 0);
                ck_assert_mem_eq(b, copy, held_size);
                free(b);
        }
        stf_ns_view_put(f.ns, again);
        stf_ns_view_put(f.ns, held);
        /* rebuilt equal after eviction */
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, views[0]), &tmp, &v), 0);
        ck_assert_uint_eq(v->size, size0);
        stf_ns_view_put(f.ns, v);
        /* a budget of 1 byte: the last view built stays, alone */
        stf_ns_set_view_cache(f.ns, 1);
        for (size_t i = 0; i < N(views); i++) {
                ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, views[i]), &tmp, &v), 0);
                stf_ns_view_put(f.ns, v);
                ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, views[i]), &tmp, &again), 0);
                ck_assert_ptr_eq(again, v);
                ck_assert_uint_le(stf_ns_view_cache_bytes(f.ns), v->size + one);
                stf_ns_view_put(f.ns, again);
        }
        /* a raw tensor is the caller's: put is a no-op */
        ck_assert_int_eq(stf_ns_view(f.ns, resolve(f.ns, "lm_head/weight"), &tmp, &v), 0);
        ck_assert_ptr_eq(v, &tmp);
        stf_ns_view_put(f.ns, v);
        stf_ns_view_put(f.ns, NULL);
        free(copy);
        close_fixture(&f);
}
END_TEST

/* Documents: one shared copy while held, equal to a fresh one. */
START_TEST(test_doc_shared)
{
        struct fixture f = {0};
        const char *a, *b;
        size_t la, lb, wlen;
        char *want;
        struct stf_ns_attr at;

        make_llama(&f, 0);
        ck_assert_int_eq(stf_ns_doc_get(f.ns, STF_SPECIAL_HEADER_JSON, &a, &la), 0);
        ck_assert_int_eq(stf_ns_doc_get(f.ns, STF_SPECIAL_HEADER_JSON, &b, &lb), 0);
        ck_assert_ptr_eq(a, b);
        ck_assert_int_eq(stf_describe_header(f.m, f.t, &want, &wlen), 0);
        ck_assert_uint_eq(la, wlen);
        ck_assert_mem_eq(a, want, wlen);
        free(want);
        ck_assert_int_eq(stf_ns_attr(f.ns, resolve(f.ns, ".stfs/header.json"), &at), 0);
        ck_assert_uint_eq(at.size, la);
        stf_ns_doc_put(f.ns, STF_SPECIAL_HEADER_JSON);
        ck_assert_int_eq(stf_ns_doc_get(f.ns, STF_SPECIAL_METADATA_JSON, &b, &lb), 0);
        ck_assert_int_eq(stf_describe_metadata(f.m, &want, &wlen), 0);
        ck_assert_uint_eq(lb, wlen);
        ck_assert_mem_eq(b, want, wlen);
        free(want);
        stf_ns_doc_put(f.ns, STF_SPECIAL_METADATA_JSON);
        stf_ns_doc_put(f.ns, STF_SPECIAL_HEADER_JSON);
        /* released: a stat generates, measures and drops it */
        ck_assert_int_eq(stf_ns_attr(f.ns, resolve(f.ns, ".stfs/metadata.json"), &at), 0);
        ck_assert_uint_eq(at.size, lb);
        ck_assert_int_eq(stf_ns_doc_get(f.ns, STF_SPECIAL_CONTROL, &a, &la), -EINVAL);
        stf_ns_doc_put(f.ns, STF_SPECIAL_CONTROL);
        close_fixture(&f);
}
END_TEST

START_TEST(test_new_free)
{
        struct fixture f = {0};

        stf_ns_free(NULL);
        make_llama(&f, 0);
        /* a namespace built and freed without use, beside the one in use */
        {
                struct stf_ns *other;

                ck_assert_int_eq(stf_ns_new(f.m, f.t, STF_NS_LISTVIEWS, &other), 0);
                stf_ns_free(other);
        }
        close_fixture(&f);
}
END_TEST

static Suite *ns_suite(void)
{
        Suite *s = suite_create("ns");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_entry_kinds);
        tcase_add_test(tc, test_entry_unused);
        tcase_add_test(tc, test_lookup_refused);
        tcase_add_test(tc, test_lookup_real_name_wins);
        tcase_add_test(tc, test_listing);
        tcase_add_test(tc, test_listing_listviews);
        tcase_add_test(tc, test_attr);
        tcase_add_test(tc, test_attr_fullnames);
        tcase_add_test(tc, test_view);
        tcase_add_test(tc, test_view_race);
        tcase_add_test(tc, test_name_limit);
        tcase_add_test(tc, test_deep);
        tcase_add_test(tc, test_xattr);
        tcase_add_test(tc, test_very_deep);
        tcase_add_test(tc, test_shards);
        tcase_add_test(tc, test_shards_one_file);
        tcase_add_test(tc, test_shards_components);
        tcase_add_test(tc, test_view_cache_budget);
        tcase_add_test(tc, test_doc_shared);
        tcase_add_test(tc, test_new_free);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(ns_suite());
}
