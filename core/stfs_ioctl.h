/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_IOCTL_H
#define STFS_IOCTL_H

/*
 * The stfs control protocol: ioctls on MOUNTPOINT/.stfs/control.
 *
 * Open the control file read-only (ioctls work on a read-only mount) and
 * issue one of the requests below. Only the user who mounted (or root) may:
 * others get EACCES. A malformed request gets EINVAL and changes nothing.
 * Every struct is fixed-size and starts with .version = STFS_IOC_VERSION.
 *
 * Selections are patterns separated by newlines (or spaces), NUL
 * terminated. A pattern without '/' matches tensor names: '*' any run of
 * characters, '?' one, and a name also matches a pattern equal to one of
 * its '.'-prefixes ("model.layers.3" selects layer 3). A pattern with '/'
 * matches mount paths: '*' and '?' stay inside one component, '**' crosses
 * them, and a directory selects everything under it ("model/layers/3").
 * An empty pattern list selects every tensor. A
 * selection that matches nothing is an error: ENOENT.
 *
 * Thread-safety: any number of processes may use the control file at once.
 */

#include <stdint.h>
#include <sys/ioctl.h>

#define STFS_IOC_VERSION 1
#define STFS_IOC_MAGIC 0xB7
#define STFS_SELECTION_MAX 8192
#define STFS_MESSAGE_MAX 256

enum stfs_target {
        STFS_TARGET_HOST = 0, /* the mount's page cache */
        STFS_TARGET_CUDA = 1, /* device memory of GPU .device */
};

enum stfs_job_state {
        STFS_JOB_QUEUED = 0,
        STFS_JOB_RUNNING = 1,
        STFS_JOB_DONE = 2,
        STFS_JOB_FAILED = 3,
        STFS_JOB_CANCELLED = 4,
};

/* Start a prefetch; returns at once with .job set (in/out). */
struct stfs_prefetch_req {
        uint32_t version;
        uint32_t target;     /* enum stfs_target */
        int32_t device;      /* CUDA device ordinal for STFS_TARGET_CUDA */
        uint32_t threads;    /* workers; 0: default (4); more than 64: EINVAL */
        uint64_t chunk;      /* bytes per work item; 0: default (4 MiB); see below */
        int32_t slice_dim;   /* tensor-parallel slice: -1 none, else the dim */
        uint32_t slice_rank; /* this rank, < slice_world */
        uint32_t slice_world;
        uint32_t flags; /* STFS_STAGING_* for cuda, else 0 */
        uint64_t job;   /* out: job id (> 0) */
        char selection[STFS_SELECTION_MAX];
};

/*
 * stfs_prefetch_req.chunk, for every target: rounded up to whole pages, and
 * raised to the selected bytes / 2^20 (a plan of at most about 2^20
 * chunks). A cuda job pins 3 x threads x chunk bytes of staging: more than
 * 1 GiB is EINVAL; more than the running cuda jobs leave of 1 GiB, EBUSY.
 * At most 64 jobs run at once, with 256 threads in all: past that, EBUSY.
 */

/*
 * stfs_prefetch_req.flags of a cuda job: how the bytes reach the device.
 * Bits 0-1 only (anything else, or staging on a host job, is EINVAL).
 *  RING    the source is read (pread) into a small ring of pinned buffers,
 *          then copied by DMA; the default, and what flags 0 always meant
 *  DIRECT  the source's mapping is registered read-only with the driver
 *          and the DMA reads the page cache itself: no CPU copy (falls back
 *          to the ring for a shard the driver will not register)
 *  AUTO    DIRECT for the shards whose selected bytes are all resident in
 *          the page cache (say after a host prefetch), RING for the others
 */
#define STFS_STAGING_MASK 0x3u
#define STFS_STAGING_RING 0u
#define STFS_STAGING_DIRECT 1u
#define STFS_STAGING_AUTO 2u

/* Progress of a job (in: .job; out: the rest). */
struct stfs_status_req {
        uint32_t version;
        uint32_t state; /* enum stfs_job_state */
        uint64_t job;
        int32_t error; /* errno of a failed job, else 0 */
        uint32_t target;
        int32_t device;
        uint32_t tensors; /* tensors selected */
        uint64_t bytes_total;
        uint64_t bytes_done;
        uint64_t elapsed_ns;
        char message[STFS_MESSAGE_MAX]; /* why it failed, NUL terminated */
};

/* Cancel a job (in: .job). A finished job: 0, nothing changes. */
struct stfs_cancel_req {
        uint32_t version;
        uint32_t pad;
        uint64_t job;
};

/*
 * Drop what prefetch put in .target: host: the mount's page cache of the
 * selected tensors; CUDA: device memory of jobs whose every tensor is
 * selected. .count (out): tensors evicted.
 */
struct stfs_evict_req {
        uint32_t version;
        uint32_t target;
        int32_t device;
        uint32_t pad;
        uint64_t count;
        char selection[STFS_SELECTION_MAX];
};

/*
 * Why a request was refused. A refused request returns only an errno; the
 * daemon keeps the reason of the last 64 refusals, each for the thread
 * that made it. Ask from the same thread, right after the failure: .error
 * and .message are those of this thread's last refused request, .request
 * its number (_IOC_NR: 1 prefetch, 2 status, 3 cancel, 4 evict). ENOENT
 * when none is kept. (in: .version; out: the rest)
 */
struct stfs_reason_req {
        uint32_t version;
        int32_t error; /* errno the request failed with */
        uint32_t request;
        uint32_t pad;
        char message[STFS_MESSAGE_MAX]; /* NUL terminated */
};

#define STFS_IOC_PREFETCH _IOWR(STFS_IOC_MAGIC, 1, struct stfs_prefetch_req)
#define STFS_IOC_STATUS _IOWR(STFS_IOC_MAGIC, 2, struct stfs_status_req)
#define STFS_IOC_CANCEL _IOW(STFS_IOC_MAGIC, 3, struct stfs_cancel_req)
#define STFS_IOC_EVICT _IOWR(STFS_IOC_MAGIC, 4, struct stfs_evict_req)
#define STFS_IOC_REASON _IOWR(STFS_IOC_MAGIC, 5, struct stfs_reason_req)

#endif
