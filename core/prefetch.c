/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prefetch scheduling. A job is one thread that runs the chunks as the
 * tasks of a core/pool run of @threads workers (itself one of them); the
 * pool hands out chunk indices in order, so chunks go in layout order
 * (shard, then offset) and reads of a shard stay mostly sequential across
 * workers. Cancellation (stf_pool_stop, from any thread, before or during
 * the run) and the first error (the pool stops itself) end the handing out
 * of chunks before each worker's next one; progress is counted per chunk
 * here.
 *
 * A cancelled job whose chunks in flight wait on a stalled source (a page
 * fault or pread that only the source can end) is given up on after
 * STF_JOB_CANCEL_GRACE_MS: it reads as ended (cancelled) from then on, to
 * stf_job_progress, stf_job_ended and stf_job_wait, while its threads are
 * left to come back when the source answers. "Ended" (what a user sees)
 * and "finished" (the job's thread past its last use of the job: workers
 * back, backend end() and on_end run) are two flags; everything that frees
 * what the workers use - the backend's state (stf_job_release), the plan,
 * the job itself (stf_job_free) - waits for "finished", never for "ended".
 * The owner's reference to the job is the only one: it frees the job once
 * finished, and that is when the last worker has returned.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "pool.h"
#include "prefetch.h"

uint64_t stf_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void stf_plan_free(struct stf_plan *p)
{
        if (!p)
                return;
        free(p->chunks);
        free(p->tensors);
        free(p->tensor_dst);
        free(p->tensor_size);
        free(p);
}

static int push(struct stf_plan *p, size_t *cap, struct stf_chunk c)
{
        if (p->nchunks == *cap) {
                size_t ncap = *cap ? *cap * 2 : 256;
                struct stf_chunk *nc = realloc(p->chunks, ncap * sizeof(*nc));

                if (!nc)
                        return -ENOMEM;
                p->chunks = nc;
                *cap = ncap;
        }
        p->chunks[p->nchunks++] = c;
        return 0;
}

/* Row bytes [@off, @off + @width) of tensor @t as pieces of at most @chunk, to @dst. */
static int push_row(struct stf_plan *p, size_t *cap, uint32_t tensor, const struct stf_tensor *t,
                    uint64_t off, uint64_t width, uint64_t dst, uint64_t chunk)
{
        for (uint64_t o = 0; o < width; o += chunk) {
                uint64_t w = width - o < chunk ? width - o : chunk;
                int ret = push(p, cap,
                               (struct stf_chunk){tensor, t->shard, t->begin + off + o, w, 1, w,
                                                  dst + o, off + o});

                if (ret)
                        return ret;
        }
        return 0;
}

/* The row geometry of tensor @t under @slice: whole when not sliced. */
static int geometry(const struct stf_tensor *t, const struct stf_slice *s, uint64_t *first,
                    uint64_t *width, uint64_t *height, uint64_t *pitch, char *msg, size_t cap)
{
        const struct stf_dtype_info *info = stf_dtype_info(t->dtype);
        uint64_t outer = 1, inner_bits = info->bits, part;
        uint32_t d;

        *first = 0;
        *width = t->size;
        *height = 1;
        *pitch = t->size;
        if (!s || s->dim < 0 || (uint32_t)s->dim >= t->rank || t->size == 0)
                return 0;
        d = (uint32_t)s->dim;
        if (t->shape[d] % s->world) {
                snprintf(msg, cap, "tensor '%.80s': dim %u (%" PRIu64 ") does not divide by %u",
                         t->name, d, t->shape[d], s->world);
                return -EINVAL;
        }
        for (uint32_t i = 0; i < d; i++)
                outer *= t->shape[i];
        for (uint32_t i = d + 1; i < t->rank; i++)
                inner_bits *= t->shape[i];
        part = t->shape[d] / s->world;
        if ((part * inner_bits) % 8) {
                snprintf(msg, cap, "tensor '%.80s': a slice row is not a whole number of bytes",
                         t->name);
                return -EINVAL;
        }
        *width = part * inner_bits / 8;
        *pitch = t->shape[d] * inner_bits / 8;
        *first = (uint64_t)s->rank * *width;
        *height = outer;
        return 0;
}

int stf_plan_build(const struct stf_model *m, const uint32_t *tensors, size_t n,
                   const struct stf_slice *slice, uint64_t chunk, struct stf_plan **out, char *msg,
                   size_t msgcap)
{
        struct stf_plan *p;
        size_t cap = 0;
        int ret = 0;

        *out = NULL;
        if (chunk == 0)
                chunk = STF_CHUNK_DEFAULT;
        if (slice && slice->dim >= 0 && (slice->world == 0 || slice->rank >= slice->world)) {
                snprintf(msg, msgcap, "slice rank %u is not below world size %u", slice->rank,
                         slice->world);
                return -EINVAL;
        }
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->ntensors = n;
        p->tensors = malloc((n ? n : 1) * sizeof(*p->tensors));
        p->tensor_dst = malloc((n ? n : 1) * sizeof(*p->tensor_dst));
        p->tensor_size = malloc((n ? n : 1) * sizeof(*p->tensor_size));
        if (!p->tensors || !p->tensor_dst || !p->tensor_size) {
                ret = -ENOMEM;
                goto fail;
        }
        if (n) /* @tensors may be NULL then */
                memcpy(p->tensors, tensors, n * sizeof(*tensors));
        for (size_t i = 0; i < n; i++) {
                const struct stf_tensor *t = &m->tensors[tensors[i]];
                uint64_t first, width, height, pitch, rows_per;

                ret = geometry(t, slice, &first, &width, &height, &pitch, msg, msgcap);
                if (ret)
                        goto fail;
                /* destinations 256-byte aligned, as device allocations like */
                p->total = (p->total + 255) & ~(uint64_t)255;
                p->tensor_dst[i] = p->total;
                p->tensor_size[i] = width * height;
                if (height == 1 || width > chunk) {
                        /* contiguous pieces of at most @chunk bytes, row by row */
                        for (uint64_t r = 0; r < height && !ret; r++)
                                ret = push_row(p, &cap, tensors[i], t, r * pitch + first, width,
                                               p->total + r * width, chunk);
                        if (ret)
                                goto fail;
                } else {
                        /* rows per chunk by source span: a backend may read it whole */
                        rows_per = pitch >= chunk ? 1 : chunk / pitch;
                        for (uint64_t r = 0; r < height; r += rows_per) {
                                uint64_t h = height - r < rows_per ? height - r : rows_per;

                                ret = push(p, &cap,
                                           (struct stf_chunk){tensors[i], t->shard,
                                                              t->begin + r * pitch + first, width,
                                                              h, pitch, p->total + r * width,
                                                              r * pitch + first});
                                if (ret)
                                        goto fail;
                        }
                }
                p->total += width * height;
        }
        *out = p;
        return 0;
fail:
        stf_plan_free(p);
        return ret;
}

struct stf_job {
        struct stf_job_info info;
        uint64_t id;
        char *selection;
        struct stf_plan *plan;
        const struct stf_backend *backend;
        void *state; /* the backend's, from begin() */
        stf_job_end_fn on_end;
        void *on_end_arg;

        pthread_mutex_t lock; /* guards everything below */
        uint32_t state_now;
        int error;
        char message[STF_JOB_MESSAGE_MAX];
        uint64_t bytes_done;
        uint64_t t_start_ns, t_end_ns;
        bool released;
        size_t chunks_done;
        struct stf_pool pool; /* the workers; stf_job_cancel stops it */
        /* for its callers: finished, or given up on after a cancel (ended
         * while not finished: it stays cancelled, whatever comes back) */
        bool ended;
        bool finished;       /* job_run is past its last use of the job */
        bool pool_done;      /* every worker is back: no more giving up */
        uint64_t cancel_ns;  /* first stf_job_cancel; 0: none */
        pthread_cond_t done; /* signalled when ended or finished turns true, and on cancel */
        pthread_t thread;
        bool joinable;
        uint64_t bytes_total; /* tensor bytes, without alignment padding */
};

#define GRACE_NS ((uint64_t)STF_JOB_CANCEL_GRACE_MS * 1000000u)

/*
 * Under lock: give up on a job cancelled GRACE_NS ago whose workers are
 * not all back (stuck on the source). It reads as cancelled from now on.
 */
static void settle(struct stf_job *job)
{
        uint64_t now;

        if (job->ended || job->pool_done || !job->cancel_ns)
                return;
        now = stf_now_ns();
        if (now - job->cancel_ns < GRACE_NS)
                return;
        job->ended = true;
        job->state_now = STF_JOB_CANCELLED;
        job->t_end_ns = now;
        pthread_cond_broadcast(&job->done);
}

static void set_error(struct stf_job *job, int err, const char *msg)
{
        pthread_mutex_lock(&job->lock);
        if (!job->error) {
                job->error = err;
                snprintf(job->message, sizeof(job->message), "%s",
                         msg && *msg ? msg : strerror(-err));
        }
        pthread_mutex_unlock(&job->lock);
}

/* Pool task @i: move chunk @i, then count it. */
static int chunk_task(void *ctx, unsigned worker, size_t i)
{
        struct stf_job *job = ctx;
        const struct stf_chunk *c = &job->plan->chunks[i];
        char msg[STF_JOB_MESSAGE_MAX] = "";
        int ret;

        ret = job->backend->chunk(job->state, &job->info, worker, c, msg, sizeof(msg));
        if (ret) {
                set_error(job, ret, msg); /* the pool stops the others */
                return ret;
        }
        pthread_mutex_lock(&job->lock);
        if (!job->ended) /* given up on: its progress was final then */
                job->bytes_done += c->width * c->height;
        job->chunks_done++;
        pthread_mutex_unlock(&job->lock);
        return 0;
}

static int pool_worker_end(void *ctx, unsigned worker)
{
        struct stf_job *job = ctx;
        char msg[STF_JOB_MESSAGE_MAX] = "";
        int ret = 0;

        if (job->backend->worker_end)
                ret = job->backend->worker_end(job->state, &job->info, worker, msg, sizeof(msg));
        if (ret)
                set_error(job, ret, msg);
        return ret;
}

/*
 * A backend's worker_end runs even when its worker_begin failed (it frees
 * what begin had set up), while the pool skips a failed worker's end: so
 * call it here.
 */
static int pool_worker_begin(void *ctx, unsigned worker)
{
        struct stf_job *job = ctx;
        char msg[STF_JOB_MESSAGE_MAX] = "";
        int ret = 0;

        prctl(PR_SET_NAME, STF_JOB_THREAD_NAME); /* for ps, top and the tests */

        if (job->backend->worker_begin)
                ret = job->backend->worker_begin(job->state, &job->info, worker, msg, sizeof(msg));
        if (ret) {
                set_error(job, ret, msg);
                pool_worker_end(ctx, worker);
        }
        return ret;
}

/* The outcome so far: 0 (every chunk moved), -ECANCELED or the first error. */
static int outcome(struct stf_job *job)
{
        int ret;

        pthread_mutex_lock(&job->lock);
        if (job->error)
                ret = job->error;
        else if (job->chunks_done < job->plan->nchunks)
                ret = -ECANCELED;
        else
                ret = 0;
        pthread_mutex_unlock(&job->lock);
        return ret;
}

static void *job_run(void *arg)
{
        struct stf_job *job = arg;
        const struct stf_backend *be = job->backend;
        char msg[STF_JOB_MESSAGE_MAX] = "";
        int ret = 0;

        if (be->begin)
                ret = be->begin(job->state, &job->info, &job->state, msg, sizeof(msg));
        if (ret)
                set_error(job, ret, msg);
        else
                stf_pool_run(&job->pool); /* errors are in job->error already */
        pthread_mutex_lock(&job->lock);
        job->pool_done = true;
        ret = job->ended ? -ECANCELED : 0; /* ended before finished: given up on */
        pthread_mutex_unlock(&job->lock);
        /* a job given up on stays cancelled, whatever its workers did */
        ret = ret ? ret : outcome(job);
        if (be->end) {
                msg[0] = '\0';
                int err = be->end(job->state, &job->info, ret, msg, sizeof(msg));

                if (err) {
                        set_error(job, err, msg);
                        ret = outcome(job);
                }
        }
        /*
         * The chunk list is the bulk of a plan (64 bytes per chunk: 4 MiB
         * for 300 MB in 4 KiB chunks) and nothing reads it once the workers
         * are gone, while jobs are kept until unmount for their status:
         * free it now, or every prefetch would hold on to it. nchunks stays.
         */
        free(job->plan->chunks);
        job->plan->chunks = NULL;
        if (job->on_end)
                job->on_end(job->on_end_arg, job, ret);
        pthread_mutex_lock(&job->lock);
        if (!job->ended) {
                job->t_end_ns = stf_now_ns();
                job->state_now = ret == 0                           ? STF_JOB_DONE
                                 : ret == -ECANCELED && !job->error ? STF_JOB_CANCELLED
                                                                    : STF_JOB_FAILED;
        }
        job->ended = true;
        job->finished = true;
        pthread_cond_broadcast(&job->done);
        pthread_mutex_unlock(&job->lock);
        return NULL;
}

/* A condition variable on CLOCK_MONOTONIC, the clock of stf_now_ns. */
static void init_cond(pthread_cond_t *c)
{
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(c, &ca);
        pthread_condattr_destroy(&ca);
}

int stf_job_start(const struct stf_model *m, struct stf_plan *plan, const struct stf_backend *be,
                  void *be_ctx, const struct stf_job_params *params, struct stf_job **out)
{
        struct stf_job *job = calloc(1, sizeof(*job));
        unsigned threads = params->threads ? params->threads : STF_THREADS_DEFAULT;

        *out = NULL;
        if (!job) {
                stf_plan_free(plan);
                return -ENOMEM;
        }
        job->selection = strdup(params->selection ? params->selection : "");
        if (!job->selection) {
                free(job);
                stf_plan_free(plan);
                return -ENOMEM;
        }
        pthread_mutex_init(&job->lock, NULL);
        init_cond(&job->done);
        /*
         * Progress counts tensor bytes; plan->total also counts the padding
         * that aligns each tensor in the destination, which no chunk moves,
         * so a finished job would never reach it.
         */
        for (size_t i = 0; i < plan->ntensors; i++)
                job->bytes_total += plan->tensor_size[i];
        job->info = (struct stf_job_info){m, plan, params->target, params->device,
                                          threads < STF_THREADS_MAX ? threads : STF_THREADS_MAX};
        job->id = params->id;
        job->plan = plan;
        job->backend = be;
        job->state = be_ctx;
        job->released = !be->release;
        job->on_end = params->on_end;
        job->on_end_arg = params->on_end_arg;
        job->pool = (struct stf_pool){.ntasks = plan->nchunks,
                                      .threads = job->info.threads,
                                      .task = chunk_task,
                                      .worker_begin = pool_worker_begin,
                                      .worker_end = pool_worker_end,
                                      .ctx = job};
        job->state_now = STF_JOB_RUNNING;
        job->t_start_ns = stf_now_ns();
        if (pthread_create(&job->thread, NULL, job_run, job)) {
                job->released = true; /* begin() never ran */
                job->ended = job->finished = true;
                stf_job_free(job);
                return -EAGAIN;
        }
        job->joinable = true;
        *out = job;
        return 0;
}

/*
 * The pool's stop is sticky: it holds whether the run has started or not.
 * Waiters are woken to start counting the grace.
 */
void stf_job_cancel(struct stf_job *job)
{
        stf_pool_stop(&job->pool);
        pthread_mutex_lock(&job->lock);
        if (!job->cancel_ns)
                job->cancel_ns = stf_now_ns();
        pthread_cond_broadcast(&job->done);
        pthread_mutex_unlock(&job->lock);
}

void stf_job_wait(struct stf_job *job)
{
        pthread_mutex_lock(&job->lock);
        for (settle(job); !job->ended; settle(job)) {
                uint64_t at = job->cancel_ns + GRACE_NS;
                struct timespec ts = {(time_t)(at / 1000000000u), (long)(at % 1000000000u)};

                if (job->cancel_ns && !job->pool_done)
                        pthread_cond_timedwait(&job->done, &job->lock, &ts);
                else
                        pthread_cond_wait(&job->done, &job->lock);
        }
        pthread_mutex_unlock(&job->lock);
}

/* Wait until the job's thread is past its last use of the job. */
static void wait_finished(struct stf_job *job)
{
        pthread_mutex_lock(&job->lock);
        while (!job->finished)
                pthread_cond_wait(&job->done, &job->lock);
        pthread_mutex_unlock(&job->lock);
}

bool stf_job_ended(struct stf_job *job)
{
        bool ended;

        pthread_mutex_lock(&job->lock);
        settle(job);
        ended = job->ended;
        pthread_mutex_unlock(&job->lock);
        return ended;
}

bool stf_job_finished(struct stf_job *job)
{
        bool finished;

        pthread_mutex_lock(&job->lock);
        finished = job->finished;
        pthread_mutex_unlock(&job->lock);
        return finished;
}

void stf_job_progress(struct stf_job *job, struct stf_job_progress *p)
{
        pthread_mutex_lock(&job->lock);
        settle(job);
        p->id = job->id;
        p->state = job->state_now;
        p->error = job->state_now == STF_JOB_FAILED ? job->error : 0;
        p->target = job->info.target;
        p->device = job->info.device;
        p->threads = job->info.threads;
        p->tensors = (uint32_t)job->plan->ntensors;
        p->bytes_total = job->bytes_total;
        p->bytes_done = job->bytes_done;
        p->elapsed_ns = (job->t_end_ns ? job->t_end_ns : stf_now_ns()) - job->t_start_ns;
        snprintf(p->message, sizeof(p->message), "%s", job->message);
        pthread_mutex_unlock(&job->lock);
}

const char *stf_job_selection(const struct stf_job *job)
{
        return job->selection;
}

const struct stf_job_info *stf_job_info(const struct stf_job *job)
{
        return &job->info;
}

void *stf_job_backend_state(struct stf_job *job)
{
        void *state;

        pthread_mutex_lock(&job->lock);
        state = job->released ? NULL : job->state;
        pthread_mutex_unlock(&job->lock);
        return state;
}

void stf_job_release(struct stf_job *job)
{
        bool release;

        wait_finished(job);
        pthread_mutex_lock(&job->lock);
        release = !job->released;
        job->released = true;
        pthread_mutex_unlock(&job->lock);
        if (release)
                job->backend->release(job->state);
}

void stf_job_free(struct stf_job *job)
{
        if (!job)
                return;
        stf_job_cancel(job);
        stf_job_release(job);
        if (job->joinable)
                pthread_join(job->thread, NULL);
        pthread_cond_destroy(&job->done);
        pthread_mutex_destroy(&job->lock);
        stf_plan_free(job->plan);
        free(job->selection);
        free(job);
}
