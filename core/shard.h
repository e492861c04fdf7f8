/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SHARD_H
#define STF_SHARD_H

/*
 * One shard file: opened read-only, fstat'ed, mapped whole (MAP_SHARED,
 * PROT_READ) and its header parsed against the size fstat saw. Nothing of a
 * shard is trusted before the header has been validated against that size.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "format.h"
#include "report.h"

struct stf_shard {
        char *path;             /* as opened */
        const char *name;       /* file name (points into path) */
        const char *rel;        /* path relative to the model's root (into
                                   path; set by the model), else name */
        int fd;                 /* read-only */
        uint64_t size;          /* at open */
        struct timespec mtime;  /* at open */
        const uint8_t *map;     /* read-only shared mapping of the whole file */
        struct stf_header *hdr; /* its parsed header */
        uint64_t head_sum;      /* checksum of bytes [0, hdr->data_start) at open */
        bool large;             /* stf_shard_advise_large took */
};

/*
 * Open @path read-only for a check of the source, never blocking: only a
 * regular file is opened. A FIFO would block open() until a writer comes (a
 * mount or an fstab line at boot hanging for ever), a device could do
 * anything, so anything else is refused with one problem naming the file
 * and what it is ("FILE: not a regular file (a FIFO)"). The file is
 * stat'ed first and opened with O_NONBLOCK, then fstat'ed again (it may
 * have been replaced in between). *@st gets the fstat.
 * Returns the descriptor (O_CLOEXEC), or -errno after reporting to @sink:
 * -EINVAL for a file that is not regular.
 */
int stf_open_regular(const char *path, struct stat *st, struct stf_sink *sink);

/*
 * Raise this process's soft RLIMIT_NOFILE to its hard limit: a model keeps
 * one descriptor per shard open, and the usual soft limit of 1024 would
 * refuse a 5,000-shard model that the system allows ("Too many open
 * files"). For programs that open models (stfs, stfsctl); nothing in them
 * uses select(). Returns 0 or -errno of setrlimit (the limit stays).
 */
int stf_shard_raise_fd_limit(void);

/*
 * Headers parsed at once, by all threads of stf_shard_open_all together:
 * at most this many bytes of header text, except that a header bigger than
 * that is parsed when no other is (alone). The JSON tree of a header takes
 * 20-80 times its text while it is parsed, so the peak is that of
 * max(this, the biggest header), not that times the number of threads.
 */
#define STF_PARSE_BUDGET (8u << 20)

/*
 * Make @s a closed shard for @path (copied). Returns 0 or -ENOMEM; either
 * way @s can be passed to stf_shard_close.
 */
int stf_shard_init(struct stf_shard *s, const char *path);

/*
 * Open, map and parse @n shards already given their paths (stf_shard_init),
 * on up to 8 threads: a big set has hundreds of shards and the JSON parse
 * dominates mount time. Headers are parsed within STF_PARSE_BUDGET. Problems go to @sink as if the
 * shards were opened one after the other: in the first problem mode the one of the first failing
 * shard (later shards may stay closed); in the check mode every shard's, in shard order, and a
 * shard that fails is left without a header. Returns 0 or the first failing shard's -errno (see
 * stf_sink_settle for the check mode), -ENOMEM.
 */
int stf_shard_open_all(struct stf_shard *v, uint32_t n, struct stf_sink *sink);

/* Does @st (a stat of @s's path or descriptor) show the file as at open: a
 * regular file of the same size and mtime? */
bool stf_shard_unchanged(const struct stf_shard *s, const struct stat *st);

/*
 * fstat @fd as the server sees it now: statx with AT_STATX_FORCE_SYNC, so
 * that a network filesystem asks its server rather than answer from its
 * attribute cache (NFS, FUSE; a FUSE daemon may still keep a cache of its
 * own: sshfs's dcache_timeout), falling back to fstat. Fills st_mode,
 * st_size, st_mtim and st_ino of *@st (others zero). 0 or -errno.
 */
int stf_shard_stat_now(int fd, struct stat *st);

/*
 * Open @s again by its path, and if it is still the same file, put the new
 * file under the old mapping and the old descriptor number: for a source
 * whose open file died while the file itself is fine (a network client
 * that reconnected: sshfs, NFS after ESTALE, ...). "The same file": a
 * regular file with the size and mtime seen at open, whose header bytes
 * (size field and JSON) have the checksum they had at open. The data
 * bytes are not read: a change that keeps size, mtime and header is not
 * seen.
 *
 * Nothing a reader holds changes: s->map keeps its address (the new
 * mapping is built aside, then moved over the old one with mremap, which
 * replaces it in one step) and s->fd its number (dup3 over it). So readers
 * in flight need no lock and no reference: a copy from the mapping or a
 * pread that runs across the swap reads the old file or the new one, and
 * both hold the same bytes. The caller serializes reopens of one shard.
 *
 * Returns 0; -ESTALE when the file at the path is not the same file (or not
 * a regular file); -EINVAL for a shard that was never mapped and parsed;
 * else -errno of open, fstat, pread (-EIO for a short read) or the mapping
 * (the shard is then left as it was).
 */
int stf_shard_reopen(struct stf_shard *s);

/* Unmap, close and free; accepts a shard that was only initialised. */
void stf_shard_close(struct stf_shard *s);

/*
 * Have faults of @s's mapping read large folios (MADV_HUGEPAGE: the
 * kernel's fault readahead then reads 2 MiB folios where the filesystem
 * has them, and maps them whole; kept across stf_shard_reopen). Only for a
 * local file: a network filesystem's page cache holds small pages, and
 * each fault would read 4 MiB around it. Returns (and sets s->large)
 * whether the advice took.
 */
bool stf_shard_advise_large(struct stf_shard *s);

#endif
