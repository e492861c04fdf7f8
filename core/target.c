/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target.h"

bool stf_target_parse(const char *s, uint32_t *target, int32_t *device)
{
        char *end;
        long d;

        if (!strcmp(s, "host")) {
                *target = STF_TARGET_HOST;
                *device = 0;
                return true;
        }
        if (strncmp(s, "cuda:", 5) || s[5] < '0' || s[5] > '9')
                return false;
        d = strtol(s + 5, &end, 10);
        if (*end || d > STF_CUDA_DEVICE_MAX)
                return false;
        *target = STF_TARGET_CUDA;
        *device = (int32_t)d;
        return true;
}

bool stf_target_valid(uint32_t target, int32_t device)
{
        if (target == STF_TARGET_HOST)
                return true;
        return target == STF_TARGET_CUDA && device >= 0 && device <= STF_CUDA_DEVICE_MAX;
}

int stf_target_format(char *buf, size_t cap, uint32_t target, int32_t device)
{
        if (target == STF_TARGET_HOST)
                return snprintf(buf, cap, "host");
        return snprintf(buf, cap, "cuda:%d", device);
}

const char *stf_job_state_name(uint32_t state)
{
        static const char *const names[] = {
            [STF_JOB_QUEUED] = "queued", [STF_JOB_RUNNING] = "running",     [STF_JOB_DONE] = "done",
            [STF_JOB_FAILED] = "failed", [STF_JOB_CANCELLED] = "cancelled",
        };

        return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}
