/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_FSTYPE_H
#define STF_FSTYPE_H

/*
 * What kind of filesystem holds a shard, from statfs's f_type: one list
 * for every part of stfs that treats network storage differently (change
 * polling, read recovery, read timeouts).
 *
 * "Remote" here means: the file can change without this kernel seeing the
 * write (another client, the server), so inotify says nothing; and its
 * reads go to a server or a user-space daemon, so they can stall or fail
 * with EIO, ESTALE or ENOTCONN while a local disk would answer. Every FUSE
 * filesystem counts (sshfs, s3fs, gcsfuse, GlusterFS, virtiofs, ... all
 * look the same from here, and a local FUSE filesystem can stall too),
 * and NFS, SMB/CIFS, 9p, Ceph, AFS, Lustre, GPFS, BeeGFS, OrangeFS, GFS2,
 * OCFS2 and the like. A type not in the list counts as local.
 */

#include <stdbool.h>

/*
 * Classify statfs f_type @magic: returns true when it is remote (above).
 * *@name (may be NULL) gets a short lower-case name ("fuse", "nfs", "ext4",
 * ...), or "unknown" (static strings).
 */
bool stf_fstype_classify(long magic, const char **name);

/*
 * Classify the filesystem of the open file @fd (fstatfs). Returns 1 when
 * it is remote, 0 when local, -errno when fstatfs fails (*@name is then
 * "unknown"). @name may be NULL.
 */
int stf_fstype_fd(int fd, const char **name);

#endif
