/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The summary of a model: one pass over the tensor table.
 *
 * The module tree is a trie over the name parts, grown along one stack from
 * the tensor table's own order (by component, then name bytes): the names
 * under "p." are contiguous in that order, so a part is nearly always the
 * one on the stack or a new child. The one exception is a tensor named
 * exactly "p" followed by names "p<c>..." with c < '.' before "p." comes:
 * then "p" is found again by scanning back over the siblings in between,
 * which all begin with "p". Children are put in listing order afterwards
 * (digit runs as numbers, as in the mount), sizes are summed bottom up, and
 * runs collapse bottom up: a node's children are compared only after their
 * own runs have collapsed, so comparing two layers of a mixture of experts
 * compares one expert each, not all of them. Nothing recurses: names come
 * from files, and a name of a million parts must not overflow the stack.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "summary.h"
#include "tree.h"

#define NONE SIZE_MAX
#define RUN_NAME_MAX 48 /* "{N..M}" with two numbers of at most 19 digits */

/* A trie node while building. */
struct node {
        const char *name;
        uint32_t len;
        bool component;
        size_t parent;
        size_t first, last, next, prev; /* children list; siblings */
        size_t tensor;
        uint64_t repeat, num;
        struct stf_count size;
};

struct builder {
        const struct stf_model *m;
        struct node *v;
        size_t n, cap;
        size_t *pairs; /* scratch stack of same() */
        size_t npairs, pcap;
};

bool stf_summary_number(const char *s, size_t len, uint64_t *out)
{
        uint64_t v = 0;

        if (len == 0 || len > 18 || (len > 1 && s[0] == '0'))
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (uint64_t)(s[i] - '0');
        }
        *out = v;
        return true;
}

/* Length of the part of @s (@len bytes) before the first '.'. */
static size_t part_len(const char *s, size_t len)
{
        const char *dot = memchr(s, '.', len);

        return dot ? (size_t)(dot - s) : len;
}

/* Component, then name part by part, each part in listing order. */
static int cmp_parts(const struct stf_tensor *x, const struct stf_tensor *y)
{
        const char *a = x->name, *b = y->name;
        size_t alen = x->name_len, blen = y->name_len;

        if (x->comp != y->comp)
                return x->comp < y->comp ? -1 : 1;
        for (;;) {
                size_t pa = part_len(a, alen), pb = part_len(b, blen);
                int c = stf_name_cmp(a, pa, b, pb);

                if (c)
                        return c;
                if (pa == alen || pb == blen)
                        return pa == alen ? (pb == blen ? 0 : -1) : 1;
                a += pa + 1;
                alen -= pa + 1;
                b += pb + 1;
                blen -= pb + 1;
        }
}

/* Largest first, then listing order. */
static int cmp_size(const struct stf_tensor *x, const struct stf_tensor *y)
{
        if (x->size != y->size)
                return x->size > y->size ? -1 : 1;
        return cmp_parts(x, y);
}

static int cmp_size_idx(const void *a, const void *b, void *model)
{
        const struct stf_tensor *t = ((const struct stf_model *)model)->tensors;

        return cmp_size(&t[*(const size_t *)a], &t[*(const size_t *)b]);
}

static int cmp_node_name(const void *a, const void *b)
{
        const struct node *x = *(const struct node *const *)a, *y = *(const struct node *const *)b;

        return stf_name_cmp(x->name, x->len, y->name, y->len);
}

static size_t add_node(struct builder *b, size_t parent, const char *name, size_t len)
{
        struct node *nd;

        if (b->n == b->cap) {
                size_t ncap = b->cap ? b->cap * 2 : 1024;
                struct node *nv = realloc(b->v, ncap * sizeof(*nv));

                if (!nv)
                        return NONE;
                b->v = nv;
                b->cap = ncap;
        }
        nd = &b->v[b->n];
        *nd = (struct node){.name = name,
                            .len = (uint32_t)len,
                            .parent = parent,
                            .first = NONE,
                            .last = NONE,
                            .next = NONE,
                            .prev = NONE,
                            .tensor = NONE,
                            .repeat = 1};
        if (parent != NONE) {
                nd->prev = b->v[parent].last;
                if (b->v[parent].last == NONE)
                        b->v[parent].first = b->n;
                else
                        b->v[b->v[parent].last].next = b->n;
                b->v[parent].last = b->n;
        }
        return b->n++;
}

static bool same_tensor(const struct stf_tensor *x, const struct stf_tensor *y)
{
        return x->dtype == y->dtype && x->rank == y->rank &&
               !memcmp(x->shape, y->shape, x->rank * sizeof(*x->shape));
}

static bool push_pair(struct builder *b, size_t x, size_t y)
{
        if (b->npairs + 2 > b->pcap) {
                size_t ncap = b->pcap ? b->pcap * 2 : 256;
                size_t *nv = realloc(b->pairs, ncap * sizeof(*nv));

                if (!nv)
                        return false;
                b->pairs = nv;
                b->pcap = ncap;
        }
        b->pairs[b->npairs++] = x;
        b->pairs[b->npairs++] = y;
        return true;
}

/*
 * Do the subtrees of siblings @x and @y have the same structure? Their own
 * names are not compared (they are different numbers). 1, 0, or -ENOMEM.
 */
static int same(struct builder *b, size_t x, size_t y)
{
        bool top = true;

        b->npairs = 0;
        if (!push_pair(b, x, y))
                return -ENOMEM;
        while (b->npairs) {
                const struct node *p, *q;
                size_t cp, cq;

                b->npairs -= 2;
                p = &b->v[b->pairs[b->npairs]];
                q = &b->v[b->pairs[b->npairs + 1]];
                if (!top && (p->len != q->len || memcmp(p->name, q->name, p->len)))
                        return 0;
                top = false;
                if (p->repeat != q->repeat || p->num != q->num ||
                    p->size.tensors != q->size.tensors || p->size.params != q->size.params ||
                    p->size.bytes != q->size.bytes || (p->tensor == NONE) != (q->tensor == NONE))
                        return 0;
                if (p->tensor != NONE &&
                    !same_tensor(&b->m->tensors[p->tensor], &b->m->tensors[q->tensor]))
                        return 0;
                for (cp = p->first, cq = q->first; cp != NONE && cq != NONE;
                     cp = b->v[cp].next, cq = b->v[cq].next)
                        if (!push_pair(b, cp, cq))
                                return -ENOMEM;
                if (cp != NONE || cq != NONE)
                        return 0;
        }
        return 1;
}

/* Collapse the runs among the children of @x (whose own runs are done). */
static int collapse(struct builder *b, size_t x)
{
        size_t c = b->v[x].first;

        while (c != NONE) {
                uint64_t n, nd, k = 1;
                size_t d;

                if (!stf_summary_number(b->v[c].name, b->v[c].len, &n)) {
                        c = b->v[c].next;
                        continue;
                }
                for (d = b->v[c].next; d != NONE; d = b->v[d].next, k++) {
                        int r;

                        if (!stf_summary_number(b->v[d].name, b->v[d].len, &nd) || nd != n + k)
                                break;
                        r = same(b, c, d);
                        if (r < 0)
                                return r;
                        if (!r)
                                break;
                }
                if (k > 1) {
                        b->v[c].repeat = k;
                        b->v[c].num = n;
                        b->v[c].next = d;
                        if (d == NONE)
                                b->v[x].last = c;
                }
                c = d;
        }
        return 0;
}

/*
 * The child of @parent named @name: the last child, or one of the children
 * before it that @name is a proper prefix of (see the top of the file), or
 * a new one. NONE when out of memory.
 */
static size_t child(struct builder *b, size_t parent, const char *name, size_t len)
{
        for (size_t c = b->v[parent].last; c != NONE; c = b->v[c].prev) {
                const struct node *p = &b->v[c];

                if (p->len < len || memcmp(p->name, name, len))
                        break;
                if (p->len == len)
                        return c;
        }
        return add_node(b, parent, name, len);
}

static int build_trie(struct builder *b)
{
        const struct stf_model *m = b->m;
        size_t *stack = NULL, depth = 0, scap = 0, base = 0;
        uint32_t comp = UINT32_MAX;
        int ret = -ENOMEM;

        if (add_node(b, NONE, "", 0) == NONE)
                return -ENOMEM;
        if (m->ncomps > 1) {
                for (uint32_t c = 0; c < m->ncomps; c++) {
                        size_t k = add_node(b, 0, m->comps[c].name, strlen(m->comps[c].name));

                        if (k == NONE)
                                return -ENOMEM;
                        b->v[k].component = true;
                }
        }
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *t = &m->tensors[i];
                const char *s = t->name;
                size_t len = t->name_len;

                if (t->comp != comp) {
                        comp = t->comp;
                        base = m->ncomps > 1 ? 1 + comp : 0;
                        depth = 0;
                }
                for (size_t j = 0;; j++) {
                        size_t pl = part_len(s, len), k;

                        if (j < depth && b->v[stack[j]].len == pl &&
                            !memcmp(b->v[stack[j]].name, s, pl)) {
                                k = stack[j];
                        } else {
                                k = child(b, j ? stack[j - 1] : base, s, pl);
                                if (k == NONE)
                                        goto out_stack;
                                if (j == scap) {
                                        size_t ncap = scap ? scap * 2 : 64;
                                        size_t *ns = realloc(stack, ncap * sizeof(*ns));

                                        if (!ns)
                                                goto out_stack;
                                        stack = ns;
                                        scap = ncap;
                                }
                                stack[j] = k;
                                depth = j + 1;
                        }
                        if (pl == len) {
                                b->v[k].tensor = i;
                                depth = j + 1;
                                break;
                        }
                        s += pl + 1;
                        len -= pl + 1;
                }
        }
        ret = 0;
out_stack:
        free(stack);
        return ret;
}

/* Put every node's children in listing order. */
static int sort_children(struct builder *b)
{
        struct node **v = NULL;
        size_t cap = 0;

        for (size_t k = 0; k < b->n; k++) {
                struct node *p = &b->v[k];
                size_t n = 0, prev = NONE;
                bool sorted = true;

                for (size_t c = p->first; c != NONE; c = b->v[c].next) {
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 256;
                                struct node **nv = realloc(v, ncap * sizeof(*nv));

                                if (!nv) {
                                        free(v);
                                        return -ENOMEM;
                                }
                                v = nv;
                                cap = ncap;
                        }
                        v[n] = &b->v[c];
                        if (n && cmp_node_name(&v[n - 1], &v[n]) > 0)
                                sorted = false;
                        n++;
                }
                if (sorted)
                        continue;
                qsort(v, n, sizeof(*v), cmp_node_name);
                p->first = NONE;
                for (size_t i = 0; i < n; i++) {
                        size_t c = (size_t)(v[i] - b->v);

                        v[i]->prev = prev;
                        v[i]->next = NONE;
                        if (prev == NONE)
                                p->first = c;
                        else
                                b->v[prev].next = c;
                        prev = c;
                }
                p->last = prev;
        }
        free(v);
        return 0;
}

/* The indices of the @top largest tensors into @out, largest first. */
static int largest(const struct stf_model *m, size_t top, size_t *out)
{
        size_t n = 0;

        if (top * 8 >= m->ntensors) {
                /* Most of them: sort them all. */
                size_t *all = malloc((m->ntensors ? m->ntensors : 1) * sizeof(*all));

                if (!all)
                        return -ENOMEM;
                for (size_t i = 0; i < m->ntensors; i++)
                        all[i] = i;
                qsort_r(all, m->ntensors, sizeof(*all), cmp_size_idx, (void *)m);
                memcpy(out, all, top * sizeof(*out));
                free(all);
                return 0;
        }
        /* A few: insert into a short sorted list. */
        for (size_t i = 0; i < m->ntensors; i++) {
                size_t k = n;

                if (n == top && cmp_size(&m->tensors[i], &m->tensors[out[n - 1]]) >= 0)
                        continue;
                if (n < top)
                        n++;
                for (k = n - 1; k > 0 && cmp_size(&m->tensors[i], &m->tensors[out[k - 1]]) < 0; k--)
                        out[k] = out[k - 1];
                out[k] = i;
        }
        return 0;
}

/* The tree in breadth-first order, names copied (runs named "{a..b}"). */
static int compact(struct builder *b, struct stf_summary *s)
{
        size_t *queue, n = 0, names = 0, next = 1;
        char *arena;

        /* The live nodes in breadth-first order, and their name bytes. */
        queue = malloc(b->n * sizeof(*queue));
        if (!queue)
                return -ENOMEM;
        queue[n++] = 0;
        for (size_t head = 0; head < n; head++) {
                const struct node *p = &b->v[queue[head]];

                names += p->repeat > 1 ? RUN_NAME_MAX : p->len + 1;
                for (size_t c = p->first; c != NONE; c = b->v[c].next)
                        queue[n++] = c;
        }
        s->modules = calloc(n, sizeof(*s->modules));
        s->arena = arena = malloc(names);
        if (!s->modules || !arena) {
                free(queue);
                return -ENOMEM;
        }
        s->nmodules = n;
        /* Children were queued together, so their indices are contiguous. */
        for (size_t i = 0; i < n; i++) {
                const struct node *p = &b->v[queue[i]];
                struct stf_module *md = &s->modules[i];

                md->name = arena;
                if (p->repeat > 1) {
                        md->name_len = (uint32_t)snprintf(
                            arena, RUN_NAME_MAX, "{%llu..%llu}", (unsigned long long)p->num,
                            (unsigned long long)(p->num + p->repeat - 1));
                } else {
                        memcpy(arena, p->name, p->len);
                        arena[p->len] = '\0';
                        md->name_len = p->len;
                }
                arena += md->name_len + 1;
                md->repeat = p->repeat;
                md->first = p->repeat > 1 ? p->num : 0;
                md->size = p->size;
                md->tensor = p->tensor;
                md->component = p->component;
                md->first_child = next;
                for (size_t c = p->first; c != NONE; c = b->v[c].next)
                        s->modules[next++].depth = md->depth + 1;
                md->nchildren = next - md->first_child;
        }
        free(queue);
        return 0;
}

int stf_summary_build(const struct stf_model *m, size_t top, struct stf_summary **out)
{
        struct builder b = {.m = m};
        struct stf_summary *s;
        int ret = -ENOMEM;

        *out = NULL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *t = &m->tensors[i];
                struct stf_count *d = &s->dtypes[t->dtype];

                d->tensors++;
                d->params += t->nelem;
                d->bytes += t->size;
                s->total.tensors++;
                s->total.params += t->nelem;
                s->total.bytes += t->size;
        }

        ret = build_trie(&b);
        if (!ret)
                ret = sort_children(&b);
        if (ret)
                goto out_builder;
        /* Children come after their parent: sum and collapse bottom up. */
        for (size_t k = b.n; k-- > 0;) {
                struct node *p = &b.v[k];

                if (p->tensor != NONE) {
                        const struct stf_tensor *t = &m->tensors[p->tensor];

                        p->size.tensors++;
                        p->size.params += t->nelem;
                        p->size.bytes += t->size;
                }
                ret = collapse(&b, k);
                if (ret)
                        goto out_builder;
                /* Before the parent collapses this node's run: every instance adds. */
                if (p->parent != NONE) {
                        struct stf_count *q = &b.v[p->parent].size;

                        q->tensors += p->size.tensors;
                        q->params += p->size.params;
                        q->bytes += p->size.bytes;
                }
        }
        ret = compact(&b, s);
        if (ret)
                goto out_builder;

        if (top > m->ntensors)
                top = m->ntensors;
        if (top) {
                s->largest = malloc(top * sizeof(*s->largest));
                ret = s->largest ? largest(m, top, s->largest) : -ENOMEM;
                if (ret)
                        goto out_builder;
                s->nlargest = top;
        }
        *out = s;
        s = NULL;
out_builder:
        free(b.v);
        free(b.pairs);
        stf_summary_free(s);
        return ret;
}

void stf_summary_free(struct stf_summary *s)
{
        if (!s)
                return;
        free(s->modules);
        free(s->arena);
        free(s->largest);
        free(s);
}
