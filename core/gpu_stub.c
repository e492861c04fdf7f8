/* SPDX-License-Identifier: Apache-2.0 */
/* Built when cuda.h was not found: every CUDA job fails, clearly. */
#include <errno.h>
#include <stdio.h>

#include "gpu.h"

static int stub_begin(void *ctx, const struct stf_job_info *job, void **state, char *msg,
                      size_t cap)
{
        snprintf(msg, cap, "cuda:%d: stfs was built without CUDA support (meson -Dcuda=enabled)",
                 job->device);
        return -ENOTSUP;
}

static int stub_chunk(void *state, const struct stf_job_info *job, unsigned worker,
                      const struct stf_chunk *c, char *msg, size_t cap)
{
        return -ENOTSUP;
}

const struct stf_backend stf_cuda_backend = {
    .begin = stub_begin,
    .chunk = stub_chunk,
};

bool stf_cuda_built(void)
{
        return false;
}

int stf_cuda_job_handle(struct stf_job *job, char hex[129], uint64_t *dptr)
{
        return -ENODATA;
}
