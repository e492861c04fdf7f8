/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The single-copy policy (cache.h). Per shard a bitmap says which source
 * pages have had every byte served; a small table remembers pages served
 * in pieces (a read or tensor boundary inside the page) as a served prefix
 * [0, head) and suffix [tail, page) until the two meet. Sequential reads
 * split pages exactly this way: one reply ends inside a page, the next
 * starts there; a tensor ends inside a page, the next begins there. A
 * piece in the middle of a page with nothing served on either side is not
 * remembered (that page stays: memory, never bytes).
 *
 * A drop covers the pages a call served whole, and the whole 2 MiB block
 * at either end when the call served its last page (a count per block): the
 * kernel drops a large folio of the source only when the range asked
 * covers all of it, and a 2 MiB folio is served over several 1 MiB
 * replies.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"

/* the largest folio of a file's page cache (PMD order on x86-64) */
#define FOLIO_MAX (2u << 20)

struct partial {
        uint64_t key; /* 0: free; else (shard << 40 | page) + 1 */
        uint32_t head, tail;
};

struct stf_cache {
        const struct stf_model *m;
        enum stf_cache_mode mode;
        stf_cache_drop_fn drop;
        void *ctx;
        uint64_t page;
        _Atomic uint64_t **bits;   /* per shard, a bit per page: all served */
        _Atomic uint16_t **blocks; /* per shard, served pages per FOLIO_MAX block */
        uint64_t span;             /* pages per block */
        pthread_mutex_t lock;      /* the partial table */
        struct partial *tab;       /* open addressing, 2 * STF_CACHE_PARTIAL */
        size_t used;
};

#define TAB_CAP (2 * (size_t)STF_CACHE_PARTIAL)

int stf_cache_mode_parse(const char *s, enum stf_cache_mode *out)
{
        if (!strcmp(s, "single"))
                *out = STF_CACHE_SINGLE;
        else if (!strcmp(s, "double"))
                *out = STF_CACHE_DOUBLE;
        else
                return -EINVAL;
        return 0;
}

const char *stf_cache_mode_name(enum stf_cache_mode mode)
{
        return mode == STF_CACHE_DOUBLE ? "double" : "single";
}

void stf_cache_drop_pages(void *ctx, uint32_t shard, uint64_t begin, uint64_t end)
{
        const struct stf_shard *s = &((const struct stf_model *)ctx)->shards[shard];

        if (!s->map)
                return;
        /* the mapping first: the kernel keeps a page that is mapped */
        madvise((void *)(s->map + begin), end - begin, MADV_DONTNEED);
        posix_fadvise(s->fd, (off_t)begin, (off_t)(end - begin), POSIX_FADV_DONTNEED);
}

int stf_cache_new(const struct stf_model *m, enum stf_cache_mode mode, stf_cache_drop_fn drop,
                  void *ctx, struct stf_cache **out)
{
        struct stf_cache *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->m = m;
        c->mode = mode;
        c->drop = drop ? drop : stf_cache_drop_pages;
        c->ctx = drop ? ctx : (void *)m;
        c->page = (uint64_t)sysconf(_SC_PAGESIZE);
        c->span = FOLIO_MAX > c->page ? FOLIO_MAX / c->page : 1;
        pthread_mutex_init(&c->lock, NULL);
        if (mode == STF_CACHE_DOUBLE)
                goto done;
        c->bits = calloc(m->nshards ? m->nshards : 1, sizeof(*c->bits));
        c->blocks = calloc(m->nshards ? m->nshards : 1, sizeof(*c->blocks));
        c->tab = calloc(TAB_CAP, sizeof(*c->tab));
        if (!c->bits || !c->blocks || !c->tab)
                goto out_free;
        for (uint32_t s = 0; s < m->nshards; s++) {
                uint64_t pages = (m->shards[s].size + c->page - 1) / c->page;

                c->bits[s] = calloc(pages / 64 + 1, sizeof(uint64_t));
                c->blocks[s] = calloc(pages / c->span + 1, sizeof(uint16_t));
                if (!c->bits[s] || !c->blocks[s])
                        goto out_free;
        }
done:
        *out = c;
        return 0;
out_free:
        stf_cache_free(c);
        return -ENOMEM;
}

void stf_cache_free(struct stf_cache *c)
{
        if (!c)
                return;
        for (uint32_t s = 0; c->bits && s < c->m->nshards; s++)
                free((void *)c->bits[s]);
        for (uint32_t s = 0; c->blocks && s < c->m->nshards; s++)
                free((void *)c->blocks[s]);
        free((void *)c->bits);
        free((void *)c->blocks);
        free(c->tab);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

/*
 * Mark page @p (of @pages) of shard @s served whole, counted in its block
 * once. Returns true when this served the last page of its block: the one
 * call that then drops the block whole (a block served whole before and
 * being read again is not dropped whole: pages of it may be on their way
 * to another reply).
 */
static bool set_bit(struct stf_cache *c, uint32_t s, uint64_t p, uint64_t pages)
{
        uint64_t bit = 1ull << (p % 64), b = p - p % c->span;
        uint64_t n = pages - b < c->span ? pages - b : c->span;
        uint16_t before;

        if (atomic_fetch_or_explicit(&c->bits[s][p / 64], bit, memory_order_relaxed) & bit)
                return false;
        before = atomic_fetch_add_explicit(&c->blocks[s][b / c->span], 1, memory_order_relaxed);
        return before + 1u == n;
}

static size_t slot_of(uint64_t key)
{
        return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) % TAB_CAP;
}

/* Remove the entry at @i, shifting later entries of its probe run back. */
static void tab_remove(struct stf_cache *c, size_t i)
{
        size_t j = i;

        c->tab[i].key = 0;
        c->used--;
        for (;;) {
                size_t home;

                j = (j + 1) % TAB_CAP;
                if (!c->tab[j].key)
                        return;
                home = slot_of(c->tab[j].key);
                /* it stays unless its home lies cyclically in (i, j] */
                if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
                        c->tab[i] = c->tab[j];
                        c->tab[j].key = 0;
                        i = j;
                }
        }
}

/*
 * Bytes [@s, @e) of page @p of shard @shard were served (not the whole
 * page). Returns true when the page is now served whole.
 */
static bool merge_piece(struct stf_cache *c, uint32_t shard, uint64_t p, uint32_t s, uint32_t e)
{
        uint64_t key = ((uint64_t)shard << 40 | p) + 1;
        size_t i = slot_of(key);
        bool full = false;

        pthread_mutex_lock(&c->lock);
        while (c->tab[i].key && c->tab[i].key != key)
                i = (i + 1) % TAB_CAP;
        if (c->tab[i].key) {
                struct partial *t = &c->tab[i];

                if (s <= t->head && e > t->head)
                        t->head = e;
                else if (e >= t->tail && s < t->tail)
                        t->tail = s;
                if (t->head >= t->tail) {
                        tab_remove(c, i);
                        full = true;
                }
        } else if ((s == 0 || e == c->page) && c->used < STF_CACHE_PARTIAL) {
                c->tab[i] = (struct partial){
                    .key = key, .head = s == 0 ? e : 0, .tail = s == 0 ? (uint32_t)c->page : s};
                c->used++;
        }
        pthread_mutex_unlock(&c->lock);
        return full;
}

/*
 * Pages [@lo, @hi) of @shard were served whole by this call, and it served
 * the last page of the blocks starting at pages @done[0] and @done[1] (or
 * of none: UINT64_MAX). At least STF_CACHE_MIN_DROP of pages go at once,
 * out to the whole block at either end that this call completed (a large
 * folio of the source lies inside one block and goes only when dropped
 * whole). Fewer go only with a block they complete: a drop is two system
 * calls and the kernel's LRU drains, too much per 4 KiB prefetch chunk.
 */
static void drop_range(struct stf_cache *c, uint32_t shard, uint64_t lo, uint64_t hi,
                       uint64_t pages, const uint64_t done[2])
{
        uint64_t b0 = lo - lo % c->span, b1 = (hi - 1) - (hi - 1) % c->span;
        uint64_t e0 = b0 + c->span < pages ? b0 + c->span : pages;
        uint64_t e1 = b1 + c->span < pages ? b1 + c->span : pages;
        bool f0 = b0 == done[0] || b0 == done[1], f1 = b1 == done[0] || b1 == done[1];

        if ((hi - lo) * c->page < STF_CACHE_MIN_DROP) {
                if (f0)
                        c->drop(c->ctx, shard, b0 * c->page, e0 * c->page);
                if (f1 && b1 != b0)
                        c->drop(c->ctx, shard, b1 * c->page, e1 * c->page);
                return;
        }
        c->drop(c->ctx, shard, (f0 ? b0 : lo) * c->page, (f1 ? e1 : hi) * c->page);
}

void stf_cache_served(struct stf_cache *c, uint32_t shard, uint64_t begin, uint64_t end)
{
        uint64_t size, pages, first, last, lo = 0, hi = 0;
        uint64_t done[2] = {UINT64_MAX, UINT64_MAX}; /* blocks this call completed */

        if (!c || c->mode != STF_CACHE_SINGLE || shard >= c->m->nshards)
                return;
        size = c->m->shards[shard].size;
        pages = (size + c->page - 1) / c->page;
        if (end > size)
                end = size;
        if (begin >= end)
                return;
        /* nothing follows the last byte: its page is whole once that is served */
        if (end == size)
                end = pages * c->page;
        first = begin / c->page;
        last = (end - 1) / c->page;
        /* the pages this call serves whole are one run: only its two ends
         * can be pieces */
        for (uint64_t p = first; p <= last; p++) {
                uint64_t ps = p * c->page;
                uint32_t s = (uint32_t)((begin > ps ? begin : ps) - ps);
                uint32_t e = (uint32_t)((end < ps + c->page ? end : ps + c->page) - ps);

                if ((s == 0 && e == c->page) || merge_piece(c, shard, p, s, e)) {
                        if (set_bit(c, shard, p, pages))
                                done[done[0] != UINT64_MAX] = p - p % c->span;
                        lo = lo < hi ? lo : p;
                        hi = p + 1;
                }
        }
        if (lo < hi)
                drop_range(c, shard, lo, hi, pages, done);
}

void stf_cache_served_view(struct stf_cache *c, const struct stf_view *v, uint64_t off,
                           uint64_t len)
{
        uint64_t end = off + len;

        if (!c || c->mode != STF_CACHE_SINGLE || v->n == 0 || len == 0)
                return;
        for (size_t i = stf_view_find(v, off); i < v->n && v->ext[i].off < end; i++) {
                const struct stf_extent *e = &v->ext[i];
                uint64_t a = off > e->off ? off : e->off;
                uint64_t b = end < e->off + e->len ? end : e->off + e->len;
                uint64_t base;

                if (e->shard < 0 || (uint32_t)e->shard >= c->m->nshards || a >= b)
                        continue;
                base = (uint64_t)(e->ptr - c->m->shards[e->shard].map);
                stf_cache_served(c, (uint32_t)e->shard, base + a - e->off, base + b - e->off);
        }
}
