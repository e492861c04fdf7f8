/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_CONTROL_H
#define STFS_CONTROL_H

/*
 * The control plane of a mount: /.stfs/control takes the ioctls of
 * stfs_ioctl.h (ioctl.c) and, where the mount is writable, text commands
 * (textcmd.c). Both hand requests to the mount's residency (core/: the job
 * table and what is resident where, fs->res); control.c creates it with
 * the host target, which pushes bytes into the mount's page cache with
 * notify_store, and stops it at exit.
 */

#include <stdint.h>

#include "stfs.h"

/* Create fs->res. 0 or -ENOMEM. */
int stfs_control_init(struct stfs *fs);

/* Cancel every job and wait until none runs, while the session can still
 * take their pushes (after a grace period the connection is cut). False
 * when a job still runs after @wait_ms (stuck on a stalled source): then
 * the jobs and what they read must stay allocated. */
bool stfs_control_stop(struct stfs *fs, unsigned wait_ms);

/* Free every job (cancelled, waited for) and fs->res; sets it NULL, so
 * a second call does nothing. */
void stfs_control_destroy(struct stfs *fs);

/* Drop the page cache of tensor @t (its file and .npy view); @fs is the
 * struct stfs. For stf_residency_evict. */
void stfs_control_drop_host(void *fs, uint32_t t);

/* The ioctl op of the control file: exactly one reply. */
void stfs_control_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                        struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                        size_t in_bufsz, size_t out_bufsz);

/* A text command (one or more lines) written to the control file by @uid;
 * the reply (owned by the caller, free()) is what a read returns next.
 * NULL on ENOMEM. */
char *stfs_control_text(struct stfs *fs, uid_t uid, const char *text, size_t len);

#endif
