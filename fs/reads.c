/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Async data reads (reads.h): the FUSE glue around core/dpool. A job holds
 * its request, its own reference to the view, and the range.
 *
 * The data thread does what a FUSE worker does for a read (ops.c
 * read_view), split at the reply: it fetches the pages of remote shards
 * into the mappings (stfs_read_fetch: MADV_POPULATE_READ, mending and
 * retrying once), which is where a stalled source makes it wait, in a
 * killable sleep (process exit ends it) with no lock of this mount held;
 * then, if its item was not answered meanwhile, it replies with pointers
 * into the mappings and the kernel copies resident pages once. A range of
 * more extents than one reply takes is pread into a buffer of the thread
 * (kept: a fresh 1 MiB malloc is an mmap and 256 page faults per read).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "dpool.h"
#include "fstype.h"
#include "ops.h"
#include "reads.h"
#include "stfs.h"

/* Extents one zero-copy reply takes (as ops.c read_view). */
#define READS_IOVS 256
/* Reads waiting for a data thread at most; beyond, EIO at once. The kernel
 * sends one READ per reading thread plus max_background (64) readahead. */
#define QUEUE_MAX 4096
/* A stalled source logs one line per this many seconds at most. */
#define LOG_EVERY_NS (10ull * 1000000000ull)

struct stfs_reads {
        struct stfs *fs;
        struct stf_dpool *pool;
        unsigned threads;
        unsigned timeout_s;
        char **buf; /* per data thread */
        size_t *cap;
        struct iovec (*iov)[READS_IOVS]; /* per data thread */
        _Atomic uint64_t logged_ns;      /* last timeout line */
};

struct job {
        struct stf_dpool_item item;
        struct stfs_reads *r;
        fuse_req_t req;
        const struct stf_view *v;
        struct stf_view tmp; /* the view when it is built in our storage */
        uint64_t off;
        size_t want;
        uint64_t since;          /* stf_watch_epoch before the attempt */
        const struct iovec *iov; /* the bytes, resident in the mappings */
        size_t niov;
        const char *data; /* or: read into the thread's buffer */
};

bool stfs_reads_parse_mode(const char *s, enum stfs_reads_mode *out)
{
        static const char *const names[] = {"auto", "on", "off"};

        for (unsigned i = 0; i < 3; i++) {
                if (!strcmp(s, names[i])) {
                        *out = (enum stfs_reads_mode)i;
                        return true;
                }
        }
        return false;
}

bool stfs_reads_wanted(const struct stfs *fs, const struct stfs_reads_opts *o, const char **why)
{
        const char *name = NULL;

        if (why)
                *why = o->mode == STFS_READS_ON ? "any filesystem (-o async_reads=on)" : NULL;
        if (o->mode != STFS_READS_AUTO)
                return o->mode == STFS_READS_ON;
        for (size_t i = 0; i < fs->model->nshards; i++) {
                if (stf_fstype_fd(fs->model->shards[i].fd, &name) == 1) {
                        if (why)
                                *why = name;
                        return true;
                }
        }
        return false;
}

static struct job *job_of(struct stf_dpool_item *it)
{
        return (struct job *)((char *)it - offsetof(struct job, item));
}

/* A range of more extents than one reply takes: into the thread's buffer. */
static int read_copy(struct stfs_reads *r, unsigned worker, struct job *j)
{
        int ret;

        if (r->cap[worker] < j->want) {
                char *nb = realloc(r->buf[worker], j->want);

                if (!nb)
                        return -ENOMEM;
                r->buf[worker] = nb;
                r->cap[worker] = j->want;
        }
        ret = stfs_read_gather(r->fs, j->v, j->off, j->want, j->since, r->buf[worker]);
        j->data = r->buf[worker];
        return ret;
}

static int job_work(void *ctx, unsigned worker, struct stf_dpool_item *it)
{
        struct stfs_reads *r = ctx;
        struct job *j = job_of(it);
        size_t got;
        int ret;

        j->since = stf_watch_epoch(r->fs->watch);
        j->niov = stf_view_iov(j->v, j->off, j->want, r->iov[worker], READS_IOVS, &got);
        if (got != j->want)
                return read_copy(r, worker, j);
        stfs_read_prefault(r->fs, r->iov[worker], j->niov);
        ret = stfs_read_fetch(r->fs, j->v, j->off, j->want, j->since);
        if (!ret)
                j->iov = r->iov[worker];
        return ret;
}

/* The shard a read of @j waits on (the first under its range), for the log. */
static const char *shard_name(const struct job *j)
{
        const struct stf_view *v = j->v;

        for (size_t i = stf_view_find(v, j->off); i < v->n && v->ext[i].off < j->off + j->want; i++)
                if (v->ext[i].shard >= 0)
                        return j->r->fs->model->shards[v->ext[i].shard].path;
        return "?";
}

static void log_timeout(struct job *j)
{
        uint64_t now = stf_now_ns(), last = atomic_load(&j->r->logged_ns);

        if (last && now - last < LOG_EVERY_NS)
                return;
        if (!atomic_compare_exchange_strong(&j->r->logged_ns, &last, now))
                return;
        stfs_log(LOG_ERR,
                 "%s: a read waited %u s for the source: EIO (the source stalls; "
                 "-o read_timeout sets the wait)",
                 shard_name(j), j->r->timeout_s);
}

static void job_reply(void *ctx, struct stf_dpool_item *it, int result)
{
        struct stfs_reads *r = ctx;
        struct job *j = job_of(it);

        if (result == 0) {
                stfs_read_replied(r->fs, j->v, j->off, j->want, j->since,
                                  j->iov ? fuse_reply_iov(j->req, j->iov, (int)j->niov)
                                         : fuse_reply_buf(j->req, j->data, j->want));
                return;
        }
        if (result == -ETIMEDOUT) {
                stf_residency_count(j->r->fs->res, STF_COUNT_READ_TIMEOUTS, 1);
                log_timeout(j);
        }
        /* timed out, or the daemon stops: the reader gets EIO */
        fuse_reply_err(j->req, result == -ETIMEDOUT || result == -ESHUTDOWN ? EIO : -result);
}

static void job_release(void *ctx, struct stf_dpool_item *it)
{
        struct stfs_reads *r = ctx;
        struct job *j = job_of(it);

        stf_ns_view_put(r->fs->ns, j->v);
        free(j);
}

static const struct stf_dpool_ops job_ops = {job_work, job_reply, job_release};

int stfs_reads_new(struct stfs *fs, const struct stfs_reads_opts *o, struct stfs_reads **out)
{
        struct stfs_reads *r = calloc(1, sizeof(*r));
        int ret = -ENOMEM;

        if (!r)
                return -ENOMEM;
        r->fs = fs;
        r->threads = o->threads;
        r->timeout_s = o->timeout_ms / 1000;
        r->buf = calloc(o->threads, sizeof(*r->buf));
        r->cap = calloc(o->threads, sizeof(*r->cap));
        r->iov = calloc(o->threads, sizeof(*r->iov));
        if (r->buf && r->cap && r->iov)
                ret = stf_dpool_new(o->threads, o->timeout_ms, QUEUE_MAX, &job_ops, r, &r->pool);
        if (ret) {
                stfs_reads_free(r);
                return ret;
        }
        *out = r;
        return 0;
}

void stfs_reads_submit(struct stfs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
        struct job *j = calloc(1, sizeof(*j));
        int ret;

        if (!j) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        ret = stf_ns_view(fs->ns, ino, &j->tmp, &j->v);
        if (ret) {
                free(j);
                fuse_reply_err(req, -ret);
                return;
        }
        ret = stfs_read_span(fs, j->v, size, off, &j->want);
        if (!ret && j->want) {
                j->r = fs->reads;
                j->req = req;
                j->off = (uint64_t)off;
                ret = stf_dpool_submit(fs->reads->pool, &j->item);
                if (!ret) {
                        stf_residency_count(fs->res, STF_COUNT_ASYNC_READS, 1);
                        return; /* answered by the pool */
                }
                ret = -EIO; /* queue full or stopping */
        }
        if (ret)
                fuse_reply_err(req, -ret);
        else
                fuse_reply_buf(req, NULL, 0); /* at or past the end */
        stf_ns_view_put(fs->ns, j->v);
        free(j);
}

unsigned stfs_reads_stop(struct stfs_reads *r, unsigned wait_ms)
{
        return r ? stf_dpool_stop(r->pool, wait_ms) : 0;
}

void stfs_reads_free(struct stfs_reads *r)
{
        if (!r)
                return;
        if (r->pool) {
                if (stf_dpool_stop(r->pool, 0))
                        return; /* a data thread still uses r */
                stf_dpool_free(r->pool);
        }
        for (unsigned i = 0; r->buf && i < r->threads; i++)
                free(r->buf[i]);
        free(r->buf);
        free(r->cap);
        free(r->iov);
        free(r);
}
