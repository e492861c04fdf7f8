/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_CONTROL_H
#define STFS_CONTROL_H

/*
 * The control plane: /.stfs/control (ioctls of stfs_ioctl.h; text commands
 * where the mount is writable) and /.stfs/status (a JSON snapshot taken at
 * open). Jobs run in the background on core/prefetch; the host target
 * pushes bytes into the mount's page cache with notify_store.
 */

#include "stfs.h"

int stfs_control_init(struct stfs *fs);
/* Cancel and wait for every job, free them. */
void stfs_control_destroy(struct stfs *fs);

void stfs_control_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                        struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                        size_t in_bufsz, size_t out_bufsz);

/* A text command (one or more lines) written to the control file by @uid;
 * the reply (owned by the caller, free()) is what a read returns next. */
char *stfs_control_text(struct stfs *fs, uid_t uid, const char *text, size_t len);

/* The /.stfs/status document, new text (caller frees); NULL on ENOMEM. */
char *stfs_status_json(struct stfs *fs, size_t *len);

/* user.stfs.cuda of tensor @t into @buf: length, or -ENODATA. */
int stfs_cuda_xattr(struct stfs *fs, size_t t, char *buf, size_t cap);

#endif
