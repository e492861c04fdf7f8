/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SOURCE -> shards and tensors.
 *
 * Everything is opened and validated before a model is handed out: a shard
 * is opened read-only, fstat'ed, mapped whole (MAP_SHARED, PROT_READ) and its
 * header parsed against the size seen by fstat. An index is checked both
 * ways against its shards (every listed tensor present in the shard it
 * names, every shard tensor listed there), so the tensor table is exactly
 * what the index promises. Shard names in an index are plain file names:
 * nothing outside the index's directory is opened because of them.
 *
 * The same code checks a model (stf_model_check): every problem goes to a
 * struct stf_sink (report.h) that either stops at the first one, as opening
 * does, or counts it and lets the check go on. In that mode a file that
 * cannot be read or parsed is left out of the checks that need it (its
 * shard has no header), so one problem is reported once, not again by
 * every check downstream of it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "pool.h"

#define QMAX 400
#define INDEX_SUFFIX ".safetensors.index.json"
#define ST_SUFFIX ".safetensors"
#define OPEN_THREADS 8

/* A set found in a directory, before it is opened. */
struct set {
        char *path; /* index or .safetensors file */
        char *name; /* component name if the model has several */
        bool is_index;
        json_t *wm, *names, *meta; /* the parsed index, kept from the scan */
};

struct setlist {
        struct set *v;
        size_t n, cap;
};

static bool ends_with(const char *s, const char *suffix)
{
        size_t a = strlen(s), b = strlen(suffix);

        return a >= b && !strcmp(s + a - b, suffix);
}

static char *path_join(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return NULL;
        return p;
}

static int read_small_file(const char *path, size_t limit, char **out, size_t *len,
                           struct stf_sink *sink)
{
        struct stat st;
        char *buf;
        size_t got = 0;
        int fd, ret;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot open: %s", path, strerror(errno));
                return ret;
        }
        if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > limit) {
                stf_sink_report(sink, path, NULL, -1, "%s: not a regular file of at most %zu bytes",
                                path, limit);
                close(fd);
                return -EINVAL;
        }
        buf = malloc((size_t)st.st_size + 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        while (got < (size_t)st.st_size) {
                ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

                if (r <= 0) {
                        ret = r < 0 ? -errno : -EIO;
                        stf_sink_report(sink, path, NULL, (int64_t)got, "%s: read failed", path);
                        free(buf);
                        close(fd);
                        return ret;
                }
                got += (size_t)r;
        }
        close(fd);
        buf[got] = '\0';
        *out = buf;
        *len = got;
        return 0;
}

static bool plain_file_name(const char *s)
{
        return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

static int cmp_json_str(const void *a, const void *b)
{
        return strcmp(json_string_value(*(json_t *const *)a),
                      json_string_value(*(json_t *const *)b));
}

/*
 * The index document: stf_index_parse, through a sink. In the check mode a
 * weight_map entry with a bad value is reported and left out of the shard
 * names, and the outputs are set whenever there is a weight_map object, even
 * with problems (then the return is -EINVAL): the shards it does name can
 * still be checked. In the first-problem mode they are set only on success.
 */
static int index_parse(const char *index_file, const char *text, size_t len,
                       json_t **weight_map_out, json_t **shard_names_out, json_t **metadata_out,
                       struct stf_sink *sink)
{
        json_error_t jerr;
        json_t *root, *wm, *names = NULL, *seen = NULL, *val, **sorted = NULL;
        const char *key;
        char q[QMAX], q2[QMAX];
        size_t i, n, count0 = sink->count;
        int ret;

        ret = stf_json_load(text, len, JSON_REJECT_DUPLICATES, &root, &jerr);
        if (ret == -ENOMEM)
                return ret;
        if (ret) {
                stf_sink_report(sink, index_file, NULL, jerr.position,
                                "%s: byte %d: index is not valid JSON: %s", index_file,
                                jerr.position, jerr.text);
                return -EINVAL;
        }
        ret = -EINVAL;
        wm = json_object_get(root, "weight_map");
        if (!json_is_object(root) || !json_is_object(wm)) {
                stf_sink_report(sink, index_file, NULL, -1,
                                "%s: index has no \"weight_map\" object", index_file);
                goto out_root;
        }
        seen = json_object();
        names = json_array();
        if (!seen || !names) {
                ret = -ENOMEM;
                goto out_root;
        }
        json_object_foreach(wm, key, val)
        {
                if (!json_is_string(val)) {
                        if (stf_sink_report(sink, index_file, key, -1,
                                            "%s: tensor '%s': weight_map value is not a string",
                                            index_file,
                                            stf_diag_quote(key, strlen(key), q, sizeof(q))))
                                goto out_root;
                        continue;
                }
                if (!plain_file_name(json_string_value(val))) {
                        if (stf_sink_report(
                                sink, index_file, key, -1,
                                "%s: tensor '%s': weight_map value '%s' is not a plain file name "
                                "in the index's directory",
                                index_file, stf_diag_quote(key, strlen(key), q, sizeof(q)),
                                stf_diag_quote(json_string_value(val), json_string_length(val), q2,
                                               sizeof(q2))))
                                goto out_root;
                        continue;
                }
                if (!json_object_get(seen, json_string_value(val))) {
                        if (json_object_set_new(seen, json_string_value(val), json_true()) ||
                            json_array_append(names, val)) {
                                ret = -ENOMEM;
                                goto out_root;
                        }
                }
        }
        n = json_array_size(names);
        if (json_object_size(wm) == 0) {
                stf_sink_report(sink, index_file, NULL, -1, "%s: index \"weight_map\" is empty",
                                index_file);
                goto out_root;
        }
        /* Sort the shard names so shard order does not depend on the map's. */
        sorted = malloc((n ? n : 1) * sizeof(*sorted));
        if (!sorted) {
                ret = -ENOMEM;
                goto out_root;
        }
        for (i = 0; i < n; i++)
                sorted[i] = json_incref(json_array_get(names, i));
        qsort(sorted, n, sizeof(*sorted), cmp_json_str);
        json_array_clear(names);
        for (i = 0; i < n; i++)
                if (json_array_append_new(names, sorted[i]))
                        ret = -ENOMEM;
        free(sorted);
        if (ret == -ENOMEM)
                goto out_root;

        if (weight_map_out)
                *weight_map_out = json_incref(wm);
        if (shard_names_out)
                *shard_names_out = json_incref(names);
        if (metadata_out)
                *metadata_out = json_incref(json_object_get(root, "metadata"));
        ret = sink->count != count0 ? -EINVAL : 0;
out_root:
        json_decref(seen);
        json_decref(names);
        json_decref(root);
        return ret;
}

int stf_index_parse(const char *index_file, const char *text, size_t len, json_t **weight_map_out,
                    json_t **shard_names_out, json_t **metadata_out, struct stf_diag *diag)
{
        struct stf_sink sink = {.diag = diag};

        return index_parse(index_file, text, len, weight_map_out, shard_names_out, metadata_out,
                           &sink);
}

/*
 * In the check mode a failure that was reported is a finding, not an error:
 * the caller goes on with the next file or set. Anything else (no memory)
 * still ends the check.
 */
static int settle(const struct stf_sink *sink, size_t count0, int ret)
{
        return ret && ret != -ENOMEM && stf_sink_all(sink) && sink->count != count0 ? 0 : ret;
}

static int shard_open(const char *path, struct stf_shard *s, struct stf_sink *sink)
{
        struct stat st;
        void *map;
        int ret;

        s->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot open: %s", path, strerror(errno));
                return ret;
        }
        if (fstat(s->fd, &st)) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot stat: %s", path, strerror(errno));
                return ret;
        }
        if (!S_ISREG(st.st_mode)) {
                stf_sink_report(sink, path, NULL, -1, "%s: not a regular file", path);
                return -EINVAL;
        }
        s->size = (uint64_t)st.st_size;
        s->mtime = st.st_mtim;
        if (s->size < 8) {
                stf_sink_report(sink, path, NULL, 0,
                                "%s: byte 0: file is %" PRIu64
                                " bytes, too short for the 8-byte header size",
                                path, s->size);
                return -EINVAL;
        }
        map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
        if (map == MAP_FAILED) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot map: %s", path, strerror(errno));
                return ret;
        }
        s->map = map;
        return stf_header_validate(path, s->map, s->size, s->size, sink, &s->hdr);
}

static void shard_close(struct stf_shard *s)
{
        stf_header_free(s->hdr);
        if (s->map)
                munmap((void *)s->map, s->size);
        if (s->fd >= 0)
                close(s->fd);
        free(s->path);
}

static int add_shard(struct stf_model *m, const char *path)
{
        struct stf_shard *ns, *s;

        ns = realloc(m->shards, (m->nshards + 1) * sizeof(*ns));
        if (!ns)
                return -ENOMEM;
        m->shards = ns;
        s = &m->shards[m->nshards++];
        memset(s, 0, sizeof(*s));
        s->fd = -1;
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        s->name = strrchr(s->path, '/') ? strrchr(s->path, '/') + 1 : s->path;
        return 0;
}

/*
 * The problems of one shard in the check mode, held until every shard is
 * done so that they come out in shard order whichever thread found them.
 */
struct held_problem {
        struct stf_problem p;
        char *text; /* file, tensor and message, one allocation */
};

struct held {
        struct held_problem *v;
        size_t n, cap;
        bool failed; /* out of memory: a problem was lost */
};

static void hold(void *ctx, const struct stf_problem *p)
{
        struct held *h = ctx;
        size_t fl = strlen(p->file) + 1, tl = p->tensor ? strlen(p->tensor) + 1 : 0;
        size_t ml = strlen(p->msg) + 1;
        struct held_problem *hp;
        char *text;

        if (h->n == h->cap) {
                size_t ncap = h->cap ? h->cap * 2 : 8;
                struct held_problem *nv = realloc(h->v, ncap * sizeof(*nv));

                if (!nv) {
                        h->failed = true;
                        return;
                }
                h->v = nv;
                h->cap = ncap;
        }
        text = malloc(fl + tl + ml);
        if (!text) {
                h->failed = true;
                return;
        }
        hp = &h->v[h->n++];
        hp->text = text;
        hp->p.file = memcpy(text, p->file, fl);
        hp->p.tensor = p->tensor ? memcpy(text + fl, p->tensor, tl) : NULL;
        hp->p.msg = memcpy(text + fl + tl, p->msg, ml);
        hp->p.offset = p->offset;
}

static void held_free(struct held *h)
{
        for (size_t i = 0; i < h->n; i++)
                free(h->v[i].text);
        free(h->v);
}

/*
 * Open, map and parse shards [first, m->nshards) on a few threads: a big
 * set has hundreds of shards and the JSON parse dominates mount time. The
 * error reported is the one of the first failing shard, as if serial; in the
 * check mode every shard's problems, in shard order.
 */
struct opener {
        struct stf_model *m;
        uint32_t first;
        int *rets;
        struct stf_sink *sinks;
};

static int open_one(void *ctx, unsigned worker, size_t k)
{
        struct opener *o = ctx;
        uint32_t i = o->first + (uint32_t)k;

        o->rets[i] = shard_open(o->m->shards[i].path, &o->m->shards[i], &o->sinks[i]);
        return o->rets[i];
}

static int open_shards(struct stf_model *m, uint32_t first, struct stf_sink *sink)
{
        struct opener o = {.m = m, .first = first};
        struct stf_pool pool = {.ntasks = m->nshards - first,
                                .threads = OPEN_THREADS,
                                .task = open_one,
                                .keep_going = stf_sink_all(sink),
                                .ctx = &o};
        struct stf_diag *diags = NULL;
        struct held *held = NULL;
        int ret = 0;

        if (pool.ntasks == 0)
                return 0;
        if (pool.threads > stf_pool_threads(0))
                pool.threads = stf_pool_threads(0);
        o.rets = calloc(m->nshards, sizeof(*o.rets));
        o.sinks = calloc(m->nshards, sizeof(*o.sinks));
        if (stf_sink_all(sink))
                held = calloc(m->nshards, sizeof(*held));
        else
                diags = calloc(m->nshards, sizeof(*diags));
        if (!o.rets || !o.sinks || (!held && !diags)) {
                ret = -ENOMEM;
                goto out_arrays;
        }
        for (uint32_t i = first; i < m->nshards; i++)
                o.sinks[i] = held ? (struct stf_sink){.report = hold, .ctx = &held[i]}
                                  : (struct stf_sink){.diag = &diags[i]};
        /* The first failure stops the opening (no later shard is needed). */
        stf_pool_run(&pool);
        for (uint32_t i = first; i < m->nshards; i++) {
                if (held) {
                        for (size_t k = 0; k < held[i].n; k++)
                                stf_sink_forward(sink, &held[i].v[k].p);
                        /* A failure with no problem reported is an error. */
                        if (!ret && (held[i].failed || (o.rets[i] && !o.sinks[i].count)))
                                ret = held[i].failed ? -ENOMEM : o.rets[i];
                } else if (o.rets[i]) {
                        ret = o.rets[i];
                        if (sink->diag)
                                *sink->diag = diags[i];
                        sink->count += o.sinks[i].count;
                        break;
                }
        }
out_arrays:
        for (uint32_t i = first; held && i < m->nshards; i++)
                held_free(&held[i]);
        free(held);
        free(diags);
        free(o.sinks);
        free(o.rets);
        return ret;
}

/* The shard of a set [first, nshards) with file name @name, or NULL. */
static const struct stf_shard *find_shard(const struct stf_model *m, uint32_t first,
                                          const char *name)
{
        for (uint32_t si = first; si < m->nshards; si++)
                if (!strcmp(m->shards[si].name, name))
                        return &m->shards[si];
        return NULL;
}

/*
 * Both directions of the index <-> shard contract, for shards [first,
 * nshards). Only the check mode has shards without a header (unreadable or
 * malformed), missing shards or bad weight_map values; their problems are
 * reported already, and the checks here skip them.
 */
static int check_index(const char *index, json_t *wm, struct stf_model *m, uint32_t first,
                       struct stf_sink *sink)
{
        size_t matched = 0;
        char q[QMAX], q2[QMAX];

        for (uint32_t si = first; si < m->nshards; si++) {
                const struct stf_shard *s = &m->shards[si];

                for (size_t i = 0; s->hdr && i < s->hdr->ntensors; i++) {
                        const struct stf_tensor *t = &s->hdr->tensors[i];
                        json_t *v = json_object_get(wm, t->name);

                        if (!v) {
                                if (stf_sink_report(
                                        sink, s->path, t->name, (int64_t)t->begin,
                                        "%s: tensor '%s' is not listed in the index %s", s->path,
                                        stf_diag_quote(t->name, t->name_len, q, sizeof(q)), index))
                                        return -EINVAL;
                                continue;
                        }
                        if (!json_is_string(v) || !plain_file_name(json_string_value(v)))
                                continue;
                        if (strcmp(json_string_value(v), s->name)) {
                                if (stf_sink_report(
                                        sink, s->path, t->name, (int64_t)t->begin,
                                        "%s: tensor '%s' is listed in the index %s under shard "
                                        "'%s'",
                                        s->path, stf_diag_quote(t->name, t->name_len, q, sizeof(q)),
                                        index,
                                        stf_diag_quote(json_string_value(v), json_string_length(v),
                                                       q2, sizeof(q2))))
                                        return -EINVAL;
                                continue;
                        }
                        matched++;
                }
        }
        if (matched != json_object_size(wm)) {
                /* Find the listed tensors missing from their shards. */
                const char *key;
                json_t *v;

                json_object_foreach(wm, key, v)
                {
                        const struct stf_shard *s;
                        bool found = false;

                        if (!json_is_string(v) || !plain_file_name(json_string_value(v)))
                                continue;
                        s = find_shard(m, first, json_string_value(v));
                        if (!s || !s->hdr)
                                continue;
                        for (size_t i = 0; i < s->hdr->ntensors && !found; i++)
                                found = !strcmp(s->hdr->tensors[i].name, key);
                        if (!found &&
                            stf_sink_report(sink, index, key, -1,
                                            "%s: tensor '%s' is listed but not in shard '%s'",
                                            index, stf_diag_quote(key, strlen(key), q, sizeof(q)),
                                            stf_diag_quote(json_string_value(v),
                                                           json_string_length(v), q2, sizeof(q2))))
                                return -EINVAL;
                }
        }
        return 0;
}

static int dir_of(const char *path, char **out)
{
        const char *slash = strrchr(path, '/');

        *out = slash ? strndup(path, (size_t)(slash > path ? slash - path : 1)) : strdup(".");
        return *out ? 0 : -ENOMEM;
}

static int open_set(struct stf_model *m, const struct set *set, struct stf_sink *sink)
{
        struct stf_component *nc, *c;
        json_t *wm = NULL, *names = NULL;
        char *text = NULL, *dir = NULL;
        size_t len, count0 = sink->count;
        int ret;

        nc = realloc(m->comps, (m->ncomps + 1) * sizeof(*nc));
        if (!nc)
                return -ENOMEM;
        m->comps = nc;
        c = &m->comps[m->ncomps++];
        memset(c, 0, sizeof(*c));
        c->name = strdup(set->name ? set->name : "");
        c->source = strdup(set->path);
        if (!c->name || !c->source)
                return -ENOMEM;
        c->first_shard = m->nshards;
        if (!set->is_index) {
                ret = add_shard(m, set->path);
                if (!ret)
                        ret = open_shards(m, c->first_shard, sink);
                goto out;
        }

        if (set->wm) {
                wm = json_incref(set->wm);
                names = json_incref(set->names);
                c->index_meta = json_incref(set->meta);
        } else {
                ret = read_small_file(set->path, STF_HEADER_MAX, &text, &len, sink);
                if (ret)
                        goto out;
                ret = index_parse(set->path, text, len, &wm, &names, &c->index_meta, sink);
                /* The check mode goes on with what a flawed index does name. */
                if (ret && !wm)
                        goto out;
        }
        ret = dir_of(set->path, &dir);
        if (ret)
                goto out;
        for (size_t i = 0; i < json_array_size(names); i++) {
                const char *sname = json_string_value(json_array_get(names, i));
                char *p = path_join(dir, sname);
                char q[QMAX];

                if (!p) {
                        ret = -ENOMEM;
                        goto out;
                }
                if (access(p, F_OK)) {
                        stf_sink_report(sink, set->path, NULL, -1,
                                        "%s: shard '%s' listed in weight_map does not exist",
                                        set->path,
                                        stf_diag_quote(sname, strlen(sname), q, sizeof(q)));
                        free(p);
                        ret = -ENOENT;
                        if (!stf_sink_all(sink))
                                goto out;
                        continue;
                }
                ret = add_shard(m, p);
                free(p);
                if (ret)
                        goto out;
        }
        ret = open_shards(m, c->first_shard, sink);
        if (!ret)
                ret = check_index(set->path, wm, m, c->first_shard, sink);
out:
        c->nshards = m->nshards - c->first_shard;
        json_decref(wm);
        json_decref(names);
        free(text);
        free(dir);
        return settle(sink, count0, ret);
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
        qsort(m->tensors, n, sizeof(*m->tensors), cmp_tensor_name);
        return 0;
}

static void setlist_free(struct setlist *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].path);
                free(l->v[i].name);
                json_decref(l->v[i].wm);
                json_decref(l->v[i].names);
                json_decref(l->v[i].meta);
        }
        free(l->v);
}

static int setlist_add(struct setlist *l, char *path, char *name, bool is_index)
{
        if (!path) {
                free(name);
                return -ENOMEM;
        }
        if (l->n == l->cap) {
                size_t ncap = l->cap ? l->cap * 2 : 8;
                struct set *nv = realloc(l->v, ncap * sizeof(*nv));

                if (!nv) {
                        free(path);
                        free(name);
                        return -ENOMEM;
                }
                l->v = nv;
                l->cap = ncap;
        }
        l->v[l->n++] = (struct set){path, name, is_index, NULL, NULL, NULL};
        return 0;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of a directory's entries (not starting with '.'). */
static int list_dir(const char *dir, char ***out, size_t *count, struct stf_sink *sink)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        char **v = NULL;
        size_t n = 0, cap = 0;

        if (!d) {
                int ret = -errno;

                stf_sink_report(sink, dir, NULL, -1, "%s: cannot open directory: %s", dir,
                                strerror(errno));
                return ret;
        }
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (n == cap) {
                        char **nv;

                        cap = cap ? cap * 2 : 16;
                        nv = realloc(v, cap * sizeof(*v));
                        if (!nv)
                                goto fail;
                        v = nv;
                }
                v[n] = strdup(de->d_name);
                if (!v[n])
                        goto fail;
                n++;
        }
        closedir(d);
        if (n)
                qsort(v, n, sizeof(*v), cmp_str);
        *out = v;
        *count = n;
        return 0;
fail:
        closedir(d);
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
        return -ENOMEM;
}

static char *stem(const char *file)
{
        size_t len = strlen(file);

        if (ends_with(file, INDEX_SUFFIX))
                len -= strlen(INDEX_SUFFIX);
        else if (ends_with(file, ST_SUFFIX))
                len -= strlen(ST_SUFFIX);
        return strndup(file, len);
}

/*
 * The sets of one directory: its index files and the .safetensors files
 * no index lists. @sub: the sub-directory name (NULL at the top).
 */
static int scan_dir(const char *dir, const char *sub, struct setlist *out, struct stf_sink *sink)
{
        char **ents = NULL;
        size_t n = 0, first = out->n;
        json_t *listed;
        int ret;

        ret = list_dir(dir, &ents, &n, sink);
        if (ret)
                return ret;
        listed = json_object();
        if (!listed) {
                ret = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                char *p, *text;
                size_t len, count0 = sink->count;
                json_t *names = NULL, *wm = NULL, *meta = NULL;

                if (!ends_with(ents[i], INDEX_SUFFIX))
                        continue;
                p = path_join(dir, ents[i]);
                if (!p) {
                        ret = -ENOMEM;
                        goto out;
                }
                ret = read_small_file(p, STF_HEADER_MAX, &text, &len, sink);
                if (!ret) {
                        ret = index_parse(p, text, len, &wm, &names, &meta, sink);
                        free(text);
                }
                /* The check mode goes on with what a flawed index does name. */
                if (ret && wm)
                        ret = 0;
                for (size_t k = 0; !ret && k < json_array_size(names); k++)
                        if (json_object_set(listed, json_string_value(json_array_get(names, k)),
                                            json_true()))
                                ret = -ENOMEM;
                if (!ret)
                        ret = setlist_add(out, p, stem(ents[i]), true);
                else
                        free(p);
                if (ret) {
                        json_decref(wm);
                        json_decref(names);
                        json_decref(meta);
                        ret = settle(sink, count0, ret);
                        if (ret)
                                goto out;
                        continue;
                }
                out->v[out->n - 1].wm = wm;
                out->v[out->n - 1].names = names;
                out->v[out->n - 1].meta = meta;
        }
        for (size_t i = 0; i < n; i++) {
                if (!ends_with(ents[i], ST_SUFFIX) || json_object_get(listed, ents[i]))
                        continue;
                ret = setlist_add(out, path_join(dir, ents[i]), stem(ents[i]), false);
                if (ret)
                        goto out;
        }
        /* Name the sets of a sub-directory after it ("unet"), or "unet/STEM". */
        for (size_t i = first; sub && i < out->n; i++) {
                char *name;

                if (out->n - first == 1)
                        name = strdup(sub);
                else if (asprintf(&name, "%s/%s", sub, out->v[i].name) < 0)
                        name = NULL;
                if (!name) {
                        ret = -ENOMEM;
                        goto out;
                }
                free(out->v[i].name);
                out->v[i].name = name;
        }
        if (sub)
                goto out;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                char *p = path_join(dir, ents[i]);
                size_t count0 = sink->count;

                if (!p) {
                        ret = -ENOMEM;
                        goto out;
                }
                if (!stat(p, &st) && S_ISDIR(st.st_mode))
                        ret = settle(sink, count0, scan_dir(p, ents[i], out, sink));
                free(p);
                if (ret)
                        goto out;
        }
out:
        json_decref(listed);
        for (size_t i = 0; i < n; i++)
                free(ents[i]);
        free(ents);
        return ret;
}

/* Same name, or one a directory of the other ("vae" and "vae/x"). */
static bool name_clash(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);

        if (la > lb)
                return name_clash(b, a);
        return !strncmp(a, b, la) && (b[la] == '\0' || b[la] == '/');
}

static int find_sets(const char *source, struct setlist *sets, struct stf_sink *sink)
{
        struct stat st;
        int ret;

        if (stat(source, &st)) {
                ret = -errno;
                stf_sink_report(sink, source, NULL, -1, "%s: %s", source, strerror(errno));
                return ret;
        }
        if (!S_ISDIR(st.st_mode))
                return setlist_add(sets, strdup(source), NULL, ends_with(source, ".json"));
        ret = scan_dir(source, NULL, sets, sink);
        if (ret)
                return ret;
        if (sets->n == 0) {
                stf_sink_report(sink, source, NULL, -1,
                                "%s: no .safetensors file or index in this directory or its "
                                "sub-directories",
                                source);
                return -EINVAL;
        }
        if (sets->n == 1) {
                free(sets->v[0].name);
                sets->v[0].name = NULL;
        }
        for (size_t i = 0; i < sets->n; i++)
                for (size_t j = i + 1; j < sets->n; j++)
                        if (name_clash(sets->v[i].name, sets->v[j].name) &&
                            stf_sink_report(sink, sets->v[i].path, NULL, -1,
                                            "%s and %s: two sets would mount under the same "
                                            "or nested names ('%s')",
                                            sets->v[i].path, sets->v[j].path, sets->v[i].name))
                                return -EINVAL;
        return 0;
}

/* stf_model_open and stf_model_check: @sink says which. */
static int model_open(const char *source, struct stf_sink *sink, struct stf_model **out)
{
        struct setlist sets = {0};
        struct stf_model *m;
        size_t count0 = sink->count;
        int ret;

        *out = NULL;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        ret = settle(sink, count0, find_sets(source, &sets, sink));
        for (size_t i = 0; !ret && i < sets.n; i++)
                ret = open_set(m, &sets.v[i], sink);
        if (!ret && sink->count != count0)
                ret = -EINVAL;
        if (!ret)
                ret = build_table(m);
        setlist_free(&sets);
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

        return model_open(source, &sink, out);
}

int stf_model_check(const char *source, stf_report_fn report, void *ctx, struct stf_model **out)
{
        struct stf_sink sink = {.report = report, .ctx = ctx};
        struct stf_model *m;
        int ret;

        ret = model_open(source, &sink, &m);
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
                shard_close(&m->shards[i]);
        for (uint32_t i = 0; i < m->ncomps; i++) {
                free(m->comps[i].name);
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
