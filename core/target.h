/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_TARGET_H
#define STF_TARGET_H

/*
 * The names a user types and reads for prefetch targets and job states,
 * shared by the mount (text commands, status documents) and stfsctl so the
 * two accept and print the same words: "host", "cuda:N" (N a device
 * ordinal, 0 to STF_CUDA_DEVICE_MAX), and "queued", "running", "done",
 * "failed", "cancelled". The values are those of stfs_ioctl.h (core/wire.c
 * checks it at build time). Pure functions, thread-safe.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a prefetch job puts its bytes. */
enum stf_target {
        STF_TARGET_HOST = 0, /* the mount's page cache */
        STF_TARGET_CUDA = 1, /* device memory of one GPU */
};

enum stf_job_state {
        STF_JOB_QUEUED = 0,
        STF_JOB_RUNNING = 1,
        STF_JOB_DONE = 2,
        STF_JOB_FAILED = 3,
        STF_JOB_CANCELLED = 4,
};

/* The highest CUDA device ordinal accepted in "cuda:N". */
#define STF_CUDA_DEVICE_MAX 1023

/*
 * Parse "host" or "cuda:N" (decimal N, no sign, 0..STF_CUDA_DEVICE_MAX,
 * nothing after it). On success sets *@target (enum stf_target) and
 * *@device (0 for host) and returns true; else leaves both alone.
 */
bool stf_target_parse(const char *s, uint32_t *target, int32_t *device);

/* True when @target/@device name a target stf_target_parse could give. */
bool stf_target_valid(uint32_t target, int32_t device);

/* "host" or "cuda:N" into @buf, like snprintf (returns the full length). */
int stf_target_format(char *buf, size_t cap, uint32_t target, int32_t device);

/* The name of a job state (enum stf_job_state), "unknown" for others. */
const char *stf_job_state_name(uint32_t state);

#endif
