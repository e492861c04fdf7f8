/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_PASSTHROUGH_H
#define STFS_PASSTHROUGH_H

/*
 * FUSE passthrough for whole source files: a file of the mount whose bytes
 * are one shard file from its first byte to its last (core/ns:
 * stf_ns_whole_shard: .stfs/shards/REL, .stfs/model.safetensors of a
 * one-file model) is opened by the kernel on the shard itself. Reads and
 * mmap then go straight to the source file (its page cache, its large
 * folios); no READ reaches the daemon and the mount caches no second copy.
 *
 * The kernel (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH) offers it in INIT, maps
 * whole files only, and registers a backing file only for a daemon with
 * CAP_SYS_ADMIN. libfuse 3.14 has no API for it, so this module speaks the
 * kernel ABI itself through the session's custom I/O hooks
 * (fuse_session_custom_io): the read hook sees whether the kernel's INIT
 * offers FUSE_PASSTHROUGH, the write hook adds it (and a stacking depth)
 * to libfuse's INIT reply and FOPEN_PASSTHROUGH plus the backing id to the
 * reply of an OPEN of a whole file; backing ids come from the ioctl
 * FUSE_DEV_IOC_BACKING_OPEN on the session's /dev/fuse descriptor, one per
 * shard, opened on first use and kept until the connection ends (the kernel
 * drops them with it). Every other message passes through untouched.
 *
 * It turns itself off, and such files are served by the daemon like any
 * other, when -o passthrough=off says so, when the process lacks
 * CAP_SYS_ADMIN, when the kernel's INIT does not offer passthrough, or when
 * registering a backing file fails (then for every shard not registered
 * yet). Each open of one inode is served the same way from its first open
 * on, as the kernel requires. At the first open of a whole file one log
 * line says whether passthrough is on, or why not (nothing when the option
 * turned it off).
 *
 * What the kernel then serves is the source file as it is: a shard
 * truncated or written to while mounted reads short or new bytes (mmap:
 * SIGBUS past the end) where the daemon would answer EIO (README,
 * Reliability); -o passthrough=off keeps the daemon's checks.
 *
 * Thread safety: every function may be called from any FUSE thread.
 */

#include <stdint.h>

#include <fuse_lowlevel.h>

#include "model.h"

enum stfs_pt_mode {
        STFS_PT_AUTO, /* on where the kernel and the privileges allow */
        STFS_PT_OFF,  /* never */
};

struct stfs_pt;

/* "auto" or "off" into *@mode. Returns 0, or -EINVAL for anything else. */
int stfs_pt_parse_mode(const char *s, enum stfs_pt_mode *mode);

/*
 * State for the shards of @m (which outlives it). The stacking depth asked
 * for in INIT is 1, or 2 where a shard is on a stacking file system itself
 * (overlayfs, as in a container image; FUSE, which may use passthrough):
 * the kernel refuses a backing file whose file system is as deep as the
 * depth asked, and a mount of depth 2 cannot be a lower layer of overlayfs.
 * Returns 0 or -ENOMEM.
 */
int stfs_pt_new(enum stfs_pt_mode mode, const struct stf_model *m, struct stfs_pt **out);

/* Free; accepts NULL. Backing ids are left to the kernel, which drops them
 * when the session's descriptor is closed. */
void stfs_pt_free(struct stfs_pt *pt);

/*
 * Install the I/O hooks on @se, mounted and not yet serving (the kernel's
 * INIT is still to be read). Their userdata is the session's: a struct
 * stfs whose pt is @pt. Installs nothing when the mode is off or without
 * CAP_SYS_ADMIN (passthrough is then off). Returns 0, or the -errno of
 * fuse_session_custom_io (passthrough off, the session unchanged).
 */
int stfs_pt_attach(struct stfs_pt *pt, struct fuse_session *se);

/*
 * Reply to the OPEN @req of a whole file of shard @shard, whose descriptor
 * is @fd (read-only, open for the mount's life; @path names it in the log):
 * with passthrough when it is on, else a plain fuse_reply_open(@req, @fi).
 * Exactly one reply. @pt may be NULL (plain reply).
 */
void stfs_pt_reply_open(struct stfs_pt *pt, fuse_req_t req, struct fuse_file_info *fi,
                        uint32_t shard, int fd, const char *path);

#endif
