/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_FS_H
#define STFS_FS_H

/*
 * The FUSE layer: thin glue between the kernel and core/. Core returns
 * 0/-errno; the sign is flipped here, at the edge, and nowhere else.
 */

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "model.h"
#include "tree.h"

struct stfs {
	struct stf_model *model;
	struct stf_tree *tree;
	uid_t uid;
	gid_t gid;
	struct timespec dir_mtime; /* newest shard mtime */
	double timeout;            /* entry/attr timeout, seconds */
	bool debug;
	unsigned readahead_kb; /* 0: kernel default */

	/* /.stfs documents, generated on first use, then kept. */
	pthread_mutex_t lock;
	char *special[STF_SPECIAL_COUNT];
	size_t special_len[STF_SPECIAL_COUNT];
};

extern const struct fuse_lowlevel_ops stfs_ops;

/* Log a line: to stderr in the foreground, to syslog once daemonized. */
void stfs_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void stfs_log_to_syslog(void);

#endif
