/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of core/pool and core/bytes: every task once, errors as a serial loop, stop, hooks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "bytes.h"
#include "pool.h"
#include "util.h"

#define N 1000

struct ctx {
        unsigned ran[N];   /* atomic: times each task ran */
        int fail[N];       /* what each task returns */
        unsigned begun[8]; /* per worker */
        unsigned ended[8]; /* per worker */
        unsigned ticks;    /* atomic */
        int begin_ret;
        struct stf_pool *p; /* to stop from a task */
        size_t stop_at;
};

static int task(void *c, unsigned worker, size_t i)
{
        struct ctx *x = c;

        ck_assert_uint_lt(worker, 8);
        __atomic_fetch_add(&x->ran[i], 1, __ATOMIC_RELAXED);
        if (x->p && i == x->stop_at)
                stf_pool_stop(x->p);
        return x->fail[i];
}

static int begin(void *c, unsigned worker)
{
        struct ctx *x = c;

        x->begun[worker]++;
        return x->begin_ret;
}

static int end(void *c, unsigned worker)
{
        struct ctx *x = c;

        x->ended[worker]++;
        return 0;
}

static void tick(void *c)
{
        struct ctx *x = c;

        __atomic_fetch_add(&x->ticks, 1, __ATOMIC_RELAXED);
}

START_TEST(test_every_task_once)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = N, .threads = 4, .task = task, .ctx = &x};

        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(stf_pool_run(&p), 0);
        for (size_t i = 0; i < N; i++)
                ck_assert_uint_eq(x.ran[i], 1);
}
END_TEST

START_TEST(test_no_tasks)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = 0, .threads = 4, .task = task, .ctx = &x};

        ck_assert_int_eq(stf_pool_run(&p), 0);
}
END_TEST

/* The error is the lowest failing task's, and every task below it ran. */
START_TEST(test_first_error_as_serial)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = N, .threads = 4, .task = task, .ctx = &x};

        memset(&x, 0, sizeof(x));
        x.fail[300] = -EIO;
        x.fail[700] = -EINVAL;
        ck_assert_int_eq(stf_pool_run(&p), -EIO);
        for (size_t i = 0; i <= 300; i++)
                ck_assert_uint_eq(x.ran[i], 1);
}
END_TEST

START_TEST(test_keep_going)
{
        static struct ctx x;
        struct stf_pool p = {
            .ntasks = N, .threads = 3, .task = task, .keep_going = true, .ctx = &x};

        memset(&x, 0, sizeof(x));
        x.fail[900] = -EINVAL;
        x.fail[10] = -EIO;
        ck_assert_int_eq(stf_pool_run(&p), -EIO);
        for (size_t i = 0; i < N; i++)
                ck_assert_uint_eq(x.ran[i], 1);
}
END_TEST

START_TEST(test_stop)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = N, .threads = 2, .task = task, .ctx = &x};
        size_t ran = 0;

        memset(&x, 0, sizeof(x));
        x.p = &p;
        x.stop_at = 5;
        ck_assert_int_eq(stf_pool_run(&p), -ECANCELED);
        for (size_t i = 0; i < N; i++)
                ran += x.ran[i];
        ck_assert_uint_lt(ran, N);
        for (size_t i = 0; i <= 5; i++)
                ck_assert_uint_eq(x.ran[i], 1);
}
END_TEST

START_TEST(test_worker_hooks)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = N,
                             .threads = 4,
                             .task = task,
                             .worker_begin = begin,
                             .worker_end = end,
                             .ctx = &x};
        unsigned workers = 0;

        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(stf_pool_run(&p), 0);
        for (unsigned w = 0; w < 8; w++) {
                ck_assert_uint_le(x.begun[w], 1);
                ck_assert_uint_eq(x.begun[w], x.ended[w]);
                workers += x.begun[w];
        }
        ck_assert_uint_ge(workers, 1);
        ck_assert_uint_le(workers, 4);
        ck_assert_uint_eq(x.begun[0], 1);

        /* A failing begin: no task runs, its error comes back. */
        memset(&x, 0, sizeof(x));
        p = (struct stf_pool){.ntasks = N,
                              .threads = 4,
                              .task = task,
                              .worker_begin = begin,
                              .worker_end = end,
                              .ctx = &x}; /* a pool runs once */
        x.begin_ret = -ENODEV;
        ck_assert_int_eq(stf_pool_run(&p), -ENODEV);
        for (size_t i = 0; i < N; i++)
                ck_assert_uint_eq(x.ran[i], 0);
}
END_TEST

/*
 * A stop before the run is kept: nothing runs. (stf_pool_run used to reset
 * the flag when it started, so a cancel that came first was lost and every
 * task ran.)
 */
START_TEST(test_stop_before_run)
{
        static struct ctx x;
        struct stf_pool p = {.ntasks = N, .threads = 4, .task = task, .ctx = &x};

        memset(&x, 0, sizeof(x));
        stf_pool_stop(&p);
        ck_assert_int_eq(stf_pool_run(&p), -ECANCELED);
        for (size_t i = 0; i < N; i++)
                ck_assert_uint_eq(x.ran[i], 0);
}
END_TEST

static unsigned long many_ran; /* atomic */

static int fail_first(void *c, unsigned worker, size_t i)
{
        __atomic_fetch_add(&many_ran, 1, __ATOMIC_RELAXED);
        return i == 0 ? -EIO : 0;
}

/*
 * The first task fails: the others stop at once, each after at most the
 * task it had already taken, even while the pool is still starting
 * threads. (The failing worker used to wait for the pool's lock, held
 * while every thread was created, before it stopped the pool: the other
 * workers ran tens of thousands of tasks meanwhile.)
 */
START_TEST(test_failure_stops_at_once)
{
        struct stf_pool p = {.ntasks = 1000000, .threads = 64, .task = fail_first};

        many_ran = 0;
        ck_assert_int_eq(stf_pool_run(&p), -EIO);
        ck_assert_uint_lt(many_ran, 64 * 2 + 100);
}
END_TEST

static int slow_task(void *c, unsigned worker, size_t i)
{
        usleep(2000);
        return task(c, worker, i);
}

/* A ticking caller runs no task itself, and ticks while the workers work. */
START_TEST(test_tick)
{
        static struct ctx x;
        struct stf_pool p = {
            .ntasks = 100, .threads = 2, .task = slow_task, .tick = tick, .tick_ms = 5, .ctx = &x};

        memset(&x, 0, sizeof(x));
        ck_assert_int_eq(stf_pool_run(&p), 0);
        for (size_t i = 0; i < 100; i++)
                ck_assert_uint_eq(x.ran[i], 1);
        ck_assert_uint_ge(x.ticks, 1);
}
END_TEST

START_TEST(test_threads)
{
        ck_assert_uint_ge(stf_pool_threads(0), 1);
        ck_assert_uint_eq(stf_pool_threads(3), 3);
        ck_assert_uint_eq(stf_pool_threads(100000), STF_POOL_THREADS_MAX);
}
END_TEST

START_TEST(test_bytes)
{
        uint8_t b[8];

        stf_put_le64(b, 0x0102030405060708ull);
        ck_assert_uint_eq(b[0], 0x08);
        ck_assert_uint_eq(b[7], 0x01);
        ck_assert_uint_eq(stf_le64(b), 0x0102030405060708ull);
        ck_assert_uint_eq(stf_le32(b + 4), 0x01020304u);
        ck_assert_uint_eq(stf_le16(b + 1), 0x0607u);
        memset(b, 0xee, sizeof(b));
        stf_put_le(b, 0x12345, 2);
        ck_assert_uint_eq(b[0], 0x45);
        ck_assert_uint_eq(b[1], 0x23);
        ck_assert_uint_eq(b[2], 0xee);
}
END_TEST

static Suite *pool_suite(void)
{
        Suite *s = suite_create("pool");
        TCase *tc = tcase_create("pool");

        tcase_add_test(tc, test_every_task_once);
        tcase_add_test(tc, test_no_tasks);
        tcase_add_test(tc, test_first_error_as_serial);
        tcase_add_test(tc, test_keep_going);
        tcase_add_test(tc, test_stop);
        tcase_add_test(tc, test_stop_before_run);
        tcase_add_test(tc, test_failure_stops_at_once);
        tcase_add_test(tc, test_worker_hooks);
        tcase_add_test(tc, test_tick);
        tcase_add_test(tc, test_threads);
        tcase_add_test(tc, test_bytes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(pool_suite());
}
