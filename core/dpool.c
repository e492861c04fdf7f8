/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The deadline pool (dpool.h). One lock guards everything. Two lists:
 * the unanswered items in arrival order (live), and the items no worker
 * took yet (queue), also in arrival order. The timeout is the same for
 * every item, so arrival order is deadline order: the timer only ever
 * looks at the oldest unanswered item, and an expired item that no worker
 * took is always the head of the queue.
 *
 * An item is answered by whoever claims it first (the worker after work,
 * the timer, stop); it is released by whoever finishes second of "the
 * reply was sent" and "work returned, or will never run", so neither side
 * can touch an item the other has released.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "dpool.h"

struct stf_dpool {
        pthread_mutex_t lock;
        pthread_cond_t work_cv;  /* a queued item or stop, for workers */
        pthread_cond_t timer_cv; /* the live list became non-empty, or stop */
        pthread_cond_t done_cv;  /* a worker ended */
        struct stf_dpool_item *live_head, *live_tail;
        struct stf_dpool_item *q_head, *q_tail;
        size_t queued, max_queued;
        uint64_t timeout_ns;
        struct stf_dpool_ops ops;
        void *ctx;
        bool stopping, timer_started;
        unsigned slots, threads, alive, busy; /* slots: size of tid, joined, ended */
        uint64_t timeouts, late;
        pthread_t timer;
        pthread_t *tid;
        bool *joined; /* per worker: ended and joined (or never started) */
        bool *ended;  /* per worker: left its loop */
};

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec at_ns(uint64_t ns)
{
        return (struct timespec){.tv_sec = (time_t)(ns / 1000000000ull),
                                 .tv_nsec = (long)(ns % 1000000000ull)};
}

static void live_unlink(struct stf_dpool *p, struct stf_dpool_item *it)
{
        if (it->prev)
                it->prev->next = it->next;
        else
                p->live_head = it->next;
        if (it->next)
                it->next->prev = it->prev;
        else
                p->live_tail = it->prev;
        it->prev = it->next = NULL;
}

static struct stf_dpool_item *queue_pop(struct stf_dpool *p)
{
        struct stf_dpool_item *it = p->q_head;

        p->q_head = it->qnext;
        if (!p->q_head)
                p->q_tail = NULL;
        it->qnext = NULL;
        it->queued = false;
        p->queued--;
        return it;
}

/*
 * Claim @it (unanswered) for an answer other than its work's result: off
 * the live list, and off the queue if no worker took it (then it will
 * never run). Called with the lock held.
 */
static void claim_early(struct stf_dpool *p, struct stf_dpool_item *it)
{
        it->claimed = true;
        live_unlink(p, it);
        if (it->queued) {
                /* the oldest unanswered item: if queued, it heads the queue */
                queue_pop(p);
                it->worked = true;
        }
}

/* Send the answer of a claimed item and release it if it is done. The lock
 * is held on entry and on return, dropped around the callbacks. */
static void answer(struct stf_dpool *p, struct stf_dpool_item *it, int result)
{
        bool release;

        pthread_mutex_unlock(&p->lock);
        p->ops.reply(p->ctx, it, result);
        pthread_mutex_lock(&p->lock);
        it->replied = true;
        release = it->worked;
        if (release) {
                pthread_mutex_unlock(&p->lock);
                p->ops.release(p->ctx, it);
                pthread_mutex_lock(&p->lock);
        }
}

struct worker_arg {
        struct stf_dpool *p;
        unsigned index;
};

static void *worker_main(void *arg)
{
        struct worker_arg *wa = arg;
        struct stf_dpool *p = wa->p;
        unsigned w = wa->index;

        free(wa);
        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct stf_dpool_item *it;
                int result;

                while (!p->stopping && !p->q_head)
                        pthread_cond_wait(&p->work_cv, &p->lock);
                if (p->stopping)
                        break;
                it = queue_pop(p);
                p->busy++;
                pthread_mutex_unlock(&p->lock);
                result = p->ops.work(p->ctx, w, it);
                pthread_mutex_lock(&p->lock);
                p->busy--;
                if (!it->claimed) {
                        it->claimed = true;
                        live_unlink(p, it);
                        it->worked = true;
                        answer(p, it, result);
                        continue;
                }
                /* answered already (deadline or stop): drop the result */
                p->late++;
                it->worked = true;
                if (it->replied) {
                        pthread_mutex_unlock(&p->lock);
                        p->ops.release(p->ctx, it);
                        pthread_mutex_lock(&p->lock);
                }
        }
        p->ended[w] = true;
        p->alive--;
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

static void *timer_main(void *arg)
{
        struct stf_dpool *p = arg;

        pthread_mutex_lock(&p->lock);
        while (!p->stopping) {
                struct stf_dpool_item *it = p->live_head;
                struct timespec ts;

                if (!it) {
                        pthread_cond_wait(&p->timer_cv, &p->lock);
                        continue;
                }
                if (now_ns() < it->deadline_ns) {
                        ts = at_ns(it->deadline_ns);
                        pthread_cond_timedwait(&p->timer_cv, &p->lock, &ts);
                        continue;
                }
                claim_early(p, it);
                p->timeouts++;
                answer(p, it, -ETIMEDOUT);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* A condition whose timed waits take CLOCK_MONOTONIC deadlines (glibc
 * always accepts the clock; were it refused, the default clock). */
static void cond_init_monotonic(pthread_cond_t *cv)
{
        pthread_condattr_t a;

        if (pthread_condattr_init(&a) == 0) {
                bool ok = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 &&
                          pthread_cond_init(cv, &a) == 0;

                pthread_condattr_destroy(&a);
                if (ok)
                        return;
        }
        pthread_cond_init(cv, NULL);
}

/* Start the workers and the timer; 0 when at least one worker runs. */
static int start_threads(struct stf_dpool *p, unsigned threads)
{
        pthread_mutex_lock(&p->lock);
        p->slots = threads;
        for (unsigned i = 0; i < threads; i++) {
                struct worker_arg *wa = malloc(sizeof(*wa));

                p->joined[i] = true;
                if (!wa)
                        continue;
                *wa = (struct worker_arg){p, i};
                if (pthread_create(&p->tid[i], NULL, worker_main, wa)) {
                        free(wa);
                        continue;
                }
                p->joined[i] = false;
                p->threads++;
                p->alive++;
        }
        pthread_mutex_unlock(&p->lock);
        if (p->timeout_ns && p->threads && pthread_create(&p->timer, NULL, timer_main, p) == 0)
                p->timer_started = true;
        if (!p->threads || (p->timeout_ns && !p->timer_started))
                return -EAGAIN;
        return 0;
}

int stf_dpool_new(unsigned threads, unsigned timeout_ms, size_t max_queued,
                  const struct stf_dpool_ops *ops, void *ctx, struct stf_dpool **out)
{
        struct stf_dpool *p;
        int ret;

        if (!threads || !max_queued)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->tid = calloc(threads, sizeof(*p->tid));
        p->joined = calloc(threads, sizeof(*p->joined));
        p->ended = calloc(threads, sizeof(*p->ended));
        if (!p->tid || !p->joined || !p->ended) {
                free(p->tid);
                free(p->joined);
                free(p->ended);
                free(p);
                return -ENOMEM;
        }
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work_cv, NULL);
        cond_init_monotonic(&p->timer_cv);
        cond_init_monotonic(&p->done_cv);
        p->ops = *ops;
        p->ctx = ctx;
        p->max_queued = max_queued;
        p->timeout_ns = (uint64_t)timeout_ms * 1000000ull;
        ret = start_threads(p, threads);
        if (ret) {
                stf_dpool_free(p);
                return ret;
        }
        *out = p;
        return 0;
}

int stf_dpool_submit(struct stf_dpool *p, struct stf_dpool_item *it)
{
        pthread_mutex_lock(&p->lock);
        if (p->stopping || p->queued >= p->max_queued) {
                int ret = p->stopping ? -ESHUTDOWN : -EAGAIN;

                pthread_mutex_unlock(&p->lock);
                return ret;
        }
        *it = (struct stf_dpool_item){.queued = true};
        if (p->timeout_ns)
                it->deadline_ns = now_ns() + p->timeout_ns;
        it->prev = p->live_tail;
        if (p->live_tail)
                p->live_tail->next = it;
        else
                p->live_head = it;
        p->live_tail = it;
        if (p->q_tail)
                p->q_tail->qnext = it;
        else
                p->q_head = it;
        p->q_tail = it;
        p->queued++;
        pthread_cond_signal(&p->work_cv);
        if (p->live_head == it)
                pthread_cond_signal(&p->timer_cv);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

/* Join the workers that ended. Called with the lock held. */
static void join_ended(struct stf_dpool *p)
{
        for (unsigned i = 0; i < p->slots; i++) {
                if (p->joined[i] || !p->ended[i])
                        continue;
                pthread_mutex_unlock(&p->lock);
                pthread_join(p->tid[i], NULL);
                pthread_mutex_lock(&p->lock);
                p->joined[i] = true;
        }
}

unsigned stf_dpool_stop(struct stf_dpool *p, unsigned wait_ms)
{
        uint64_t until = now_ns() + (uint64_t)wait_ms * 1000000ull;
        bool timer;
        unsigned busy;

        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->work_cv);
        pthread_cond_broadcast(&p->timer_cv);
        while (p->live_head) {
                struct stf_dpool_item *it = p->live_head;

                claim_early(p, it);
                answer(p, it, -ESHUTDOWN);
        }
        timer = p->timer_started;
        p->timer_started = false;
        pthread_mutex_unlock(&p->lock);
        if (timer)
                pthread_join(p->timer, NULL);
        pthread_mutex_lock(&p->lock);
        while (p->alive) {
                struct timespec ts;

                if (now_ns() >= until)
                        break;
                ts = at_ns(until);
                pthread_cond_timedwait(&p->done_cv, &p->lock, &ts);
                join_ended(p);
        }
        join_ended(p);
        busy = p->busy;
        pthread_mutex_unlock(&p->lock);
        return busy;
}

void stf_dpool_stats(struct stf_dpool *p, struct stf_dpool_stats *out)
{
        pthread_mutex_lock(&p->lock);
        *out = (struct stf_dpool_stats){.threads = p->threads,
                                        .busy = p->busy,
                                        .queued = p->queued,
                                        .timeouts = p->timeouts,
                                        .late = p->late};
        pthread_mutex_unlock(&p->lock);
}

void stf_dpool_free(struct stf_dpool *p)
{
        if (!p)
                return;
        if (stf_dpool_stop(p, 0))
                return; /* a worker is stuck in work(): it still uses p */
        /* the others are idle and on their way out */
        pthread_mutex_lock(&p->lock);
        while (p->alive)
                pthread_cond_wait(&p->done_cv, &p->lock);
        join_ended(p);
        pthread_mutex_unlock(&p->lock);
        pthread_cond_destroy(&p->work_cv);
        pthread_cond_destroy(&p->timer_cv);
        pthread_cond_destroy(&p->done_cv);
        pthread_mutex_destroy(&p->lock);
        free(p->tid);
        free(p->joined);
        free(p->ended);
        free(p);
}
