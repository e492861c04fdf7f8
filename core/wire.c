/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>

#include "gpu.h"
#include "wire.h"

/* core's names and the protocol's numbers are one set of values */
#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a)
SAME(STF_TARGET_HOST, STFS_TARGET_HOST);
SAME(STF_TARGET_CUDA, STFS_TARGET_CUDA);
SAME(STF_JOB_QUEUED, STFS_JOB_QUEUED);
SAME(STF_JOB_RUNNING, STFS_JOB_RUNNING);
SAME(STF_JOB_DONE, STFS_JOB_DONE);
SAME(STF_JOB_FAILED, STFS_JOB_FAILED);
SAME(STF_JOB_CANCELLED, STFS_JOB_CANCELLED);
SAME(STF_STAGING_RING, STFS_STAGING_RING);
SAME(STF_STAGING_DIRECT, STFS_STAGING_DIRECT);
SAME(STF_STAGING_AUTO, STFS_STAGING_AUTO);
_Static_assert(STF_JOB_MESSAGE_MAX == STFS_MESSAGE_MAX, "message size");

int stf_wire_prefetch_args(const struct stfs_prefetch_req *rq, struct stf_prefetch_args *a,
                           char *msg, size_t cap)
{
        if (rq->version != STFS_IOC_VERSION || (rq->flags & ~STFS_STAGING_MASK)) {
                snprintf(msg, cap, "malformed prefetch request");
                return -EINVAL;
        }
        *a = (struct stf_prefetch_args){
            .target = rq->target,
            .device = rq->device,
            .threads = rq->threads,
            .chunk = rq->chunk,
            .staging = rq->flags & STFS_STAGING_MASK,
            .slice = {rq->slice_dim, rq->slice_rank, rq->slice_world},
            .selection = rq->selection,
            .selection_cap = sizeof(rq->selection),
        };
        return 0;
}

void stf_wire_status(const struct stf_job_progress *p, struct stfs_status_req *st)
{
        st->version = STFS_IOC_VERSION;
        st->job = p->id;
        st->state = p->state;
        st->error = -p->error;
        st->target = p->target;
        st->device = p->device;
        st->tensors = p->tensors;
        st->bytes_total = p->bytes_total;
        st->bytes_done = p->bytes_done;
        st->elapsed_ns = p->elapsed_ns;
        snprintf(st->message, sizeof(st->message), "%s", p->message);
}
