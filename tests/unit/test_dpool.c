/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/dpool: one reply and one release per item, deadlines
 * while workers are stuck, late results dropped, the queue bound, stop
 * with a stuck worker.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "dpool.h"

#define N 200

struct job {
        struct stf_dpool_item item; /* first: the item is the job */
        int index;
        int want;     /* what work returns */
        bool block;   /* work waits for the gate */
        int replies;  /* atomic */
        int releases; /* atomic */
        int result;   /* of the reply */
        uint64_t answered_ns;
};

struct ctx {
        pthread_mutex_t lock;
        pthread_cond_t cv;
        bool gate_open;
        int works; /* atomic: works started */
        int ended; /* atomic: works returned */
};

static uint64_t mono_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int work(void *c, unsigned worker, struct stf_dpool_item *it)
{
        struct ctx *x = c;
        struct job *j = (struct job *)it;

        (void)worker;
        __atomic_fetch_add(&x->works, 1, __ATOMIC_SEQ_CST);
        if (j->block) {
                pthread_mutex_lock(&x->lock);
                while (!x->gate_open)
                        pthread_cond_wait(&x->cv, &x->lock);
                pthread_mutex_unlock(&x->lock);
        }
        __atomic_fetch_add(&x->ended, 1, __ATOMIC_SEQ_CST);
        return j->want;
}

static void reply(void *c, struct stf_dpool_item *it, int result)
{
        struct job *j = (struct job *)it;

        (void)c;
        j->result = result;
        j->answered_ns = mono_ns();
        __atomic_fetch_add(&j->replies, 1, __ATOMIC_SEQ_CST);
}

static void release(void *c, struct stf_dpool_item *it)
{
        struct job *j = (struct job *)it;

        (void)c;
        ck_assert_int_eq(__atomic_load_n(&j->replies, __ATOMIC_SEQ_CST), 1);
        __atomic_fetch_add(&j->releases, 1, __ATOMIC_SEQ_CST);
}

static const struct stf_dpool_ops ops = {work, reply, release};

static void ctx_init(struct ctx *x)
{
        *x = (struct ctx){0};
        pthread_mutex_init(&x->lock, NULL);
        pthread_cond_init(&x->cv, NULL);
}

static void gate_open(struct ctx *x)
{
        pthread_mutex_lock(&x->lock);
        x->gate_open = true;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->lock);
}

/* Wait (bounded) until every job of @jobs has been released. */
static void wait_released(struct job *jobs, int n)
{
        for (int tries = 0; tries < 2000; tries++) {
                int done = 0;

                for (int i = 0; i < n; i++)
                        done += __atomic_load_n(&jobs[i].releases, __ATOMIC_SEQ_CST) == 1;
                if (done == n)
                        return;
                usleep(5000);
        }
        ck_abort_msg("jobs not all released within 10 s");
}

/* Submit @n jobs of @jobs, each returning @want, blocking on the gate or not. */
static void submit_all(struct stf_dpool *p, struct job *jobs, int n, bool block, int want)
{
        for (int i = 0; i < n; i++) {
                jobs[i] = (struct job){.index = i, .block = block, .want = want};
                ck_assert_int_eq(stf_dpool_submit(p, &jobs[i].item), 0);
        }
}

static void wait_ended(struct ctx *x, int n)
{
        for (int tries = 0; tries < 2000 && __atomic_load_n(&x->ended, __ATOMIC_SEQ_CST) < n;
             tries++)
                usleep(5000);
        ck_assert_int_eq(__atomic_load_n(&x->ended, __ATOMIC_SEQ_CST), n);
}

START_TEST(test_every_item_once)
{
        static struct job jobs[N];
        struct stf_dpool *p;
        struct ctx x;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(4, 10000, N, &ops, &x, &p), 0);
        for (int i = 0; i < N; i++) {
                jobs[i] = (struct job){.index = i, .want = i % 3 ? 0 : -EIO};
                ck_assert_int_eq(stf_dpool_submit(p, &jobs[i].item), 0);
        }
        wait_released(jobs, N);
        for (int i = 0; i < N; i++) {
                ck_assert_int_eq(jobs[i].replies, 1);
                ck_assert_int_eq(jobs[i].result, jobs[i].want);
        }
        ck_assert_int_eq(x.works, N);
        ck_assert_uint_eq(stf_dpool_stop(p, 5000), 0);
        stf_dpool_free(p);
}
END_TEST

/*
 * Two workers, both stuck: their items and the queued ones are answered
 * -ETIMEDOUT at their deadline (not before); the queued ones never run;
 * once the gate opens the stuck works return and their results are
 * dropped, each job released once.
 */
START_TEST(test_deadline_while_stuck)
{
        static struct job jobs[6];
        struct stf_dpool_stats st;
        struct stf_dpool *p;
        struct ctx x;
        uint64_t t0;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(2, 300, 16, &ops, &x, &p), 0);
        t0 = mono_ns();
        submit_all(p, jobs, 6, true, 0);
        for (int tries = 0; tries < 400; tries++) {
                bool all = true;

                for (int i = 0; i < 6; i++)
                        all = all && __atomic_load_n(&jobs[i].replies, __ATOMIC_SEQ_CST);
                if (all)
                        break;
                usleep(10000);
        }
        for (int i = 0; i < 6; i++) {
                ck_assert_int_eq(jobs[i].replies, 1);
                ck_assert_int_eq(jobs[i].result, -ETIMEDOUT);
                ck_assert_uint_ge(jobs[i].answered_ns - t0, 300000000ull);
        }
        ck_assert_int_eq(x.works, 2); /* the queued four never ran */
        stf_dpool_stats(p, &st);
        ck_assert_uint_eq(st.busy, 2);
        ck_assert_uint_eq(st.queued, 0);
        ck_assert_uint_eq(st.timeouts, 6);
        /* the queued four are the caller's again; the stuck two are not */
        for (int i = 0; i < 6; i++)
                ck_assert_int_eq(jobs[i].releases, i < 2 ? 0 : 1);
        gate_open(&x);
        wait_released(jobs, 6);
        stf_dpool_stats(p, &st);
        ck_assert_uint_eq(st.late, 2);
        ck_assert_uint_eq(st.busy, 0);
        for (int i = 0; i < 6; i++)
                ck_assert_int_eq(jobs[i].replies, 1);
        ck_assert_uint_eq(stf_dpool_stop(p, 5000), 0);
        stf_dpool_free(p);
}
END_TEST

/* A stall shorter than the timeout fails nothing. */
START_TEST(test_short_stall_waits)
{
        static struct job jobs[4];
        struct stf_dpool *p;
        struct ctx x;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(1, 5000, 16, &ops, &x, &p), 0);
        submit_all(p, jobs, 4, true, 7);
        usleep(200000);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(jobs[i].replies, 0);
        gate_open(&x);
        wait_released(jobs, 4);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(jobs[i].result, 7);
        stf_dpool_free(p);
}
END_TEST

START_TEST(test_queue_bound)
{
        static struct job jobs[4];
        struct stf_dpool *p;
        struct ctx x;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(1, 0, 2, &ops, &x, &p), 0);
        for (int i = 0; i < 4; i++)
                jobs[i] = (struct job){.index = i, .block = true};
        ck_assert_int_eq(stf_dpool_submit(p, &jobs[0].item), 0);
        while (__atomic_load_n(&x.works, __ATOMIC_SEQ_CST) < 1) /* taken: queue empty */
                usleep(1000);
        ck_assert_int_eq(stf_dpool_submit(p, &jobs[1].item), 0);
        ck_assert_int_eq(stf_dpool_submit(p, &jobs[2].item), 0);
        ck_assert_int_eq(stf_dpool_submit(p, &jobs[3].item), -EAGAIN);
        /* no deadline (timeout 0): nothing is answered while stuck */
        usleep(100000);
        ck_assert_int_eq(jobs[0].replies + jobs[1].replies + jobs[2].replies, 0);
        gate_open(&x);
        wait_released(jobs, 3);
        ck_assert_int_eq(jobs[3].replies, 0);
        stf_dpool_free(p);
}
END_TEST

/*
 * Stop while a worker is stuck: every item answered -ESHUTDOWN at once,
 * the queued one released without running, the wait bounded, and the stuck
 * worker counted; the pool takes nothing more. Once the work returns, its
 * job is released and the pool can be freed.
 */
START_TEST(test_stop_with_stuck_worker)
{
        static struct job jobs[3], extra;
        struct stf_dpool *p;
        struct ctx x;
        uint64_t t0;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(1, 0, 16, &ops, &x, &p), 0);
        submit_all(p, jobs, 3, true, 0);
        while (__atomic_load_n(&x.works, __ATOMIC_SEQ_CST) < 1)
                usleep(1000);
        t0 = mono_ns();
        ck_assert_uint_eq(stf_dpool_stop(p, 200), 1);
        ck_assert_uint_lt(mono_ns() - t0, 2000000000ull);
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(jobs[i].replies, 1);
                ck_assert_int_eq(jobs[i].result, -ESHUTDOWN);
                ck_assert_int_eq(jobs[i].releases, i == 0 ? 0 : 1);
        }
        ck_assert_int_eq(stf_dpool_submit(p, &extra.item), -ESHUTDOWN);
        gate_open(&x);
        wait_ended(&x, 1);
        wait_released(jobs, 3);
        ck_assert_int_eq(x.works, 1);
        ck_assert_uint_eq(stf_dpool_stop(p, 5000), 0);
        stf_dpool_free(p);
}
END_TEST

START_TEST(test_bad_arguments)
{
        struct stf_dpool *p = NULL;
        struct ctx x;

        ctx_init(&x);
        ck_assert_int_eq(stf_dpool_new(0, 0, 1, &ops, &x, &p), -EINVAL);
        ck_assert_int_eq(stf_dpool_new(1, 0, 0, &ops, &x, &p), -EINVAL);
        ck_assert_ptr_null(p);
        stf_dpool_free(NULL);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("dpool");
        TCase *tc = tcase_create("dpool");
        SRunner *sr;
        int failed;

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_every_item_once);
        tcase_add_test(tc, test_deadline_while_stuck);
        tcase_add_test(tc, test_short_stall_waits);
        tcase_add_test(tc, test_queue_bound);
        tcase_add_test(tc, test_stop_with_stuck_worker);
        tcase_add_test(tc, test_bad_arguments);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? 1 : 0;
}
