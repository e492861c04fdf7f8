/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/tree: the escaping rule of tree.h (rules 1-5), inode
 * numbering, listing order, lookups and paths. Every tree built here also
 * goes through check_tree, which checks the invariants any tree must hold:
 * breadth-first contiguous numbering, sorted children, components that are
 * safe path names and only use the escape tokens of the rule, one distinct
 * node per tensor, and every tensor's path resolving back to its node.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "tree.h"
#include "util.h"

#define PATH_CAP 65536
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The files of .stfs, in listing order. */
static const struct {
        const char *name;
        unsigned index;
} specials[] = {
    {"control", STF_SPECIAL_CONTROL},
    {"header.json", STF_SPECIAL_HEADER_JSON},
    {"metadata.json", STF_SPECIAL_METADATA_JSON},
    {"model.safetensors", STF_SPECIAL_MODEL_SAFETENSORS},
    {"status", STF_SPECIAL_STATUS},
};

/* Every '%' starts "%25", "%2F" or "%2E", or the component is "%", "%t" or ends "%~N". */
static void check_component(const char *c, size_t len)
{
        ck_assert_msg(len >= 1 && len <= 238, "component of %zu bytes: '%s'", len, c);
        ck_assert_uint_eq(strlen(c), len);
        ck_assert_msg(!memchr(c, '/', len), "'/' in component '%s'", c);
        ck_assert_msg(strcmp(c, ".") && strcmp(c, ".."), "component '%s'", c);
        if (!strcmp(c, "%") || !strcmp(c, "%t"))
                return;
        for (size_t i = 0; i < len; i++) {
                if (c[i] != '%')
                        continue;
                if (i + 2 < len + 0 && c[i + 1] == '2' &&
                    (c[i + 2] == '5' || c[i + 2] == 'F' || c[i + 2] == 'E')) {
                        ck_assert_msg(c[i + 2] != 'E' || i == 0, "%%2E not leading in '%s'", c);
                        i += 2;
                        continue;
                }
                ck_assert_msg(i + 2 < len && c[i + 1] == '~', "stray '%%' in component '%s'", c);
                for (size_t j = i + 2; j < len; j++)
                        ck_assert_msg(c[j] >= '0' && c[j] <= '9', "bad %%~N in '%s'", c);
                ck_assert_msg(i <= 223, "%%~N after %zu bytes in '%s'", i, c);
                return;
        }
}

/* Walk @path from the root with stf_tree_lookup; returns the inode. */
static uint64_t resolve(const struct stf_tree *t, const char *path)
{
        uint64_t ino = STF_ROOT_INO;
        const char *p = path;

        while (*p) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t)(slash - p) : strlen(p);
                uint64_t next = 0;
                int r = stf_tree_lookup(t, ino, p, len, &next);

                ck_assert_msg(r == 0, "lookup of '%.*s' in %llu (path '%s'): %d", (int)len, p,
                              (unsigned long long)ino, path, r);
                ino = next;
                p += len + (slash ? 1 : 0);
        }
        return ino;
}

static void check_tree(const struct stf_tree *t, size_t ntensors)
{
        uint64_t count = stf_tree_count(t), next = 2, *queue, qh = 0, ql = 0, stfs = 0;
        const struct stf_node *root = stf_tree_node(t, STF_ROOT_INO);
        unsigned char *seen;
        char *path = malloc(PATH_CAP);

        ck_assert_ptr_nonnull(path);
        ck_assert_uint_ge(count, 2 + STF_SPECIAL_COUNT);
        ck_assert_ptr_nonnull(root);
        ck_assert_str_eq(root->name, "");
        ck_assert_uint_eq(root->name_len, 0);
        ck_assert_uint_eq(root->kind, STF_NODE_DIR);
        ck_assert_uint_eq(root->parent, STF_ROOT_INO);
        ck_assert_ptr_null(stf_tree_node(t, 0));
        ck_assert_ptr_null(stf_tree_node(t, count + 1));

        /* Breadth-first, children contiguous and in listing order. */
        queue = malloc((count + 1) * sizeof(*queue));
        seen = calloc(count + 1, 1);
        ck_assert_ptr_nonnull(queue);
        ck_assert_ptr_nonnull(seen);
        queue[ql++] = STF_ROOT_INO;
        while (qh < ql) {
                uint64_t d = queue[qh++];
                const struct stf_node *dn = stf_tree_node(t, d);

                ck_assert_uint_eq(dn->kind, STF_NODE_DIR);
                if (dn->nchildren)
                        ck_assert_msg(dn->first_child == next,
                                      "dir %llu: first child %u, breadth-first wants %llu",
                                      (unsigned long long)d, dn->first_child,
                                      (unsigned long long)next);
                next += dn->nchildren;
                ck_assert_uint_le(next, count + 1);
                for (uint32_t k = 0; k < dn->nchildren; k++) {
                        uint64_t c = dn->first_child + k, found = 0;
                        const struct stf_node *cn = stf_tree_node(t, c);

                        ck_assert_ptr_nonnull(cn);
                        ck_assert_uint_eq(cn->parent, d);
                        ck_assert(!seen[c]);
                        seen[c] = 1;
                        check_component(cn->name, cn->name_len);
                        if (k > 0) {
                                const struct stf_node *pn = stf_tree_node(t, c - 1);

                                ck_assert_msg(stf_name_cmp(pn->name, pn->name_len, cn->name,
                                                           cn->name_len) < 0,
                                              "'%s' listed before '%s'", pn->name, cn->name);
                        }
                        ck_assert_int_eq(stf_tree_lookup(t, d, cn->name, cn->name_len, &found), 0);
                        ck_assert_uint_eq(found, c);
                        if (d == STF_ROOT_INO && !strcmp(cn->name, ".stfs")) {
                                stfs = c;
                                ck_assert_uint_eq(cn->kind, STF_NODE_DIR);
                        } else if (cn->name[0] == '.') {
                                ck_abort_msg("hidden component '%s'", cn->name);
                        }
                        if (cn->kind == STF_NODE_SPECIAL)
                                ck_assert_uint_eq(d, stfs);
                        if (cn->kind == STF_NODE_TENSOR)
                                ck_assert_uint_lt(cn->index, ntensors);
                        if (cn->kind == STF_NODE_DIR)
                                queue[ql++] = c;
                }
        }
        ck_assert_msg(next == count + 1, "%llu nodes reached of %llu", (unsigned long long)next - 1,
                      (unsigned long long)count);

        /* .stfs: the special files. */
        ck_assert_uint_ne(stfs, 0);
        ck_assert_uint_eq(stf_tree_node(t, stfs)->nchildren, STF_SPECIAL_COUNT);
        for (unsigned i = 0; i < N(specials); i++) {
                uint64_t ino;

                ck_assert_int_eq(
                    stf_tree_lookup(t, stfs, specials[i].name, strlen(specials[i].name), &ino), 0);
                ck_assert_uint_eq(stf_tree_node(t, ino)->kind, STF_NODE_SPECIAL);
                ck_assert_uint_eq(stf_tree_node(t, ino)->index, specials[i].index);
        }

        /* One distinct node per tensor; its path leads back to it. */
        memset(seen, 0, count + 1);
        for (size_t i = 0; i < ntensors; i++) {
                uint64_t ino = stf_tree_tensor_ino(t, i);
                const struct stf_node *n = stf_tree_node(t, ino);
                int len;

                ck_assert_msg(ino >= 2 && ino <= count, "tensor %zu: ino %llu", i,
                              (unsigned long long)ino);
                ck_assert_uint_eq(n->kind, STF_NODE_TENSOR);
                ck_assert_uint_eq(n->index, i);
                ck_assert_msg(!seen[ino], "tensors share inode %llu", (unsigned long long)ino);
                seen[ino] = 1;
                len = stf_tree_path(t, ino, path, PATH_CAP);
                ck_assert_int_gt(len, 0);
                ck_assert_uint_eq(strlen(path), (size_t)len);
                ck_assert_uint_eq(resolve(t, path), ino);
        }
        ck_assert_uint_eq(stf_tree_tensor_ino(t, ntensors), 0);
        for (uint64_t ino = 2; ino <= count; ino++)
                if (stf_tree_node(t, ino)->kind == STF_NODE_TENSOR)
                        ck_assert_msg(seen[ino], "tensor node %llu belongs to no entry",
                                      (unsigned long long)ino);
        free(seen);
        free(queue);
        free(path);
}

static struct stf_tree *build_entries(const struct stf_tree_entry *e, size_t n, unsigned flags)
{
        struct stf_tree *t = NULL;
        struct stf_diag d = {{0}};
        int ret = stf_tree_build(e, n, flags, &t, &d);

        ck_assert_msg(ret == 0, "build failed (%d): %s", ret, d.msg);
        ck_assert_ptr_nonnull(t);
        check_tree(t, n);
        return t;
}

static struct stf_tree *build_names(const char *const *names, size_t n, unsigned flags)
{
        struct stf_tree_entry *e = calloc(n ? n : 1, sizeof(*e));
        struct stf_tree *t;

        ck_assert_ptr_nonnull(e);
        for (size_t i = 0; i < n; i++)
                e[i] = (struct stf_tree_entry){NULL, names[i], strlen(names[i])};
        t = build_entries(e, n, flags);
        free(e);
        return t;
}

static void expect_path(const struct stf_tree *t, size_t i, const char *want)
{
        char path[PATH_CAP];
        int len = stf_tree_path(t, stf_tree_tensor_ino(t, i), path, sizeof(path));

        ck_assert_int_ge(len, 0);
        ck_assert_msg(!strcmp(path, want), "tensor %zu: path '%s', want '%s'", i, path, want);
}

/* The path of a tree holding only @name. */
static void expect_single(const char *name, unsigned flags, const char *want)
{
        struct stf_tree *t = build_names(&name, 1, flags);

        expect_path(t, 0, want);
        stf_tree_free(t);
}

static char *repeat(const char *unit, size_t times, const char *head, const char *tail)
{
        size_t ul = strlen(unit), hl = strlen(head), tl = strlen(tail);
        char *s = malloc(hl + ul * times + tl + 1), *p = s;

        ck_assert_ptr_nonnull(s);
        memcpy(p, head, hl);
        p += hl;
        for (size_t i = 0; i < times; i++, p += ul)
                memcpy(p, unit, ul);
        memcpy(p, tail, tl + 1);
        return s;
}

/* ---- splitting and escaping ----------------------------------------- */

START_TEST(test_split)
{
        static const char *const names[] = {"model.layers.0.weight", "model.layers.0.bias",
                                            "model.embed.weight", "lm_head.weight", "top"};
        struct stf_tree *t = build_names(names, N(names), 0);

        expect_path(t, 0, "model/layers/0/weight");
        expect_path(t, 1, "model/layers/0/bias");
        expect_path(t, 2, "model/embed/weight");
        expect_path(t, 3, "lm_head/weight");
        expect_path(t, 4, "top");
        ck_assert_uint_eq(resolve(t, "model/layers/0"),
                          stf_tree_node(t, stf_tree_tensor_ino(t, 0))->parent);
        stf_tree_free(t);
}
END_TEST

START_TEST(test_rule1_percent_slash)
{
        expect_single("a%b", 0, "a%25b");
        expect_single("%", 0, "%25");
        expect_single("%25", 0, "%2525");
        expect_single("%2F", 0, "%252F");
        expect_single("%t", 0, "%25t");
        expect_single("%~0", 0, "%25~0");
        expect_single("a/b", 0, "a%2Fb");
        expect_single("/", 0, "%2F");
        expect_single("//", 0, "%2F%2F");
        expect_single("a/b.c%d", 0, "a%2Fb/c%25d");
        expect_single("../etc/passwd", 0, "%/%/%2Fetc%2Fpasswd");
}
END_TEST

START_TEST(test_rule2_leading_dot)
{
        expect_single(".hidden", STF_TREE_FLAT, "%2Ehidden");
        expect_single(".", STF_TREE_FLAT, "%2E");
        expect_single("..", STF_TREE_FLAT, "%2E.");
        expect_single("...", STF_TREE_FLAT, "%2E..");
        expect_single(".stfs", STF_TREE_FLAT, "%2Estfs");
        expect_single(".%/", STF_TREE_FLAT, "%2E%25%2F");
        expect_single("a.b.c", STF_TREE_FLAT, "a.b.c");
        expect_single("a.", STF_TREE_FLAT, "a.");
        expect_single("a/b", STF_TREE_FLAT, "a%2Fb");
        expect_single("", STF_TREE_FLAT, "%");
        expect_single("%2E", STF_TREE_FLAT, "%252E");
}
END_TEST

START_TEST(test_rule3_empty_parts)
{
        expect_single("a..b", 0, "a/%/b");
        expect_single(".a", 0, "%/a");
        expect_single("a.", 0, "a/%");
        expect_single(".", 0, "%/%");
        expect_single("..", 0, "%/%/%");
        expect_single("", 0, "%");
        expect_single(".stfs", 0, "%/stfs");
        expect_single("a...b.", 0, "a/%/%/b/%");
}
END_TEST

START_TEST(test_rule4_tensor_and_prefix)
{
        static const char *const n1[] = {"a.b", "a.b.c"};
        static const char *const n2[] = {"x.y.z", "x", "x.y"};
        static const char *const n3[] = {"a.b.", "a.b"};
        static const char *const n4[] = {"", ".x"};
        struct stf_tree *t = build_names(n1, N(n1), 0);
        uint64_t ino;

        expect_path(t, 0, "a/b/%t");
        expect_path(t, 1, "a/b/c");
        ck_assert_int_eq(stf_tree_lookup(t, resolve(t, "a/b"), "%t", 2, &ino), 0);
        ck_assert_uint_eq(ino, stf_tree_tensor_ino(t, 0));
        ck_assert_uint_eq(stf_tree_node(t, resolve(t, "a/b"))->kind, STF_NODE_DIR);
        stf_tree_free(t);

        t = build_names(n2, N(n2), 0);
        expect_path(t, 0, "x/y/z");
        expect_path(t, 1, "x/%t");
        expect_path(t, 2, "x/y/%t");
        stf_tree_free(t);

        t = build_names(n3, N(n3), 0);
        expect_path(t, 0, "a/b/%");
        expect_path(t, 1, "a/b/%t");
        stf_tree_free(t);

        t = build_names(n4, N(n4), 0);
        expect_path(t, 0, "%/%t");
        expect_path(t, 1, "%/x");
        stf_tree_free(t);
}
END_TEST

/* In flat mode nothing is a directory, so rule 4 never applies. */
START_TEST(test_flat)
{
        static const char *const names[] = {
            "model.layers.0.weight", "a", "a.b", "a.b.c", "a..b", ".x"};
        struct stf_tree *t = build_names(names, N(names), STF_TREE_FLAT);
        const struct stf_node *root = stf_tree_node(t, STF_ROOT_INO);

        expect_path(t, 0, "model.layers.0.weight");
        expect_path(t, 1, "a");
        expect_path(t, 2, "a.b");
        expect_path(t, 3, "a.b.c");
        expect_path(t, 4, "a..b");
        expect_path(t, 5, "%2Ex");
        ck_assert_uint_eq(root->nchildren, N(names) + 1);
        ck_assert_uint_eq(stf_tree_count(t), 1 + N(names) + 1 + STF_SPECIAL_COUNT);
        stf_tree_free(t);
}
END_TEST

/* ---- rule 5: long components ---------------------------------------- */

START_TEST(test_rule5_cut)
{
        char *n238 = repeat("a", 238, "", ""), *n239 = repeat("a", 239, "", ""),
             *n300 = repeat("a", 300, "", ""), *w;

        /* 238 = 255 - strlen(".part.safetensors"): every view name fits in 255. */
        expect_single(n238, 0, n238);
        w = repeat("a", 223, "", "%~0");
        expect_single(n239, 0, w);
        expect_single(n300, 0, w);
        expect_single(n300, STF_TREE_FLAT, w);
        free(w);
        /* Short raw, long once escaped. */
        free(n239);
        n239 = repeat("a", 236, "", "%");
        w = repeat("a", 223, "", "%~0");
        expect_single(n239, 0, w);
        free(w);
        /* Only the long part is cut; its directory and file stay. */
        free(n300);
        n300 = repeat("b", 300, "x.", ".w");
        w = repeat("b", 223, "x/", "%~0/w");
        expect_single(n300, 0, w);
        free(w);
        free(n238);
        free(n239);
        free(n300);
}
END_TEST

START_TEST(test_rule5_cut_not_in_escape)
{
        char *name, *want;

        /* "%25" x 100: byte 223 is inside a token, cut back to 222. */
        name = repeat("%", 100, "", "");
        want = repeat("%25", 74, "", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        /* "a" + "%25" x 100: the cut at 223 falls between two tokens. */
        name = repeat("%", 100, "a", "");
        want = repeat("%25", 74, "a", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        /* "aa" + "%25" x 100: cut back to 221. */
        name = repeat("%", 100, "aa", "");
        want = repeat("%25", 73, "aa", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        /* "/" escapes too. */
        name = repeat("/", 100, "a", "");
        want = repeat("%2F", 74, "a", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        /* Flat: the leading "%2E" counts toward the 223. */
        name = repeat("a", 300, ".", "");
        want = repeat("a", 220, "%2E", "%~0");
        expect_single(name, STF_TREE_FLAT, want);
        free(name);
        free(want);
}
END_TEST

START_TEST(test_rule5_cut_utf8)
{
        char *name, *want;

        name = repeat("\xc3\xa9", 150, "a", ""); /* é: 2 bytes */
        want = repeat("\xc3\xa9", 111, "a", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        name = repeat("\xe2\x82\xac", 100, "", ""); /* €: 3 bytes, cut back to 222 */
        want = repeat("\xe2\x82\xac", 74, "", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        name = repeat("\xe2\x82\xac", 100, "a", "");
        want = repeat("\xe2\x82\xac", 74, "a", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
        name = repeat("\xf0\x9f\x98\x80", 70, "ab", ""); /* 4 bytes */
        want = repeat("\xf0\x9f\x98\x80", 55, "ab", "%~0");
        expect_single(name, 0, want);
        free(name);
        free(want);
}
END_TEST

/* N numbers, in byte order of the full parts, the parts sharing the cut prefix. */
START_TEST(test_rule5_numbering)
{
        char *l3 = repeat("q", 260, "", "3"), *l1 = repeat("q", 260, "", "1"),
             *l2 = repeat("q", 260, "", "2"), *other = repeat("r", 300, "", ""),
             *short240 = repeat("q", 238, "", "");
        const char *names[] = {l3, l1, other, l2, short240};
        struct stf_tree *t = build_names(names, N(names), 0);
        char *w;

        w = repeat("q", 223, "", "%~2");
        expect_path(t, 0, w);
        free(w);
        w = repeat("q", 223, "", "%~0");
        expect_path(t, 1, w);
        free(w);
        w = repeat("r", 223, "", "%~0");
        expect_path(t, 2, w);
        free(w);
        w = repeat("q", 223, "", "%~1");
        expect_path(t, 3, w);
        free(w);
        expect_path(t, 4, short240);
        stf_tree_free(t);
        free(l1);
        free(l2);
        free(l3);
        free(other);
        free(short240);
}
END_TEST

/* Numbering is per directory. */
START_TEST(test_rule5_per_directory)
{
        char *a = repeat("z", 300, "d1.", ""), *b = repeat("z", 301, "d2.", ""),
             *c = repeat("z", 301, "d1.", ""), *w;
        const char *names[] = {a, b, c};
        struct stf_tree *t = build_names(names, N(names), 0);

        w = repeat("z", 223, "d1/", "%~0");
        expect_path(t, 0, w);
        free(w);
        w = repeat("z", 223, "d2/", "%~0");
        expect_path(t, 1, w);
        free(w);
        w = repeat("z", 223, "d1/", "%~1");
        expect_path(t, 2, w);
        free(w);
        stf_tree_free(t);
        free(a);
        free(b);
        free(c);
}
END_TEST

/*
 * "In byte order of the full parts": the parts as named, not as escaped.
 * '-' (0x2d) sorts before '/' (0x2f), though "%2F" would sort first.
 */
START_TEST(test_rule5_raw_byte_order)
{
        char *dash = repeat("a", 260, "", "-x"), *slash = repeat("a", 260, "", "/x"), *w;
        const char *names[] = {slash, dash};
        struct stf_tree *t = build_names(names, N(names), 0);

        w = repeat("a", 223, "", "%~1");
        expect_path(t, 0, w);
        free(w);
        w = repeat("a", 223, "", "%~0");
        expect_path(t, 1, w);
        free(w);
        stf_tree_free(t);
        free(dash);
        free(slash);
}
END_TEST

/* A long directory and a long file sharing a prefix, with a %t inside. */
START_TEST(test_rule5_dirs)
{
        char *d = repeat("m", 280, "", ".w"), *d2 = repeat("m", 280, "", ""),
             *f = repeat("m", 281, "", ""), *w;
        const char *names[] = {d, d2, f};
        struct stf_tree *t = build_names(names, N(names), 0);

        w = repeat("m", 223, "", "%~0/w");
        expect_path(t, 0, w);
        free(w);
        w = repeat("m", 223, "", "%~0/%t");
        expect_path(t, 1, w);
        free(w);
        w = repeat("m", 223, "", "%~1");
        expect_path(t, 2, w);
        free(w);
        stf_tree_free(t);
        free(d);
        free(d2);
        free(f);
}
END_TEST

/* Deep and huge names: 5000 parts; one part of 100,000 bytes. */
START_TEST(test_extreme_names)
{
        char *deep = repeat("a.", 4999, "", "a"), *huge = repeat("h", 100000, "", ".w"), *w;
        const char *names[] = {deep, huge};
        struct stf_tree *t = build_names(names, N(names), 0);
        char *path = malloc(PATH_CAP);

        ck_assert_int_eq(stf_tree_path(t, stf_tree_tensor_ino(t, 0), path, PATH_CAP), 9999);
        w = repeat("h", 223, "", "%~0/w");
        expect_path(t, 1, w);
        free(w);
        free(path);
        stf_tree_free(t);
        free(deep);
        free(huge);
}
END_TEST

/* ---- collision freedom ---------------------------------------------- */

static int cmp_cstr(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *const adversarial[] = {
    "a",
    "a.b",
    "a..b",
    "a.%",
    "a.%25",
    "a/b",
    "a%2Fb",
    "a.%2F",
    ".a",
    "a.",
    "..",
    ".",
    "",
    "%",
    "%t",
    "a.%t",
    "%2E",
    "a.%2E",
    "%2Ea",
    "a.b.c",
    "a.b.c.d",
    ".stfs",
    "stfs",
    "x..",
    "x...",
    "%25",
    "%%",
    "%~0",
    "a.%~0",
    "layers.2",
    "layers.02",
    "layers.10",
    "layers.1",
    "layers.01",
    "layers.001",
    "t",
    "%/",
    "/%",
    "a.b/",
    "a.b/.c",
    "\xc3\xa9",
    "e\xcc\x81",
    "a.\xc3\xa9",
    ".stfs.header.json",
    "header.json",
    "1",
    "01",
    "0",
    "00",
    "a0",
    "a00",
    "a.0",
    "a.00",
    "%2e",
    "%2f",
    "a.t",
    ".%t",
    "%.t",
    "..t",
    "t..",
    "/.",
    "./",
};

static char **make_adversarial(size_t *count)
{
        size_t cap = N(adversarial) + 400, n = 0;
        char **v = malloc(cap * sizeof(*v));
        static const char alpha[] = "ab.%/0129tE~";
        unsigned seed = 7;

        ck_assert_ptr_nonnull(v);
        for (size_t i = 0; i < N(adversarial); i++)
                v[n++] = strdup(adversarial[i]);
        /* Random short names over a hostile alphabet. */
        for (int i = 0; i < 300; i++) {
                char buf[16];
                size_t len;

                seed = seed * 1103515245u + 12345u;
                len = (seed >> 16) % 9;
                for (size_t j = 0; j < len; j++) {
                        seed = seed * 1103515245u + 12345u;
                        buf[j] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
                }
                buf[len] = '\0';
                v[n++] = strdup(buf);
        }
        /* Long parts sharing cut prefixes, some with escapes and UTF-8 near the cut. */
        for (int i = 0; i < 60; i++) {
                static const char *const tails[] = {"",   "%",  "/", "\xc3\xa9", ".w",
                                                    "..", "%%", "1", "01",       "\xe2\x82\xac"};
                static const char *const heads[] = {"", "x.", "%", "\xc3\xa9"};
                char *s =
                    repeat(i % 3 ? "k" : "%", 230 + (size_t)(i % 20), heads[i % 4], tails[i % 10]);

                v[n++] = s;
        }
        for (size_t i = 0; i < n; i++)
                ck_assert_ptr_nonnull(v[i]);
        /* Distinct names only (duplicates are an error). */
        qsort(v, n, sizeof(*v), cmp_cstr);
        {
                size_t k = 0;

                for (size_t i = 0; i < n; i++) {
                        if (k && !strcmp(v[k - 1], v[i])) {
                                free(v[i]);
                                continue;
                        }
                        v[k++] = v[i];
                }
                n = k;
        }
        *count = n;
        return v;
}

static void free_strv(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

START_TEST(test_collision_free)
{
        size_t n;
        char **v = make_adversarial(&n);
        unsigned flags = _i ? STF_TREE_FLAT : 0;
        struct stf_tree *t = build_names((const char *const *)v, n, flags);

        ck_assert_uint_gt(n, 300);
        stf_tree_free(t);
        free_strv(v, n);
}
END_TEST

/* The same hostile names under several components. */
START_TEST(test_collision_free_prefixes)
{
        static const char *const prefixes[] = {"unet", "vae/decoder", "vae/encoder", "%",
                                               ".x",   "a/b/c",       "te%2F"};
        size_t n;
        char **v = make_adversarial(&n);
        struct stf_tree_entry *e = calloc(n * N(prefixes), sizeof(*e));
        struct stf_tree *t;

        ck_assert_ptr_nonnull(e);
        for (size_t p = 0; p < N(prefixes); p++)
                for (size_t i = 0; i < n; i++)
                        e[p * n + i] = (struct stf_tree_entry){prefixes[p], v[i], strlen(v[i])};
        t = build_entries(e, n * N(prefixes), _i ? STF_TREE_FLAT : 0);
        stf_tree_free(t);
        free(e);
        free_strv(v, n);
}
END_TEST

/*
 * A name of one component that spells a deeper component's path
 * (prefix "vae", name "x.w" beside prefix "vae/x", name "w") maps to the
 * same path by rules 1-5. Whatever the builder does, it must not hand out
 * a tree where two tensors share a node.
 */
START_TEST(test_prefix_name_boundary)
{
        const struct stf_tree_entry e[] = {{"vae", "x.w", 3}, {"vae/x", "w", 1}};
        struct stf_tree *t = NULL;
        struct stf_diag d = {{0}};
        int ret = stf_tree_build(e, 2, 0, &t, &d);

        ck_assert_msg(ret == 0 || ret == -EINVAL, "ret %d", ret);
        if (ret == 0) {
                check_tree(t, 2);
                stf_tree_free(t);
        } else {
                ck_assert_ptr_null(t);
                ck_assert(d.msg[0]);
        }
}
END_TEST

/* ---- order and numbering -------------------------------------------- */

START_TEST(test_inode_numbers)
{
        static const char *const names[] = {"b.x", "a", "b.y"};
        struct stf_tree *t = build_names(names, N(names), 0);
        const struct stf_node *root = stf_tree_node(t, 1);
        const uint64_t nsp = N(specials), bx = 5 + nsp;

        ck_assert_uint_eq(N(specials), STF_SPECIAL_COUNT);
        /* root; .stfs a b; the specials; x y */
        ck_assert_uint_eq(stf_tree_count(t), 1 + 3 + nsp + 2);
        ck_assert_uint_eq(root->first_child, 2);
        ck_assert_uint_eq(root->nchildren, 3);
        ck_assert_str_eq(stf_tree_node(t, 2)->name, ".stfs");
        ck_assert_str_eq(stf_tree_node(t, 3)->name, "a");
        ck_assert_str_eq(stf_tree_node(t, 4)->name, "b");
        ck_assert_uint_eq(stf_tree_node(t, 2)->first_child, 5);
        for (uint64_t i = 0; i < nsp; i++) {
                ck_assert_str_eq(stf_tree_node(t, 5 + i)->name, specials[i].name);
                ck_assert_uint_eq(stf_tree_node(t, 5 + i)->parent, 2);
        }
        ck_assert_str_eq(stf_tree_node(t, bx)->name, "x");
        ck_assert_str_eq(stf_tree_node(t, bx + 1)->name, "y");
        ck_assert_uint_eq(stf_tree_node(t, bx)->parent, 4);
        ck_assert_uint_eq(stf_tree_node(t, 4)->first_child, bx);
        ck_assert_uint_eq(stf_tree_node(t, 4)->nchildren, 2);
        ck_assert_uint_eq(stf_tree_tensor_ino(t, 0), bx);
        ck_assert_uint_eq(stf_tree_tensor_ino(t, 1), 3);
        ck_assert_uint_eq(stf_tree_tensor_ino(t, 2), bx + 1);
        ck_assert_uint_eq(stf_tree_node(t, 3)->index, 1);
        ck_assert_uint_eq(stf_tree_node(t, 3)->kind, STF_NODE_TENSOR);
        ck_assert_uint_eq(stf_tree_node(t, 4)->kind, STF_NODE_DIR);
        ck_assert_uint_eq(stf_tree_node(t, 2)->parent, 1);
        stf_tree_free(t);
}
END_TEST

START_TEST(test_empty_tree)
{
        struct stf_tree *t = build_names(NULL, 0, 0);

        ck_assert_uint_eq(stf_tree_count(t), 2 + STF_SPECIAL_COUNT);
        ck_assert_uint_eq(stf_tree_node(t, 1)->nchildren, 1);
        ck_assert_str_eq(stf_tree_node(t, 2)->name, ".stfs");
        ck_assert_uint_eq(stf_tree_tensor_ino(t, 0), 0);
        stf_tree_free(t);
}
END_TEST

START_TEST(test_listing_numeric)
{
        const char *names[14];
        char buf[14][32];
        struct stf_tree *t;
        uint64_t layers;
        const struct stf_node *dn;

        /* Given in byte order: 0, 1, 10, 11, 12, 2, ... */
        for (int i = 0; i < 13; i++) {
                snprintf(buf[i], sizeof(buf[i]), "layers.%d.w", i);
                names[i] = buf[i];
        }
        qsort(names, 13, sizeof(names[0]), cmp_cstr);
        t = build_names(names, 13, 0);
        layers = resolve(t, "layers");
        dn = stf_tree_node(t, layers);
        ck_assert_uint_eq(dn->nchildren, 13);
        for (uint32_t k = 0; k < 13; k++) {
                char want[8];

                snprintf(want, sizeof(want), "%u", k);
                ck_assert_str_eq(stf_tree_node(t, dn->first_child + k)->name, want);
        }
        /* layers/2 gets a smaller inode than layers/10. */
        ck_assert_uint_lt(resolve(t, "layers/2"), resolve(t, "layers/10"));
        ck_assert_uint_lt(resolve(t, "layers/2/w"), resolve(t, "layers/10/w"));
        stf_tree_free(t);
}
END_TEST

START_TEST(test_listing_mixed)
{
        static const char *const names[] = {"a10", "b", "a2", "a0", "a", "B", "a1b", "a1a"};
        static const char *const want[] = {".stfs", "B", "a", "a0", "a1a", "a1b", "a2", "a10", "b"};
        struct stf_tree *t = build_names(names, N(names), 0);
        const struct stf_node *root = stf_tree_node(t, 1);

        ck_assert_uint_eq(root->nchildren, N(want));
        for (uint32_t k = 0; k < N(want); k++)
                ck_assert_str_eq(stf_tree_node(t, root->first_child + k)->name, want[k]);
        stf_tree_free(t);
}
END_TEST

static int sgn(int x)
{
        return (x > 0) - (x < 0);
}

START_TEST(test_name_cmp)
{
#define CMP(a, b) sgn(stf_name_cmp(a, strlen(a), b, strlen(b)))
        ck_assert_int_eq(CMP("2", "10"), -1);
        ck_assert_int_eq(CMP("10", "2"), 1);
        ck_assert_int_eq(CMP("a2", "a10"), -1);
        ck_assert_int_eq(CMP("a", "a0"), -1);
        ck_assert_int_eq(CMP("a", "b"), -1);
        ck_assert_int_eq(CMP("B", "a"), -1);
        ck_assert_int_eq(CMP("x9y", "x10y"), -1);
        ck_assert_int_eq(CMP("x10y", "x10z"), -1);
        ck_assert_int_eq(CMP("abc", "abc"), 0);
        ck_assert_int_eq(CMP("", ""), 0);
        ck_assert_int_eq(CMP("", "a"), -1);
        ck_assert_int_eq(CMP("", "0"), -1);
        ck_assert_int_eq(CMP("123456789012345678901234567890", "99999999999999999999999999999"), 1);
        ck_assert_int_eq(CMP("18446744073709551616", "18446744073709551615"), 1);
        /* Equal numbers with different spellings are still different names. */
        ck_assert_int_ne(CMP("01", "1"), 0);
        ck_assert_int_eq(CMP("01", "1"), -CMP("1", "01"));
        ck_assert_int_ne(CMP("007", "7"), 0);
        ck_assert_int_ne(CMP("0", "00"), 0);
        /* Lengths, not NULs, bound the names. */
        ck_assert_int_eq(sgn(stf_name_cmp("a2x", 2, "a2", 2)), 0);
        ck_assert_int_eq(sgn(stf_name_cmp("a\0b", 3, "a\0c", 3)), -1);
        ck_assert_int_eq(sgn(stf_name_cmp("a\0", 2, "a", 1)), 1);
#undef CMP
}
END_TEST

static int cmp_name_qsort(const void *a, const void *b)
{
        const char *x = *(const char *const *)a, *y = *(const char *const *)b;

        return stf_name_cmp(x, strlen(x), y, strlen(y));
}

/* stf_name_cmp is a total order: sorted, every pair compares consistently. */
START_TEST(test_name_cmp_total_order)
{
        static const char alpha[] = "00129ab.";
        enum { M = 400 };
        char *v[M], buf[8];
        unsigned seed = 99;

        for (int i = 0; i < M; i++) {
                size_t len;

                seed = seed * 1103515245u + 12345u;
                len = (seed >> 16) % 6;
                for (size_t j = 0; j < len; j++) {
                        seed = seed * 1103515245u + 12345u;
                        buf[j] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
                }
                buf[len] = '\0';
                v[i] = strdup(buf);
        }
        qsort(v, M, sizeof(v[0]), cmp_name_qsort);
        for (int i = 0; i < M; i++) {
                for (int j = 0; j < M; j++) {
                        int c = sgn(stf_name_cmp(v[i], strlen(v[i]), v[j], strlen(v[j])));
                        int want = strcmp(v[i], v[j]) == 0 ? 0 : (i < j ? -1 : 1);

                        ck_assert_msg(c == want, "'%s' (at %d) vs '%s' (at %d): %d, want %d", v[i],
                                      i, v[j], j, c, want);
                }
        }
        for (int i = 0; i < M; i++)
                free(v[i]);
}
END_TEST

/* Two builds from the same names in different input orders number alike. */
START_TEST(test_deterministic)
{
        size_t n;
        char **v = make_adversarial(&n);
        const char **w = malloc(n * sizeof(*w));
        struct stf_tree *a, *b;
        unsigned seed = 3;

        ck_assert_ptr_nonnull(w);
        for (size_t i = 0; i < n; i++)
                w[i] = v[i];
        for (size_t i = n - 1; i > 0; i--) {
                size_t j;
                const char *tmp;

                seed = seed * 1103515245u + 12345u;
                j = (seed >> 8) % (i + 1);
                tmp = w[i];
                w[i] = w[j];
                w[j] = tmp;
        }
        a = build_names((const char *const *)v, n, 0);
        b = build_names(w, n, 0);
        ck_assert_uint_eq(stf_tree_count(a), stf_tree_count(b));
        for (uint64_t ino = 1; ino <= stf_tree_count(a); ino++) {
                const struct stf_node *x = stf_tree_node(a, ino), *y = stf_tree_node(b, ino);

                ck_assert_uint_eq(x->name_len, y->name_len);
                ck_assert_str_eq(x->name, y->name);
                ck_assert_uint_eq(x->kind, y->kind);
                ck_assert_uint_eq(x->parent, y->parent);
                ck_assert_uint_eq(x->nchildren, y->nchildren);
                if (x->nchildren)
                        ck_assert_uint_eq(x->first_child, y->first_child);
                if (x->kind == STF_NODE_TENSOR)
                        ck_assert_str_eq(v[x->index], w[y->index]);
                else if (x->kind == STF_NODE_SPECIAL)
                        ck_assert_uint_eq(x->index, y->index);
        }
        stf_tree_free(a);
        stf_tree_free(b);
        free(w);
        free_strv(v, n);
}
END_TEST

START_TEST(test_big_model_shape)
{
        enum { L = 200, P = 12 };
        static const char *const parts[P] = {
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
            "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight",
            "self_attn.q_proj.bias",   "self_attn.k_proj.bias",   "self_attn.v_proj.bias"};
        char **v = malloc((L * P + 3) * sizeof(*v));
        size_t n = 0;
        struct stf_tree *t;

        ck_assert_ptr_nonnull(v);
        for (int l = 0; l < L; l++)
                for (int p = 0; p < P; p++)
                        v[n++] = ut_printf("model.layers.%d.%s", l, parts[p]);
        v[n++] = strdup("model.embed_tokens.weight");
        v[n++] = strdup("model.norm.weight");
        v[n++] = strdup("lm_head.weight");
        t = build_names((const char *const *)v, n, 0);
        expect_path(t, 5 * P + 4, "model/layers/5/mlp/gate_proj/weight");
        expect_path(t, n - 1, "lm_head/weight");
        ck_assert_uint_eq(stf_tree_node(t, resolve(t, "model/layers"))->nchildren, L);
        stf_tree_free(t);
        free_strv(v, n);
}
END_TEST

/* ---- companion files (FILE nodes) ------------------------------------ */

/* The FILE node at '/'-separated @path, or 0. */
static uint64_t file_at(const struct stf_tree *t, const char *path)
{
        uint64_t ino = STF_ROOT_INO;

        while (*path) {
                size_t len = strcspn(path, "/");

                if (stf_tree_lookup(t, ino, path, len, &ino))
                        return 0;
                path += len + (path[len] == '/');
        }
        return stf_tree_node(t, ino)->kind == STF_NODE_FILE ? ino : 0;
}

START_TEST(test_files)
{
        const struct stf_tree_entry e[] = {
            {"unet", "conv.w", 6},
            {NULL, "lm_head", 7},
            {NULL, "model.norm", 10},
        };
        static const char *const files[] = {
            "config.json",      /* 0: root */
            "unet/config.json", /* 1: beside unet's tensors */
            "sched/s.json",     /* 2: a directory of files only */
            "lm_head",          /* 3: a tensor's path: left out */
            "model",            /* 4: a directory's name: left out */
            "lm_head/x.txt",    /* 5: would make lm_head a directory: left out */
            "100%.md",          /* 6: escaped like a part */
        };
        struct stf_tree *t = NULL;
        struct stf_diag d = {{0}};
        uint64_t ino;

        ck_assert_int_eq(stf_tree_build_files(e, N(e), files, N(files), 0, &t, &d), 0);
        check_tree(t, N(e));
        expect_path(t, 0, "unet/conv/w");
        expect_path(t, 1, "lm_head");
        expect_path(t, 2, "model/norm");
        ck_assert_uint_eq(stf_tree_node(t, file_at(t, "config.json"))->index, 0);
        ck_assert_uint_eq(stf_tree_node(t, file_at(t, "unet/config.json"))->index, 1);
        ck_assert_uint_eq(stf_tree_node(t, file_at(t, "sched/s.json"))->index, 2);
        ck_assert_uint_eq(stf_tree_node(t, file_at(t, "100%25.md"))->index, 6);
        ck_assert_int_eq(stf_tree_lookup(t, STF_ROOT_INO, "lm_head", 7, &ino), 0);
        ck_assert_uint_eq(stf_tree_node(t, ino)->kind, STF_NODE_TENSOR);
        ck_assert_int_eq(stf_tree_lookup(t, STF_ROOT_INO, "model", 5, &ino), 0);
        ck_assert_uint_eq(stf_tree_node(t, ino)->kind, STF_NODE_DIR);
        ck_assert_uint_eq(file_at(t, "lm_head/x.txt"), 0);
        stf_tree_free(t);

        /* flat: a file named like a tensor is left out, the tensor stays */
        ck_assert_int_eq(stf_tree_build_files(e, N(e), (const char *const[]){"model.norm", "a"}, 2,
                                              STF_TREE_FLAT, &t, &d),
                         0);
        ck_assert_int_eq(stf_tree_lookup(t, STF_ROOT_INO, "model.norm", 10, &ino), 0);
        ck_assert_uint_eq(stf_tree_node(t, ino)->kind, STF_NODE_TENSOR);
        ck_assert_uint_eq(stf_tree_node(t, file_at(t, "a"))->index, 1);
        stf_tree_free(t);
}
END_TEST

/* ---- prefixes -------------------------------------------------------- */

START_TEST(test_prefixes)
{
        const struct stf_tree_entry e[] = {
            {"unet", "down.0.w", 8},
            {"vae/decoder", "conv.w", 6},
            {"vae/encoder", "conv.w", 6},
            {"text%enc", "w", 1},
            {".x", "w", 1},
            {"unet", "up.w", 4},
            {"vae/decoder", "", 0},
        };
        struct stf_tree *t = build_entries(e, N(e), 0);

        expect_path(t, 0, "unet/down/0/w");
        expect_path(t, 1, "vae/decoder/conv/w");
        expect_path(t, 2, "vae/encoder/conv/w");
        expect_path(t, 3, "text%25enc/w");
        expect_path(t, 4, "%2Ex/w");
        expect_path(t, 5, "unet/up/w");
        expect_path(t, 6, "vae/decoder/%");
        stf_tree_free(t);
}
END_TEST

/* Flat mode keeps each component's tensors under the component. */
START_TEST(test_prefixes_flat)
{
        const struct stf_tree_entry e[] = {
            {"unet", "down.0.w", 8}, {"vae", "down.0.w", 8}, {"vae", ".a", 2}};
        struct stf_tree *t = build_entries(e, N(e), STF_TREE_FLAT);

        expect_path(t, 0, "unet/down.0.w");
        expect_path(t, 1, "vae/down.0.w");
        expect_path(t, 2, "vae/%2Ea");
        stf_tree_free(t);
}
END_TEST

START_TEST(test_prefix_null_or_empty)
{
        const struct stf_tree_entry e[] = {{NULL, "a.b", 3}, {"", "c", 1}};
        struct stf_tree *t = build_entries(e, N(e), 0);

        expect_path(t, 0, "a/b");
        expect_path(t, 1, "c");
        stf_tree_free(t);
}
END_TEST

/* ---- errors ---------------------------------------------------------- */

static void expect_build_fails(const struct stf_tree_entry *e, size_t n, unsigned flags, int want,
                               const char *frag)
{
        struct stf_tree *t = (struct stf_tree *)(uintptr_t)1;
        struct stf_diag d = {{0}};
        int ret = stf_tree_build(e, n, flags, &t, &d);

        ck_assert_msg(ret == want, "got %d, want %d (%s)", ret, want, d.msg);
        ck_assert_ptr_null(t);
        if (frag)
                ut_assert_has(d.msg, frag);
        t = (struct stf_tree *)(uintptr_t)1;
        ck_assert_int_eq(stf_tree_build(e, n, flags, &t, NULL), want);
        ck_assert_ptr_null(t);
}

START_TEST(test_duplicate)
{
        const struct stf_tree_entry e1[] = {{NULL, "x", 1}, {NULL, "a.b", 3}, {NULL, "a.b", 3}};
        const struct stf_tree_entry e2[] = {{"u", "w", 1}, {"v", "w", 1}, {"u", "w", 1}};
        const struct stf_tree_entry e3[] = {{NULL, "a", 1}, {"", "a", 1}};
        const struct stf_tree_entry e4[] = {{NULL, "a.b.c", 3}, {NULL, "a.bcd", 3}};

        expect_build_fails(e1, N(e1), 0, -EINVAL, "a.b");
        expect_build_fails(e1, N(e1), STF_TREE_FLAT, -EINVAL, "a.b");
        expect_build_fails(e2, N(e2), 0, -EINVAL, "'w'");
        expect_build_fails(e3, N(e3), 0, -EINVAL, "'a'");
        /* name_len is authoritative: both are "a.b". */
        expect_build_fails(e4, N(e4), 0, -EINVAL, NULL);
}
END_TEST

START_TEST(test_nul_in_name)
{
        const struct stf_tree_entry e[] = {{NULL, "a\0b", 3}};

        expect_build_fails(e, 1, 0, -EINVAL, "NUL");
}
END_TEST

START_TEST(test_lookup_errors)
{
        static const char *const names[] = {"a.b", "c"};
        struct stf_tree *t = build_names(names, N(names), 0);
        uint64_t ino = 12345, a = resolve(t, "a"), stfs = resolve(t, ".stfs");

        ck_assert_int_eq(stf_tree_lookup(t, 1, "zz", 2, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, "", 0, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, "b", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, a, "c", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, "a.b", 3, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, "A", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, ".", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, 1, "..", 2, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, stfs, "nothing", 7, &ino), -ENOENT);
        ck_assert_uint_eq(ino, 12345);
        /* A file is not a directory. */
        ck_assert_int_eq(stf_tree_lookup(t, resolve(t, "c"), "x", 1, &ino), -ENOTDIR);
        ck_assert_int_eq(stf_tree_lookup(t, resolve(t, ".stfs/header.json"), "x", 1, &ino),
                         -ENOTDIR);
        /* No such parent. */
        ck_assert_int_eq(stf_tree_lookup(t, 0, "a", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, stf_tree_count(t) + 1, "a", 1, &ino), -ENOENT);
        ck_assert_int_eq(stf_tree_lookup(t, UINT64_MAX, "a", 1, &ino), -ENOENT);
        /* The length bounds the name. */
        ck_assert_int_eq(stf_tree_lookup(t, 1, "cXYZ", 1, &ino), 0);
        ck_assert_uint_eq(ino, stf_tree_tensor_ino(t, 1));
        stf_tree_free(t);
}
END_TEST

START_TEST(test_out_of_range)
{
        static const char *const names[] = {"a"};
        struct stf_tree *t = build_names(names, 1, 0);

        ck_assert_ptr_null(stf_tree_node(t, 0));
        ck_assert_ptr_null(stf_tree_node(t, stf_tree_count(t) + 1));
        ck_assert_ptr_null(stf_tree_node(t, UINT64_MAX));
        ck_assert_ptr_null(stf_tree_node(t, (uint64_t)UINT32_MAX + 2));
        ck_assert_ptr_nonnull(stf_tree_node(t, stf_tree_count(t)));
        ck_assert_uint_eq(stf_tree_tensor_ino(t, 1), 0);
        ck_assert_uint_eq(stf_tree_tensor_ino(t, SIZE_MAX), 0);
        stf_tree_free(t);
        stf_tree_free(NULL);
}
END_TEST

START_TEST(test_path)
{
        static const char *const names[] = {"model.layers.10.weight"};
        struct stf_tree *t = build_names(names, 1, 0);
        uint64_t ino = stf_tree_tensor_ino(t, 0);
        const char *want = "model/layers/10/weight";
        char buf[64];

        ck_assert_int_eq(stf_tree_path(t, STF_ROOT_INO, buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, "");
        ck_assert_int_eq(stf_tree_path(t, ino, buf, sizeof(buf)), (int)strlen(want));
        ck_assert_str_eq(buf, want);
        ck_assert_int_eq(stf_tree_path(t, ino, buf, strlen(want) + 1), (int)strlen(want));
        ck_assert_int_eq(stf_tree_path(t, ino, buf, strlen(want)), -ERANGE);
        ck_assert_int_eq(stf_tree_path(t, ino, buf, 0), -ERANGE);
        ck_assert_int_eq(stf_tree_path(t, STF_ROOT_INO, buf, 0), -ERANGE);
        ck_assert_int_eq(stf_tree_path(t, 0, buf, sizeof(buf)), -ENOENT);
        ck_assert_int_eq(stf_tree_path(t, stf_tree_count(t) + 1, buf, sizeof(buf)), -ENOENT);
        ck_assert_int_eq(stf_tree_path(t, resolve(t, ".stfs/metadata.json"), buf, sizeof(buf)),
                         (int)strlen(".stfs/metadata.json"));
        ck_assert_str_eq(buf, ".stfs/metadata.json");
        stf_tree_free(t);
}
END_TEST

static Suite *tree_suite(void)
{
        Suite *s = suite_create("tree");
        TCase *tc = tcase_create("escape");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_split);
        tcase_add_test(tc, test_rule1_percent_slash);
        tcase_add_test(tc, test_rule2_leading_dot);
        tcase_add_test(tc, test_rule3_empty_parts);
        tcase_add_test(tc, test_rule4_tensor_and_prefix);
        tcase_add_test(tc, test_flat);
        tcase_add_test(tc, test_rule5_cut);
        tcase_add_test(tc, test_rule5_cut_not_in_escape);
        tcase_add_test(tc, test_rule5_cut_utf8);
        tcase_add_test(tc, test_rule5_numbering);
        tcase_add_test(tc, test_rule5_per_directory);
        tcase_add_test(tc, test_rule5_raw_byte_order);
        tcase_add_test(tc, test_rule5_dirs);
        tcase_add_test(tc, test_extreme_names);
        tcase_add_loop_test(tc, test_collision_free, 0, 2);
        tcase_add_loop_test(tc, test_collision_free_prefixes, 0, 2);
        tcase_add_test(tc, test_prefix_name_boundary);
        suite_add_tcase(s, tc);

        tc = tcase_create("numbering");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_inode_numbers);
        tcase_add_test(tc, test_empty_tree);
        tcase_add_test(tc, test_listing_numeric);
        tcase_add_test(tc, test_listing_mixed);
        tcase_add_test(tc, test_name_cmp);
        tcase_add_test(tc, test_name_cmp_total_order);
        tcase_add_test(tc, test_deterministic);
        tcase_add_test(tc, test_big_model_shape);
        suite_add_tcase(s, tc);

        tc = tcase_create("prefixes");
        tcase_add_test(tc, test_prefixes);
        tcase_add_test(tc, test_files);
        tcase_add_test(tc, test_prefixes_flat);
        tcase_add_test(tc, test_prefix_null_or_empty);
        suite_add_tcase(s, tc);

        tc = tcase_create("errors");
        tcase_add_test(tc, test_duplicate);
        tcase_add_test(tc, test_nul_in_name);
        tcase_add_test(tc, test_lookup_errors);
        tcase_add_test(tc, test_out_of_range);
        tcase_add_test(tc, test_path);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(tree_suite());
}
