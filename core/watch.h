/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_WATCH_H
#define STF_WATCH_H

/*
 * The shard watcher: what is known of each shard file since the mount, and
 * what to do when a read of it fails.
 *
 * Truncation. A source truncated while mounted must not be served as zeros
 * (the tail of a partial page reads as zeros through the mapping), nor
 * fault the daemon. inotify says when a shard changes; a thread then
 * re-reads every shard's size, which readers check with one atomic load
 * per shard extent they touch. A shard found short (by the watcher's size,
 * or by a failed read that the caller reports with stf_watch_fault) is
 * reported once, however often it is read afterwards.
 *
 * Whole-shard loss. A shard written to while mounted (an IN_MODIFY event,
 * the file not shorter than at mount: an overwrite in place), or found no
 * longer to be the file mounted (a different size, mtime or header, by the
 * periodic check below or by a reopen), has lost every byte: its size is
 * held at 0, so no range of it is intact and every read of it is refused.
 * Its bytes may already be mixed (some pages old, some new) and no read may
 * serve them (the report drops what a cache holds of them). A read that
 * races with the change itself, before it is seen, can still see new bytes.
 *
 * Network sources. inotify sees no change made by another machine, so the
 * shards on a remote filesystem (core/fstype), and any shard inotify could
 * not watch, are checked by fstat every check interval: a size or mtime
 * other than at mount is a whole-shard loss (changed). And their reads can
 * fail while the file is fine: a network client that reconnected (sshfs
 * -o reconnect) leaves the old open file dead (EIO, a short read, EFAULT
 * from the mapping; NFS: ESTALE). A caller whose read failed calls
 * stf_watch_mend: the shard is reopened by path, checked to be the same
 * file and remapped in place (stf_shard_reopen), and the caller retries
 * once. Reads that fail together reopen the shard once: each passes the
 * epoch it read before its attempt, and a shard reopened since then is not
 * reopened again. A shard is reopened at most once per 100 ms: a read
 * failing again within that time is refused.
 *
 * Reports go through the callback given at creation, one call per event:
 * a loss once per shard; a reopen each time (at most 10 per second per
 * shard); a failed reopen once until the shard is reopened again. Whole-
 * shard losses (written, changed) are reported on the watcher's thread,
 * never on a reader's, so that the callback may drop caches that a reader
 * in flight holds locked.
 *
 * Thread safety: every function but stf_watch_free may be called from
 * many threads at once.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "strbuf.h"
#include "view.h"

struct stf_watch;

enum stf_watch_event {
        STF_WATCH_SHORT,       /* shorter than at mount: the lost range is refused */
        STF_WATCH_WRITTEN,     /* written to while mounted: every read refused */
        STF_WATCH_CHANGED,     /* not the file mounted any more: every read refused */
        STF_WATCH_REOPENED,    /* a read failed with @err; reopened, the same file */
        STF_WATCH_UNREACHABLE, /* a read failed; reopening failed too, with @err */
};

/* @err: a positive errno for REOPENED (the read's) and UNREACHABLE (the
 * reopen's), the error that revealed a CHANGED shard (0 for the check),
 * else 0. */
typedef void (*stf_watch_report_fn)(void *ctx, const struct stf_shard *s, enum stf_watch_event ev,
                                    int err);

struct stf_watch_opts {
        unsigned check_ms; /* fstat interval of remote shards; 0: no check */
        bool check_all;    /* check every shard, local ones too */
};

/*
 * Watch the shards of @m (which the caller keeps open until stf_watch_free).
 * Sizes start as those at open. @o may be NULL: no periodic check. Without
 * inotify the sizes stay those, but for the checks and stf_watch_fault.
 * @report may be NULL. Returns 0 or -ENOMEM.
 */
int stf_watch_new(const struct stf_model *m, const struct stf_watch_opts *o,
                  stf_watch_report_fn report, void *ctx, struct stf_watch **out);

/*
 * Stop the thread and free; accepts NULL. A thread stuck in a check of a
 * stalled source is given 2 s; then the watch is left allocated (a bounded
 * leak at exit) rather than freed under it, and that thread returns as
 * soon as its call does, touching nothing else.
 */
void stf_watch_free(struct stf_watch *w);

/* Does shard @shard still hold its bytes below @end? True for a NULL @w. */
bool stf_watch_covers(const struct stf_watch *w, uint32_t shard, uint64_t end);

/*
 * Do the shard extents under [@off, @off + @len) of @v (a view over the
 * watched model) still exist in their files? O(log n + extents touched).
 */
bool stf_watch_intact(const struct stf_watch *w, const struct stf_view *v, uint64_t off,
                      size_t len);

/*
 * A read of [@off, @off + @len) of @v failed or was refused: ask each
 * shard under the range for its size now (fstat), keep it, and report the
 * shards that are short (not merely the first one under the range, which a
 * view spanning two shards may hold intact), each once. Returns whether
 * any shard under the range is short or lost. Accepts a NULL @w (false).
 */
bool stf_watch_fault(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len);

/*
 * Does shard @shard no longer hold its bytes below @end (truncated or
 * lost)? NULL when it does; else it is reported (stf_watch_report) and its
 * state is returned (stf_watch_state), for a message.
 */
const char *stf_watch_lost(struct stf_watch *w, uint32_t shard, uint64_t end);

/* Report @shard as short (once; later calls do nothing). */
void stf_watch_report(struct stf_watch *w, uint32_t shard);

/*
 * Shard @shard was written to (the thread calls this on IN_MODIFY): unless
 * it is now shorter than at mount (a truncation, left to the size checks),
 * it is refused from now on and reported. Accepts a NULL @w.
 */
void stf_watch_written(struct stf_watch *w, uint32_t shard);

/* Re-read every shard's size now, as the thread does on an event. */
void stf_watch_refresh(struct stf_watch *w);

/* Is shard @shard on a remote filesystem (core/fstype)? False for NULL @w. */
bool stf_watch_remote(const struct stf_watch *w, uint32_t shard);

/* The reopen epoch now: pass it to stf_watch_mend after a failed read. */
uint64_t stf_watch_epoch(const struct stf_watch *w);

/*
 * Fetch the pages of [@off, @off + @len) of @v that live on remote shards
 * into their mappings now (MADV_POPULATE_READ), so that a source that fails
 * shows here, as an error the caller can act on (stf_watch_mend), instead
 * of as EFAULT in the kernel's copy of a reply. Local shards are left to
 * the copy. Returns 0, or -EFAULT (a page could not be read) or another
 * -errno of madvise; 0 where the kernel lacks MADV_POPULATE_READ (5.14).
 */
int stf_watch_fetch(const struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len);

/* The same for @len bytes at @p, inside the mapping of shard @shard. */
int stf_watch_fetch_shard(const struct stf_watch *w, uint32_t shard, const void *p, size_t len);

/*
 * A read of [@off, @off + @len) of @v (or, for the _shard form, of shard
 * @shard) failed with -@err, on an attempt that began at epoch @since:
 * find out why and mend what can be mended. Shards found short are
 * reported (stf_watch_fault); every other shard under the range that was
 * not reopened since @since is reopened (stf_shard_reopen): a different
 * file is a whole-shard loss (changed), an unreachable one is reported.
 * Returns 0 when every shard under the range is, as far as can be known,
 * readable again (the caller retries once), else -EIO. NULL @w: -EIO.
 */
int stf_watch_mend(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len,
                   uint64_t since, int err);
int stf_watch_mend_shard(struct stf_watch *w, uint32_t shard, uint64_t since, int err);

/*
 * Read from shard @shard with @attempt(@arg) (0 or -errno), and if that
 * fails, mend the shard (stf_watch_mend_shard, with the epoch taken before
 * the attempt) and, once mended, call @attempt once more: the one
 * reopen-check-retry step of every reader of a shard that is not a FUSE
 * reply (host and CUDA prefetch). Returns the last attempt's result. NULL
 * @w: one attempt.
 */
int stf_watch_retry_shard(struct stf_watch *w, uint32_t shard, int (*attempt)(void *arg),
                          void *arg);

/* stf_watch_fetch_shard of @len bytes at @p, retried so (a mapping that
 * a reconnect left dead is replaced, then fetched again). 0 or -errno. */
int stf_watch_fetch_mended(struct stf_watch *w, uint32_t shard, const void *p, size_t len);

/*
 * Check every remote (or, with check_all, every) shard now, as the thread
 * does each check interval: stf_shard_stat_now; a size or mtime other than at mount is
 * a change (whole-shard loss); a failed fstat is mended like a failed read.
 */
void stf_watch_check(struct stf_watch *w);

/*
 * The state of shard @shard: "ok", "truncated" (shorter than at mount),
 * "written" (to, while mounted), "changed" (not the file mounted) or
 * "unreachable" (its last reopen failed). A static string.
 */
const char *stf_watch_state(const struct stf_watch *w, uint32_t shard);

/*
 * Append the member "shards" of the status document to @sb: an array of
 * the shards that are not as mounted or were reopened, each
 * {"shard": REL, "fs": NAME, "state": "ok" | "truncated" | "written" |
 * "changed" | "unreachable", "reopened": N, "error": TEXT or null}, where
 * error is the last read or reopen error seen. Then "check_interval_ms".
 */
void stf_watch_status_json(const struct stf_watch *w, struct stf_strbuf *sb);

#endif
