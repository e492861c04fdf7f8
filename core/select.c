/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pattern matching as a dynamic program over (pattern token, string
 * position): state i + 1 is "tokens 0..i match the string so far". The
 * states are a bit set, advanced one byte at a time with word operations
 * (shift-and), so a match costs O(tokens / 64 x string) whatever the
 * pattern: a hostile pattern can make it neither exponential nor slow
 * (a 4 KiB pattern of stars against 100k long names took 80 s as one bool
 * per state). One pass also tells which prefixes of the string match,
 * which is how a directory or a dotted prefix selects everything under it.
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

/* A run of '*' is one token: two star tokens are never adjacent. */
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

typedef uint64_t word;
#define WBITS 64

/*
 * A compiled pattern of nt tokens: states 0..nt in nw words, bit i + 1 for
 * token i. lit[c]: the literals c; one: every '?'; star: every '*' and
 * '**' (a star may also match nothing); starstar: every '**'. The byte '/'
 * outside names (!cross) is taken by literals and '**' only. init: the
 * states before any byte.
 */
struct matcher {
        size_t nt, nw;
        bool cross;
        word *lit, *one, *star, *starstar, *none, *init, *col, *next;
};

static bool bit(const word *v, size_t i)
{
        return v[i / WBITS] >> (i % WBITS) & 1;
}

static void set_bit(word *v, size_t i)
{
        v[i / WBITS] |= (word)1 << (i % WBITS);
}

static void matcher_free(struct matcher *mt)
{
        free(mt->lit);
        mt->lit = NULL;
}

/* Compile @nt tokens; @cross: '*' and '?' also take '/'. 0 or -ENOMEM. */
static int matcher_init(struct matcher *mt, const struct token *t, size_t nt, bool cross)
{
        size_t nw = (nt + 1 + WBITS - 1) / WBITS;
        word *all = calloc((256 + 7) * nw, sizeof(*all)), *v;

        if (!all)
                return -ENOMEM;
        v = all + 256 * nw;
        *mt = (struct matcher){nt,         nw,         cross,      all,        v,         v + nw,
                               v + 2 * nw, v + 3 * nw, v + 4 * nw, v + 5 * nw, v + 6 * nw};
        set_bit(mt->init, 0);
        for (size_t i = 0; i < nt; i++) {
                switch (t[i].kind) {
                case T_LIT:
                        set_bit(mt->lit + (unsigned char)t[i].c * nw, i + 1);
                        break;
                case T_ONE:
                        set_bit(mt->one, i + 1);
                        break;
                case T_STARSTAR:
                        set_bit(mt->starstar, i + 1);
                        /* fallthrough */
                case T_STAR:
                        set_bit(mt->star, i + 1);
                        if (bit(mt->init, i))
                                set_bit(mt->init, i + 1);
                        break;
                }
        }
        return 0;
}

/*
 * Run the matcher over @s; returns true when the whole string matches,
 * or (with @sep) when a prefix ending right before a @sep does.
 */
static bool run(struct matcher *mt, const char *s, size_t slen, char sep)
{
        size_t nw = mt->nw, nt = mt->nt;
        word *col = mt->col, *next = mt->next;

        memcpy(col, mt->init, nw * sizeof(*col));
        for (size_t j = 0; j < slen; j++) {
                unsigned char c = (unsigned char)s[j];
                bool slash = c == '/' && !mt->cross;
                const word *lit = mt->lit + c * nw, *one = slash ? mt->none : mt->one;
                const word *loop = slash ? mt->starstar : mt->star;
                word carry = 0, live = 0, *tmp;

                if (sep && s[j] == sep && bit(col, nt))
                        return true;
                /* a byte: literal or '?' after its predecessor, or a star
                 * staying */
                for (size_t w = 0; w < nw; w++) {
                        next[w] = ((col[w] << 1 | carry) & (lit[w] | one[w])) | (col[w] & loop[w]);
                        carry = col[w] >> (WBITS - 1);
                }
                /* a star may match nothing: it takes its predecessor's
                 * state (stars are never adjacent: one pass is enough) */
                carry = 0;
                for (size_t w = 0; w < nw; w++) {
                        word up = next[w] << 1 | carry;

                        carry = next[w] >> (WBITS - 1);
                        next[w] |= up & mt->star[w];
                        live |= next[w];
                }
                if (!live)
                        return false;
                tmp = col;
                col = next;
                next = tmp;
        }
        return bit(col, nt);
}

bool stf_glob(const char *pat, size_t plen, const char *s, size_t slen, bool cross)
{
        struct token *t = malloc((plen + 1) * sizeof(*t));
        struct matcher mt = {0};
        bool r = false;

        if (t && !matcher_init(&mt, t, tokenize(pat, plen, t), cross))
                r = run(&mt, s, slen, 0);
        matcher_free(&mt);
        free(t);
        return r;
}

/*
 * Set @hit[x] for every tensor x not yet hit that @mt matches: its name,
 * or with @is_path its tree path (written in @path, 65536 bytes).
 */
static void mark_hits(const struct stf_model *m, const struct stf_tree *t, struct matcher *mt,
                      bool is_path, bool *hit, char *path)
{
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
                hit[x] = run(mt, s, sl, is_path ? '/' : '.');
        }
}

/* The tensors hit (all of them when @all), in layout order: 0, -ENOENT or -ENOMEM. */
static int collect_hits(const struct stf_model *m, const bool *hit, bool all, uint32_t **out,
                        size_t *n)
{
        uint32_t *v = malloc((m->ntensors ? m->ntensors : 1) * sizeof(*v));
        size_t k = 0;

        if (!v)
                return -ENOMEM;
        for (size_t x = 0; x < m->ntensors; x++)
                if (hit[x] || all)
                        v[k++] = (uint32_t)x;
        if (k == 0) {
                free(v);
                return -ENOENT;
        }
        stf_model_sort_layout(m, v, k);
        *out = v;
        *n = k;
        return 0;
}

int stf_select(const struct stf_model *m, const struct stf_tree *t, const char *text, size_t cap,
               uint32_t **out, size_t *n)
{
        struct token *tok = NULL;
        struct matcher mt = {0};
        bool *hit = NULL;
        char *path = NULL;
        size_t len, npat = 0;
        int ret = 0;

        len = strnlen(text, cap);
        if (len == cap)
                return -EINVAL;
        tok = malloc(PATTERN_MAX * sizeof(*tok));
        hit = calloc(m->ntensors ? m->ntensors : 1, sizeof(*hit));
        path = malloc(65536);
        if (!tok || !hit || !path) {
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
                matcher_free(&mt);
                ret = matcher_init(&mt, tok, nt, !is_path);
                if (ret)
                        goto out;
                mark_hits(m, t, &mt, is_path, hit, path);
                i = j;
        }
        ret = collect_hits(m, hit, npat == 0, out, n);
out:
        free(tok);
        matcher_free(&mt);
        free(hit);
        free(path);
        return ret;
}
