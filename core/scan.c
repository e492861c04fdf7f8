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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "scan.h"

#define DEFAULT_CHUNK (8u << 20)
#define BLOCK (64u << 10)
#define MAX_THREADS 256

static uint16_t le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
        return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

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
                        uint16_t a = le16(p + i) & 0x7fff;

                        n += a > e;
                        f += a == e;
                }
                break;
        }
        case STF_DT_F32:
                for (i = 0; i + 4 <= len; i += 4) {
                        uint32_t a = le32(p + i) & 0x7fffffffu;

                        n += a > 0x7f800000u;
                        f += a == 0x7f800000u;
                }
                break;
        case STF_DT_F64:
                for (i = 0; i + 8 <= len; i += 8) {
                        uint64_t a = le64(p + i) & 0x7fffffffffffffffull;

                        n += a > 0x7ff0000000000000ull;
                        f += a == 0x7ff0000000000000ull;
                }
                break;
        case STF_DT_C64:
                for (i = 0; i + 8 <= len; i += 8) {
                        uint32_t re = le32(p + i) & 0x7fffffffu, im = le32(p + i + 4) & 0x7fffffffu;

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

struct pool {
        const struct stf_model *m;
        const size_t *order; /* tensor indices by shard, then offset */
        struct piece *pieces;
        size_t npieces;
        size_t next;   /* atomic: the next piece to take */
        uint64_t done; /* atomic: bytes scanned */
        uint64_t *nan, *inf;
        uint8_t *nonzero;
        uintptr_t page;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned running; /* under lock */
};

static void scan_piece(struct pool *pl, const struct piece *pc)
{
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
}

static void work(struct pool *pl)
{
        for (;;) {
                size_t i = __atomic_fetch_add(&pl->next, 1, __ATOMIC_RELAXED);

                if (i >= pl->npieces)
                        return;
                scan_piece(pl, &pl->pieces[i]);
        }
}

static void *worker(void *arg)
{
        struct pool *pl = arg;

        work(pl);
        pthread_mutex_lock(&pl->lock);
        pl->running--;
        pthread_cond_signal(&pl->cond);
        pthread_mutex_unlock(&pl->lock);
        return NULL;
}

static const struct stf_model *sort_model; /* under sort_lock: qsort has no context */
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static int cmp_offset(const void *a, const void *b)
{
        const struct stf_tensor *x = &sort_model->tensors[*(const size_t *)a];
        const struct stf_tensor *y = &sort_model->tensors[*(const size_t *)b];

        if (x->shard != y->shard)
                return x->shard < y->shard ? -1 : 1;
        return x->begin < y->begin ? -1 : x->begin > y->begin;
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
static int make_pieces(struct pool *pl, size_t norder, uint64_t chunk)
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
        struct pool pl = {.m = m, .lock = PTHREAD_MUTEX_INITIALIZER};
        pthread_t th[MAX_THREADS];
        pthread_condattr_t ca;
        size_t *order, norder = 0;
        uint64_t total = 0;
        unsigned nthreads = 0;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int ret = -ENOMEM;

        if (!o.chunk)
                o.chunk = DEFAULT_CHUNK;
        o.chunk = (o.chunk + 7) & ~(size_t)7;
        if (!o.threads)
                o.threads = ncpu > 0 ? (unsigned)ncpu : 1;
        if (o.threads > MAX_THREADS)
                o.threads = MAX_THREADS;
        pl.page = (uintptr_t)sysconf(_SC_PAGESIZE);

        order = malloc((m->ntensors ? m->ntensors : 1) * sizeof(*order));
        pl.nan = calloc(m->ntensors ? m->ntensors : 1, sizeof(*pl.nan));
        pl.inf = calloc(m->ntensors ? m->ntensors : 1, sizeof(*pl.inf));
        pl.nonzero = calloc(m->ntensors ? m->ntensors : 1, 1);
        if (!order || !pl.nan || !pl.inf || !pl.nonzero)
                goto out_arrays;
        for (size_t i = 0; i < m->ntensors; i++) {
                if (m->tensors[i].size)
                        order[norder++] = i;
                total += m->tensors[i].size;
        }
        pthread_mutex_lock(&sort_lock);
        sort_model = m;
        qsort(order, norder, sizeof(*order), cmp_offset);
        pthread_mutex_unlock(&sort_lock);
        pl.order = order;
        if (make_pieces(&pl, norder, o.chunk))
                goto out_arrays;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&pl.cond, &ca);
        pthread_condattr_destroy(&ca);
        advise(m, MADV_SEQUENTIAL);
        if (o.progress)
                o.progress(o.ctx, 0, total);
        if (o.threads > pl.npieces)
                o.threads = pl.npieces ? (unsigned)pl.npieces : 1;
        /*
         * With a progress callback this thread reports, else it works too.
         * The lock is held while the workers start, so none can count
         * itself out before it was counted in.
         */
        pthread_mutex_lock(&pl.lock);
        for (unsigned t = o.progress ? 0 : 1; t < o.threads; t++) {
                if (pthread_create(&th[nthreads], NULL, worker, &pl))
                        break;
                nthreads++;
        }
        pl.running = nthreads;
        pthread_mutex_unlock(&pl.lock);
        if (!o.progress || !nthreads)
                work(&pl);
        pthread_mutex_lock(&pl.lock);
        while (pl.running) {
                struct timespec ts;

                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += 100000000;
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&pl.cond, &pl.lock, &ts);
                if (o.progress && pl.running) {
                        pthread_mutex_unlock(&pl.lock);
                        o.progress(o.ctx, __atomic_load_n(&pl.done, __ATOMIC_RELAXED), total);
                        pthread_mutex_lock(&pl.lock);
                }
        }
        pthread_mutex_unlock(&pl.lock);
        for (unsigned t = 0; t < nthreads; t++)
                pthread_join(th[t], NULL);
        advise(m, MADV_NORMAL);
        pthread_cond_destroy(&pl.cond);
        if (o.progress)
                o.progress(o.ctx, total, total);

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
