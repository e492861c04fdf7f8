/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

/* One run: what the workers share besides the caller's struct. */
struct run {
        struct stf_pool *p;
        pthread_mutex_t lock;
        pthread_cond_t done; /* signalled as each worker ends, for the ticker */
        unsigned running;
        size_t failed_at; /* lowest failing task; SIZE_MAX: a worker hook */
        int error;
};

struct worker {
        struct run *r;
        unsigned id;
};

void stf_pool_stop(struct stf_pool *p)
{
        __atomic_store_n(&p->stopped, 1, __ATOMIC_RELEASE);
}

unsigned stf_pool_threads(unsigned threads)
{
        long ncpu;

        if (!threads) {
                ncpu = sysconf(_SC_NPROCESSORS_ONLN);
                threads = ncpu > 0 ? (unsigned)ncpu : 1;
        }
        return threads > STF_POOL_THREADS_MAX ? STF_POOL_THREADS_MAX : threads;
}

/* Record a failure; stop first, so no task is handed out while we wait for the lock. */
static void fail(struct run *r, size_t at, int err)
{
        if (!r->p->keep_going)
                stf_pool_stop(r->p);
        pthread_mutex_lock(&r->lock);
        if (!r->error || at < r->failed_at) {
                r->error = err;
                r->failed_at = at;
        }
        pthread_mutex_unlock(&r->lock);
}

static void work(struct run *r, unsigned id)
{
        struct stf_pool *p = r->p;
        int ret = 0;

        if (p->worker_begin)
                ret = p->worker_begin(p->ctx, id);
        if (ret) {
                fail(r, SIZE_MAX, ret);
                return;
        }
        while (!__atomic_load_n(&p->stopped, __ATOMIC_ACQUIRE)) {
                size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);

                if (i >= p->ntasks)
                        break;
                ret = p->task(p->ctx, id, i);
                if (ret)
                        fail(r, i, ret);
        }
        if (p->worker_end) {
                ret = p->worker_end(p->ctx, id);
                if (ret)
                        fail(r, SIZE_MAX, ret);
        }
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct run *r = w->r;

        work(r, w->id);
        pthread_mutex_lock(&r->lock);
        r->running--;
        pthread_cond_signal(&r->done);
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

/* Call the tick every tick_ms until no worker runs. */
static void ticker(struct run *r)
{
        struct stf_pool *p = r->p;
        uint64_t ns = (uint64_t)(p->tick_ms ? p->tick_ms : 100) * 1000000u;

        pthread_mutex_lock(&r->lock);
        while (r->running) {
                struct timespec ts;

                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += (time_t)(ns / 1000000000u);
                ts.tv_nsec += (long)(ns % 1000000000u);
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&r->done, &r->lock, &ts);
                if (r->running) {
                        pthread_mutex_unlock(&r->lock);
                        p->tick(p->ctx);
                        pthread_mutex_lock(&r->lock);
                }
        }
        pthread_mutex_unlock(&r->lock);
}

int stf_pool_run(struct stf_pool *p)
{
        struct run r = {.p = p, .lock = PTHREAD_MUTEX_INITIALIZER, .failed_at = SIZE_MAX};
        struct worker w[STF_POOL_THREADS_MAX];
        pthread_t th[STF_POOL_THREADS_MAX];
        pthread_condattr_t ca;
        unsigned nthreads = stf_pool_threads(p->threads), first = p->tick ? 0 : 1, started = 0;

        if (p->ntasks == 0)
                return 0;
        if (nthreads > p->ntasks)
                nthreads = (unsigned)p->ntasks;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&r.done, &ca);
        pthread_condattr_destroy(&ca);
        /*
         * Each worker is counted in before it starts, so none counts itself
         * out first; the lock is not held while threads are created (a
         * failing worker records its error meanwhile).
         */
        for (unsigned t = first; t < nthreads; t++) {
                int err;

                w[started] = (struct worker){&r, started + first};
                pthread_mutex_lock(&r.lock);
                r.running++;
                pthread_mutex_unlock(&r.lock);
                err = pthread_create(&th[started], NULL, worker_main, &w[started]);
                if (err) {
                        pthread_mutex_lock(&r.lock);
                        r.running--;
                        pthread_mutex_unlock(&r.lock);
                        break;
                }
                started++;
        }
        if (p->tick && started)
                ticker(&r);
        else
                work(&r, 0);
        for (unsigned t = 0; t < started; t++)
                pthread_join(th[t], NULL);
        pthread_cond_destroy(&r.done);
        pthread_mutex_destroy(&r.lock);
        if (r.error)
                return r.error;
        return __atomic_load_n(&p->next, __ATOMIC_RELAXED) < p->ntasks ? -ECANCELED : 0;
}
