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
#include "view.h"

extern const struct fuse_lowlevel_ops stfs_ops;

/*
 * The watcher's report (stf_watch_report_fn; @ctx the struct stfs): log it,
 * and for a shard written to or changed (a whole-shard loss), drop what the
 * mount's page cache holds of every file over it, so that every later read
 * of it gets EIO.
 */
void stfs_shard_event(void *ctx, const struct stf_shard *s, enum stf_watch_event ev, int err);

struct stfs;
/*
 * The part of a read of [@off, @off + @size) of view @v that exists:
 * *@want bytes from @off (0 at or past the end). Counts them, and refuses
 * a range whose shard lost bytes (the watcher). Returns 0 or -EIO.
 */
int stfs_read_span(struct stfs *fs, const struct stf_view *v, size_t size, off_t off, size_t *want);

/*
 * Ask for the pages a reply of @iov (@n entries, into the mappings) is
 * about to copy (MADV_WILLNEED): without it the kernel's copy faults them
 * in one by one, a cold random read costing MiBs of read-around. Where
 * every shard is mapped for large folios (fs->large_folios), a piece of
 * STFS_PREFAULT_LARGE or more that starts within STFS_PREFAULT_NEAR of
 * where the last such piece ended, as did the STFS_PREFAULT_RUN before it,
 * is left to the fault: it reads 2 MiB folios ahead, cheaper to read, map
 * and drop.
 */
#define STFS_PREFAULT_LARGE (256u << 10)
#define STFS_PREFAULT_NEAR (8u << 20)
#define STFS_PREFAULT_RUN 4
void stfs_read_prefault(struct stfs *fs, const struct iovec *iov, size_t n);

/*
 * Bring in what a reply of [@off, @off + @len) of @v will copy from a
 * remote source (stf_watch_fetch: MADV_POPULATE_READ of the mappings),
 * mending and retrying once on failure, so that a failing source shows
 * here and not in the kernel's copy of the reply, where the reader gets
 * EIO with no retry possible. @since: stf_watch_epoch before the attempt.
 * Blocks while the source stalls. 0 or -EIO.
 */
int stfs_read_fetch(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                    uint64_t since);

/*
 * Copy [@off, @off + @len) of @v into @buf (a range of more extents than
 * one reply takes), mending the shard and retrying once on failure.
 * @since as above. 0 or -errno.
 */
int stfs_read_gather(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                     uint64_t since, char *buf);

/*
 * After the reply to a read of [@off, @off + @len) of @v returned @ret:
 * -EFAULT (the kernel's copy from a mapping failed, the reader got EIO)
 * mends the shard for the next read; 0 (the bytes are in the mount's page
 * cache now) lets the cache policy drop the source's copy.
 */
void stfs_read_replied(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                       uint64_t since, int ret);

#endif
