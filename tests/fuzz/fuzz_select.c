/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stf_select (and stf_glob) over a small fixed model: input = selection
 * text, as written to the control file or passed in the ioctl.
 *
 * The model is built once, in memory, from two generated safetensors
 * buffers (two components, "enc" and "dec/sub"), with names that need every
 * escaping rule of tree.h; it is selected from through its tree and through
 * its flat tree.
 *
 * Checked on every input:
 *   - the result is 0, -EINVAL or -ENOENT; a selection is non-empty, holds
 *     each tensor at most once, sorted by shard then offset;
 *   - the same bytes without a terminating NUL (a buffer of exactly their
 *     size, cap = size) are refused with -EINVAL, or, when they hold a NUL,
 *     give the same result;
 *   - for patterns of up to 256 bytes the selection is exactly what a
 *     reference matcher (a table over pattern x string, written apart from
 *     select.c) selects: a name pattern matches a whole name or a dotted
 *     prefix of it, a path pattern (it has a '/'; leading and trailing '/'
 *     dropped, "/" alone = everything) a whole path or a directory of it;
 *   - when the input holds a NUL, "PATTERN\0STRING" also goes through
 *     stf_glob in both modes against the same reference.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "select.h"

#define REF_PAT 256 /* reference: longest pattern */
#define REF_STR 512 /* and longest name or path */
#define PATTERN_MAX 4096

static const char *const enc_names[] = {
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.2.mlp.down_proj.bias",
    "model.layers.10.mlp.up_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
    "a.b",
    "a.b.c",
    "x..y",
    ".lead",
    "trail.",
    "p%q.r",
    "s/t.u",
    "\xc3\xbcn\xc3\xaf.c\xc3\xb6"
    "d\xc3\xa9",
    "*.?",
    "star*name",
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLLL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLLL.w",
};
static const size_t enc_sizes[] = {4, 2, 2, 2, 1, 2, 1, 3, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1};
static const char *const dec_names[] = {
    "model.layers.0.self_attn.q_proj.weight",
    "conv.weight",
    "conv.bias",
    "zero",
};
static const size_t dec_sizes[] = {2, 3, 1, 0};

static struct stf_model model;
static struct stf_shard shards[2];
static struct stf_component comps[2];
static struct stf_tree *trees[2];
static char **paths[2]; /* paths[tree][tensor] */

static void add_comp(uint32_t ci, const char *name, const char *const *names, const size_t *sizes,
                     size_t n)
{
        struct stf_diag d;
        size_t len;
        uint8_t *buf = fuzz_st_build(names, sizes, n, &len);

        FUZZ_ASSERT(buf);
        FUZZ_ASSERT_MSG(!stf_header_parse(name, buf, len, len, &shards[ci].hdr, &d), "%s", d.msg);
        shards[ci].map = buf;
        shards[ci].size = len;
        shards[ci].path = (char *)name;
        shards[ci].name = name;
        shards[ci].fd = -1;
        comps[ci] = (struct stf_component){.name = (char *)name,
                                           .source = (char *)name,
                                           .first_shard = ci,
                                           .nshards = 1,
                                           .first_tensor = (uint32_t)model.ntensors,
                                           .ntensors = (uint32_t)n};
        for (size_t i = 0; i < n; i++) {
                struct stf_tensor *t = &model.tensors[model.ntensors++];

                *t = shards[ci].hdr->tensors[i];
                t->shard = ci;
                t->comp = ci;
                model.total_bytes += t->size;
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        size_t ne = sizeof(enc_names) / sizeof(enc_names[0]);
        size_t nd = sizeof(dec_names) / sizeof(dec_names[0]);
        struct stf_diag d;

        model.tensors = calloc(ne + nd, sizeof(*model.tensors));
        FUZZ_ASSERT(model.tensors);
        model.shards = shards;
        model.nshards = 2;
        model.comps = comps;
        model.ncomps = 2;
        add_comp(0, "enc", enc_names, enc_sizes, ne);
        add_comp(1, "dec/sub", dec_names, dec_sizes, nd);
        stf_model_sort_table(model.tensors, model.ntensors);
        for (int k = 0; k < 2; k++) {
                FUZZ_ASSERT_MSG(!stf_tree_build_model(&model, k ? STF_TREE_FLAT : 0, &trees[k], &d),
                                "%s", d.msg);
                paths[k] = calloc(model.ntensors, sizeof(char *));
                FUZZ_ASSERT(paths[k]);
                for (size_t x = 0; x < model.ntensors; x++) {
                        char buf[4096];
                        int l = stf_tree_path(trees[k], stf_tree_tensor_ino(trees[k], x), buf,
                                              sizeof(buf));

                        FUZZ_ASSERT(l > 0);
                        paths[k][x] = strdup(buf);
                        FUZZ_ASSERT(paths[k][x]);
                }
        }
        return 0;
}

/* ---- the reference matcher ------------------------------------------- */

enum { R_LIT, R_ONE, R_STAR, R_STARSTAR };

struct rtok {
        int kind;
        char c;
};

static size_t ref_tokens(const char *p, size_t n, struct rtok *t)
{
        size_t k = 0, i = 0;

        while (i < n) {
                if (p[i] == '*') {
                        size_t j = i;

                        while (j < n && p[j] == '*')
                                j++;
                        t[k++] = (struct rtok){j - i >= 2 ? R_STARSTAR : R_STAR, 0};
                        i = j;
                        continue;
                }
                t[k++] = (struct rtok){p[i] == '?' ? R_ONE : R_LIT, p[i]};
                i++;
        }
        return k;
}

/* Does the pattern match all of @s, or (@sep) a prefix of @s followed by @sep? */
static bool ref_match(const char *pat, size_t plen, const char *s, size_t slen, bool cross,
                      char sep)
{
        struct rtok t[REF_PAT];
        bool a[REF_STR + 1], b[REF_STR + 1], *cur = a, *nxt = b, *swap, r;
        size_t nt;

        FUZZ_ASSERT(plen <= REF_PAT && slen <= REF_STR);
        nt = ref_tokens(pat, plen, t);
        for (size_t j = 0; j <= slen; j++)
                cur[j] = j == 0;
        for (size_t i = 0; i < nt; i++) {
                for (size_t j = 0; j <= slen; j++) {
                        bool ok = j > 0 && (cross || s[j - 1] != '/');

                        switch (t[i].kind) {
                        case R_LIT:
                                nxt[j] = j > 0 && cur[j - 1] && s[j - 1] == t[i].c;
                                break;
                        case R_ONE:
                                nxt[j] = j > 0 && cur[j - 1] && ok;
                                break;
                        case R_STAR:
                                nxt[j] = cur[j] || (j > 0 && nxt[j - 1] && ok);
                                break;
                        default:
                                nxt[j] = cur[j] || (j > 0 && nxt[j - 1]);
                                break;
                        }
                }
                swap = cur;
                cur = nxt;
                nxt = swap;
        }
        r = cur[slen];
        for (size_t j = 0; sep && j < slen && !r; j++)
                r = s[j] == sep && cur[j];
        return r;
}

/*
 * The reference selection of @text (@len bytes, no NUL) into @hit; false
 * when it is out of the reference's reach (a pattern over REF_PAT bytes).
 * *@ret gets what stf_select must return.
 */
static bool ref_select(int k, const char *text, size_t len, bool *hit, int *ret)
{
        size_t npat = 0, nhit = 0;

        memset(hit, 0, model.ntensors * sizeof(*hit));
        for (size_t i = 0; i < len;) {
                size_t j = i, b, e;
                bool is_path;

                while (j < len && text[j] != '\n' && text[j] != ' ' && text[j] != '\t')
                        j++;
                if (j == i) {
                        i++;
                        continue;
                }
                if (j - i >= PATTERN_MAX) {
                        *ret = -EINVAL;
                        return true;
                }
                if (j - i > REF_PAT)
                        return false;
                npat++;
                is_path = memchr(text + i, '/', j - i) != NULL;
                b = i;
                e = j;
                while (is_path && b < e && text[b] == '/')
                        b++;
                while (is_path && e > b && text[e - 1] == '/')
                        e--;
                for (size_t x = 0; x < model.ntensors; x++) {
                        const char *s = is_path ? paths[k][x] : model.tensors[x].name;
                        size_t sl = strlen(s);

                        if (b == e)
                                hit[x] = true;
                        else if (!hit[x] && sl <= REF_STR)
                                hit[x] = ref_match(text + b, e - b, s, sl, !is_path,
                                                   is_path ? '/' : '.');
                        else if (!hit[x])
                                return false;
                }
                i = j;
        }
        for (size_t x = 0; x < model.ntensors; x++) {
                if (npat == 0)
                        hit[x] = true;
                nhit += hit[x];
        }
        *ret = nhit ? 0 : -ENOENT;
        return true;
}

/* ---- the target ------------------------------------------------------- */

static int select_checked(int k, const char *text, size_t cap, uint32_t **out, size_t *n)
{
        bool *seen;
        int ret;

        *out = NULL;
        *n = 0;
        ret = stf_select(&model, trees[k], text, cap, out, n);
        FUZZ_ASSERT_MSG(ret == 0 || ret == -EINVAL || ret == -ENOENT, "ret %d", ret);
        if (ret)
                return ret;
        FUZZ_ASSERT(*out && *n >= 1 && *n <= model.ntensors);
        seen = calloc(model.ntensors, sizeof(*seen));
        FUZZ_ASSERT(seen);
        for (size_t i = 0; i < *n; i++) {
                uint32_t x = (*out)[i];

                FUZZ_ASSERT(x < model.ntensors && !seen[x]);
                seen[x] = true;
                if (i > 0) {
                        const struct stf_tensor *p = &model.tensors[(*out)[i - 1]];
                        const struct stf_tensor *t = &model.tensors[x];

                        FUZZ_ASSERT(p->shard < t->shard ||
                                    (p->shard == t->shard && p->begin <= t->begin));
                }
        }
        free(seen);
        return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text = malloc(size + 1), *raw = malloc(size ? size : 1);
        const char *nul = memchr(data, '\0', size);
        size_t len = nul ? (size_t)(nul - (const char *)data) : size;
        bool *hit = calloc(model.ntensors, sizeof(*hit));

        FUZZ_ASSERT(text && raw && hit);
        memcpy(text, data, size);
        text[size] = '\0';
        memcpy(raw, data, size);
        for (int k = 0; k < 2; k++) {
                uint32_t *v, *w;
                size_t n, m;
                int ret, ret2, want;

                ret = select_checked(k, text, size + 1, &v, &n);
                /* Not terminated within cap: refused, whatever the text. */
                ret2 = select_checked(k, raw, size, &w, &m);
                if (!nul) {
                        FUZZ_ASSERT_MSG(ret2 == -EINVAL, "unterminated text: %d", ret2);
                } else {
                        FUZZ_ASSERT(ret2 == ret && m == n);
                        FUZZ_ASSERT(!n || !memcmp(v, w, n * sizeof(*v)));
                }
                if (ref_select(k, text, len, hit, &want)) {
                        FUZZ_ASSERT_MSG(ret == want, "tree %d: select %d, reference %d", k, ret,
                                        want);
                        for (size_t i = 0; i < n; i++)
                                FUZZ_ASSERT_MSG(hit[v[i]], "tree %d: '%s' selected", k,
                                                model.tensors[v[i]].name);
                        for (size_t x = 0, c = 0; !ret && x < model.ntensors; x++) {
                                c += hit[x];
                                FUZZ_ASSERT_MSG(x + 1 < model.ntensors || c == n,
                                                "tree %d: %zu selected, reference %zu", k, n, c);
                        }
                }
                free(v);
                free(w);
        }

        /* "PATTERN\0STRING" through stf_glob. */
        if (nul) {
                const char *s = nul + 1;
                size_t slen = size - len - 1;

                for (int cross = 0; cross < 2; cross++) {
                        bool got = stf_glob(text, len, s, slen, cross);

                        if (len <= REF_PAT && slen <= REF_STR)
                                FUZZ_ASSERT_MSG(got == ref_match(text, len, s, slen, cross, 0),
                                                "stf_glob cross=%d: %d", cross, got);
                }
        }
        free(hit);
        free(raw);
        free(text);
        return 0;
}
