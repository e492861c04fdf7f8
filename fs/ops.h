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

extern const struct fuse_lowlevel_ops stfs_ops;

#endif
