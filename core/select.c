/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pattern matching as a dynamic program over (pattern token, string
 * position): linear in the string for any pattern, so a hostile pattern
 * cannot make matching exponential. One pass also tells which prefixes of
 * the string match, which is how a directory or a dotted prefix selects
 * everything under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"

#define PATTERN_MAX 4096

enum tok { T_LIT, T_ONE, T_STAR, T_STARSTAR };

struct token {
        uint8_t kind;
        char c;
};

static size_t tokenize(const char *p, size_t n, struct token *t)
{
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                if (p[i] == '*' && i + 1 < n && p[i + 1] == '*') {
                        t[k++] = (struct token){T_STARSTAR, 0};
                        while (i + 1 < n && p[i + 1] == '*')
                                i++;
                } else if (p[i] == '*') {
                        t[k++] = (struct token){T_STAR, 0};
                } else if (p[i] == '?') {
                        t[k++] = (struct token){T_ONE, 0};
                } else {
                        t[k++] = (struct token){T_LIT, p[i]};
                }
        }
        return k;
}

/*
 * Run the automaton over @s; returns true when the whole string matches,
 * or (with @sep) when a prefix ending right before a @sep does.
 */
static bool run(const struct token *t, size_t nt, const char *s, size_t slen, bool cross, char sep,
                bool *col, bool *next)
{
        col[0] = true;
        for (size_t i = 0; i < nt; i++)
                col[i + 1] = col[i] && (t[i].kind == T_STAR || t[i].kind == T_STARSTAR);
        for (size_t j = 0; j < slen; j++) {
                char c = s[j];
                bool *tmp;

                if (sep && c == sep && col[nt])
                        return true;
                next[0] = false;
                for (size_t i = 0; i < nt; i++) {
                        switch (t[i].kind) {
                        case T_LIT:
                                next[i + 1] = col[i] && c == t[i].c;
                                break;
                        case T_ONE:
                                next[i + 1] = col[i] && (cross || c != '/');
                                break;
                        case T_STAR:
                                next[i + 1] = next[i] || (col[i + 1] && (cross || c != '/'));
                                break;
                        case T_STARSTAR:
                                next[i + 1] = next[i] || col[i + 1];
                                break;
                        }
                }
                tmp = col;
                col = next;
                next = tmp;
        }
        return col[nt];
}

bool stf_glob(const char *pat, size_t plen, const char *s, size_t slen, bool cross)
{
        struct token *t = malloc((plen + 1) * sizeof(*t));
        bool *col = calloc(2 * (plen + 2), sizeof(bool));
        bool r = false;

        if (t && col) {
                size_t nt = tokenize(pat, plen, t);

                r = run(t, nt, s, slen, cross, 0, col, col + plen + 2);
        }
        free(t);
        free(col);
        return r;
}

int stf_select(const struct stf_model *m, const struct stf_tree *t, const char *text, size_t cap,
               uint32_t **out, size_t *n)
{
        struct token *tok = NULL;
        bool *col = NULL, *hit = NULL;
        char *path = NULL;
        size_t len, k = 0, npat = 0;
        uint32_t *v = NULL;
        int ret = 0;

        len = strnlen(text, cap);
        if (len == cap)
                return -EINVAL;
        tok = malloc(PATTERN_MAX * sizeof(*tok));
        col = malloc(2 * (PATTERN_MAX + 2) * sizeof(*col));
        hit = calloc(m->ntensors ? m->ntensors : 1, sizeof(*hit));
        path = malloc(65536);
        if (!tok || !col || !hit || !path) {
                ret = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < len;) {
                size_t j = i, b, e, nt;
                bool is_path;

                while (j < len && text[j] != '\n' && text[j] != ' ' && text[j] != '\t')
                        j++;
                if (j == i) {
                        i++;
                        continue;
                }
                if (j - i >= PATTERN_MAX) {
                        ret = -EINVAL;
                        goto out;
                }
                npat++;
                is_path = memchr(text + i, '/', j - i) != NULL;
                /*
                 * Tree paths neither start nor end with '/': a leading one
                 * means the mount's root, a trailing one a directory
                 * ("model/layers/3/", as shell completion writes it), and
                 * "/" alone is the root, which selects everything.
                 */
                b = i;
                e = j;
                while (is_path && b < e && text[b] == '/')
                        b++;
                while (is_path && e > b && text[e - 1] == '/')
                        e--;
                if (b == e) {
                        memset(hit, 1, m->ntensors * sizeof(*hit));
                        i = j;
                        continue;
                }
                nt = tokenize(text + b, e - b, tok);
                for (size_t x = 0; x < m->ntensors; x++) {
                        const char *s = m->tensors[x].name;
                        size_t sl = m->tensors[x].name_len;

                        if (hit[x])
                                continue;
                        if (is_path) {
                                int pl = stf_tree_path(t, stf_tree_tensor_ino(t, x), path, 65536);

                                if (pl < 0)
                                        continue;
                                s = path;
                                sl = (size_t)pl;
                        }
                        hit[x] = run(tok, nt, s, sl, !is_path, is_path ? '/' : '.', col,
                                     col + PATTERN_MAX + 2);
                }
                i = j;
        }
        v = malloc((m->ntensors ? m->ntensors : 1) * sizeof(*v));
        if (!v) {
                ret = -ENOMEM;
                goto out;
        }
        for (size_t x = 0; x < m->ntensors; x++)
                if (hit[x] || npat == 0)
                        v[k++] = (uint32_t)x;
        if (k == 0) {
                ret = -ENOENT;
                goto out;
        }
        stf_model_sort_layout(m, v, k);
        *out = v;
        *n = k;
        v = NULL;
out:
        free(v);
        free(tok);
        free(col);
        free(hit);
        free(path);
        return ret;
}
