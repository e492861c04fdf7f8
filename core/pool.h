/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_POOL_H
#define STF_POOL_H

/*
 * One worker pool: run tasks 0..ntasks-1 on a few threads.
 *
 * Workers take the next task from a shared counter, so tasks start in index
 * order (task i starts before task i + 1, on whichever thread). A task that
 * fails, or stf_pool_stop, stops the handing out of tasks; the ones already
 * started finish. Because tasks start in order, every task below a failed
 * one has run: the error returned is the one of the lowest failing task,
 * exactly as a serial loop would have returned it.
 *
 * Threads are created for one run and joined before stf_pool_run returns;
 * a thread that cannot be created just means fewer workers (the calling
 * thread always works unless it ticks, and works when no thread started).
 *
 * A pool runs once: its private fields must be zero when stf_pool_run
 * starts (an initializer that names the public ones does that), and the
 * run never resets them, so a stf_pool_stop from another thread is never
 * lost, whenever it comes: before the run (nothing runs), during it, or
 * while a failing task's error is being recorded. To run again, initialise
 * the struct again.
 */

#include <stdbool.h>
#include <stddef.h>

#define STF_POOL_THREADS_MAX 256

struct stf_pool {
        /* Set by the caller before stf_pool_run. */
        size_t ntasks;
        /* Workers at most, the calling thread included unless @tick is set;
         * 0: one per online CPU. Clamped to ntasks and STF_POOL_THREADS_MAX. */
        unsigned threads;
        /* Run task @i on worker @worker (0 .. threads-1); 0 or -errno. */
        int (*task)(void *ctx, unsigned worker, size_t i);
        /* Optional, on each worker's thread before its first and after its
         * last task (per-thread state: a CUDA context, a staging buffer).
         * A failing begin means that worker runs no task; both errors stop
         * the pool like a task's, ranked after every task's error. */
        int (*worker_begin)(void *ctx, unsigned worker);
        int (*worker_end)(void *ctx, unsigned worker);
        /* Optional: the calling thread runs no task but calls @tick every
         * @tick_ms while the workers work (progress reports). */
        void (*tick)(void *ctx);
        unsigned tick_ms;
        /* Go on with the next tasks after one fails (collect every error). */
        bool keep_going;
        void *ctx;

        /* Private to pool.c. */
        size_t next;
        int stopped;
};

/*
 * Run every task (see above). The struct must stay alive until return.
 * Returns 0 when every task ran and returned 0; the error of the lowest
 * failing task (or else of a worker_begin/end); -ECANCELED when
 * stf_pool_stop ended it before every task ran and nothing failed.
 */
int stf_pool_run(struct stf_pool *p);

/* Hand out no more tasks (from a task, a tick or another thread, at any
 * time: lock-free, sticky). */
void stf_pool_stop(struct stf_pool *p);

/* The number of threads a pool of @threads (0 = per CPU) would ask for. */
unsigned stf_pool_threads(unsigned threads);

#endif
