/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_RESIDENCY_H
#define STF_RESIDENCY_H

/*
 * The control plane's state: the table of prefetch jobs of one mount and
 * which tensors are resident where.
 *
 * Jobs get ids 1, 2, 3... in the order they start. Bounds: at most
 * STF_JOBS_LIVE_MAX jobs run at once, with STF_JOBS_WORKERS_MAX worker
 * threads in all; a request past either is refused with -EBUSY (nothing
 * started, the reason in @msg). A cancelled job whose threads wait on a
 * stalled source reads as cancelled STF_JOB_CANCEL_GRACE_MS after the
 * cancel (core/prefetch) and no longer counts as running, nor against
 * STF_JOBS_LIVE_MAX; but its threads are real threads and still count
 * against STF_JOBS_WORKERS_MAX (and a CUDA job's staging against
 * STF_PINNED_MAX) until they come back, when the job is reaped as any
 * other. A job that has finished is reaped at the next
 * prefetch or status document: its thread is joined, its memory freed and
 * only a record of its end kept (state, bytes, error message, selection),
 * unless a caller waits for it or it holds device memory (it is reaped
 * once evicted). The last STF_JOBS_KEPT records are kept, the oldest
 * forgotten first; the status of a forgotten job is -ENOENT, as for an id
 * never given. A tensor is resident
 * on the host once a job pushed all of its bytes into the page cache (a
 * slice is not the tensor), and on a CUDA device while a finished job
 * holds it there; a job's device memory is given back once every tensor
 * it held has been evicted. Prefetch skips what is already resident, so
 * asking twice moves nothing twice.
 *
 * Counters of the mount's traffic (reads served, bytes pushed) live here
 * too, for the status document.
 *
 * Thread-safety: every function may be called from any thread; one mutex
 * guards the table and the resident sets, and job completion (on the job's
 * thread) takes it too.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "prefetch.h"
#include "tree.h"

struct stf_residency;

#define STF_JOBS_LIVE_MAX 64
#define STF_JOBS_WORKERS_MAX 256
#define STF_JOBS_KEPT 1024
#define STF_PLAN_CHUNKS_MAX (1u << 20) /* chunks a plan aims at, at most */
#define STF_CHUNK_MAX (1ull << 40)     /* a larger chunk size is taken as this */
#define STF_PINNED_MAX (1ull << 30)    /* pinned staging of all running CUDA jobs */

/*
 * @model and @tree are borrowed and must outlive the residency. @host is
 * the backend of the host target (the fs layer's: it pushes into the
 * mount's page cache), with @host_ctx as its context; the CUDA target uses
 * core's stf_cuda_backend. Returns 0, -ENOMEM.
 */
int stf_residency_new(const struct stf_model *model, const struct stf_tree *tree,
                      const struct stf_backend *host, void *host_ctx, struct stf_residency **out);

/*
 * Let CUDA jobs started from now on mend failed reads through @w (the
 * model's watch, borrowed: it must outlive every job; NULL: none). Host
 * jobs are the @host backend's to mend.
 */
struct stf_watch;
void stf_residency_set_watch(struct stf_residency *r, struct stf_watch *w);

/* Cancel every job, wait for them, free their memory and the residency.
 * Accepts NULL. */
void stf_residency_free(struct stf_residency *r);

/* A prefetch request, as the control file's ioctl or text command says it. */
struct stf_prefetch_args {
        uint32_t target;  /* enum stf_target */
        int32_t device;   /* CUDA ordinal, >= 0 for STF_TARGET_CUDA */
        uint32_t threads; /* <= STF_THREADS_MAX; 0: default */
        uint64_t chunk;   /* bytes per work item; 0: default */
        uint32_t staging; /* CUDA: enum stf_staging (gpu.h); host: 0 */
        struct stf_slice slice;
        const char *selection; /* patterns, as stf_select takes them */
        size_t selection_cap;  /* bytes readable at @selection */
};

/*
 * Validate @a completely, select, skip what is resident whole at the
 * target, plan and start a job; on success *@id is its id.
 *
 * Chunk size and threads, for every target: threads 0 is the default (4),
 * more than STF_THREADS_MAX is -EINVAL. The chunk size (0: 4 MiB) is taken
 * as at most STF_CHUNK_MAX, raised to the selection's bytes divided by
 * STF_PLAN_CHUNKS_MAX (so a plan, 64 bytes a chunk, stays near 64 MiB at
 * most, whatever the model: chunk=1 on a 76 MB model was a 4.2 GB plan),
 * then rounded up to whole pages. A CUDA job pins STF_CUDA_RING x threads
 * x chunk bytes of staging (counted also for direct staging, which falls
 * back to the ring): more than STF_PINNED_MAX is -EINVAL, more than the
 * running CUDA jobs leave of it is -EBUSY.
 *
 * A malformed
 * request is -EINVAL and leaves no trace; a selection that matches nothing
 * -ENOENT; -EBUSY past the bounds above; -ENOMEM, -EAGAIN. On error @msg
 * (@cap bytes) says why.
 */
int stf_residency_prefetch(struct stf_residency *r, const struct stf_prefetch_args *a, uint64_t *id,
                           char *msg, size_t cap);

/*
 * Evict the selected tensors from @target: host: @drop(@arg, tensor) is
 * called for every selected tensor (it drops the page cache) and each one
 * that was resident is counted; CUDA: each selected tensor held on
 * @device is forgotten and counted, and a job's device memory is freed
 * once it holds no tensor. Returns 0 and *@count, -EINVAL (target),
 * -ENOENT (no match), -ENOMEM; @msg says why.
 */
int stf_residency_evict(struct stf_residency *r, uint32_t target, int32_t device,
                        const char *selection, size_t selection_cap,
                        void (*drop)(void *arg, uint32_t tensor), void *arg, uint64_t *count,
                        char *msg, size_t cap);

/* Progress of job @id: 0, or -ENOENT. */
int stf_residency_progress(struct stf_residency *r, uint64_t id, struct stf_job_progress *p);

/* Ask job @id to stop (a finished job: nothing changes): 0, or -ENOENT. */
int stf_residency_cancel(struct stf_residency *r, uint64_t id);

/* Wait until job @id has ended: 0, or -ENOENT. */
int stf_residency_wait(struct stf_residency *r, uint64_t id);

/* Ask every job to stop; has any a thread still running (also one given
 * up on after a cancel)? */
bool stf_residency_cancel_all(struct stf_residency *r);

/* Is tensor @t resident whole on the host / on CUDA device @device? */
bool stf_residency_on_host(struct stf_residency *r, uint32_t t);
bool stf_residency_on_cuda(struct stf_residency *r, uint32_t t, int32_t device);

/*
 * The xattr user.stfs.cuda of tensor @t: "device=D handle=HEX offset=O
 * size=S dptr=0xP" into @buf (@cap bytes, NUL terminated when it fits).
 * Returns its length (snprintf's), or -ENODATA when no GPU holds @t.
 */
int stf_residency_cuda_xattr(struct stf_residency *r, uint32_t t, char *buf, size_t cap);

/*
 * Refusals. A request refused through an ioctl returns only an errno; its
 * reason is kept here for the requester to ask for: the last
 * STF_REFUSALS_MAX refusals, each under the requester's id (the fs layer
 * uses the calling thread's id). stf_residency_refused records one;
 * stf_residency_reason fills the last one of @requester: 0, or -ENOENT
 * when none is kept.
 */
#define STF_REFUSALS_MAX 64
void stf_residency_refused(struct stf_residency *r, uint64_t requester, uint32_t request, int err,
                           const char *msg);
int stf_residency_reason(struct stf_residency *r, uint64_t requester, uint32_t *request, int *err,
                         char *msg, size_t cap);

enum stf_counter {
        STF_COUNT_READ_REQUESTS, /* READs served from a shard */
        STF_COUNT_READ_BYTES,
        STF_COUNT_PUSHED_BYTES, /* bytes the host target pushed to the page cache */
        STF_COUNT_PUSHED_CHUNKS,
        STF_COUNT_ASYNC_READS,   /* READs handed to the data threads (fs/reads.c) */
        STF_COUNT_READ_TIMEOUTS, /* of those, answered EIO at -o read_timeout */
        STF_COUNT_N,
};

/* Add @n to counter @c (atomic, lock-free). */
void stf_residency_count(struct stf_residency *r, enum stf_counter c, uint64_t n);

/*
 * The status document: every job (id, selection, target, state, tensors,
 * bytes, seconds, throughput, error) and the counters, as JSON, then
 * @more (may be NULL): more members of the top-level object, as JSON text
 * ("name": value, ...). New text (caller frees) of *@len bytes; NULL on
 * ENOMEM.
 */
char *stf_residency_status_json(struct stf_residency *r, const char *more, size_t *len);

#endif
