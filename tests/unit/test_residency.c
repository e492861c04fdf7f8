/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/residency: the job table (ids, progress, cancel,
 * listing in the status document), what is resident where after a job,
 * the skip-resident filter, evict decisions, refusal reasons and the
 * counters. The host target is a fake backend that counts the bytes it is
 * given (and can be held at a gate); the CUDA target is core's real one,
 * which either fails cleanly (no driver) or holds the tensors.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>

#include "model.h"
#include "residency.h"
#include "tree.h"
#include "util.h"

/* One shard: a F32 [4,8] (128 B), b U8 [64], c U8 [16,16] (256 B). */
static const char json[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[0,128]},"
                           "\"b\":{\"dtype\":\"U8\",\"shape\":[64],\"data_offsets\":[128,192]},"
                           "\"c\":{\"dtype\":\"U8\",\"shape\":[16,16],\"data_offsets\":[192,448]}}";

static char *dir;
static struct stf_model *M;
static struct stf_tree *T;

struct fake {
        uint64_t bytes, chunks; /* atomic */
        uint64_t entered;       /* chunks begun, atomic */
        bool hold;              /* chunks wait while set */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint32_t dropped[8]; /* tensors given to drop(), in order */
        size_t ndropped;
};

static struct fake F;

static int fk_chunk(void *state, const struct stf_job_info *job, unsigned w,
                    const struct stf_chunk *c, char *msg, size_t cap)
{
        struct fake *f = state;

        __atomic_add_fetch(&f->entered, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&f->lock);
        while (f->hold)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
        __atomic_add_fetch(&f->bytes, c->width * c->height, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&f->chunks, 1, __ATOMIC_SEQ_CST);
        return 0;
}

static const struct stf_backend fake_host = {.chunk = fk_chunk};

static void release_gate(void)
{
        pthread_mutex_lock(&F.lock);
        F.hold = false;
        pthread_cond_broadcast(&F.cond);
        pthread_mutex_unlock(&F.lock);
}

static void drop(void *arg, uint32_t t)
{
        struct fake *f = arg;

        if (f->ndropped < 8)
                f->dropped[f->ndropped++] = t;
}

static void setup(void)
{
        struct stf_diag d = {{0}};
        size_t len;
        uint8_t *buf = ut_st_bytes(json, strlen(json), 448, 5, &len);
        char *path;

        dir = ut_mkdtemp();
        path = ut_printf("%s/m.safetensors", dir);
        ut_write_file(path, buf, len);
        free(buf);
        ck_assert_msg(stf_model_open(path, &M, &d) == 0, "%s", d.msg);
        free(path);
        ck_assert_int_eq(stf_tree_build_model(M, 0, &T, &d), 0);
        memset(&F, 0, sizeof(F));
        pthread_mutex_init(&F.lock, NULL);
        pthread_cond_init(&F.cond, NULL);
}

static void teardown(void)
{
        stf_tree_free(T);
        stf_model_close(M);
        ut_rmtree(dir);
        pthread_mutex_destroy(&F.lock);
        pthread_cond_destroy(&F.cond);
}

static struct stf_residency *new_residency(void)
{
        struct stf_residency *r = NULL;

        ck_assert_int_eq(stf_residency_new(M, T, &fake_host, &F, &r), 0);
        ck_assert_ptr_nonnull(r);
        return r;
}

/* Tensor index of @name. */
static uint32_t tensor(const char *name)
{
        for (uint32_t i = 0; i < M->ntensors; i++)
                if (!strcmp(M->tensors[i].name, name))
                        return i;
        ck_abort_msg("no tensor %s", name);
        return 0;
}

/* A host prefetch of @sel (and @slice_dim, -1: none); returns its id. */
static uint64_t prefetch(struct stf_residency *r, const char *sel, uint32_t target,
                         int32_t slice_dim)
{
        struct stf_prefetch_args a = {.target = target,
                                      .slice = {slice_dim, 0, 2},
                                      .selection = sel,
                                      .selection_cap = strlen(sel) + 1};
        char msg[256] = "";
        uint64_t id = 0;

        ck_assert_msg(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)) == 0, "%s", msg);
        ck_assert_uint_gt(id, 0);
        return id;
}

static struct stf_job_progress finished(struct stf_residency *r, uint64_t id)
{
        struct stf_job_progress p;

        ck_assert_int_eq(stf_residency_wait(r, id), 0);
        ck_assert_int_eq(stf_residency_progress(r, id, &p), 0);
        ck_assert_uint_eq(p.id, id);
        return p;
}

START_TEST(ids_in_order_and_unknown_ids)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;

        ck_assert_int_eq(stf_residency_progress(r, 1, &p), -ENOENT);
        ck_assert_uint_eq(prefetch(r, "a", STF_TARGET_HOST, -1), 1);
        ck_assert_uint_eq(prefetch(r, "b", STF_TARGET_HOST, -1), 2);
        ck_assert_uint_eq(prefetch(r, "c", STF_TARGET_HOST, -1), 3);
        for (uint64_t id = 1; id <= 3; id++) {
                p = finished(r, id);
                ck_assert_uint_eq(p.state, STF_JOB_DONE);
                ck_assert_uint_eq(p.tensors, 1);
                ck_assert_uint_eq(p.bytes_done, p.bytes_total);
        }
        ck_assert_uint_eq(finished(r, 3).bytes_total, 256);
        ck_assert_int_eq(stf_residency_progress(r, 0, &p), -ENOENT);
        ck_assert_int_eq(stf_residency_progress(r, 4, &p), -ENOENT);
        ck_assert_int_eq(stf_residency_cancel(r, 4), -ENOENT);
        ck_assert_int_eq(stf_residency_wait(r, 0), -ENOENT);
        ck_assert_int_eq(stf_residency_cancel(r, 1), 0); /* finished: nothing changes */
        ck_assert_uint_eq(finished(r, 1).state, STF_JOB_DONE);
        ck_assert_uint_eq(F.bytes, 128 + 64 + 256);
        stf_residency_free(r);
        stf_residency_free(NULL);
}
END_TEST

START_TEST(host_resident_is_skipped)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;

        ck_assert(!stf_residency_on_host(r, tensor("a")));
        finished(r, prefetch(r, "a b", STF_TARGET_HOST, -1));
        ck_assert(stf_residency_on_host(r, tensor("a")));
        ck_assert(stf_residency_on_host(r, tensor("b")));
        ck_assert(!stf_residency_on_host(r, tensor("c")));
        ck_assert(!stf_residency_on_cuda(r, tensor("a"), 0));
        ck_assert(!stf_residency_on_host(r, M->ntensors)); /* out of range */
        /* asking again moves only what is missing */
        F.bytes = 0;
        p = finished(r, prefetch(r, "", STF_TARGET_HOST, -1));
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        ck_assert_uint_eq(p.tensors, 1);
        ck_assert_uint_eq(p.bytes_total, 256);
        ck_assert_uint_eq(F.bytes, 256);
        /* all resident: an empty job, nothing moved */
        F.bytes = 0;
        p = finished(r, prefetch(r, "", STF_TARGET_HOST, -1));
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        ck_assert_uint_eq(p.tensors, 0);
        ck_assert_uint_eq(F.bytes, 0);
        stf_residency_free(r);
}
END_TEST

START_TEST(a_slice_is_not_resident)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;

        p = finished(r, prefetch(r, "c", STF_TARGET_HOST, 0));
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        ck_assert_uint_eq(p.bytes_total, 128); /* half of c's rows */
        ck_assert(!stf_residency_on_host(r, tensor("c")));
        /* so the whole tensor is still moved */
        p = finished(r, prefetch(r, "c", STF_TARGET_HOST, -1));
        ck_assert_uint_eq(p.bytes_total, 256);
        ck_assert(stf_residency_on_host(r, tensor("c")));
        stf_residency_free(r);
}
END_TEST

START_TEST(malformed_requests_leave_no_trace)
{
        static const struct {
                uint32_t target, threads;
                int32_t device, dim;
                uint32_t rank, world, staging;
        } bad[] = {
            {2, 0, 0, -1, 0, 0, 0},
            {0, STF_THREADS_MAX + 1, 0, -1, 0, 0, 0},
            {0, 0, 0, -2, 0, 0, 0},
            {STF_TARGET_CUDA, 0, -1, -1, 0, 0, 0},
            {0, 0, 0, 0, 0, 3, 0}, /* 4 rows of a do not divide by 3 */
            {0, 0, 0, 0, 2, 2, 0},
            {0, 0, 0, -1, 0, 0, 1},               /* staging on a host job */
            {STF_TARGET_CUDA, 0, 0, -1, 0, 0, 3}, /* no such staging */
        };
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        char msg[256];
        uint64_t id = 99;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct stf_prefetch_args a = {.target = bad[i].target,
                                              .device = bad[i].device,
                                              .threads = bad[i].threads,
                                              .staging = bad[i].staging,
                                              .slice = {bad[i].dim, bad[i].rank, bad[i].world},
                                              .selection = "a",
                                              .selection_cap = 2};

                msg[0] = '\0';
                ck_assert_int_eq(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)), -EINVAL);
                ck_assert_msg(msg[0], "case %zu has no reason", i);
        }
        {
                struct stf_prefetch_args a = {.selection = "nothing.here", .selection_cap = 13};

                ck_assert_int_eq(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)), -ENOENT);
                ck_assert_str_eq(msg, "the selection matches no tensor");
                a.selection_cap = 3; /* not terminated */
                ck_assert_int_eq(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)), -EINVAL);
        }
        ck_assert_uint_eq(id, 99);
        ck_assert_int_eq(stf_residency_progress(r, 1, &p), -ENOENT);
        ck_assert_uint_eq(F.chunks, 0);
        ck_assert_uint_eq(prefetch(r, "a", STF_TARGET_HOST, -1), 1); /* ids start at 1 still */
        stf_residency_free(r);
}
END_TEST

START_TEST(evict_host)
{
        struct stf_residency *r = new_residency();
        uint64_t count = 99;
        char msg[256] = "";

        finished(r, prefetch(r, "a c", STF_TARGET_HOST, -1));
        ck_assert_int_eq(stf_residency_evict(r, STF_TARGET_HOST, 0, "a b", 4, drop, &F, &count, msg,
                                             sizeof(msg)),
                         0);
        ck_assert_uint_eq(count, 1); /* b was not resident */
        ck_assert_uint_eq(F.ndropped, 2);
        ck_assert_uint_eq(F.dropped[0], tensor("a"));
        ck_assert_uint_eq(F.dropped[1], tensor("b"));
        ck_assert(!stf_residency_on_host(r, tensor("a")));
        ck_assert(stf_residency_on_host(r, tensor("c")));
        /* evicted: moved again */
        ck_assert_uint_eq(finished(r, prefetch(r, "a c", STF_TARGET_HOST, -1)).bytes_total, 128);
        /* evicting twice counts nothing the second time */
        ck_assert_int_eq(
            stf_residency_evict(r, STF_TARGET_HOST, 0, "c", 2, NULL, NULL, &count, msg, 256), 0);
        ck_assert_uint_eq(count, 1);
        ck_assert_int_eq(
            stf_residency_evict(r, STF_TARGET_HOST, 0, "c", 2, NULL, NULL, &count, msg, 256), 0);
        ck_assert_uint_eq(count, 0);
        /* errors */
        ck_assert_int_eq(stf_residency_evict(r, 7, 0, "c", 2, NULL, NULL, &count, msg, 256),
                         -EINVAL);
        ck_assert_int_eq(stf_residency_evict(r, 0, 0, "zz", 3, NULL, NULL, &count, msg, 256),
                         -ENOENT);
        ck_assert_str_eq(msg, "the selection matches no tensor");
        /* nothing on a GPU: nothing evicted there */
        ck_assert_int_eq(
            stf_residency_evict(r, STF_TARGET_CUDA, 0, "", 1, NULL, NULL, &count, msg, 256), 0);
        ck_assert_uint_eq(count, 0);
        stf_residency_free(r);
}
END_TEST

/*
 * The CUDA target: with no driver the job fails with a reason and nothing
 * is resident; with a device the tensors are held, skipped when asked
 * again, and given back by evict.
 */
START_TEST(cuda_target)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        uint64_t count;
        char buf[512], msg[256];

        p = finished(r, prefetch(r, "a b", STF_TARGET_CUDA, -1));
        ck_assert_uint_eq(p.target, STF_TARGET_CUDA);
        ck_assert_int_eq(stf_residency_cuda_xattr(r, tensor("c"), buf, sizeof(buf)), -ENODATA);
        if (p.state == STF_JOB_FAILED) {
                ut_assert_has(p.message, "cuda:0: ");
                ck_assert_int_lt(p.error, 0);
                ck_assert(!stf_residency_on_cuda(r, tensor("a"), 0));
                ck_assert_int_eq(stf_residency_cuda_xattr(r, tensor("a"), buf, sizeof(buf)),
                                 -ENODATA);
                /* a failed job holds nothing: asked again, it is tried again */
                ck_assert_uint_eq(finished(r, prefetch(r, "a", STF_TARGET_CUDA, -1)).tensors, 1);
                stf_residency_free(r);
                return;
        }
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        ck_assert(stf_residency_on_cuda(r, tensor("a"), 0));
        ck_assert(!stf_residency_on_cuda(r, tensor("a"), 1));
        ck_assert_int_gt(stf_residency_cuda_xattr(r, tensor("b"), buf, sizeof(buf)), 0);
        ut_assert_has(buf, "device=0 handle=");
        ut_assert_has(buf, "size=64 ");
        ck_assert_uint_eq(finished(r, prefetch(r, "a b c", STF_TARGET_CUDA, -1)).tensors, 1);
        ck_assert_int_eq(stf_residency_evict(r, STF_TARGET_CUDA, 0, "a b", 4, NULL, NULL, &count,
                                             msg, sizeof(msg)),
                         0);
        ck_assert_uint_eq(count, 2);
        ck_assert(!stf_residency_on_cuda(r, tensor("a"), 0));
        ck_assert_int_eq(stf_residency_cuda_xattr(r, tensor("a"), buf, sizeof(buf)), -ENODATA);
        ck_assert(stf_residency_on_cuda(r, tensor("c"), 0));
        stf_residency_free(r);
}
END_TEST

START_TEST(cancel_all_and_free_running)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        uint64_t id;

        F.hold = true;
        id = prefetch(r, "", STF_TARGET_HOST, -1);
        ck_assert_int_eq(stf_residency_progress(r, id, &p), 0);
        ck_assert_uint_eq(p.state, STF_JOB_RUNNING);
        ck_assert(stf_residency_cancel_all(r)); /* still running: held */
        release_gate();
        p = finished(r, id);
        ck_assert_msg(p.state == STF_JOB_CANCELLED || p.state == STF_JOB_DONE, "state %u", p.state);
        ck_assert(!stf_residency_cancel_all(r));
        /* a cancelled job is not resident unless every chunk moved */
        ck_assert_uint_eq(stf_residency_on_host(r, tensor("a")), p.state == STF_JOB_DONE);
        /* freeing right after a start cancels and waits for the job */
        F.hold = true;
        prefetch(r, "c", STF_TARGET_HOST, -1);
        release_gate();
        stf_residency_free(r);
}
END_TEST

START_TEST(status_document)
{
        struct stf_residency *r = new_residency();
        json_error_t err;
        json_t *doc, *jobs, *j;
        size_t len;
        char *text;

        finished(r, prefetch(r, "a\nb", STF_TARGET_HOST, -1));
        finished(r, prefetch(r, "c", STF_TARGET_CUDA, -1));
        stf_residency_count(r, STF_COUNT_READ_REQUESTS, 3);
        stf_residency_count(r, STF_COUNT_READ_BYTES, 4096);
        stf_residency_count(r, STF_COUNT_PUSHED_CHUNKS, 2);
        stf_residency_count(r, STF_COUNT_PUSHED_BYTES, 7);
        text = stf_residency_status_json(r, NULL, &len);
        ck_assert_ptr_nonnull(text);
        ck_assert_uint_eq(strlen(text), len);
        doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
        ck_assert_msg(doc != NULL, "%s: %s", err.text, text);
        jobs = json_object_get(doc, "jobs");
        ck_assert_uint_eq(json_array_size(jobs), 2);
        j = json_array_get(jobs, 0);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(j, "selection")), "a\nb");
        ck_assert_str_eq(json_string_value(json_object_get(j, "target")), "host");
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "done");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "bytes_done")), 192);
        ck_assert(json_is_null(json_object_get(j, "error")));
        j = json_array_get(jobs, 1);
        ck_assert_str_eq(json_string_value(json_object_get(j, "target")), "cuda:0");
        if (!strcmp(json_string_value(json_object_get(j, "state")), "failed"))
                ck_assert(json_is_string(json_object_get(j, "error")));
        j = json_object_get(doc, "counters");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "read_requests")), 3);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "read_bytes")), 4096);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "pushed_chunks")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "pushed_bytes")), 7);
        json_decref(doc);
        free(text);
        stf_residency_free(r);
}
END_TEST

START_TEST(refusal_reasons)
{
        struct stf_residency *r = new_residency();
        uint32_t request = 0;
        int err = 0;
        char msg[256];

        ck_assert_int_eq(stf_residency_reason(r, 5, &request, &err, msg, sizeof(msg)), -ENOENT);
        stf_residency_refused(r, 5, 1, -EINVAL, "first");
        stf_residency_refused(r, 6, 4, -ENOENT, NULL);
        stf_residency_refused(r, 5, 2, -ENOENT, "second");
        ck_assert_int_eq(stf_residency_reason(r, 5, &request, &err, msg, sizeof(msg)), 0);
        ck_assert_uint_eq(request, 2);
        ck_assert_int_eq(err, -ENOENT);
        ck_assert_str_eq(msg, "second");
        ck_assert_int_eq(stf_residency_reason(r, 6, &request, &err, msg, sizeof(msg)), 0);
        ck_assert_uint_eq(request, 4);
        ck_assert_str_eq(msg, strerror(ENOENT)); /* no message: the errno's text */
        /* bounded: the oldest requester is forgotten first */
        for (uint64_t q = 100; q < 100 + STF_REFUSALS_MAX - 1; q++)
                stf_residency_refused(r, q, 1, -EINVAL, "x");
        ck_assert_int_eq(stf_residency_reason(r, 6, &request, &err, msg, sizeof(msg)), -ENOENT);
        ck_assert_int_eq(stf_residency_reason(r, 5, &request, &err, msg, sizeof(msg)), 0);
        ck_assert_int_eq(stf_residency_reason(r, 100, &request, &err, msg, sizeof(msg)), 0);
        stf_residency_free(r);
}
END_TEST

/* A host prefetch of @sel on @threads workers: its result, *@id, @msg. */
static int try_prefetch(struct stf_residency *r, const char *sel, unsigned threads, uint64_t *id,
                        char *msg, size_t cap)
{
        struct stf_prefetch_args a = {.target = STF_TARGET_HOST,
                                      .threads = threads,
                                      .slice = {-1, 0, 0},
                                      .selection = sel,
                                      .selection_cap = strlen(sel) + 1};

        msg[0] = '\0';
        return stf_residency_prefetch(r, &a, id, msg, cap);
}

/* Jobs in the status document. */
static size_t listed(struct stf_residency *r)
{
        size_t len, n;
        char *text = stf_residency_status_json(r, NULL, &len);
        json_t *doc = json_loads(text, 0, NULL);

        ck_assert_ptr_nonnull(doc);
        n = json_array_size(json_object_get(doc, "jobs"));
        json_decref(doc);
        free(text);
        return n;
}

START_TEST(live_jobs_are_bounded)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        uint64_t id = 0, first = 0;
        char msg[256];

        F.hold = true; /* every job stays running until the gate opens */
        for (int i = 0; i < STF_JOBS_LIVE_MAX; i++) {
                ck_assert_int_eq(try_prefetch(r, "a", 1, &id, msg, sizeof(msg)), 0);
                first = first ? first : id;
        }
        ck_assert_int_eq(try_prefetch(r, "a", 1, &id, msg, sizeof(msg)), -EBUSY);
        ck_assert_str_eq(msg, "too many prefetch jobs running (64 at most): wait for one to end "
                              "or cancel one");
        ck_assert_uint_eq(listed(r), STF_JOBS_LIVE_MAX); /* the refusal left no trace */
        ck_assert(stf_residency_cancel_all(r));
        release_gate();
        while (stf_residency_cancel_all(r))
                usleep(1000);
        /* jobs that ended leave room for as many again */
        F.hold = true;
        for (int i = 0; i < STF_JOBS_LIVE_MAX; i++)
                ck_assert_int_eq(try_prefetch(r, "b", 1, &id, msg, sizeof(msg)), 0);
        ck_assert_uint_eq(id, first + 2 * STF_JOBS_LIVE_MAX - 1);
        ck_assert_int_eq(try_prefetch(r, "b", 1, &id, msg, sizeof(msg)), -EBUSY);
        ck_assert(stf_residency_cancel_all(r));
        release_gate();
        while (stf_residency_cancel_all(r))
                usleep(1000);
        /* worker threads: 4 jobs of 64 fill them, a 5th of one is refused */
        F.hold = true;
        for (int i = 0; i < STF_JOBS_WORKERS_MAX / 64; i++)
                ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 1, &id, msg, sizeof(msg)), -EBUSY);
        ck_assert_ptr_nonnull(strstr(msg, "worker threads"));
        release_gate();
        ck_assert_int_eq(stf_residency_wait(r, id), 0);
        ck_assert_int_eq(stf_residency_progress(r, id, &p), 0);
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        stf_residency_free(r);
}
END_TEST

/*
 * Cancelled jobs whose chunks wait (the gate, as a stalled source): once
 * given up on they read as cancelled and leave the live-job bound, so a
 * new job starts; their threads still count against the worker bound
 * until they come back, then the room is there again.
 */
START_TEST(stuck_cancelled_jobs_keep_their_threads)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        uint64_t ids[STF_JOBS_LIVE_MAX], id = 0;
        char msg[256];

        F.hold = true;
        for (int i = 0; i < STF_JOBS_LIVE_MAX; i++)
                ck_assert_int_eq(try_prefetch(r, "a", 1, &ids[i], msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "a", 1, &id, msg, sizeof(msg)), -EBUSY);
        while (__atomic_load_n(&F.entered, __ATOMIC_SEQ_CST) < STF_JOBS_LIVE_MAX)
                usleep(1000); /* every job waits in its chunk */
        for (int i = 0; i < STF_JOBS_LIVE_MAX; i++)
                ck_assert_int_eq(stf_residency_cancel(r, ids[i]), 0);
        for (int i = 0; i < STF_JOBS_LIVE_MAX; i++) {
                ck_assert_int_eq(stf_residency_wait(r, ids[i]), 0); /* the grace */
                ck_assert_int_eq(stf_residency_progress(r, ids[i], &p), 0);
                ck_assert_uint_eq(p.state, STF_JOB_CANCELLED);
        }
        /* 64 stuck threads: one more job, then two of 64 threads fit, a third not */
        ck_assert_int_eq(try_prefetch(r, "b", 1, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), -EBUSY);
        ck_assert_ptr_nonnull(strstr(msg, "worker threads"));
        ck_assert(stf_residency_cancel_all(r));
        release_gate();
        while (stf_residency_cancel_all(r))
                usleep(1000);
        /* every thread back: the room is there again, and they stay cancelled */
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(try_prefetch(r, "c", 64, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(stf_residency_progress(r, ids[0], &p), 0);
        ck_assert_uint_eq(p.state, STF_JOB_CANCELLED);
        ck_assert_uint_eq(stf_residency_wait(r, id), 0);
        ck_assert_int_eq(stf_residency_progress(r, id, &p), 0);
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        stf_residency_free(r);
}
END_TEST

START_TEST(finished_jobs_are_forgotten_oldest_first)
{
        struct stf_residency *r = new_residency();
        struct stf_job_progress p;
        uint64_t id = 0, n = STF_JOBS_KEPT + 100;
        char msg[256];

        for (uint64_t i = 1; i <= n; i++) {
                ck_assert_int_eq(try_prefetch(r, "c", 1, &id, msg, sizeof(msg)), 0);
                ck_assert_uint_eq(id, i);
                ck_assert_int_eq(stf_residency_wait(r, id), 0);
        }
        ck_assert_uint_eq(listed(r), STF_JOBS_KEPT);
        ck_assert_int_eq(stf_residency_progress(r, n - STF_JOBS_KEPT, &p), -ENOENT);
        ck_assert_int_eq(stf_residency_cancel(r, 1), -ENOENT);
        ck_assert_int_eq(stf_residency_wait(r, 1), -ENOENT);
        /* a record answers as the job did */
        ck_assert_int_eq(stf_residency_progress(r, n - STF_JOBS_KEPT + 1, &p), 0);
        ck_assert_uint_eq(p.id, n - STF_JOBS_KEPT + 1);
        ck_assert_uint_eq(p.state, STF_JOB_DONE);
        ck_assert_int_eq(stf_residency_cancel(r, n), 0);
        ck_assert_int_eq(stf_residency_wait(r, n), 0);
        ck_assert_uint_eq(F.bytes, 256); /* c was resident after the first */
        stf_residency_free(r);
}
END_TEST

START_TEST(pinned_staging_is_bounded)
{
        struct stf_residency *r = new_residency();
        struct stf_prefetch_args a = {.target = STF_TARGET_CUDA,
                                      .threads = 64,
                                      .chunk = 8 << 20,
                                      .slice = {-1, 0, 0},
                                      .selection = "",
                                      .selection_cap = 1};
        char msg[256] = "";
        uint64_t id = 0;

        ck_assert_int_eq(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)), -EINVAL);
        ck_assert_str_eq(msg, "64 threads of 8388608-byte chunks would pin 1536 MiB of staging "
                              "(3 x threads x chunk), more than 1024 MiB: ask for smaller "
                              "chunks or fewer threads");
        ck_assert_uint_eq(listed(r), 0);
        /* the host target pins nothing */
        a.target = STF_TARGET_HOST;
        ck_assert_int_eq(stf_residency_prefetch(r, &a, &id, msg, sizeof(msg)), 0);
        ck_assert_int_eq(stf_residency_wait(r, id), 0);
        stf_residency_free(r);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("residency");
        TCase *tc = tcase_create("residency");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, ids_in_order_and_unknown_ids);
        tcase_add_test(tc, host_resident_is_skipped);
        tcase_add_test(tc, a_slice_is_not_resident);
        tcase_add_test(tc, malformed_requests_leave_no_trace);
        tcase_add_test(tc, evict_host);
        tcase_add_test(tc, cuda_target);
        tcase_add_test(tc, cancel_all_and_free_running);
        tcase_add_test(tc, status_document);
        tcase_add_test(tc, refusal_reasons);
        tcase_add_test(tc, live_jobs_are_bounded);
        tcase_add_test(tc, stuck_cancelled_jobs_keep_their_threads);
        tcase_add_test(tc, finished_jobs_are_forgotten_oldest_first);
        tcase_add_test(tc, pinned_staging_is_bounded);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(suite());
}
