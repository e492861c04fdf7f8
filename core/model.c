/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sets -> the model: each set's shards opened (shard.c) and, for an index,
 * checked against it both ways (index.c), so the tensor table is exactly
 * what the index promises; then one table of every tensor.
 *
 * The same code checks a model (stf_model_check): every problem goes to a
 * struct stf_sink (report.h) that either stops at the first one, as opening
 * does, or counts it and lets the check go on. In that mode a file that
 * cannot be read or parsed is left out of the checks that need it (its
 * shard has no header), so one problem is reported once, not again by
 * every check downstream of it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "companion.h"
#include "index.h"
#include "model.h"
#include "setname.h"
#include "source.h"

/* @path relative to @root when it is below it, else NULL. */
static const char *relative(const char *root, const char *path)
{
        size_t n = strlen(root);

        if (!strncmp(path, root, n) && path[n] == '/' && path[n + 1])
                return path + n + 1;
        return NULL;
}

/*
 * Make room for element @n of the array *@v (elements of @size bytes):
 * the capacity is the next power of two, so a source of many shards or
 * sets costs O(n) copying, not O(n^2) (one realloc per element moved the
 * whole array each time under allocators that do not grow in place).
 */
static int grow(void *v, size_t n, size_t size)
{
        void *nv;

        if (n & (n - 1))
                return 0; /* not a power of two (nor 0): there is room */
        nv = realloc(*(void **)v, (n ? 2 * n : 1) * size);
        if (!nv)
                return -ENOMEM;
        *(void **)v = nv;
        return 0;
}

static int add_shard(struct stf_model *m, const char *path)
{
        int ret;

        if (grow(&m->shards, m->nshards, sizeof(*m->shards)))
                return -ENOMEM;
        ret = stf_shard_init(&m->shards[m->nshards++], path);
        if (!ret && relative(m->root, m->shards[m->nshards - 1].path))
                m->shards[m->nshards - 1].rel = relative(m->root, m->shards[m->nshards - 1].path);
        return ret;
}

static int open_set(struct stf_model *m, const struct stf_set *set, struct stf_sink *sink)
{
        struct stf_component *c;
        json_t *wm = NULL;
        char **paths = NULL;
        size_t n = 0, count0 = sink->count;
        struct stf_setname sn;
        const char *file;
        int ret;

        if (grow(&m->comps, m->ncomps, sizeof(*m->comps)))
                return -ENOMEM;
        c = &m->comps[m->ncomps++];
        memset(c, 0, sizeof(*c));
        c->name = strdup(set->name ? set->name : "");
        c->source = strdup(set->path);
        if (!c->name || !c->source)
                return -ENOMEM;
        file = strrchr(set->path, '/') ? strrchr(set->path, '/') + 1 : set->path;
        if (stf_setname_parse(file, &sn)) {
                c->whole = stf_setname_whole(file);
                if (!c->whole)
                        return -ENOMEM;
        }
        c->first_shard = m->nshards;
        ret = stf_set_shards(set, sink, &paths, &n, &wm, &c->index_meta);
        for (size_t i = 0; !ret && i < n; i++)
                ret = add_shard(m, paths[i]);
        if (!ret)
                ret = stf_shard_open_all(&m->shards[c->first_shard], (uint32_t)n, sink);
        if (!ret && wm)
                ret = stf_index_check(set->path, wm, &m->shards[c->first_shard], (uint32_t)n, sink);
        c->nshards = m->nshards - c->first_shard;
        json_decref(wm);
        stf_paths_free(paths, n);
        return stf_sink_settle(sink, count0, ret);
}

static int cmp_tensor_name(const void *a, const void *b)
{
        const struct stf_tensor *x = a, *y = b;
        uint32_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
        int c;

        if (x->comp != y->comp)
                return x->comp < y->comp ? -1 : 1;
        c = memcmp(x->name, y->name, n);
        if (c)
                return c;
        return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

void stf_model_sort_table(struct stf_tensor *v, size_t n)
{
        if (n)
                qsort(v, n, sizeof(*v), cmp_tensor_name);
}

static int build_table(struct stf_model *m)
{
        size_t n = 0, k = 0;

        for (uint32_t i = 0; i < m->nshards; i++)
                n += m->shards[i].hdr->ntensors;
        m->tensors = calloc(n ? n : 1, sizeof(*m->tensors));
        if (!m->tensors)
                return -ENOMEM;
        for (uint32_t ci = 0; ci < m->ncomps; ci++) {
                struct stf_component *c = &m->comps[ci];

                c->first_tensor = (uint32_t)k;
                for (uint32_t si = c->first_shard; si < c->first_shard + c->nshards; si++) {
                        const struct stf_header *h = m->shards[si].hdr;

                        for (size_t i = 0; i < h->ntensors; i++) {
                                m->tensors[k] = h->tensors[i];
                                m->tensors[k].shard = si;
                                m->tensors[k].comp = ci;
                                m->total_bytes += h->tensors[i].size;
                                k++;
                        }
                }
                c->ntensors = (uint32_t)(k - c->first_tensor);
        }
        m->ntensors = n;
        stf_model_sort_table(m->tensors, n);
        return 0;
}

/* SOURCE, or its directory when it is a file; trailing '/' dropped. */
static int model_root(const char *source, bool *is_dir, char **out)
{
        struct stat st;
        size_t n = strlen(source);
        const char *slash;

        *is_dir = !stat(source, &st) && S_ISDIR(st.st_mode);
        if (!*is_dir) {
                slash = strrchr(source, '/');
                n = slash ? (size_t)(slash > source ? slash - source : 1) : 0;
        }
        while (n > 1 && source[n - 1] == '/')
                n--;
        *out = n ? strndup(source, n) : strdup(".");
        return *out ? 0 : -ENOMEM;
}

/* stf_model_open and stf_model_check: @sink says which. */
static int model_open(const char *source, const struct stf_model_opts *o, struct stf_sink *sink,
                      struct stf_model **out)
{
        static const struct stf_model_opts defaults;
        struct stf_sets sets = {0};
        struct stf_model *m;
        size_t count0 = sink->count;
        bool is_dir;
        int ret;

        *out = NULL;
        o = o ? o : &defaults;
        sets.variant = o->variant;
        sets.all_sets = o->all_sets;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        ret = model_root(source, &is_dir, &m->root);
        if (!ret)
                ret = stf_sink_settle(sink, count0, stf_source_find(source, &sets, sink));
        for (size_t i = 0; !ret && i < sets.n; i++)
                ret = open_set(m, &sets.v[i], sink);
        if (!ret && sink->count != count0)
                ret = -EINVAL;
        if (!ret)
                ret = build_table(m);
        if (!ret && o->companions)
                ret = stf_companions_load(m->root, is_dir, &m->companions, &m->ncompanions);
        stf_sets_free(&sets);
        if (ret) {
                if (ret == -ENOMEM)
                        stf_diag_set(sink->diag, "%s: out of memory", source);
                stf_model_close(m);
                return ret;
        }
        *out = m;
        return 0;
}

int stf_model_open(const char *source, struct stf_model **out, struct stf_diag *diag)
{
        struct stf_sink sink = {.diag = diag};

        return model_open(source, NULL, &sink, out);
}

int stf_model_open_opts(const char *source, const struct stf_model_opts *o, struct stf_model **out,
                        struct stf_diag *diag)
{
        struct stf_sink sink = {.diag = diag};

        return model_open(source, o, &sink, out);
}

int stf_model_check(const char *source, stf_report_fn report, void *ctx, struct stf_model **out)
{
        struct stf_sink sink = {.report = report, .ctx = ctx};
        struct stf_model *m;
        int ret;

        ret = model_open(source, &(const struct stf_model_opts){.all_sets = true}, &sink, &m);
        if (out)
                *out = m;
        else
                stf_model_close(m);
        return ret;
}

void stf_model_close(struct stf_model *m)
{
        if (!m)
                return;
        for (uint32_t i = 0; i < m->nshards; i++)
                stf_shard_close(&m->shards[i]);
        for (uint32_t i = 0; i < m->ncompanions; i++) {
                free(m->companions[i].rel);
                free(m->companions[i].data);
        }
        free(m->companions);
        free(m->root);
        for (uint32_t i = 0; i < m->ncomps; i++) {
                free(m->comps[i].name);
                free(m->comps[i].whole);
                free(m->comps[i].source);
                json_decref(m->comps[i].index_meta);
        }
        free(m->shards);
        free(m->comps);
        free(m->tensors);
        free(m);
}

static int cmp_layout(const void *a, const void *b, void *model)
{
        const struct stf_model *m = model;
        const struct stf_tensor *x = &m->tensors[*(const uint32_t *)a];
        const struct stf_tensor *y = &m->tensors[*(const uint32_t *)b];

        if (x->shard != y->shard)
                return x->shard < y->shard ? -1 : 1;
        if (x->begin != y->begin)
                return x->begin < y->begin ? -1 : 1;
        return x->size < y->size ? -1 : x->size > y->size;
}

void stf_model_sort_layout(const struct stf_model *m, uint32_t *idx, size_t n)
{
        if (n)
                qsort_r(idx, n, sizeof(*idx), cmp_layout, (void *)m);
}
