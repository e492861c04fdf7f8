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
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "stfs_ioctl.h"

#define STF_CHUNK_DEFAULT (4u << 20)
#define STF_THREADS_DEFAULT 4
#define STF_THREADS_MAX 64

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
 * sliced by @slice (NULL: whole). A tensor of rank <= dim is taken whole
 * (replicated, as norms are); a sliced dim must divide by world and a row
 * be whole bytes, else -EINVAL with @msg set. Returns 0, -EINVAL, -ENOMEM.
 */
int stf_plan_build(const struct stf_model *m, const uint32_t *tensors, size_t n,
                   const struct stf_slice *slice, uint64_t chunk, struct stf_plan **out, char *msg,
                   size_t msgcap);
void stf_plan_free(struct stf_plan *p);

struct stf_job;

/*
 * What a target does. Every callback returns 0 or -errno and may write a
 * reason into @msg. @worker is 0..threads-1; chunk() of one worker is never
 * called concurrently with itself.
 */
struct stf_backend {
        int (*begin)(void *ctx, struct stf_job *job, char *msg, size_t cap);
        int (*worker_begin)(void *ctx, struct stf_job *job, unsigned worker, char *msg, size_t cap);
        int (*chunk)(void *ctx, struct stf_job *job, unsigned worker, const struct stf_chunk *c,
                     char *msg, size_t cap);
        /* after the worker's last chunk, even on failure: flush, free staging */
        int (*worker_end)(void *ctx, struct stf_job *job, unsigned worker, char *msg, size_t cap);
        /* once, after all workers: @status is the job's result so far */
        int (*end)(void *ctx, struct stf_job *job, int status, char *msg, size_t cap);
};

struct stf_job {
        uint64_t id;
        uint32_t target; /* enum stfs_target */
        int32_t device;
        unsigned threads;
        char *selection;
        struct stf_plan *plan;
        const struct stf_model *model;
        const struct stf_backend *backend;
        void *backend_ctx;
        void *target_state; /* backend's per-job state (device allocation) */

        /* progress: read with stf_job_status */
        pthread_mutex_t lock;
        uint32_t state;
        int error;
        char message[STFS_MESSAGE_MAX];
        uint64_t bytes_done;
        uint64_t t_start_ns, t_end_ns;
        bool cancel;
        size_t next_chunk;
        pthread_t thread;
        bool joinable;
};

/*
 * Start @plan (ownership passes to the job, also on error) on @threads
 * workers (0: default) in the background. @selection is copied for status.
 * Returns 0 and a new running job, or -ENOMEM / -EAGAIN.
 */
int stf_job_start(const struct stf_model *m, struct stf_plan *plan, const struct stf_backend *be,
                  void *be_ctx, uint32_t target, int32_t device, unsigned threads,
                  const char *selection, uint64_t id, struct stf_job **out);

/* Ask the job to stop after the chunks in flight. */
void stf_job_cancel(struct stf_job *job);

/* Wait for the job's end. */
void stf_job_wait(struct stf_job *job);

/* Fill @st from the job (thread-safe). */
void stf_job_status(struct stf_job *job, struct stfs_status_req *st);

/* Wait for, then free a job; accepts NULL. */
void stf_job_free(struct stf_job *job);

uint64_t stf_now_ns(void);

#endif
