/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_GPU_H
#define STF_GPU_H

/*
 * The CUDA prefetch target. The driver API is loaded with
 * dlopen("libcuda.so.1") at run time, so one binary runs with or without a
 * GPU; building it needs only cuda.h (meson -Dcuda=auto). Without the
 * headers at build time gpu_stub.c stands in and every job fails with a
 * clear message.
 *
 * Per job: one device allocation for all selected tensors (slices), per
 * worker a stream and a ring of pinned staging buffers. The source is read
 * with pread (never through the mapping: a truncated source is an error,
 * not SIGBUS), then copied asynchronously; strided slices are read as one
 * span and copied with a 2D copy.
 *
 * Staging (struct stf_cuda_opts, enum stf_staging): RING is
 * the above. DIRECT registers the range of each shard that the job reads
 * with cuMemHostRegister(CU_MEMHOSTREGISTER_READ_ONLY) and copies straight
 * from the mapping (the page cache): no CPU copy. AUTO does that only for
 * shards whose range is all resident (mincore), as after a host prefetch
 * or a read. A shard the driver will not register stays on the ring.
 *
 * A source whose reads fail (a network client that reconnected: EIO,
 * ESTALE, ENOTCONN, a short read) is mended as for host prefetch, when the
 * options name the model's watch (core/watch): a failed pread of the ring,
 * or a failed fetch of a remote shard's pages before a direct copy, reopens
 * the shard (stf_watch_retry_shard) and is tried once more. A job that
 * still cannot read fails with a message that names the shard and the
 * error. A shard found truncated or changed (stf_watch_lost) fails the
 * job, also after its last copy for a registered (direct) shard: the
 * registration keeps the pages it pinned, so the device may hold bytes of
 * the file as it was, or a mix; the job fails rather than say they are the
 * source's.
 */

#include <stdbool.h>
#include <stdint.h>

#include "prefetch.h"
#include "watch.h"

/*
 * Pinned staging buffers per worker of a ring job. A plan's chunk spans at
 * most its chunk size of source (stf_plan_build), so a job pins at most
 * STF_CUDA_RING x threads x chunk bytes.
 */
#define STF_CUDA_RING 3

/* How the bytes reach the device (the values of STFS_STAGING_*). */
enum stf_staging {
        STF_STAGING_RING = 0,   /* pread into pinned buffers, then DMA */
        STF_STAGING_DIRECT = 1, /* DMA from the registered mapping */
        STF_STAGING_AUTO = 2,   /* DIRECT where the range is all in the page cache */
};

/* Options of one job: the backend's ctx (NULL: all defaults). */
struct stf_cuda_opts {
        uint32_t staging;        /* enum stf_staging; RING by default */
        struct stf_watch *watch; /* of the job's model (borrowed), or NULL */
};

/* Backend for stf_job_start; ctx: a struct stf_cuda_opts or NULL. */
extern const struct stf_backend stf_cuda_backend;

/* Was the CUDA backend compiled in? */
bool stf_cuda_built(void);

/*
 * After a job that ended STF_JOB_DONE: the CUDA IPC handle of its
 * allocation as 128 hex digits (NUL terminated) and the device pointer.
 * Returns 0, or -ENODATA when the job holds no device memory (failed,
 * empty, or released with stf_job_release, which frees it: evict). The
 * caller serializes this against stf_job_release.
 */
int stf_cuda_job_handle(struct stf_job *job, char hex[129], uint64_t *dptr);

#endif
