/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_LOG_H
#define STFS_LOG_H

/*
 * The daemon's log: stderr in the foreground, syslog once daemonized.
 * libfuse's own messages go the same way (stfs_log_init).
 */

#include <stdbool.h>
#include <syslog.h>

#include "model.h"
#include "watch.h"

/* Route libfuse's messages through this log. */
void stfs_log_init(void);
/* From now on, to syslog (call before daemonizing). */
void stfs_log_to_syslog(void);

/* Log a line at @prio (LOG_ERR, LOG_WARNING, ...). Thread-safe. */
void stfs_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Log one line for event @ev of shard @s, with error @err (positive errno
 * or 0), as the watcher reports it (see stf_watch_report_fn). */
void stfs_log_shard(const struct stf_shard *s, enum stf_watch_event ev, int err);

#endif
