/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data scan.
 *
 * Work is cut into pieces of about one chunk of a shard, in offset order:
 * a big tensor is split into chunks (a multiple of 8 bytes, so every piece
 * holds whole elements), small neighbours are grouped so a model of 100,000
 * tiny tensors is not 100,000 pieces. Threads take pieces from a counter
 * and add their counts to per-tensor atomics once per piece. Inside a piece
 * the bytes are classified in blocks of 64 KiB, each read twice (values,
 * then zeros) while it is still in cache. After a piece its pages are
 * dropped from the process (rounded outwards to pages: a neighbour that
 * still reads a shared page just faults it in again from the page cache).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bytes.h"
#include "pool.h"
#include "scan.h"

#define DEFAULT_CHUNK (8u << 20)
#define BLOCK (64u << 10)

bool stf_scan_applies(unsigned dt)
{
        switch (dt) {
        case STF_DT_F16:
        case STF_DT_BF16:
        case STF_DT_F32:
        case STF_DT_F64:
        case STF_DT_C64:
        case STF_DT_F8_E5M2:
        case STF_DT_F8_E4M3:
        case STF_DT_F8_E4M3FNUZ:
        case STF_DT_F8_E5M2FNUZ:
        case STF_DT_F8_E8M0:
                return true;
        default:
                return false;
        }
}

static bool any_nonzero(const uint8_t *p, size_t len)
{
        uint64_t acc = 0;
        size_t i = 0;

        for (; i + 8 <= len; i += 8) {
                uint64_t w;

                memcpy(&w, p + i, 8);
                acc |= w;
        }
        for (; i < len; i++)
                acc |= p[i];
        return acc != 0;
}

void stf_scan_buffer(unsigned dt, const uint8_t *p, size_t len, uint64_t *nan, uint64_t *inf,
                     bool *nonzero)
{
        uint64_t n = 0, f = 0;
        size_t i;

        switch (dt) {
        case STF_DT_F16:
        case STF_DT_BF16: {
                uint16_t e = dt == STF_DT_F16 ? 0x7c00 : 0x7f80;

                for (i = 0; i + 2 <= len; i += 2) {
                        uint16_t a = stf_le16(p + i) & 0x7fff;

                        n += a > e;
                        f += a == e;
                }
                break;
        }
        case STF_DT_F32:
                for (i = 0; i + 4 <= len; i += 4) {
                        uint32_t a = stf_le32(p + i) & 0x7fffffffu;

                        n += a > 0x7f800000u;
                        f += a == 0x7f800000u;
                }
                break;
        case STF_DT_F64:
                for (i = 0; i + 8 <= len; i += 8) {
                        uint64_t a = stf_le64(p + i) & 0x7fffffffffffffffull;

                        n += a > 0x7ff0000000000000ull;
                        f += a == 0x7ff0000000000000ull;
                }
                break;
        case STF_DT_C64:
                for (i = 0; i + 8 <= len; i += 8) {
                        uint32_t re = stf_le32(p + i) & 0x7fffffffu,
                                 im = stf_le32(p + i + 4) & 0x7fffffffu;

                        n += (re > 0x7f800000u) | (im > 0x7f800000u);
                        f += (re == 0x7f800000u) | (im == 0x7f800000u);
                }
                break;
        case STF_DT_F8_E5M2:
                for (i = 0; i < len; i++) {
                        uint8_t a = p[i] & 0x7f;

                        n += a > 0x7c;
                        f += a == 0x7c;
                }
                break;
        case STF_DT_F8_E4M3:
                for (i = 0; i < len; i++)
                        n += (p[i] & 0x7f) == 0x7f;
                break;
        case STF_DT_F8_E4M3FNUZ:
        case STF_DT_F8_E5M2FNUZ:
                for (i = 0; i < len; i++)
                        n += p[i] == 0x80;
                break;
        case STF_DT_F8_E8M0:
                for (i = 0; i < len; i++)
                        n += p[i] == 0xff;
                break;
        default:
                break;
        }
        *nan += n;
        *inf += f;
        if (!*nonzero && any_nonzero(p, len))
                *nonzero = true;
}

/* A piece of work: tensors order[k0..k1) clipped to bytes [lo, hi) of a shard. */
struct piece {
        uint32_t shard;
        size_t k0, k1;
        uint64_t lo, hi;
};

struct scan {
        const struct stf_model *m;
        const uint32_t *order; /* tensor indices in layout order */
        struct piece *pieces;
        size_t npieces;
        uint64_t done; /* atomic: bytes scanned */
        uint64_t total;
        uint64_t *nan, *inf;
        uint8_t *nonzero;
        uintptr_t page;
        const struct stf_scan_opts *opts;
};

static int scan_piece(void *ctx, unsigned worker, size_t i)
{
        struct scan *pl = ctx;
        const struct piece *pc = &pl->pieces[i];
        const struct stf_shard *s = &pl->m->shards[pc->shard];
        uintptr_t a, b;

        for (size_t k = pc->k0; k < pc->k1; k++) {
                size_t ti = pl->order[k];
                const struct stf_tensor *t = &pl->m->tensors[ti];
                uint64_t r0 = t->begin > pc->lo ? t->begin : pc->lo;
                uint64_t r1 = t->begin + t->size < pc->hi ? t->begin + t->size : pc->hi;
                uint64_t nan = 0, inf = 0;
                bool nz = false;

                for (uint64_t o = r0; o < r1; o += BLOCK)
                        stf_scan_buffer(t->dtype, s->map + o, r1 - o < BLOCK ? r1 - o : BLOCK, &nan,
                                        &inf, &nz);
                if (nan)
                        __atomic_fetch_add(&pl->nan[ti], nan, __ATOMIC_RELAXED);
                if (inf)
                        __atomic_fetch_add(&pl->inf[ti], inf, __ATOMIC_RELAXED);
                if (nz)
                        __atomic_store_n(&pl->nonzero[ti], 1, __ATOMIC_RELAXED);
        }
        a = ((uintptr_t)s->map + pc->lo) & ~(pl->page - 1);
        b = ((uintptr_t)s->map + pc->hi + pl->page - 1) & ~(pl->page - 1);
        madvise((void *)a, b - a, MADV_DONTNEED);
        __atomic_fetch_add(&pl->done, pc->hi - pc->lo, __ATOMIC_RELAXED);
        return 0;
}

static void tick(void *ctx)
{
        struct scan *pl = ctx;

        pl->opts->progress(pl->opts->ctx, __atomic_load_n(&pl->done, __ATOMIC_RELAXED), pl->total);
}

static int add_piece(struct piece **v, size_t *n, size_t *cap, struct piece pc)
{
        if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 256;
                struct piece *nv = realloc(*v, ncap * sizeof(*nv));

                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = ncap;
        }
        (*v)[(*n)++] = pc;
        return 0;
}

/* Cut the non-empty tensors, in offset order, into pieces of about @chunk bytes. */
static int make_pieces(struct scan *pl, size_t norder, uint64_t chunk)
{
        const struct stf_tensor *tt = pl->m->tensors;
        struct piece cur = {0};
        size_t cap = 0;
        bool open = false;

        for (size_t k = 0; k < norder; k++) {
                const struct stf_tensor *t = &tt[pl->order[k]];
                uint64_t end = t->begin + t->size;

                if (open && (t->size >= chunk || cur.shard != t->shard || cur.hi != t->begin ||
                             cur.hi - cur.lo + t->size > chunk)) {
                        if (add_piece(&pl->pieces, &pl->npieces, &cap, cur))
                                return -ENOMEM;
                        open = false;
                }
                if (t->size >= chunk) {
                        for (uint64_t b = t->begin; b < end; b += chunk) {
                                struct piece pc = {t->shard, k, k + 1, b,
                                                   end - b < chunk ? end : b + chunk};

                                if (add_piece(&pl->pieces, &pl->npieces, &cap, pc))
                                        return -ENOMEM;
                        }
                        continue;
                }
                if (!open) {
                        cur = (struct piece){t->shard, k, k, t->begin, t->begin};
                        open = true;
                }
                cur.k1 = k + 1;
                cur.hi = end;
        }
        if (open && add_piece(&pl->pieces, &pl->npieces, &cap, cur))
                return -ENOMEM;
        return 0;
}

static void advise(const struct stf_model *m, int advice)
{
        for (uint32_t i = 0; i < m->nshards; i++)
                if (m->shards[i].map)
                        madvise((void *)m->shards[i].map, m->shards[i].size, advice);
}

int stf_scan_model(const struct stf_model *m, const struct stf_scan_opts *opts,
                   struct stf_scan_stat *out)
{
        struct stf_scan_opts o = opts ? *opts : (struct stf_scan_opts){0};
        struct scan pl = {.m = m, .opts = &o};
        /* With a progress callback this thread reports, else it works too. */
        struct stf_pool pool = {.task = scan_piece, .tick = o.progress ? tick : NULL, .ctx = &pl};
        uint32_t *order;
        size_t norder = 0;
        int ret = -ENOMEM;

        if (!o.chunk)
                o.chunk = DEFAULT_CHUNK;
        o.chunk = (o.chunk + 7) & ~(size_t)7;
        pl.page = (uintptr_t)sysconf(_SC_PAGESIZE);

        order = malloc((m->ntensors ? m->ntensors : 1) * sizeof(*order));
        pl.nan = calloc(m->ntensors ? m->ntensors : 1, sizeof(*pl.nan));
        pl.inf = calloc(m->ntensors ? m->ntensors : 1, sizeof(*pl.inf));
        pl.nonzero = calloc(m->ntensors ? m->ntensors : 1, 1);
        if (!order || !pl.nan || !pl.inf || !pl.nonzero)
                goto out_arrays;
        for (size_t i = 0; i < m->ntensors; i++) {
                if (m->tensors[i].size)
                        order[norder++] = (uint32_t)i;
                pl.total += m->tensors[i].size;
        }
        stf_model_sort_layout(m, order, norder);
        pl.order = order;
        if (make_pieces(&pl, norder, o.chunk))
                goto out_arrays;

        advise(m, MADV_SEQUENTIAL);
        if (o.progress)
                o.progress(o.ctx, 0, pl.total);
        pool.ntasks = pl.npieces;
        pool.threads = o.threads;
        stf_pool_run(&pool);
        advise(m, MADV_NORMAL);
        if (o.progress)
                o.progress(o.ctx, pl.total, pl.total);

        for (size_t i = 0; i < m->ntensors; i++)
                out[i] = (struct stf_scan_stat){pl.nan[i], pl.inf[i],
                                                m->tensors[i].size && !pl.nonzero[i]};
        ret = 0;
out_arrays:
        free(pl.pieces);
        free(order);
        free(pl.nan);
        free(pl.inf);
        free(pl.nonzero);
        return ret;
}
