/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_CACHE_H
#define STF_CACHE_H

/*
 * How many cached copies of the model a mount keeps (-o cache=MODE).
 *
 * A byte read through the mount sits in two page caches: the source
 * file's (behind the daemon's shard mapping) and the mount's own (of the
 * tensor file the reader opened). In single mode (the default), once the
 * bytes of a range are in the mount's page cache (a READ was answered, a
 * host prefetch pushed them) the daemon lets go of its copy: the range's
 * pages are unmapped from its shard mapping (MADV_DONTNEED) and dropped
 * from the source file's page cache (POSIX_FADV_DONTNEED). In double mode
 * nothing is dropped: for boxes where other programs read the source files
 * directly and want them cached.
 *
 * Only whole pages of the source whose every byte has been served are
 * dropped, so a neighbour tensor's part of a shared page stays until it is
 * served too. A page served in two pieces (a read boundary, a tensor
 * boundary) is remembered as a served prefix and suffix until the pieces
 * meet; at most STF_CACHE_PARTIAL such pages are remembered at once (more
 * stay cached, which costs memory, never bytes). The source's large folios
 * (up to 2 MiB) are dropped once every page of them is served: a call
 * drops the pages it served whole, and the whole 2 MiB block at either end
 * of them once every page of that block is served. So a
 * folio holding bytes nobody read through the mount stays whole, and so
 * does the one holding a shard's header (the daemon maps it).
 *
 * Dropping is advice: a page another process maps stays cached, and a
 * page evicted later from the mount's cache is read from the disk again by
 * the next read (as on any file system). Correctness never depends on it.
 *
 * Thread safety: stf_cache_served* may be called from any number of
 * threads at once.
 */

#include <stdint.h>

#include "model.h"
#include "view.h"

enum stf_cache_mode {
        STF_CACHE_SINGLE, /* the default: drop the source's copy once served */
        STF_CACHE_DOUBLE, /* keep both copies */
};

/*
 * A call that serves fewer whole pages than this many bytes drops nothing
 * at once: its pages go when their 2 MiB block is served whole (a prefetch
 * of 4 KiB chunks would otherwise cost two system calls per chunk). Bytes
 * read in small pieces here and there stay in both caches.
 */
#define STF_CACHE_MIN_DROP (256u << 10)

/* Pages served in pieces that are remembered at once (see above). */
#define STF_CACHE_PARTIAL 65536

/* "single" or "double". Returns 0 or -EINVAL. */
int stf_cache_mode_parse(const char *s, enum stf_cache_mode *out);

/* The name of @mode ("single", "double"). */
const char *stf_cache_mode_name(enum stf_cache_mode mode);

/*
 * Let go of bytes [@begin, @end) of shard @shard (page aligned; @end may
 * pass the shard's end to cover its last page). For tests; the mount's is
 * stf_cache_drop_pages.
 */
typedef void (*stf_cache_drop_fn)(void *ctx, uint32_t shard, uint64_t begin, uint64_t end);

/* MADV_DONTNEED of the range of @ctx's (a struct stf_model) shard mapping,
 * then POSIX_FADV_DONTNEED of it on the shard's descriptor. */
void stf_cache_drop_pages(void *ctx, uint32_t shard, uint64_t begin, uint64_t end);

struct stf_cache;

/*
 * The cache policy of a mount of @m (borrowed; it outlives the cache).
 * @drop/@ctx: what a drop does (NULL: stf_cache_drop_pages with @m).
 * Returns 0 or -ENOMEM.
 */
int stf_cache_new(const struct stf_model *m, enum stf_cache_mode mode, stf_cache_drop_fn drop,
                  void *ctx, struct stf_cache **out);

/* Accepts NULL. */
void stf_cache_free(struct stf_cache *c);

/* Bytes [@begin, @end) of shard @shard are in the mount's page cache. */
void stf_cache_served(struct stf_cache *c, uint32_t shard, uint64_t begin, uint64_t end);

/* Bytes [@off, @off + @len) of view @v are: its shard extents, as above.
 * Accepts a NULL @c (no policy: nothing done). */
void stf_cache_served_view(struct stf_cache *c, const struct stf_view *v, uint64_t off,
                           uint64_t len);

#endif
