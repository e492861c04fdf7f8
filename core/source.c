/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SOURCE -> sets. A directory is listed in name order, so the sets, their
 * component names and the problems found come out the same on every run.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index.h"
#include "setname.h"
#include "source.h"
#include "text.h"

#define QMAX 400
#define INDEX_SUFFIX ".safetensors.index.json"
#define ST_SUFFIX ".safetensors"

static char *path_join(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return NULL;
        return p;
}

static int dir_of(const char *path, char **out)
{
        const char *slash = strrchr(path, '/');

        *out = slash ? strndup(path, (size_t)(slash > path ? slash - path : 1)) : strdup(".");
        return *out ? 0 : -ENOMEM;
}

static void set_free(struct stf_set *s)
{
        free(s->path);
        free(s->name);
        json_decref(s->wm);
        json_decref(s->names);
        json_decref(s->meta);
}

void stf_sets_free(struct stf_sets *l)
{
        for (size_t i = 0; i < l->n; i++)
                set_free(&l->v[i]);
        free(l->v);
}

/* Keep the sets [first, n) of one directory that stf_setname_choose keeps. */
static int choose_sets(struct stf_sets *l, size_t first)
{
        size_t n = l->n - first, k = first;
        struct stf_setname *names = calloc(n ? n : 1, sizeof(*names));
        bool *keep = calloc(n ? n : 1, sizeof(*keep));

        if (!names || !keep) {
                free(names);
                free(keep);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *p = l->v[first + i].path, *slash = strrchr(p, '/');

                stf_setname_parse(slash ? slash + 1 : p, &names[i]);
        }
        stf_setname_choose(names, n, l->variant, l->all_sets, keep, &l->variant_found);
        for (size_t i = 0; i < n; i++) {
                if (keep[i])
                        l->v[k++] = l->v[first + i];
                else
                        set_free(&l->v[first + i]);
        }
        l->n = k;
        free(names);
        free(keep);
        return 0;
}

static int setlist_add(struct stf_sets *l, char *path, char *name, bool is_index)
{
        if (!path) {
                free(name);
                return -ENOMEM;
        }
        if (l->n == l->cap) {
                size_t ncap = l->cap ? l->cap * 2 : 8;
                struct stf_set *nv = realloc(l->v, ncap * sizeof(*nv));

                if (!nv) {
                        free(path);
                        free(name);
                        return -ENOMEM;
                }
                l->v = nv;
                l->cap = ncap;
        }
        l->v[l->n++] = (struct stf_set){path, name, is_index, NULL, NULL, NULL};
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

/*
 * The same file or directory reached by two entries (a link "self -> .", an
 * alias "unet2 -> unet", "b.safetensors -> a.safetensors") is one set: sets
 * are identified by what they resolve to (st_dev, st_ino), not by their
 * path. Of the entries resolving to one file the first is kept: one listed
 * by an index of the directory (it is a shard, not a set of its own), then
 * one that is not a symbolic link, then the first in name order; the top
 * directory itself comes before all of its entries. Sorting the entries by
 * identity makes this O(n log n) for n entries.
 */
struct ident {
        dev_t dev;
        ino_t ino;
        unsigned rank; /* lower is kept */
        size_t pos;    /* in the listing */
};

static int cmp_ident(const void *a, const void *b)
{
        const struct ident *x = a, *y = b;

        if (x->dev != y->dev)
                return x->dev < y->dev ? -1 : 1;
        if (x->ino != y->ino)
                return x->ino < y->ino ? -1 : 1;
        if (x->rank != y->rank)
                return x->rank < y->rank ? -1 : 1;
        return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The identity of @dir/@name: -1 when it cannot be stat'ed (left to later checks). */
static int ident_of(const char *dir, const char *name, struct ident *id, bool *is_dir)
{
        struct stat st;
        char *p = path_join(dir, name);
        bool link;

        if (!p)
                return -ENOMEM;
        link = !lstat(p, &st) && S_ISLNK(st.st_mode);
        if ((link || !name[0]) && stat(p, &st)) {
                free(p);
                return -1;
        }
        free(p);
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->rank = link ? 1 : 0;
        *is_dir = S_ISDIR(st.st_mode);
        return 0;
}

/*
 * Mark in @dup[] every entry of @ents[0..n) that @pick selects and that
 * resolves to the same file as an earlier-ranked one (see above); @self, if
 * not NULL, is an identity that always comes first (the directory itself).
 * @pick(@ctx, name, is_dir) also says how an entry ranks: < 0 not taken,
 * else added to its rank.
 */
static int mark_aliases(const char *dir, char **ents, size_t n, const struct ident *self,
                        int (*pick)(void *ctx, const char *name, bool is_dir), void *ctx, bool *dup)
{
        struct ident *v = malloc((n + 1) * sizeof(*v));
        size_t k = 0;

        if (!v)
                return -ENOMEM;
        if (self)
                v[k++] = *self;
        for (size_t i = 0; i < n; i++) {
                bool is_dir = false;
                int r = ident_of(dir, ents[i], &v[k], &is_dir), rank;

                if (r == -ENOMEM) {
                        free(v);
                        return r;
                }
                rank = r ? -1 : pick(ctx, ents[i], is_dir);
                if (rank < 0)
                        continue;
                v[k].rank += 2 * (unsigned)rank + 1;
                v[k++].pos = i;
        }
        qsort(v, k, sizeof(*v), cmp_ident);
        for (size_t i = 1; i < k; i++)
                if (v[i].dev == v[i - 1].dev && v[i].ino == v[i - 1].ino)
                        dup[v[i].pos] = true;
        free(v);
        return 0;
}

static int pick_index(void *ctx, const char *name, bool is_dir)
{
        return !is_dir && stf_ends_with(name, strlen(name), INDEX_SUFFIX) ? 0 : -1;
}

/* .safetensors files; those an index lists (@ctx) rank first. */
static int pick_st(void *ctx, const char *name, bool is_dir)
{
        if (is_dir || !stf_ends_with(name, strlen(name), ST_SUFFIX))
                return -1;
        return json_object_get(ctx, name) ? 0 : 1;
}

static int pick_dir(void *ctx, const char *name, bool is_dir)
{
        return is_dir ? 0 : -1;
}

/* "model" for model.safetensors.index.json, "model.fp16" for its variant. */
static char *stem(const char *file)
{
        char *whole = stf_setname_whole(file), *out;

        if (!whole)
                return NULL;
        out = strndup(whole, strlen(whole) - strlen(ST_SUFFIX));
        free(whole);
        return out;
}

/*
 * Add the set of the index file @dir/@file to @out, with what it lists
 * (its weight map, names and metadata); the names it lists go into
 * @listed. A flaw is reported to @sink and settled there.
 */
static int add_index_set(const char *dir, const char *file, json_t *listed, struct stf_sets *out,
                         struct stf_sink *sink)
{
        size_t count0 = sink->count;
        json_t *names = NULL, *wm = NULL, *meta = NULL;
        char *p = path_join(dir, file);
        int ret;

        if (!p)
                return -ENOMEM;
        ret = stf_index_load(p, &wm, &names, &meta, sink);
        /* The check mode goes on with what a flawed index does name. */
        if (ret && wm)
                ret = 0;
        for (size_t k = 0; !ret && k < json_array_size(names); k++)
                if (json_object_set(listed, json_string_value(json_array_get(names, k)),
                                    json_true()))
                        ret = -ENOMEM;
        if (!ret)
                ret = setlist_add(out, p, stem(file), true);
        else
                free(p);
        if (ret) {
                json_decref(wm);
                json_decref(names);
                json_decref(meta);
                return stf_sink_settle(sink, count0, ret);
        }
        out->v[out->n - 1].wm = wm;
        out->v[out->n - 1].names = names;
        out->v[out->n - 1].meta = meta;
        return 0;
}

/* The index files of @ents[0..n) (one of each file), into @out and @listed. */
static int add_index_sets(const char *dir, char **ents, size_t n, bool *dup, json_t *listed,
                          struct stf_sets *out, struct stf_sink *sink)
{
        struct stf_setname sn;
        int ret = mark_aliases(dir, ents, n, NULL, pick_index, NULL, dup);

        for (size_t i = 0; !ret && i < n; i++)
                if (stf_setname_parse(ents[i], &sn) && sn.is_index && !dup[i])
                        ret = add_index_set(dir, ents[i], listed, out, sink);
        return ret;
}

/* The .safetensors files of @ents[0..n) that no index @listed, one set each. */
static int add_file_sets(const char *dir, char **ents, size_t n, bool *dup, json_t *listed,
                         struct stf_sets *out)
{
        int ret = mark_aliases(dir, ents, n, NULL, pick_st, listed, dup);

        for (size_t i = 0; !ret && i < n; i++) {
                if (!stf_ends_with(ents[i], strlen(ents[i]), ST_SUFFIX) ||
                    json_object_get(listed, ents[i]) || dup[i])
                        continue;
                ret = setlist_add(out, path_join(dir, ents[i]), stem(ents[i]), false);
        }
        return ret;
}

/* Name the sets @out->v[first..] of sub-directory @sub after it ("unet"), or "unet/STEM". */
static int name_after_sub(struct stf_sets *out, size_t first, const char *sub)
{
        for (size_t i = first; i < out->n; i++) {
                char *name;

                if (out->n - first == 1)
                        name = strdup(sub);
                else if (asprintf(&name, "%s/%s", sub, out->v[i].name) < 0)
                        name = NULL;
                if (!name)
                        return -ENOMEM;
                free(out->v[i].name);
                out->v[i].name = name;
        }
        return 0;
}

static int scan_dir(const char *dir, const char *sub, struct stf_sets *out, struct stf_sink *sink);

/* The sub-directories of @dir among @ents[0..n): each directory once, and never @dir again. */
static int scan_subdirs(const char *dir, char **ents, size_t n, bool *dup, struct stf_sets *out,
                        struct stf_sink *sink)
{
        struct ident self = {0};
        bool self_dir;
        int ret;

        memset(dup, 0, n * sizeof(*dup));
        if (ident_of(dir, "", &self, &self_dir) == -ENOMEM)
                return -ENOMEM;
        self.pos = SIZE_MAX;
        ret = mark_aliases(dir, ents, n, &self, pick_dir, NULL, dup);
        for (size_t i = 0; !ret && i < n; i++) {
                struct stat st;
                char *p = path_join(dir, ents[i]);
                size_t count0 = sink->count;

                if (!p)
                        return -ENOMEM;
                if (!dup[i] && !stat(p, &st) && S_ISDIR(st.st_mode))
                        ret = stf_sink_settle(sink, count0, scan_dir(p, ents[i], out, sink));
                free(p);
        }
        return ret;
}

/*
 * The sets of one directory: its index files and the .safetensors files
 * no index lists; at the top (@sub NULL) those of its sub-directories too,
 * named after them.
 */
static int scan_dir(const char *dir, const char *sub, struct stf_sets *out, struct stf_sink *sink)
{
        char **ents = NULL;
        size_t n = 0, first = out->n;
        json_t *listed = NULL;
        bool *dup = NULL;
        int ret;

        ret = list_dir(dir, &ents, &n, sink);
        if (ret)
                return ret;
        listed = json_object();
        dup = calloc(n ? n : 1, sizeof(*dup));
        ret = listed && dup ? 0 : -ENOMEM;
        if (!ret)
                ret = add_index_sets(dir, ents, n, dup, listed, out, sink);
        if (!ret)
                ret = add_file_sets(dir, ents, n, dup, listed, out);
        if (!ret)
                ret = choose_sets(out, first);
        if (!ret && sub)
                ret = name_after_sub(out, first, sub);
        else if (!ret)
                ret = scan_subdirs(dir, ents, n, dup, out, sink);
        free(dup);
        json_decref(listed);
        for (size_t i = 0; i < n; i++)
                free(ents[i]);
        free(ents);
        return ret;
}

/*
 * Set names in an order where a name is followed by every name nested in
 * it: bytewise, with '/' ranking below every other byte ("vae" < "vae/x" <
 * "vae-x"). Two sets clash (same name, or one a directory of the other)
 * exactly when some clashing pair is adjacent in this order, so one sort
 * and one pass find them. (Comparing every pair took 34 s for 50,000 sets.)
 */
static int cmp_set_name(const void *a, const void *b, void *sets)
{
        const struct stf_set *v = sets;
        const unsigned char *x = (const unsigned char *)v[*(const size_t *)a].name;
        const unsigned char *y = (const unsigned char *)v[*(const size_t *)b].name;

        for (;; x++, y++) {
                unsigned cx = *x == '/' ? 1 : *x == 1 ? '/' : *x;
                unsigned cy = *y == '/' ? 1 : *y == 1 ? '/' : *y;

                if (cx != cy)
                        return cx < cy ? -1 : 1;
                if (!cx)
                        return (*(const size_t *)a > *(const size_t *)b) -
                               (*(const size_t *)a < *(const size_t *)b);
        }
}

/* @b starts with @a, then ends or goes on with '/'. */
static bool nested_or_same(const char *a, const char *b)
{
        size_t la = strlen(a);

        return !strncmp(a, b, la) && (b[la] == '\0' || b[la] == '/');
}

/*
 * Component names end up in JSON (header.json, metadata.json) and in the
 * tensor names of .stfs/model.safetensors: they must be UTF-8. A directory
 * or file name that is not is refused rather than mangled (two mangled
 * names could become equal).
 */
static int check_names(struct stf_sets *sets, struct stf_sink *sink)
{
        size_t *order = malloc(sets->n * sizeof(*order));
        char q[QMAX];
        int ret = 0;

        if (!order)
                return -ENOMEM;
        for (size_t i = 0; i < sets->n; i++) {
                const char *name = sets->v[i].name;

                order[i] = i;
                if (!stf_utf8_valid(name, strlen(name)) &&
                    stf_sink_report(sink, sets->v[i].path, NULL, -1,
                                    "%s: the component name '%s' it would get is not valid UTF-8",
                                    sets->v[i].path,
                                    stf_diag_quote(name, strlen(name), q, sizeof(q)))) {
                        ret = -EINVAL;
                        goto out;
                }
        }
        qsort_r(order, sets->n, sizeof(*order), cmp_set_name, sets->v);
        for (size_t k = 1; k < sets->n; k++) {
                size_t i = order[k - 1], j = order[k];

                if (j < i) {
                        i = order[k];
                        j = order[k - 1];
                }
                if (nested_or_same(sets->v[order[k - 1]].name, sets->v[order[k]].name) &&
                    stf_sink_report(
                        sink, sets->v[i].path, NULL, -1,
                        "%s and %s: two sets would mount under the same "
                        "or nested names ('%s')",
                        sets->v[i].path, sets->v[j].path,
                        stf_diag_quote(sets->v[i].name, strlen(sets->v[i].name), q, sizeof(q)))) {
                        ret = -EINVAL;
                        goto out;
                }
        }
out:
        free(order);
        return ret;
}

int stf_source_find(const char *source, struct stf_sets *sets, struct stf_sink *sink)
{
        struct stat st;
        int ret;

        if (stat(source, &st)) {
                ret = -errno;
                stf_sink_report(sink, source, NULL, -1, "%s: %s", source, strerror(errno));
                return ret;
        }
        if (!S_ISDIR(st.st_mode))
                return setlist_add(sets, strdup(source), NULL,
                                   stf_ends_with(source, strlen(source), ".json"));
        ret = scan_dir(source, NULL, sets, sink);
        if (ret)
                return ret;
        if (sets->variant && !sets->variant_found) {
                stf_sink_report(sink, source, NULL, -1,
                                "%s: no set of variant '%s' in this directory or its "
                                "sub-directories",
                                source, sets->variant);
                return -EINVAL;
        }
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
        return sets->n > 1 ? check_names(sets, sink) : 0;
}

/* Each weight_map shard name of an index set as a path in the index's directory. */
static int index_paths(const struct stf_set *set, json_t *names, char **paths, size_t *n,
                       struct stf_sink *sink)
{
        char *dir;
        int ret;

        ret = dir_of(set->path, &dir);
        if (ret)
                return ret;
        for (size_t i = 0; i < json_array_size(names); i++) {
                const char *sname = json_string_value(json_array_get(names, i));
                char *p = path_join(dir, sname);
                char q[QMAX];

                if (!p) {
                        ret = -ENOMEM;
                        break;
                }
                if (access(p, F_OK)) {
                        stf_sink_report(sink, set->path, NULL, -1,
                                        "%s: shard '%s' listed in weight_map does not exist",
                                        set->path,
                                        stf_diag_quote(sname, strlen(sname), q, sizeof(q)));
                        free(p);
                        ret = -ENOENT;
                        if (!stf_sink_all(sink))
                                break;
                        continue;
                }
                paths[(*n)++] = p;
        }
        free(dir);
        return ret;
}

int stf_set_shards(const struct stf_set *set, struct stf_sink *sink, char ***paths_out,
                   size_t *n_out, json_t **wm_out, json_t **meta_out)
{
        json_t *wm = NULL, *names = NULL, *meta = NULL;
        size_t n = 0, count0 = sink->count;
        char **paths = NULL;
        int ret;

        *paths_out = NULL;
        *n_out = 0;
        *wm_out = *meta_out = NULL;
        if (!set->is_index) {
                paths = malloc(sizeof(*paths));
                if (!paths || !(paths[0] = strdup(set->path))) {
                        free(paths);
                        return -ENOMEM;
                }
                *paths_out = paths;
                *n_out = 1;
                return 0;
        }
        if (set->wm) {
                wm = json_incref(set->wm);
                names = json_incref(set->names);
                meta = json_incref(set->meta);
        } else {
                ret = stf_index_load(set->path, &wm, &names, &meta, sink);
                /* The check mode goes on with what a flawed index does name. */
                if (ret && !wm)
                        goto out;
        }
        paths = calloc(json_array_size(names) + 1, sizeof(*paths));
        if (!paths) {
                ret = -ENOMEM;
                goto out;
        }
        ret = index_paths(set, names, paths, &n, sink);
out:
        json_decref(names);
        ret = stf_sink_settle(sink, count0, ret);
        if (ret) {
                stf_paths_free(paths, n);
                json_decref(wm);
                json_decref(meta);
                return ret;
        }
        *paths_out = paths;
        *n_out = n;
        *wm_out = wm;
        *meta_out = meta;
        return 0;
}

void stf_paths_free(char **paths, size_t n)
{
        for (size_t i = 0; paths && i < n; i++)
                free(paths[i]);
        free(paths);
}
