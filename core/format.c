/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict safetensors header parser.
 *
 * Order matters for safety: the 8-byte size is checked against the limit
 * and the file before any other byte is read or anything is allocated;
 * every number taken from the JSON is range- and overflow-checked before it
 * is used as a size; the tensors must tile the data buffer exactly, so a
 * later read of [begin, begin + size) always lies inside the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "format.h"
#include "strbuf.h"

#define QMAX 400

/* See stf_json_load: set when jansson's allocator failed on this thread. */
static __thread bool json_oom;
static json_malloc_t json_next_malloc;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_watch_malloc(size_t n)
{
        void *p = json_next_malloc(n);

        if (!p)
                json_oom = true;
        return p;
}

static void json_watch_install(void)
{
        json_free_t next_free;

        json_get_alloc_funcs(&json_next_malloc, &next_free);
        json_set_alloc_funcs(json_watch_malloc, next_free);
}

int stf_json_load(const char *text, size_t len, size_t flags, json_t **out, json_error_t *err)
{
        json_t *root;

        pthread_once(&json_once, json_watch_install);
        json_oom = false;
        root = json_loadb(text, len, flags, err);
        if (json_oom) {
                json_decref(root);
                return -ENOMEM;
        }
        *out = root;
        return root ? 0 : -EINVAL;
}

static int cmp_begin(const void *a, const void *b)
{
        const struct stf_tensor *x = a, *y = b;

        if (x->begin != y->begin)
                return x->begin < y->begin ? -1 : 1;
        if (x->size != y->size)
                return x->size < y->size ? -1 : 1;
        return strcmp(x->name, y->name);
}

/* A JSON integer in [0, 2^63). */
static bool get_u64(const json_t *v, uint64_t *out)
{
        json_int_t i;

        if (!json_is_integer(v))
                return false;
        i = json_integer_value(v);
        if (i < 0)
                return false;
        *out = (uint64_t)i;
        return true;
}

size_t stf_shape_format(char *buf, size_t cap, const uint64_t *shape, uint32_t rank, bool compact)
{
        size_t o = 0;

        /* snprintf with a NULL buffer and 0 only counts. */
        o += (size_t)snprintf(buf, cap, "[");
        for (uint32_t i = 0; i < rank; i++)
                o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "%s%" PRIu64,
                                      i ? (compact ? "," : ", ") : "", shape[i]);
        o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "]");
        return o;
}

void stf_shape_append(struct stf_strbuf *sb, const uint64_t *shape, uint32_t rank, bool compact)
{
        char small[256], *big;
        size_t n = stf_shape_format(small, sizeof(small), shape, rank, compact);

        if (n < sizeof(small)) {
                stf_strbuf_append(sb, small, n);
                return;
        }
        big = malloc(n + 1);
        if (!big) {
                sb->failed = true;
                return;
        }
        stf_shape_format(big, n + 1, shape, rank, compact);
        stf_strbuf_append(sb, big, n);
        free(big);
}

/* Every value of "__metadata__" must be a string. */
static int check_metadata(const char *file, json_t *meta, struct stf_sink *sink)
{
        const char *key;
        json_t *val;
        char q[QMAX];

        if (!json_is_object(meta)) {
                stf_sink_report(sink, file, NULL, -1,
                                "%s: byte 8: \"__metadata__\" is not an object", file);
                return -EINVAL;
        }
        json_object_foreach(meta, key, val)
        {
                if (!json_is_string(val) &&
                    stf_sink_report(sink, file, NULL, -1,
                                    "%s: byte 8: \"__metadata__\" value of '%s' is not a string",
                                    file, stf_diag_quote(key, strlen(key), q, sizeof(q))))
                        return -EINVAL;
        }
        return 0;
}

/* Validate one tensor entry and fill @t (shape written to @dims). */
/* Only the three keys of a tensor entry in @ent (tensor @q of @file). */
static int check_keys(const char *file, const char *q, json_t *ent, struct stf_diag *diag)
{
        const char *k;
        json_t *v;

        json_object_foreach(ent, k, v)
        {
                if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
                        char kq[96];

                        stf_diag_set(diag, "%s: tensor '%s': unknown key '%s' in tensor entry",
                                     file, q, stf_diag_quote(k, strlen(k), kq, sizeof(kq)));
                        return -EINVAL;
                }
        }
        return 0;
}

/* "dtype" of @ent, a known name, into *@dtype. */
static int parse_dtype(const char *file, const char *q, json_t *ent, enum stf_dtype *dtype,
                       struct stf_diag *diag)
{
        json_t *dt = json_object_get(ent, "dtype");
        char dq[96];

        if (!json_is_string(dt)) {
                stf_diag_set(diag, "%s: tensor '%s': \"dtype\" is missing or not a string", file,
                             q);
                return -EINVAL;
        }
        if (stf_dtype_lookup(json_string_value(dt), json_string_length(dt), dtype)) {
                stf_diag_set(
                    diag, "%s: tensor '%s': unknown dtype '%s'", file, q,
                    stf_diag_quote(json_string_value(dt), json_string_length(dt), dq, sizeof(dq)));
                return -EINVAL;
        }
        return 0;
}

/* "shape" of @ent into @dims, its element count (no overflow) into *@nelem. */
static int parse_shape(const char *file, const char *q, json_t *shape, uint64_t *dims,
                       uint64_t *nelem, struct stf_diag *diag)
{
        *nelem = 1;
        if (!json_is_array(shape)) {
                stf_diag_set(diag, "%s: tensor '%s': \"shape\" is missing or not an array", file,
                             q);
                return -EINVAL;
        }
        for (size_t i = 0; i < json_array_size(shape); i++) {
                if (!get_u64(json_array_get(shape, i), &dims[i])) {
                        stf_diag_set(
                            diag,
                            "%s: tensor '%s': \"shape\" dimension %zu is not a non-negative "
                            "integer",
                            file, q, i);
                        return -EINVAL;
                }
                if (__builtin_mul_overflow(*nelem, dims[i], nelem)) {
                        stf_diag_set(
                            diag, "%s: tensor '%s': element count of \"shape\" overflows 64 bits",
                            file, q);
                        return -EINVAL;
                }
        }
        return 0;
}

static int parse_entry(const char *file, const char *key, json_t *ent, uint64_t data_start,
                       uint64_t data_len, struct stf_tensor *t, uint64_t *dims,
                       struct stf_diag *diag)
{
        const struct stf_dtype_info *info;
        json_t *shape, *offs;
        uint64_t begin, end, nelem, bits;
        enum stf_dtype dtype;
        char q[QMAX], shp[128];

        stf_diag_quote(key, strlen(key), q, sizeof(q));
        if (!json_is_object(ent)) {
                stf_diag_set(diag, "%s: tensor '%s': entry is not an object", file, q);
                return -EINVAL;
        }
        shape = json_object_get(ent, "shape");
        offs = json_object_get(ent, "data_offsets");
        if (check_keys(file, q, ent, diag) || parse_dtype(file, q, ent, &dtype, diag) ||
            parse_shape(file, q, shape, dims, &nelem, diag))
                return -EINVAL;
        info = stf_dtype_info(dtype);
        t->rank = (uint32_t)json_array_size(shape);
        stf_shape_format(shp, sizeof(shp), dims, t->rank, false);
        if (!json_is_array(offs) || json_array_size(offs) != 2 ||
            !get_u64(json_array_get(offs, 0), &begin) || !get_u64(json_array_get(offs, 1), &end)) {
                stf_diag_set(diag,
                             "%s: tensor '%s': \"data_offsets\" is missing or not two non-negative "
                             "integers",
                             file, q);
                return -EINVAL;
        }
        if (begin > end) {
                stf_diag_set(diag, "%s: tensor '%s': data_offsets begin %" PRIu64 " > end %" PRIu64,
                             file, q, begin, end);
                return -EINVAL;
        }
        if (__builtin_mul_overflow(nelem, (uint64_t)info->bits, &bits)) {
                stf_diag_set(diag, "%s: tensor '%s': bit count of shape %s overflows 64 bits", file,
                             q, shp);
                return -EINVAL;
        }
        if (bits % 8) {
                stf_diag_set(diag,
                             "%s: tensor '%s': %" PRIu64
                             " elements of %s (%u bits) are not a whole "
                             "number of bytes",
                             file, q, nelem, info->name, info->bits);
                return -EINVAL;
        }
        if (end - begin != bits / 8) {
                stf_diag_set(diag,
                             "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                             "] span %" PRIu64 " bytes but %s %s needs %" PRIu64 " bytes",
                             file, q, begin, end, end - begin, info->name, shp, bits / 8);
                return -EINVAL;
        }
        if (end > data_len) {
                stf_diag_set(diag,
                             "%s: tensor '%s': data_offsets end %" PRIu64
                             " is past the end of the data buffer (%" PRIu64 " bytes)",
                             file, q, end, data_len);
                return -EINVAL;
        }
        t->dtype = (uint8_t)dtype;
        t->nelem = nelem;
        t->begin = data_start + begin;
        t->size = end - begin;
        t->shape = dims;
        return 0;
}

/*
 * A broken entry's data range, when its "data_offsets" can still be read:
 * the check mode keeps such an entry in the tiling check, so one broken
 * entry does not also show up as a hole.
 */
static bool entry_range(json_t *ent, uint64_t data_len, uint64_t *begin, uint64_t *end)
{
        json_t *offs = json_is_object(ent) ? json_object_get(ent, "data_offsets") : NULL;

        return json_is_array(offs) && json_array_size(offs) == 2 &&
               get_u64(json_array_get(offs, 0), begin) && get_u64(json_array_get(offs, 1), end) &&
               *begin <= *end && *end <= data_len;
}

/*
 * Sorted by begin, the tensors must cover [data_start, file_size) exactly.
 * After an overlap the check goes on from the furthest end seen, and names
 * the tensor that reaches it as the one overlapped.
 */
static int check_tiling(const char *file, const struct stf_header *h, struct stf_sink *sink)
{
        uint64_t pos = h->data_start;
        size_t last = 0; /* the tensor that ends at pos */
        char q[QMAX], q2[QMAX];

        for (size_t i = 0; i < h->ntensors; i++) {
                const struct stf_tensor *t = &h->tensors[i];

                if (t->begin < pos &&
                    stf_sink_report(sink, file, t->name, (int64_t)t->begin,
                                    "%s: byte %" PRIu64 ": tensor '%s' overlaps tensor '%s'", file,
                                    t->begin, stf_diag_quote(t->name, t->name_len, q, sizeof(q)),
                                    stf_diag_quote(h->tensors[last].name, h->tensors[last].name_len,
                                                   q2, sizeof(q2))))
                        return -EINVAL;
                if (t->begin > pos &&
                    stf_sink_report(sink, file, t->name, (int64_t)pos,
                                    "%s: byte %" PRIu64 ": hole of %" PRIu64
                                    " bytes in the data buffer before tensor '%s'",
                                    file, pos, t->begin - pos,
                                    stf_diag_quote(t->name, t->name_len, q, sizeof(q))))
                        return -EINVAL;
                if (t->begin + t->size >= pos) {
                        pos = t->begin + t->size;
                        last = i;
                }
        }
        if (pos != h->file_size) {
                stf_sink_report(sink, file, NULL, (int64_t)pos,
                                "%s: byte %" PRIu64 ": %" PRIu64
                                " trailing bytes after the last tensor are not covered by any "
                                "tensor",
                                file, pos, h->file_size - pos);
                return -EINVAL;
        }
        return 0;
}

/*
 * The 8-byte size field of @buf (@avail bytes read of @file_size): *@n the
 * header's length when it fits the limit, the file and what was read;
 * otherwise reported to @sink and -EINVAL.
 */
static int check_size_field(const char *file, const uint8_t *buf, uint64_t avail,
                            uint64_t file_size, struct stf_sink *sink, uint64_t *n)
{
        if (file_size < 8 || avail < 8) {
                stf_sink_report(sink, file, NULL, 0,
                                "%s: byte 0: file is %" PRIu64
                                " bytes, too short for the 8-byte header size",
                                file, file_size);
                return -EINVAL;
        }
        *n = stf_le64(buf);
        if (*n > STF_HEADER_MAX) {
                stf_sink_report(sink, file, NULL, 0,
                                "%s: byte 0: header size %" PRIu64
                                " exceeds the limit of %llu bytes",
                                file, *n, STF_HEADER_MAX);
                return -EINVAL;
        }
        if (*n > file_size - 8) {
                stf_sink_report(sink, file, NULL, 0,
                                "%s: byte 0: header size %" PRIu64
                                " runs past the end of the file (%" PRIu64 " bytes)",
                                file, *n, file_size);
                return -EINVAL;
        }
        if (8 + *n > avail) {
                stf_sink_report(sink, file, NULL, (int64_t)avail,
                                "%s: byte %" PRIu64 ": file truncated inside the header", file,
                                avail);
                return -EINVAL;
        }
        return 0;
}

/*
 * A header for the tensors of @root, its arrays sized for them (names and
 * dimensions counted first), and its metadata (checked: a flaw goes to
 * @sink). 0 and *@out, -EINVAL or -ENOMEM.
 */
static int header_alloc(const char *file, json_t *root, uint64_t data_start, uint64_t file_size,
                        struct stf_sink *sink, struct stf_header **out)
{
        size_t nt = 0, name_bytes = 0, ndims = 0;
        struct stf_header *h;
        json_t *meta, *ent;
        const char *key;
        int ret;

        json_object_foreach(root, key, ent)
        {
                json_t *shape;

                if (!strcmp(key, "__metadata__"))
                        continue;
                nt++;
                name_bytes += strlen(key) + 1;
                shape = json_is_object(ent) ? json_object_get(ent, "shape") : NULL;
                if (json_is_array(shape))
                        ndims += json_array_size(shape);
        }
        *out = h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->file_size = file_size;
        h->data_start = data_start;
        h->tensors = calloc(nt ? nt : 1, sizeof(*h->tensors));
        h->names = malloc(name_bytes ? name_bytes : 1);
        h->shapes = calloc(ndims ? ndims : 1, sizeof(*h->shapes));
        if (!h->tensors || !h->names || !h->shapes)
                return -ENOMEM;
        meta = json_object_get(root, "__metadata__");
        if (!meta) {
                h->metadata = json_object();
                return h->metadata ? 0 : -ENOMEM;
        }
        ret = check_metadata(file, meta, sink);
        if (ret && !stf_sink_all(sink))
                return ret;
        h->metadata = json_incref(meta);
        return 0;
}

/*
 * The tensors of @root into @h (allocated by header_alloc), in the order of
 * the header; each flawed entry reported to @sink (in the check mode a
 * placed one is kept as a stand-in for the tiling). 0 or -EINVAL.
 */
static int fill_tensors(const char *file, json_t *root, struct stf_header *h, struct stf_sink *sink)
{
        uint64_t data_len = h->file_size - h->data_start;
        size_t ti = 0, di = 0;
        char *np = h->names;
        const char *key;
        json_t *ent;

        json_object_foreach(root, key, ent)
        {
                struct stf_tensor *t = &h->tensors[ti];
                size_t klen = strlen(key);
                struct stf_diag ed;
                uint64_t b, e;

                if (!strcmp(key, "__metadata__"))
                        continue;
                if (klen > UINT32_MAX) {
                        stf_sink_report(sink, file, NULL, -1,
                                        "%s: a tensor name is longer than 4 GiB", file);
                        return -EINVAL;
                }
                if (parse_entry(file, key, ent, h->data_start, data_len, t, h->shapes + di, &ed)) {
                        bool placed = entry_range(ent, data_len, &b, &e);

                        if (stf_sink_report(sink, file, key,
                                            placed ? (int64_t)(h->data_start + b) : -1, "%s",
                                            ed.msg))
                                return -EINVAL;
                        if (!placed)
                                continue;
                        /* Only the check mode gets here: a stand-in for the tiling. */
                        *t = (struct stf_tensor){.begin = h->data_start + b, .size = e - b};
                        t->shape = h->shapes + di;
                } else {
                        di += t->rank;
                }
                memcpy(np, key, klen + 1);
                t->name = np;
                t->name_len = (uint32_t)klen;
                np += klen + 1;
                ti++;
        }
        h->ntensors = ti;
        return 0;
}

int stf_header_validate(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                        struct stf_sink *sink, struct stf_header **out)
{
        struct stf_header *h = NULL;
        json_error_t jerr;
        json_t *root;
        size_t count0 = sink->count;
        uint64_t n;
        int ret;

        *out = NULL;
        ret = check_size_field(file, buf, avail, file_size, sink, &n);
        if (ret)
                return ret;
        ret = stf_json_load((const char *)buf + 8, n, JSON_REJECT_DUPLICATES, &root, &jerr);
        if (ret == -ENOMEM)
                return ret;
        if (ret) {
                uint64_t at = (uint64_t)8 + (uint64_t)(jerr.position > 0 ? jerr.position : 0);

                stf_sink_report(sink, file, NULL, (int64_t)at,
                                "%s: byte %" PRIu64 ": header is not valid JSON: %s", file, at,
                                jerr.text);
                return -EINVAL;
        }
        if (!json_is_object(root)) {
                stf_sink_report(sink, file, NULL, 8, "%s: byte 8: header is not a JSON object",
                                file);
                ret = -EINVAL;
                goto out_root;
        }
        ret = header_alloc(file, root, 8 + n, file_size, sink, &h);
        if (!ret)
                ret = fill_tensors(file, root, h, sink);
        if (ret)
                goto out_header;
        qsort(h->tensors, h->ntensors, sizeof(*h->tensors), cmp_begin);
        ret = check_tiling(file, h, sink);
        if (!ret && sink->count != count0)
                ret = -EINVAL;
        if (ret)
                goto out_header;
        json_decref(root);
        *out = h;
        return 0;

out_header:
        stf_header_free(h);
out_root:
        json_decref(root);
        return ret;
}

int stf_header_parse(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                     struct stf_header **out, struct stf_diag *diag)
{
        struct stf_sink sink = {.diag = diag};

        return stf_header_validate(file, buf, avail, file_size, &sink, out);
}

int stf_header_check(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                     stf_report_fn report, void *ctx, struct stf_header **out)
{
        struct stf_sink sink = {.report = report, .ctx = ctx};
        struct stf_header *h = NULL;
        int ret;

        ret = stf_header_validate(file, buf, avail, file_size, &sink, &h);
        if (out)
                *out = h;
        else
                stf_header_free(h);
        return ret;
}

void stf_header_free(struct stf_header *h)
{
        if (!h)
                return;
        json_decref(h->metadata);
        free(h->tensors);
        free(h->names);
        free(h->shapes);
        free(h);
}
