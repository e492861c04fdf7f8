/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_WATCH_H
#define STF_WATCH_H

/*
 * The shard watcher: a source truncated while mounted must not be served
 * as zeros (the tail of a partial page reads as zeros through the mapping),
 * nor fault the daemon. inotify says when a shard changes; a thread then
 * re-reads every shard's size, which readers check with one atomic load
 * per shard extent they touch.
 *
 * A shard found short (by the watcher's size, or by a failed read that
 * the caller reports with stf_watch_fault) is reported once, through the
 * callback given at creation, however often it is read afterwards.
 *
 * A shard written to while mounted (an IN_MODIFY event, the file not
 * shorter than at mount: an overwrite in place, same size or longer) has
 * lost every byte: its size is held at 0, so no range of it is intact and
 * every read of it is refused, and it is reported at once, by the thread.
 * Its bytes may already be mixed (some pages old, some new) and no read
 * may serve them (the caller's report drops what a cache holds of them).
 * A read that races with the write itself, before the event is seen
 * (milliseconds), can still see the new bytes.
 *
 * Thread safety: every function but stf_watch_free may be called from
 * many threads at once; the callback runs on the thread that found the
 * loss.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "view.h"

struct stf_watch;

/* Called once per shard that lost bytes while watched; @written: it was
 * written to (every byte lost), else it is short. */
typedef void (*stf_watch_report_fn)(void *ctx, const struct stf_shard *s, bool written);

/*
 * Watch the shards of @m (which the caller keeps open until stf_watch_free).
 * Sizes start as those at open. Without inotify (or when the thread cannot
 * start) the sizes stay those, and only stf_watch_fault and
 * stf_watch_refresh update them. @report may be NULL.
 * Returns 0 or -ENOMEM.
 */
int stf_watch_new(const struct stf_model *m, stf_watch_report_fn report, void *ctx,
                  struct stf_watch **out);

/* Stop the thread and free; accepts NULL. */
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
 * view spanning two shards may hold intact), each once.
 */
void stf_watch_fault(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len);

/* Report @shard as having lost bytes (once; later calls do nothing). */
void stf_watch_report(struct stf_watch *w, uint32_t shard);

/*
 * Shard @shard was written to (the thread calls this on IN_MODIFY): unless
 * it is now shorter than at mount (a truncation, left to the size checks),
 * it is refused from now on and reported. Accepts a NULL @w.
 */
void stf_watch_written(struct stf_watch *w, uint32_t shard);

/* Re-read every shard's size now, as the thread does on an event. */
void stf_watch_refresh(struct stf_watch *w);

#endif
