/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_OPS_H
#define STFS_OPS_H

/*
 * The FUSE low-level operations: each request is translated into calls of
 * core/ns (what an inode is, lookups, listings, attributes), core/view (the
 * bytes), fs/docs (the live files of /.stfs) and fs/control, and answered
 * with exactly one reply. The session's userdata is the struct stfs.
 */

#include <fuse_lowlevel.h>

#include "model.h"
#include "watch.h"

extern const struct fuse_lowlevel_ops stfs_ops;

/*
 * The watcher's report (stf_watch_report_fn; @ctx the struct stfs): log it,
 * and for a shard written to or changed (a whole-shard loss), drop what the
 * mount's page cache holds of every file over it, so that every later read
 * of it gets EIO.
 */
void stfs_shard_event(void *ctx, const struct stf_shard *s, enum stf_watch_event ev, int err);

#endif
