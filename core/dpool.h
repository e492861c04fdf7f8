/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_DPOOL_H
#define STF_DPOOL_H

/*
 * A deadline pool: work that may block for ever (a read of a source on a
 * network filesystem that stalls) runs on a fixed set of threads, and
 * every item gets exactly one answer, by its deadline at the latest.
 *
 * For every item that stf_dpool_submit took, the pool calls @reply exactly
 * once: with the result of @work when @work returned first; with
 * -ETIMEDOUT when the item's deadline (submit time + timeout) passed first
 * (never with a timeout of 0); or with -ESHUTDOWN from stf_dpool_stop.
 * Which one wins is decided under the pool's lock (the claim), so a @work
 * that returns after its item was answered has its result dropped. Then
 * @release is called exactly once, when nothing touches the item any
 * more: after the reply, and after @work returned if it ever started.
 *
 * Bounds: @threads workers, started at creation and never replaced. A
 * worker stuck in @work stays stuck (and counted in stats.busy); when all
 * are, new items wait in the queue and get -ETIMEDOUT at their deadline,
 * never sooner (so a stall shorter than the timeout fails nothing), and
 * whatever the first worker to come back finds queued runs then. At most
 * @max_queued items wait for a worker; submit refuses more (-EAGAIN).
 * Memory: one item per request in flight, owned by the caller.
 *
 * Threads: @threads workers plus one timer thread when the timeout is not
 * 0. @reply and @release run on a worker, the timer, or the thread that
 * calls stf_dpool_stop, never under the pool's lock. Every function may be
 * called from many threads at once, but stf_dpool_free (after stop).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in the caller's item; the fields are private to dpool.c. */
struct stf_dpool_item {
        struct stf_dpool_item *prev, *next; /* unanswered items, oldest first */
        struct stf_dpool_item *qnext;       /* items no worker took yet */
        uint64_t deadline_ns;               /* CLOCK_MONOTONIC; 0: none */
        bool queued, claimed, replied, worked;
};

struct stf_dpool_ops {
        /* Do the item's work on worker @worker (0 .. threads-1); 0 or
         * -errno. May block as long as it likes. */
        int (*work)(void *ctx, unsigned worker, struct stf_dpool_item *it);
        /* Answer the item: @result of work, -ETIMEDOUT or -ESHUTDOWN. */
        void (*reply)(void *ctx, struct stf_dpool_item *it, int result);
        /* The item is the caller's again (free it). */
        void (*release)(void *ctx, struct stf_dpool_item *it);
};

struct stf_dpool_stats {
        unsigned threads;  /* workers started */
        unsigned busy;     /* workers inside work() now (stuck ones too) */
        size_t queued;     /* items waiting for a worker */
        uint64_t timeouts; /* items answered -ETIMEDOUT so far */
        uint64_t late;     /* works that returned after their item was answered */
};

struct stf_dpool;

/*
 * Start a pool of @threads workers (at least 1) whose items wait at most
 * @timeout_ms (0: no deadline) and of which at most @max_queued wait for a
 * worker. @ops is copied; @ctx is passed to every call. Fewer workers than
 * asked start when the system refuses threads (stats.threads says).
 * Returns 0, -EINVAL (0 threads or max_queued), -ENOMEM, -EAGAIN (no
 * thread at all).
 */
int stf_dpool_new(unsigned threads, unsigned timeout_ms, size_t max_queued,
                  const struct stf_dpool_ops *ops, void *ctx, struct stf_dpool **out);

/*
 * Hand @it to the pool (see above). Returns 0: the pool owns it until
 * release; -EAGAIN (queue full) or -ESHUTDOWN (stopped): not taken, the
 * caller answers and frees it.
 */
int stf_dpool_submit(struct stf_dpool *p, struct stf_dpool_item *it);

/*
 * Take no more items, answer every item not answered yet with -ESHUTDOWN
 * (queued ones are released without running), and wait up to @wait_ms for
 * the workers to leave work() and end. Returns the number of workers still
 * inside work() (stuck): those still use the pool and, through @ctx,
 * whatever work() reads, which the caller must then leave allocated.
 * Calling it again waits again.
 */
unsigned stf_dpool_stop(struct stf_dpool *p, unsigned wait_ms);

void stf_dpool_stats(struct stf_dpool *p, struct stf_dpool_stats *out);

/*
 * Free a stopped pool (stops it without waiting if not). Accepts NULL.
 * While a worker is still inside work(), nothing is freed (it would come
 * back to freed memory): that much is left to the process's exit.
 */
void stf_dpool_free(struct stf_dpool *p);

#endif
