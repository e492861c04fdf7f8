/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "index.h"
#include "shard.h"

#define QMAX 400

static int read_small_file(const char *path, size_t limit, char **out, size_t *len,
                           struct stf_sink *sink)
{
        struct stat st;
        char *buf;
        size_t got = 0;
        int fd, ret;

        fd = stf_open_regular(path, &st, sink);
        if (fd < 0)
                return fd;
        if ((uint64_t)st.st_size > limit) {
                stf_sink_report(sink, path, NULL, -1,
                                "%s: index of %llu bytes, over the limit of %zu", path,
                                (unsigned long long)st.st_size, limit);
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

bool stf_index_plain_name(const char *s)
{
        return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

static int cmp_json_str(const void *a, const void *b)
{
        return strcmp(json_string_value(*(json_t *const *)a),
                      json_string_value(*(json_t *const *)b));
}

/*
 * Append each shard file @wm names to @names, once, in the map's order; a
 * value that is not a plain file name is reported to @sink and left out.
 * 0, -EINVAL when the sink stops, or -ENOMEM.
 */
static int collect_shards(const char *index_file, json_t *wm, json_t *names, struct stf_sink *sink)
{
        json_t *seen = json_object(), *val;
        const char *key;
        char q[QMAX], q2[QMAX];
        int ret = 0;

        if (!seen)
                return -ENOMEM;
        json_object_foreach(wm, key, val)
        {
                if (!json_is_string(val)) {
                        if (stf_sink_report(sink, index_file, key, -1,
                                            "%s: tensor '%s': weight_map value is not a string",
                                            index_file,
                                            stf_diag_quote(key, strlen(key), q, sizeof(q)))) {
                                ret = -EINVAL;
                                break;
                        }
                        continue;
                }
                if (!stf_index_plain_name(json_string_value(val))) {
                        if (stf_sink_report(
                                sink, index_file, key, -1,
                                "%s: tensor '%s': weight_map value '%s' is not a plain file name "
                                "in the index's directory",
                                index_file, stf_diag_quote(key, strlen(key), q, sizeof(q)),
                                stf_diag_quote(json_string_value(val), json_string_length(val), q2,
                                               sizeof(q2)))) {
                                ret = -EINVAL;
                                break;
                        }
                        continue;
                }
                if (!json_object_get(seen, json_string_value(val)) &&
                    (json_object_set_new(seen, json_string_value(val), json_true()) ||
                     json_array_append(names, val))) {
                        ret = -ENOMEM;
                        break;
                }
        }
        json_decref(seen);
        return ret;
}

/* Sort the shard names so shard order does not depend on the map's: 0 or -ENOMEM. */
static int sort_names(json_t *names)
{
        size_t n = json_array_size(names);
        json_t **sorted = malloc((n ? n : 1) * sizeof(*sorted));
        int ret = 0;

        if (!sorted)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                sorted[i] = json_incref(json_array_get(names, i));
        qsort(sorted, n, sizeof(*sorted), cmp_json_str);
        json_array_clear(names);
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(names, sorted[i]))
                        ret = -ENOMEM;
        free(sorted);
        return ret;
}

/* The index document: stf_index_parse through a sink (see stf_index_load). */
static int index_parse(const char *index_file, const char *text, size_t len,
                       json_t **weight_map_out, json_t **shard_names_out, json_t **metadata_out,
                       struct stf_sink *sink)
{
        json_error_t jerr;
        json_t *root, *wm, *names = NULL;
        size_t count0 = sink->count;
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
        names = json_array();
        ret = names ? collect_shards(index_file, wm, names, sink) : -ENOMEM;
        if (ret)
                goto out_names;
        if (json_object_size(wm) == 0) {
                stf_sink_report(sink, index_file, NULL, -1, "%s: index \"weight_map\" is empty",
                                index_file);
                ret = -EINVAL;
                goto out_names;
        }
        ret = sort_names(names);
        if (ret)
                goto out_names;
        if (weight_map_out)
                *weight_map_out = json_incref(wm);
        if (shard_names_out)
                *shard_names_out = json_incref(names);
        if (metadata_out)
                *metadata_out = json_incref(json_object_get(root, "metadata"));
        ret = sink->count != count0 ? -EINVAL : 0;
out_names:
        json_decref(names);
out_root:
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

int stf_index_load(const char *path, json_t **weight_map_out, json_t **shard_names_out,
                   json_t **metadata_out, struct stf_sink *sink)
{
        char *text = NULL;
        size_t len = 0;
        int ret;

        ret = read_small_file(path, STF_HEADER_MAX, &text, &len, sink);
        if (ret)
                return ret;
        ret = index_parse(path, text, len, weight_map_out, shard_names_out, metadata_out, sink);
        free(text);
        return ret;
}

/*
 * The listed tensors missing from their shards, found in O(N log N): every
 * shard tensor (name, shard) in one array sorted by name then shard, and
 * the shards sorted by file name; each weight_map entry is then two binary
 * searches. (One linear search per entry took 36 s at 100,000 tensors.)
 */
struct named {
        const char *name;
        uint32_t shard;
};

static int cmp_named(const void *a, const void *b)
{
        const struct named *x = a, *y = b;
        int c = strcmp(x->name, y->name);

        return c ? c : (x->shard > y->shard) - (x->shard < y->shard);
}

static int cmp_shard_name(const void *key, const void *elem, void *shards)
{
        const struct stf_shard *v = shards;

        return strcmp(key, v[*(const uint32_t *)elem].name);
}

static int cmp_shard_idx(const void *a, const void *b, void *shards)
{
        const struct stf_shard *v = shards;

        return strcmp(v[*(const uint32_t *)a].name, v[*(const uint32_t *)b].name);
}

/* Binary search of sorted @base for @key with a context (bsearch has none). */
static const void *bsearch_r(const void *key, const void *base, size_t n, size_t size,
                             int (*cmp)(const void *, const void *, void *), void *ctx)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const void *e = (const char *)base + mid * size;
                int c = cmp(key, e, ctx);

                if (c == 0)
                        return e;
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

static int report_missing(const char *index, json_t *wm, const struct stf_shard *shards, uint32_t n,
                          struct stf_sink *sink)
{
        struct named *all = NULL;
        uint32_t *byname = NULL;
        size_t total = 0, k = 0;
        const char *key;
        json_t *v;
        char q[QMAX], q2[QMAX];
        int ret = 0;

        for (uint32_t si = 0; si < n; si++)
                total += shards[si].hdr ? shards[si].hdr->ntensors : 0;
        all = malloc((total ? total : 1) * sizeof(*all));
        byname = malloc((n ? n : 1) * sizeof(*byname));
        if (!all || !byname) {
                ret = -ENOMEM;
                goto out_arrays;
        }
        for (uint32_t si = 0; si < n; si++) {
                byname[si] = si;
                for (size_t i = 0; shards[si].hdr && i < shards[si].hdr->ntensors; i++)
                        all[k++] = (struct named){shards[si].hdr->tensors[i].name, si};
        }
        qsort(all, total, sizeof(*all), cmp_named);
        qsort_r(byname, n, sizeof(*byname), cmp_shard_idx, (void *)shards);
        json_object_foreach(wm, key, v)
        {
                const uint32_t *si;
                struct named want;

                if (!json_is_string(v) || !stf_index_plain_name(json_string_value(v)))
                        continue;
                si = bsearch_r(json_string_value(v), byname, n, sizeof(*byname), cmp_shard_name,
                               (void *)shards);
                if (!si || !shards[*si].hdr)
                        continue;
                want = (struct named){key, *si};
                if (!bsearch(&want, all, total, sizeof(*all), cmp_named) &&
                    stf_sink_report(sink, index, key, -1,
                                    "%s: tensor '%s' is listed but not in shard '%s'", index,
                                    stf_diag_quote(key, strlen(key), q, sizeof(q)),
                                    stf_diag_quote(json_string_value(v), json_string_length(v), q2,
                                                   sizeof(q2)))) {
                        ret = -EINVAL;
                        break;
                }
        }
out_arrays:
        free(byname);
        free(all);
        return ret;
}

int stf_index_check(const char *index, json_t *wm, const struct stf_shard *shards, uint32_t n,
                    struct stf_sink *sink)
{
        size_t matched = 0;
        char q[QMAX], q2[QMAX];

        for (uint32_t si = 0; si < n; si++) {
                const struct stf_shard *s = &shards[si];

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
                        if (!json_is_string(v) || !stf_index_plain_name(json_string_value(v)))
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
        /* Only then can a listed tensor be missing from its shard. */
        if (matched != json_object_size(wm))
                return report_missing(index, wm, shards, n, sink);
        return 0;
}
