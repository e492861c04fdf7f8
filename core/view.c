/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Views: files as extent lists (see view.h). Generated headers are the only
 * bytes a view owns; tensor data stays in the shard mappings.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "strbuf.h"
#include "text.h"
#include "view.h"

#define NPY_ALIGN 64

void stf_view_init_mem(struct stf_view *v, const void *buf, size_t len)
{
        memset(v, 0, sizeof(*v));
        v->size = len;
        v->one = (struct stf_extent){0, len, buf, -1};
        v->ext = &v->one;
        v->n = len ? 1 : 0;
}

void stf_view_init_tensor(struct stf_view *v, const struct stf_model *m, size_t tensor)
{
        const struct stf_tensor *t = &m->tensors[tensor];

        stf_view_init_mem(v, m->shards[t->shard].map + t->begin, t->size);
        v->one.shard = (int32_t)t->shard;
}

long stf_npy_header(unsigned dtype, const uint64_t *shape, uint32_t rank, char *buf, size_t cap)
{
        const struct stf_dtype_info *info = stf_dtype_info(dtype);
        struct stf_strbuf sb = {0};
        size_t dict_len, pre, total;
        uint64_t last = rank ? shape[rank - 1] : 0, last_bits;
        uint32_t nd = rank;
        char *dict;
        bool v2;

        if (!info)
                return -EINVAL;
        /*
         * The shape NumPy sees: sub-byte types are packed bytes, so the last
         * dimension is its byte count when whole, else the shape is the flat
         * byte count (one dimension).
         */
        if (info->bits % 8 && rank > 0) {
                if (!__builtin_mul_overflow(last, (uint64_t)info->bits, &last_bits) &&
                    last_bits % 8 == 0) {
                        last = last_bits / 8;
                } else {
                        uint64_t n = 1;

                        for (uint32_t d = 0; d < rank; d++)
                                n *= shape[d]; /* checked by the parser */
                        last = n * info->bits / 8;
                        nd = 1;
                }
        }
        stf_strbuf_printf(&sb, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                          info->npy_descr);
        for (uint32_t d = 0; d < nd; d++)
                stf_strbuf_printf(&sb, d ? ", %" PRIu64 : "%" PRIu64, d + 1 < nd ? shape[d] : last);
        /* Python tuples: () for a scalar, (3,) for one dimension, (3, 4) */
        stf_strbuf_puts(&sb, nd == 1 ? ",), }" : "), }");
        if (sb.failed) {
                stf_strbuf_reset(&sb);
                return -ENOMEM;
        }
        dict = sb.buf;
        dict_len = sb.len;
        /*
         * magic(6) + version(2) + length(2 or 4), then dict, spaces, '\n'.
         * Format 1.0 while its 16-bit length field can hold the padded rest,
         * as NumPy decides it; 2.0 after.
         */
        total = (10 + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
        v2 = total - 10 > 65535;
        pre = v2 ? 12 : 10;
        if (v2)
                total = (pre + dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
        if (total > cap) {
                stf_strbuf_reset(&sb);
                return -ERANGE;
        }
        memcpy(buf, "\x93NUMPY", 6);
        buf[6] = v2 ? 2 : 1;
        buf[7] = 0;
        stf_put_le((uint8_t *)buf + 8, total - pre, v2 ? 4 : 2);
        memcpy(buf + pre, dict, dict_len);
        memset(buf + pre + dict_len, ' ', total - pre - dict_len - 1);
        buf[total - 1] = '\n';
        stf_strbuf_reset(&sb);
        return (long)total;
}

static int view_alloc(size_t next, size_t mem_len, struct stf_view **out)
{
        struct stf_view *v = calloc(1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        v->ext = calloc(next ? next : 1, sizeof(*v->ext));
        v->mem = malloc(mem_len ? mem_len : 1);
        if (!v->ext || !v->mem) {
                free(v->ext);
                free(v->mem);
                free(v);
                return -ENOMEM;
        }
        v->mem_len = mem_len;
        *out = v;
        return 0;
}

static void push_extent(struct stf_view *v, const uint8_t *ptr, uint64_t len, int32_t shard)
{
        if (!len)
                return;
        v->ext[v->n++] = (struct stf_extent){v->size, len, ptr, shard};
        v->size += len;
}

int stf_view_npy(const struct stf_model *m, size_t tensor, struct stf_view **out)
{
        const struct stf_tensor *t = &m->tensors[tensor];
        size_t cap = 128 + (size_t)t->rank * 24;
        struct stf_view *v;
        uint8_t *mem;
        long hl;
        int ret;

        ret = view_alloc(2, cap, &v);
        if (ret)
                return ret;
        hl = stf_npy_header(t->dtype, t->shape, t->rank, (char *)v->mem, cap);
        if (hl < 0) {
                stf_view_free(v);
                return (int)hl;
        }
        /* kept until unmount: give back the slack of the worst-case buffer */
        mem = realloc(v->mem, (size_t)hl);
        if (mem)
                v->mem = mem;
        v->mem_len = (size_t)hl;
        push_extent(v, v->mem, (uint64_t)hl, -1);
        push_extent(v, m->shards[t->shard].map + t->begin, t->size, (int32_t)t->shard);
        *out = v;
        return 0;
}

static int push_u32(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
        if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 64;
                uint32_t *nv = realloc(*v, ncap * sizeof(*nv));

                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = ncap;
        }
        (*v)[(*n)++] = x;
        return 0;
}

/*
 * Tensors under @dir, in no particular order (the caller sorts them). An
 * explicit stack of directories, not recursion: the depth of a tree comes
 * from the model (a name of 100,000 dotted parts is 100,000 levels).
 */
static int collect(const struct stf_tree *t, uint64_t dir, uint32_t **v, size_t *n, size_t *cap)
{
        uint32_t *stack = NULL;
        size_t depth = 0, scap = 0;
        int ret = push_u32(&stack, &depth, &scap, (uint32_t)dir);

        while (!ret && depth > 0) {
                const struct stf_node *d = stf_tree_node(t, stack[--depth]);

                for (uint32_t i = 0; i < d->nchildren && !ret; i++) {
                        uint32_t ino = d->first_child + i;
                        const struct stf_node *c = stf_tree_node(t, ino);

                        if (c->kind == STF_NODE_DIR)
                                ret = push_u32(&stack, &depth, &scap, ino);
                        else if (c->kind == STF_NODE_TENSOR)
                                ret = push_u32(v, n, cap, c->index);
                }
        }
        free(stack);
        return ret;
}

static uint32_t count_parts(const char *s, char sep)
{
        uint32_t n = *s ? 1 : 0;

        for (; *s; s++)
                n += *s == sep;
        return n;
}

/* Append the name of tensor @x in a file for a directory @levels deep (see view.h). */
static void subset_name(struct stf_strbuf *sb, const struct stf_model *m,
                        const struct stf_tensor *x, uint32_t levels, bool flat_comp)
{
        const char *comp = m->comps[x->comp].name;
        uint32_t np = count_parts(comp, '/');
        const char *p = comp;

        /* the component's parts below the directory, '.'-joined */
        for (uint32_t i = 0; i < np; i++) {
                const char *e = strchr(p, '/');
                size_t len = e ? (size_t)(e - p) : strlen(p);

                if (i >= levels) {
                        stf_strbuf_append(sb, p, len);
                        stf_strbuf_append(sb, ".", 1);
                }
                p = e ? e + 1 : p + len;
        }
        if (levels <= np || flat_comp) {
                stf_strbuf_append(sb, x->name, x->name_len);
                return;
        }
        /* drop the name's first (levels - np) parts */
        {
                const char *s = x->name, *end = x->name + x->name_len;

                for (uint32_t k = levels - np; k > 0 && s <= end; k--) {
                        const char *dot = memchr(s, '.', (size_t)(end - s));

                        s = dot ? dot + 1 : end + 1;
                }
                if (s <= end)
                        stf_strbuf_append(sb, s, (size_t)(end - s));
        }
}

struct names {
        const char *buf;
        const size_t *pos;
};

static int cmp_name(const void *a, const void *b, void *ctx)
{
        const struct names *c = ctx;
        size_t i = *(const size_t *)a, j = *(const size_t *)b;
        size_t li = c->pos[i + 1] - c->pos[i], lj = c->pos[j + 1] - c->pos[j];
        int r = li && lj ? memcmp(c->buf + c->pos[i], c->buf + c->pos[j], li < lj ? li : lj) : 0;

        return r ? r : (li > lj) - (li < lj);
}

/*
 * The names of tensors @idx[0..@n) in a file for a directory @levels deep,
 * end to end in @arena: name i is bytes [@pos[i], @pos[i + 1]). *@clash
 * tells whether two are equal: relative names can be ("a.b", the file
 * a/b/%t, and "a.b.", the file a/b/%, are both "" relative to a/b), and so
 * can the full names of two components ("p" holding "x.w", "p.x" holding
 * "w"). Returns 0 or -ENOMEM.
 */
static int subset_names(const struct stf_model *m, const uint32_t *idx, size_t n, uint32_t levels,
                        struct stf_strbuf *arena, size_t *pos, bool *clash)
{
        struct names c;
        size_t *ord;

        arena->len = 0;
        for (size_t i = 0; i < n; i++) {
                pos[i] = arena->len;
                subset_name(arena, m, &m->tensors[idx[i]], levels, false);
        }
        pos[n] = arena->len;
        if (arena->failed)
                return -ENOMEM;
        ord = malloc((n ? n : 1) * sizeof(*ord));
        if (!ord)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                ord[i] = i;
        c = (struct names){arena->buf, pos};
        qsort_r(ord, n, sizeof(*ord), cmp_name, &c);
        *clash = false;
        for (size_t i = 1; i < n && !*clash; i++)
                *clash = cmp_name(&ord[i - 1], &ord[i], &c) == 0;
        free(ord);
        return 0;
}

static int metadata_union(const struct stf_model *m, const uint32_t *idx, size_t n, json_t **out)
{
        json_t *u = json_object();
        bool *seen = calloc(m->ncomps ? m->ncomps : 1, sizeof(*seen));
        int ret = 0;

        if (!u || !seen) {
                ret = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                seen[m->tensors[idx[i]].comp] = true;
        for (uint32_t c = 0; c < m->ncomps && !ret; c++) {
                if (!seen[c])
                        continue;
                for (uint32_t s = m->comps[c].first_shard;
                     s < m->comps[c].first_shard + m->comps[c].nshards && !ret; s++) {
                        const char *key;
                        json_t *val;

                        json_object_foreach(m->shards[s].hdr->metadata, key, val)
                        {
                                if (!json_object_get(u, key) && json_object_set(u, key, val))
                                        ret = -ENOMEM;
                        }
                }
        }
out:
        free(seen);
        if (ret) {
                json_decref(u);
                return ret;
        }
        *out = u;
        return 0;
}

/* Bytes a tensor's data is aligned to in a subset file: its element size. */
static unsigned align_of(const struct stf_tensor *x)
{
        unsigned bits = stf_dtype_info(x->dtype)->bits;

        return bits >= 64 ? 8 : bits >= 8 ? bits / 8 : 1;
}

/*
 * Stable reorder of @idx (in layout order) by alignment, largest first, as
 * the reference writer orders by dtype: every size is a multiple of its
 * element size and the sizes are powers of two, so each tensor then starts
 * at a multiple of its element size within the data, and the data itself at
 * a multiple of 8 (the header is padded). Within one alignment the layout
 * order stays: reading front to back reads each shard front to back.
 */
static int order_aligned(const struct stf_model *m, uint32_t *idx, size_t n)
{
        uint32_t *tmp = malloc((n ? n : 1) * sizeof(*tmp));
        size_t k = 0;

        if (!tmp)
                return -ENOMEM;
        for (unsigned a = 8; a >= 1; a /= 2)
                for (size_t i = 0; i < n; i++)
                        if (align_of(&m->tensors[idx[i]]) == a)
                                tmp[k++] = idx[i];
        if (n) /* idx is NULL for an empty subset: memcpy(NULL, ...) is undefined */
                memcpy(idx, tmp, n * sizeof(*idx));
        free(tmp);
        return 0;
}

/*
 * The header of a subset file into @hdr: @meta (when not empty) as its
 * "__metadata__", then tensors @idx[0..n) under the names at @names.buf +
 * @pos[i], their data laid out back to back in that order; padded with
 * spaces to 8 bytes. 0 or -ENOMEM.
 */
static int subset_header(const struct stf_model *m, const uint32_t *idx, size_t n,
                         const struct stf_strbuf *names, const size_t *pos, json_t *meta,
                         struct stf_strbuf *hdr)
{
        uint64_t off = 0;

        stf_strbuf_append(hdr, "{", 1);
        if (json_object_size(meta)) {
                char *ms = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);

                if (!ms)
                        return -ENOMEM;
                stf_strbuf_puts(hdr, "\"__metadata__\":");
                stf_strbuf_puts(hdr, ms);
                free(ms);
                if (n)
                        stf_strbuf_append(hdr, ",", 1);
        }
        for (size_t i = 0; i < n; i++) {
                const struct stf_tensor *x = &m->tensors[idx[i]];

                stf_strbuf_json_str(hdr, names->buf ? names->buf + pos[i] : "",
                                    pos[i + 1] - pos[i]);
                stf_strbuf_printf(hdr,
                                  ":{\"dtype\":\"%s\",\"shape\":", stf_dtype_info(x->dtype)->name);
                stf_shape_append(hdr, x->shape, x->rank, true);
                stf_strbuf_printf(hdr, ",\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}%s", off,
                                  off + x->size, i + 1 < n ? "," : "");
                off += x->size;
        }
        stf_strbuf_append(hdr, "}", 1);
        while (!hdr->failed && hdr->len % 8)
                stf_strbuf_append(hdr, " ", 1);
        return hdr->failed ? -ENOMEM : 0;
}

int stf_view_subset(const struct stf_model *m, const struct stf_tree *t, uint64_t dir,
                    bool full_names, struct stf_view **out)
{
        const struct stf_node *d = stf_tree_node(t, dir);
        struct stf_strbuf hdr = {0}, names = {0};
        uint32_t *idx = NULL, levels = 0;
        size_t n = 0, cap = 0, hlen, *pos = NULL;
        json_t *meta = NULL;
        struct stf_view *v;
        bool clash;
        int ret;

        if (!d || d->kind != STF_NODE_DIR)
                return -ENOTDIR;
        for (uint64_t i = dir; i != STF_ROOT_INO; i = stf_tree_node(t, i)->parent)
                levels++;
        if (full_names)
                levels = 0;
        ret = collect(t, dir, &idx, &n, &cap);
        if (ret)
                goto out;
        stf_model_sort_layout(m, idx, n);
        ret = order_aligned(m, idx, n);
        if (ret)
                goto out;
        pos = malloc((n + 1) * sizeof(*pos));
        if (!pos) {
                ret = -ENOMEM;
                goto out;
        }
        /* A file with a duplicate name is invalid: full names, or an error. */
        ret = subset_names(m, idx, n, levels, &names, pos, &clash);
        if (!ret && clash && levels)
                ret = subset_names(m, idx, n, 0, &names, pos, &clash);
        if (!ret && clash)
                ret = -EINVAL;
        if (ret)
                goto out;
        ret = metadata_union(m, idx, n, &meta);
        if (ret)
                goto out;
        ret = subset_header(m, idx, n, &names, pos, meta, &hdr);
        if (ret)
                goto out;
        hlen = hdr.len;
        ret = view_alloc(n + 2, 8 + hlen, &v);
        if (ret)
                goto out;
        stf_put_le64(v->mem, hlen);
        memcpy(v->mem + 8, hdr.buf, hlen);
        push_extent(v, v->mem, 8 + hlen, -1);
        for (size_t i = 0; i < n; i++) {
                const struct stf_tensor *x = &m->tensors[idx[i]];

                push_extent(v, m->shards[x->shard].map + x->begin, x->size, (int32_t)x->shard);
        }
        *out = v;
out:
        json_decref(meta);
        stf_strbuf_reset(&hdr);
        stf_strbuf_reset(&names);
        free(pos);
        free(idx);
        return ret;
}

void stf_view_free(struct stf_view *v)
{
        if (!v)
                return;
        free(v->ext);
        free(v->mem);
        free(v);
}

size_t stf_view_find(const struct stf_view *v, uint64_t off)
{
        size_t lo = 0, hi = v->n;

        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;

                if (v->ext[mid].off <= off)
                        lo = mid;
                else
                        hi = mid;
        }
        return lo;
}

size_t stf_view_iov(const struct stf_view *v, uint64_t off, size_t len, struct iovec *iov,
                    size_t max, size_t *bytes)
{
        size_t k = 0, got = 0;

        *bytes = 0;
        if (off >= v->size || len == 0 || v->n == 0)
                return 0;
        if (len > v->size - off)
                len = (size_t)(v->size - off);
        for (size_t i = stf_view_find(v, off); i < v->n && got < len && k < max; i++) {
                const struct stf_extent *e = &v->ext[i];
                uint64_t skip = off + got - e->off;
                size_t take = e->len - skip < len - got ? (size_t)(e->len - skip) : len - got;

                iov[k].iov_base = (void *)(e->ptr + skip);
                iov[k].iov_len = take;
                k++;
                got += take;
        }
        *bytes = got;
        return k;
}

int stf_view_pread(const struct stf_view *v, const struct stf_model *m, uint64_t off, size_t len,
                   void *dst)
{
        size_t done = 0;

        if (off >= v->size || len > v->size - off)
                return -EINVAL;
        for (size_t i = stf_view_find(v, off); i < v->n && done < len; i++) {
                const struct stf_extent *e = &v->ext[i];
                uint64_t skip = off + done - e->off;
                size_t take = e->len - skip < len - done ? (size_t)(e->len - skip) : len - done;

                if (e->shard < 0) {
                        memcpy((char *)dst + done, e->ptr + skip, take);
                } else {
                        const struct stf_shard *s = &m->shards[e->shard];
                        uint64_t src = (uint64_t)(e->ptr - s->map) + skip;

                        for (size_t got = 0; got < take;) {
                                ssize_t r = pread(s->fd, (char *)dst + done + got, take - got,
                                                  (off_t)(src + got));

                                if (r < 0 && errno == EINTR)
                                        continue;
                                if (r <= 0)
                                        return -EIO;
                                got += (size_t)r;
                        }
                }
                done += take;
        }
        return 0;
}
