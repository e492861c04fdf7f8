/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stf_tree_build over tensor names split from the input, in tree and in
 * flat mode.
 *
 * Input: one entry per line ('\n'); a line "PREFIX\tNAME" gives the entry a
 * component prefix (up to its first NUL), any other line is a NAME (any
 * bytes, NUL included: such a name must be refused).
 *
 * Checked after every successful build, for every entry i:
 *   - stf_tree_tensor_ino(i) is a TENSOR node with index i, and no two
 *     entries share an inode;
 *   - its path (stf_tree_path) resolves back to that inode through
 *     stf_tree_lookup, component by component from the root;
 *   - every component is 1..238 bytes (so its views' names fit in 255),
 *     not "." or "..", and the first is not ".stfs";
 *   - decoding the components (tree.h rules 1-4: "%25" '%', "%2F" '/',
 *     "%2E" '.', "%" the empty part, a last "%t" dropped) gives back the
 *     prefix and the name, unless rule 5 cut a component ("%~N");
 * and for every directory, its children are in strictly increasing
 * stf_name_cmp order (what lookup's binary search relies on).
 * A refusal must be -EINVAL for a name with a NUL byte or two equal
 * entries; a name with a NUL byte is always refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "tree.h"

/* Decode one component into @out; false when it is not a valid encoding. */
static bool decode(const char *c, size_t len, char *out, size_t *olen)
{
        size_t o = 0;

        if (len == 1 && c[0] == '%') {
                *olen = 0;
                return true;
        }
        for (size_t i = 0; i < len; i++) {
                if (c[i] != '%') {
                        out[o++] = c[i];
                        continue;
                }
                if (len - i < 3 || c[i + 1] != '2')
                        return false;
                if (c[i + 2] == '5')
                        out[o++] = '%';
                else if (c[i + 2] == 'F')
                        out[o++] = '/';
                else if (c[i + 2] == 'E' && i == 0)
                        out[o++] = '.';
                else
                        return false;
                i += 2;
        }
        *olen = o;
        return true;
}

static void check_dirs(const struct stf_tree *t)
{
        for (uint64_t ino = 1; ino <= stf_tree_count(t); ino++) {
                const struct stf_node *n = stf_tree_node(t, ino);

                FUZZ_ASSERT(n);
                FUZZ_ASSERT(ino == STF_ROOT_INO || (n->parent >= 1 && n->parent < ino));
                if (n->kind != STF_NODE_DIR)
                        continue;
                FUZZ_ASSERT(n->nchildren == 0 ||
                            (n->first_child > ino &&
                             (uint64_t)n->first_child + n->nchildren - 1 <= stf_tree_count(t)));
                for (uint32_t k = 0; k < n->nchildren; k++) {
                        const struct stf_node *c = stf_tree_node(t, n->first_child + k);

                        FUZZ_ASSERT(c->parent == ino);
                        FUZZ_ASSERT(strlen(c->name) == c->name_len);
                        if (k > 0) {
                                const struct stf_node *p = stf_tree_node(t, n->first_child + k - 1);

                                FUZZ_ASSERT_MSG(
                                    stf_name_cmp(p->name, p->name_len, c->name, c->name_len) < 0 &&
                                        stf_name_cmp(c->name, c->name_len, p->name, p->name_len) >
                                            0,
                                    "'%s' !< '%s'", p->name, c->name);
                        }
                }
        }
}

static void check_entry(const struct stf_tree *t, const struct stf_tree_entry *e, size_t i,
                        unsigned flags, char *path, size_t cap, char *dec, uint8_t *seen)
{
        uint64_t ino = stf_tree_tensor_ino(t, i), cur = STF_ROOT_INO;
        const struct stf_node *n = stf_tree_node(t, ino);
        const char *pre = e->prefix ? e->prefix : "";
        size_t plen = strlen(pre), npre = 0, ncomp = 0, dlen = 0, seg = 0;
        bool cut = false, leaf = false;
        int len;

        FUZZ_ASSERT_MSG(n && n->kind == STF_NODE_TENSOR && n->index == i, "entry %zu ino %llu", i,
                        (unsigned long long)ino);
        FUZZ_ASSERT_MSG(!seen[ino - 1], "entry %zu shares inode %llu", i, (unsigned long long)ino);
        seen[ino - 1] = 1;
        len = stf_tree_path(t, ino, path, cap);
        FUZZ_ASSERT_MSG(len > 0, "path of entry %zu: %d", i, len);
        for (size_t k = 0; plen && k <= plen; k++)
                npre += k == plen || pre[k] == '/';

        /* Walk the path, decoding as we go: prefix parts joined by '/', then name parts by '.'. */
        for (size_t s = 0; s <= (size_t)len;) {
                const char *c = path + s;
                size_t cl = strcspn(c, "/"), ol;
                uint64_t next;

                FUZZ_ASSERT(cl >= 1 && cl <= 238); /* + ".part.safetensors" <= NAME_MAX */
                FUZZ_ASSERT(!(cl == 1 && c[0] == '.') && !(cl == 2 && !memcmp(c, "..", 2)));
                FUZZ_ASSERT(!(ncomp == 0 && cl == 5 && !memcmp(c, ".stfs", 5)));
                FUZZ_ASSERT_MSG(stf_tree_lookup(t, cur, c, cl, &next) == 0,
                                "entry %zu: '%.*s' not found in inode %llu", i, (int)cl, c,
                                (unsigned long long)cur);
                cur = next;
                if (memmem(c, cl, "%~", 2))
                        cut = true;
                if (cl == 2 && !memcmp(c, "%t", 2)) {
                        FUZZ_ASSERT(s + cl == (size_t)len && ncomp > npre);
                        leaf = true;
                } else if (!cut) {
                        if (ncomp > 0)
                                dec[dlen++] = ncomp == npre ? '\n' : ncomp < npre ? '/' : '.';
                        FUZZ_ASSERT_MSG(decode(c, cl, dec + dlen, &ol),
                                        "entry %zu: component '%.*s'", i, (int)cl, c);
                        dlen += ol;
                }
                ncomp++;
                s += cl + 1;
        }
        FUZZ_ASSERT(cur == ino);
        if (!cut) {
                /* @dec is "PREFIX\nNAME" (or just NAME); flat names are one component. */
                FUZZ_ASSERT(!npre || (dlen > plen && !memcmp(dec, pre, plen) && dec[plen] == '\n'));
                seg = npre ? plen + 1 : 0;
                /* A name is at least one component ("" is "%"). */
                FUZZ_ASSERT(ncomp > npre + (leaf ? 1 : 0));
                FUZZ_ASSERT_MSG(dlen - seg == e->name_len &&
                                    !memcmp(dec + seg, e->name, e->name_len),
                                "entry %zu: decoded '%.*s'", i, (int)(dlen - seg), dec + seg);
                if (flags & STF_TREE_FLAT)
                        FUZZ_ASSERT(ncomp - npre - (leaf ? 1 : 0) == 1);
        }
}

static void run(const struct stf_tree_entry *e, size_t n, unsigned flags, bool has_nul, size_t size)
{
        struct stf_diag d = {{0}};
        struct stf_tree *t = (void *)1;
        size_t cap = 4 * size + 4096;
        char *path, *dec;
        uint8_t *seen;
        int ret;

        ret = stf_tree_build(e, n, flags, &t, &d);
        if (ret) {
                FUZZ_ASSERT_MSG(ret == -EINVAL, "ret %d", ret);
                FUZZ_ASSERT(t == NULL);
                FUZZ_ASSERT_MSG(strstr(d.msg, "appears twice") || strstr(d.msg, "NUL byte"), "%s",
                                d.msg);
                return;
        }
        FUZZ_ASSERT_MSG(!has_nul, "a name with a NUL byte was accepted");
        check_dirs(t);
        path = malloc(cap);
        dec = malloc(cap);
        seen = calloc(stf_tree_count(t), 1);
        FUZZ_ASSERT(path && dec && seen);
        for (size_t i = 0; i < n; i++)
                check_entry(t, &e[i], i, flags, path, cap, dec, seen);
        FUZZ_ASSERT(stf_tree_tensor_ino(t, n) == 0);
        free(seen);
        free(dec);
        free(path);
        stf_tree_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *s = (const char *)data;
        struct stf_tree_entry *e = calloc(size + 1, sizeof(*e));
        char **prefixes = calloc(size + 1, sizeof(*prefixes));
        size_t n = 0;
        bool has_nul = false;

        FUZZ_ASSERT(e && prefixes);
        for (size_t i = 0; i <= size;) {
                const char *nl = memchr(s + i, '\n', size - i);
                size_t end = nl ? (size_t)(nl - s) : size;
                const char *tab = memchr(s + i, '\t', end - i);

                if (tab) {
                        prefixes[n] = strndup(s + i, (size_t)(tab - (s + i)));
                        FUZZ_ASSERT(prefixes[n]);
                        e[n] = (struct stf_tree_entry){prefixes[n], tab + 1,
                                                       end - (size_t)(tab + 1 - s)};
                } else {
                        e[n] = (struct stf_tree_entry){NULL, s + i, end - i};
                }
                has_nul |= memchr(e[n].name, '\0', e[n].name_len) != NULL;
                n++;
                i = end + 1;
        }
        run(e, n, 0, has_nul, size);
        run(e, n, STF_TREE_FLAT, has_nul, size);
        for (size_t i = 0; i < n; i++)
                free(prefixes[i]);
        free(prefixes);
        free(e);
        return 0;
}
