/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SHARD_H
#define STF_SHARD_H

/*
 * One shard file: opened read-only, fstat'ed, mapped whole (MAP_SHARED,
 * PROT_READ) and its header parsed against the size fstat saw. Nothing of a
 * shard is trusted before the header has been validated against that size.
 */

#include <stdint.h>
#include <time.h>

#include "format.h"
#include "report.h"

struct stf_shard {
        char *path;             /* as opened */
        const char *name;       /* file name (points into path) */
        const char *rel;        /* path relative to the model's root (into
                                   path; set by the model), else name */
        int fd;                 /* read-only */
        uint64_t size;          /* at open */
        struct timespec mtime;  /* at open */
        const uint8_t *map;     /* read-only shared mapping of the whole file */
        struct stf_header *hdr; /* its parsed header */
};

/*
 * Make @s a closed shard for @path (copied). Returns 0 or -ENOMEM; either
 * way @s can be passed to stf_shard_close.
 */
int stf_shard_init(struct stf_shard *s, const char *path);

/*
 * Open, map and parse @n shards already given their paths (stf_shard_init),
 * on up to 8 threads: a big set has hundreds of shards and the JSON parse
 * dominates mount time. Problems go to @sink as if the shards were opened
 * one after the other: in the first problem mode the one of the first
 * failing shard (later shards may stay closed); in the check mode every
 * shard's, in shard order, and a shard that fails is left without a header.
 * Returns 0 or the first failing shard's -errno (see stf_sink_settle for
 * the check mode), -ENOMEM.
 */
int stf_shard_open_all(struct stf_shard *v, uint32_t n, struct stf_sink *sink);

/* Unmap, close and free; accepts a shard that was only initialised. */
void stf_shard_close(struct stf_shard *s);

#endif
