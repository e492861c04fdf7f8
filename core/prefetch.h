/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_PREFETCH_H
#define STF_PREFETCH_H

/*
 * Parallel prefetch: jobs, chunk planning, a worker pool, progress.
 *
 * A job moves the bytes of selected tensors to a target through a backend
 * (host: the mount's page cache; cuda: device memory; tests: a fake). The
 * work is planned as byte chunks across all shards - not one item per
 * tensor - so a few big tensors still spread over every worker, and a
 * tensor-parallel slice becomes strided chunks (one row run per outer
 * index) that a backend copies as 2D transfers. Workers pull chunks from a
 * shared cursor; memory is whatever the backend stages per worker (the
 * cuda backend: a fixed ring of pinned buffers), independent of model size.
 *
 * Progress (bytes done) is updated after every chunk and can be read at
 * any time; cancellation is checked between chunks.
 *
 * A cancelled job ends when its chunks in flight are done; one whose chunks
 * wait on a stalled source (a read no one but the source can end) is given
 * up on STF_JOB_CANCEL_GRACE_MS after the cancel: from then on it reads as
 * ended and cancelled (stf_job_progress, stf_job_ended, stf_job_wait),
 * while its threads are still there. They come back when the source
 * answers, and only then is the job finished (stf_job_finished): its
 * backend's end() and the job's on_end run (with -ECANCELED), and
 * stf_job_release and stf_job_free, which wait for that, may free it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "target.h"

#define STF_CHUNK_DEFAULT (4u << 20)
#define STF_THREADS_DEFAULT 4
#define STF_THREADS_MAX 64
#define STF_JOB_CANCEL_GRACE_MS 1000
/* The name of every thread of a job (the job's own and its workers'). */
#define STF_JOB_THREAD_NAME "stfs-prefetch"

struct stf_slice {
        int32_t dim; /* -1: no slicing */
        uint32_t rank, world;
};

/* One unit of work: @height rows of @width bytes. */
struct stf_chunk {
        uint32_t tensor; /* index in the model */
        uint32_t shard;
        uint64_t src;       /* absolute offset in the shard of the first row */
        uint64_t width;     /* bytes per row */
        uint64_t height;    /* rows; 1 for a contiguous range */
        uint64_t src_pitch; /* bytes from one row to the next in the source */
        uint64_t dst;       /* offset of the first row in the job's destination */
        uint64_t file_off;  /* offset of the first row within the tensor file */
};

struct stf_plan {
        size_t nchunks;
        struct stf_chunk *chunks; /* freed (NULL) once a job of the plan has ended */
        size_t ntensors;
        uint32_t *tensors;     /* selected tensors, layout order */
        uint64_t *tensor_dst;  /* offset of each in the destination */
        uint64_t *tensor_size; /* bytes of each in the destination (slice) */
        uint64_t total;        /* destination bytes */
};

/*
 * Plan chunks of at most @chunk bytes (0: default) for @n tensors, each
 * sliced by @slice (NULL: whole). A chunk's source span (from its first
 * byte to its last, rows and the gaps between them) is at most @chunk: a
 * row wider than @chunk is cut into pieces. A plan holds one struct
 * stf_chunk per chunk, so its size is the caller's to bound (see
 * stf_residency_prefetch). A tensor of rank <= dim is taken whole
 * (replicated, as norms are); a sliced dim must divide by world and a row
 * be whole bytes, else -EINVAL with @msg set. Returns 0, -EINVAL, -ENOMEM.
 */
int stf_plan_build(const struct stf_model *m, const uint32_t *tensors, size_t n,
                   const struct stf_slice *slice, uint64_t chunk, struct stf_plan **out, char *msg,
                   size_t msgcap);
void stf_plan_free(struct stf_plan *p);

#define STF_JOB_MESSAGE_MAX 256

/* A job, opaque: read it with stf_job_progress. */
struct stf_job;

/* What a backend is told about its job: constant from begin to end. */
struct stf_job_info {
        const struct stf_model *model;
        const struct stf_plan *plan;
        uint32_t target; /* enum stf_target */
        int32_t device;
        unsigned threads;
};

/*
 * What a target does. Every callback returns 0 or -errno and may write a
 * reason into @msg. begin() may set *@state to its own per-job state (it
 * starts as the @be_ctx given to stf_job_start); every later callback gets
 * that state. @worker is 0..threads-1; chunk() of one worker is never
 * called concurrently with itself. All callbacks but chunk() may be NULL.
 */
struct stf_backend {
        int (*begin)(void *ctx, const struct stf_job_info *job, void **state, char *msg,
                     size_t cap);
        int (*worker_begin)(void *state, const struct stf_job_info *job, unsigned worker, char *msg,
                            size_t cap);
        int (*chunk)(void *state, const struct stf_job_info *job, unsigned worker,
                     const struct stf_chunk *c, char *msg, size_t cap);
        /* after the worker's last chunk, even on failure: flush, free staging */
        int (*worker_end)(void *state, const struct stf_job_info *job, unsigned worker, char *msg,
                          size_t cap);
        /*
         * Once, after all workers (also when begin failed): @status is 0
         * when every chunk moved, -ECANCELED when the job was cancelled
         * first, else the job's first error.
         */
        int (*end)(void *state, const struct stf_job_info *job, int status, char *msg, size_t cap);
        /*
         * Free what the state still holds once the job is over (device
         * memory) and the state itself: from stf_job_release or
         * stf_job_free, at most once, also after a failed begin() (the
         * state is then what begin() left in *state).
         */
        void (*release)(void *state);
};

/*
 * Called once on the job's thread after the backend's end() and before
 * the job's final state can be read: what it records is in place when a
 * caller sees the job finished. @status as for end(), or end()'s error.
 * A job given up on after a cancel reads as cancelled before; its on_end
 * comes when its threads come back, with -ECANCELED.
 */
typedef void (*stf_job_end_fn)(void *arg, struct stf_job *job, int status);

struct stf_job_params {
        uint64_t id;           /* reported in progress */
        uint32_t target;       /* enum stf_target */
        int32_t device;        /* CUDA device ordinal */
        unsigned threads;      /* workers; 0: STF_THREADS_DEFAULT; capped at STF_THREADS_MAX */
        const char *selection; /* copied, for status; NULL: "" */
        stf_job_end_fn on_end; /* NULL: none */
        void *on_end_arg;
};

/* A job's progress: a small value the caller owns. */
struct stf_job_progress {
        uint64_t id;
        uint32_t state; /* enum stf_job_state */
        int error;      /* -errno of a failed job, else 0 */
        uint32_t target;
        int32_t device;
        unsigned threads;                  /* workers the job runs on */
        uint32_t tensors;                  /* tensors selected */
        uint64_t bytes_total;              /* tensor bytes (slices), without alignment padding */
        uint64_t bytes_done;               /* updated after every chunk */
        uint64_t elapsed_ns;               /* stops when the job ends */
        char message[STF_JOB_MESSAGE_MAX]; /* why it failed, "" otherwise */
};

/*
 * Start @plan (ownership passes to the job, also on error) through @be in
 * the background. Returns 0 and a new running job, or -ENOMEM / -EAGAIN.
 */
int stf_job_start(const struct stf_model *m, struct stf_plan *plan, const struct stf_backend *be,
                  void *be_ctx, const struct stf_job_params *params, struct stf_job **out);

/* Ask the job to stop after the chunks in flight. Thread-safe. */
void stf_job_cancel(struct stf_job *job);

/* Wait for the job's end (and its on_end), or for it to be given up on
 * after a cancel (see above). Thread-safe; any number of threads may wait
 * at once. */
void stf_job_wait(struct stf_job *job);

/* Has the job ended (its final state readable: finished, or given up on
 * after a cancel)? Thread-safe. */
bool stf_job_ended(struct stf_job *job);

/* Has the job finished: every thread of it back, its on_end run? Once
 * true, stf_job_free returns without waiting for any work. Thread-safe. */
bool stf_job_finished(struct stf_job *job);

/* Fill @p from the job. Thread-safe. */
void stf_job_progress(struct stf_job *job, struct stf_job_progress *p);

/* The selection text given at start (borrowed, lives with the job). */
const char *stf_job_selection(const struct stf_job *job);

/* What the job is (borrowed, constant for the job's life); its plan's
 * chunk list is freed (NULL) when the job ends, the rest stays. */
const struct stf_job_info *stf_job_info(const struct stf_job *job);

/* The backend's per-job state (borrowed), NULL once released. Callers
 * serialize it against stf_job_release themselves. */
void *stf_job_backend_state(struct stf_job *job);

/* Wait until the job has finished, then let the backend free what it
 * still holds (release()). Safe to call twice. */
void stf_job_release(struct stf_job *job);

/* Release, then free a job (cancelling and waiting until it has finished:
 * a job stuck on a stalled source is waited for); accepts NULL. */
void stf_job_free(struct stf_job *job);

uint64_t stf_now_ns(void);

#endif
