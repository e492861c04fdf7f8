/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_WIRE_H
#define STF_WIRE_H

/*
 * The ioctl wire structs of stfs_ioctl.h translated to and from core's own
 * values: the one file of core/ that sees them, so the protocol can grow
 * (or get a new version) without touching prefetch or residency.
 */

#include <stddef.h>

#include "prefetch.h"
#include "residency.h"
#include "stfs_ioctl.h"

/*
 * The arguments of prefetch request @rq; @a borrows its selection. Returns
 * 0, or -EINVAL with @msg set for a version or flags this build does not
 * know (the rest is checked by stf_residency_prefetch: staging bits 0-1
 * become .staging).
 */
int stf_wire_prefetch_args(const struct stfs_prefetch_req *rq, struct stf_prefetch_args *a,
                           char *msg, size_t cap);

/* The status reply for progress @p (errno positive, as on the wire). */
void stf_wire_status(const struct stf_job_progress *p, struct stfs_status_req *st);

#endif
