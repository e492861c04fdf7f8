/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_READS_H
#define STFS_READS_H

/*
 * Data reads off the FUSE worker threads, for sources that may stall.
 *
 * By default (zero-copy) a READ is answered on the FUSE worker with
 * pointers into the shard mapping, and the kernel copies: when the source
 * stalls (a network filesystem), the worker sits in an uninterruptible
 * page fault, and once every worker does, no lookup, getattr, listing or
 * .stfs file is answered either. With async reads a READ is handed to a
 * pool of data threads (core/dpool) and the worker is free at once; a data
 * thread preads the range into its own buffer and replies. A read not
 * answered within the read timeout gets EIO (the data thread's later
 * result is dropped); data threads stuck on the source are not replaced,
 * so while all are stuck, new reads wait in a queue and get EIO at their
 * own deadline. See README, "Models on network storage".
 *
 * Mode: STFS_READS_AUTO turns async reads on when a shard is on a remote
 * filesystem (core/fstype), ON always, OFF never.
 */

#include <stdbool.h>

#include <fuse_lowlevel.h>

enum stfs_reads_mode { STFS_READS_AUTO, STFS_READS_ON, STFS_READS_OFF };

struct stfs;
struct stfs_reads;

struct stfs_reads_opts {
        enum stfs_reads_mode mode;
        unsigned threads;    /* data threads */
        unsigned timeout_ms; /* per read; 0: wait for ever */
};

#define STFS_READS_THREADS_DEFAULT 16
#define STFS_READS_THREADS_MAX 1024
#define STFS_READ_TIMEOUT_DEFAULT_S 30

/* Parse "auto", "on" or "off". */
bool stfs_reads_parse_mode(const char *s, enum stfs_reads_mode *out);

/*
 * Whether @fs (its model open) gets async reads under @o; *@why (may be
 * NULL) gets a short reason for the log ("source on fuse").
 */
bool stfs_reads_wanted(const struct stfs *fs, const struct stfs_reads_opts *o, const char **why);

/*
 * Start the data threads (after daemonizing: a fork keeps no thread).
 * Returns 0 or -errno (-ENOMEM, -EAGAIN: no thread could start).
 */
int stfs_reads_new(struct stfs *fs, const struct stfs_reads_opts *o, struct stfs_reads **out);

/*
 * Answer READ @req of [@off, @off + @size) of inode @ino of @fs (which has
 * async reads) later, from a data thread, or EIO at the deadline. Exactly
 * one reply, whatever happens.
 */
void stfs_reads_submit(struct stfs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);

/*
 * At exit, while the session can still take replies: answer every read in
 * flight (EIO), take no more, wait up to @wait_ms for the data threads.
 * Returns how many are still stuck on the source (then the model, the
 * namespace and @r must stay allocated). Accepts NULL (returns 0).
 */
unsigned stfs_reads_stop(struct stfs_reads *r, unsigned wait_ms);

/* Free (after stop; nothing while a data thread is stuck). Accepts NULL. */
void stfs_reads_free(struct stfs_reads *r);

#endif
