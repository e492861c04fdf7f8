/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE low-level operations. Every op sends exactly one reply on every
 * path. The model never changes while mounted, so nodes are permanent:
 * lookup counts need no bookkeeping and forget is a no-op.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <syslog.h>

#include "control.h"
#include "docs.h"
#include "ops.h"
#include "passthrough.h"
#include "reads.h"
#include "stfs.h"

static struct stfs *fs_of(fuse_req_t req)
{
        return fuse_req_userdata(req);
}

static struct stfs_doc *doc_of(struct fuse_file_info *fi)
{
        return fi ? (struct stfs_doc *)(uintptr_t)fi->fh : NULL;
}

/* Live files (status, control) change size: the kernel must ask each time. */
static bool is_live(enum stf_ns_kind k)
{
        return k == STF_NS_STATUS || k == STF_NS_CONTROL;
}

/*
 * struct stat of @ino: the namespace decides, the owner is the mounter; a
 * live file's size is its text's (docs.h). @fi: the open file of a GETATTR,
 * or NULL. *@live (may be NULL): whether it is a live file.
 */
static int fill_attr(struct stfs *fs, fuse_ino_t ino, struct stat *st, struct fuse_file_info *fi,
                     bool *live)
{
        struct stf_ns_attr a;
        int ret = stf_ns_attr(fs->ns, ino, &a);

        if (!ret && is_live(a.kind))
                ret = stfs_doc_size(fs, a.kind, doc_of(fi), &a.size);
        if (ret)
                return ret;
        if (live)
                *live = is_live(a.kind);
        memset(st, 0, sizeof(*st));
        st->st_ino = ino;
        st->st_mode = a.mode;
        st->st_nlink = a.nlink;
        st->st_uid = fs->uid;
        st->st_gid = fs->gid;
        st->st_size = (off_t)a.size;
        st->st_blocks = (st->st_size + 511) / 512;
        /* 4 KiB like ext4: stdio sizes its buffer by this, and numpy.load
         * seeks back over a 1 MiB read-ahead of its own */
        st->st_blksize = 4096;
        st->st_mtim = st->st_ctim = st->st_atim = a.mtime;
        return 0;
}

static void fill_entry(struct stfs *fs, struct fuse_entry_param *e)
{
        e->attr_timeout = fs->timeout;
        e->entry_timeout = fs->timeout;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        struct stfs *fs = userdata;

        /* 1 MiB requests; libfuse derives max_pages from max_write. */
        conn->max_write = 1u << 20;
        /*
         * The kernel sets the bdi readahead to min(its current value, this),
         * after main() has raised the current value through sysfs (as root).
         */
        if (fs->readahead_kb)
                conn->max_readahead = fs->readahead_kb * 1024u;
        conn->max_background = 64;
        conn->congestion_threshold = 48;
        conn->time_gran = 1;
        if (conn->capable & FUSE_CAP_READDIRPLUS)
                conn->want |= FUSE_CAP_READDIRPLUS;
        conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
        /*
         * Immutable content: the kernel never drops the page cache on its
         * own (a size or mtime change, which cannot happen); only our
         * notifications do (a shard overwritten, an evict).
         */
        conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
        if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA)
                conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
        /*
         * No OPENDIR/RELEASEDIR round trips (listings are cached anyway), and
         * the kernel caches the ACL answers ("none") instead of asking on
         * every ls -l.
         */
        if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
                conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
                fs->no_opendir = true;
        }
        if (conn->capable & FUSE_CAP_POSIX_ACL)
                conn->want |= FUSE_CAP_POSIX_ACL;
        if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
                conn->want |= FUSE_CAP_PARALLEL_DIROPS;
        conn->want &=
            ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct stfs *fs = fs_of(req);
        struct fuse_entry_param e = {0};
        uint64_t ino;
        bool live = false;
        int ret;

        ret = stf_ns_lookup(fs->ns, parent, name, strlen(name), &ino);
        fill_entry(fs, &e);
        if (ret == -ENOENT) {
                /* Negative entry, cached by the kernel for the same timeout. */
                e.ino = 0;
                fuse_reply_entry(req, &e);
                return;
        }
        if (!ret)
                ret = fill_attr(fs, ino, &e.attr, NULL, &live);
        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        if (live)
                e.attr_timeout = 0;
        e.ino = ino;
        fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stfs *fs = fs_of(req);
        struct stat st;
        bool live;
        int ret = fill_attr(fs, ino, &st, fi, &live);

        if (ret)
                fuse_reply_err(req, -ret);
        else
                fuse_reply_attr(req, &st, live ? 0 : fs->timeout);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        if (doc_of(fi))
                stfs_doc_close(fs_of(req), doc_of(fi));
        fuse_reply_err(req, 0);
}

/* Open a live document of /.stfs (see docs.h). */
static void open_doc(fuse_req_t req, struct stfs *fs, const struct stf_ns_entry *e,
                     struct fuse_file_info *fi)
{
        struct stfs_doc *d;
        bool live;
        int ret = stfs_doc_open(fs, e, fi->flags, &d, &live);

        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        fi->fh = (uint64_t)(uintptr_t)d;
        /* status through the page cache (dropped at open), so mmap works */
        fi->direct_io = e->kind == STF_NS_CONTROL;
        fi->keep_cache = !live;
        if (fuse_reply_open(req, fi) == -ENOENT)
                stfs_doc_close(fs, d); /* the opener was interrupted */
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stfs *fs = fs_of(req);
        struct stf_ns_entry e;
        int ret = stf_ns_entry(fs->ns, ino, &e);
        int64_t shard;

        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        if (e.kind == STF_NS_DIR) {
                fuse_reply_err(req, EISDIR);
                return;
        }
        if (e.kind == STF_NS_DOC || e.kind == STF_NS_CONTROL || e.kind == STF_NS_STATUS) {
                open_doc(req, fs, &e, fi);
                return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
                fuse_reply_err(req, EROFS);
                return;
        }
        /* Immutable content: keep the page cache across opens; nothing to
         * write back at close. */
        fi->keep_cache = 1;
        fi->noflush = 1;
        shard = stf_ns_whole_shard(fs->ns, ino);
        if (shard >= 0) /* a whole source file: the kernel may serve it */
                stfs_pt_reply_open(fs->pt, req, fi, (uint32_t)shard, fs->model->shards[shard].fd,
                                   fs->model->shards[shard].path);
        else
                fuse_reply_open(req, fi);
}

#define READ_IOVS 256

/*
 * Whether a piece [@a, @e) of a mapping is part of a sequential read: it
 * starts within STFS_PREFAULT_NEAR of where the last large piece ended
 * (the workers answer a reader's readahead a little out of order), and so
 * did the STFS_PREFAULT_RUN pieces before it (a random read of 1 MiB
 * brings a READ or two of the mount's readahead right after it). Then the
 * fault's readahead of 2 MiB folios is what the reader needs next; a
 * random read gets the pages it asks for only. A guess from shared state:
 * readers racing on it only make it ask for pages more often.
 */
static bool sequential(struct stfs *fs, uintptr_t a, uintptr_t e)
{
        uintptr_t prev = atomic_exchange_explicit(&fs->last_piece, e, memory_order_relaxed);

        if (a > prev + STFS_PREFAULT_NEAR || prev > a + STFS_PREFAULT_NEAR) {
                atomic_store_explicit(&fs->piece_run, 0, memory_order_relaxed);
                return false;
        }
        return atomic_fetch_add_explicit(&fs->piece_run, 1, memory_order_relaxed) >=
               STFS_PREFAULT_RUN;
}

/*
 * Ask for the pages a reply is about to copy from the mappings. Without
 * it the kernel's copy faults them in one by one with mmap read-around
 * sized by the source disk's readahead (MiBs per 4 KiB read, measured);
 * with it a cold random read costs what a pread of the source does. But
 * the pages it reads are 4 KiB ones: where every shard is mapped for
 * large folios, a piece of STFS_PREFAULT_LARGE or more of a sequential
 * read is left to the fault, which reads 2 MiB folios ahead
 * (stf_shard_advise_large).
 */
void stfs_read_prefault(struct stfs *fs, const struct iovec *iov, size_t n)
{
        const uintptr_t page = 4096;

        for (size_t i = 0; i < n; i++) {
                uintptr_t a = (uintptr_t)iov[i].iov_base & ~(page - 1);
                uintptr_t e = (uintptr_t)iov[i].iov_base + iov[i].iov_len;

                if (fs->large_folios && e - a >= STFS_PREFAULT_LARGE && sequential(fs, a, e))
                        continue;
                madvise((void *)a, e - a, MADV_WILLNEED);
        }
}

/* A read of an open document: from a copy taken under its lock. */
static void read_doc(fuse_req_t req, struct stfs_doc *d, size_t size, off_t off)
{
        char *buf;
        size_t n;
        int ret = stfs_doc_read(d, size, off, &buf, &n);

        if (ret)
                fuse_reply_err(req, -ret);
        else
                fuse_reply_buf(req, buf, n);
        free(buf);
}

/*
 * Drop what the mount's page cache holds of shard @shard: the tensors in
 * it, their .npy, every subset view (any may hold it) and its file under
 * .stfs/shards. A read that raced the write may have cached new bytes
 * beside old ones; from here on every read of the shard comes to us and
 * gets EIO (a file the kernel serves by passthrough reads the source).
 */
static void drop_cached(struct stfs *fs, uint32_t shard)
{
        for (uint64_t ino = 1; ino <= 3 * stf_tree_count(fs->tree); ino++) {
                struct stf_ns_entry e;

                if (stf_ns_entry(fs->ns, ino, &e) || e.kind == STF_NS_DIR || e.kind == STF_NS_DOC ||
                    e.kind == STF_NS_CONTROL || e.kind == STF_NS_STATUS)
                        continue;
                if ((e.kind == STF_NS_TENSOR || e.kind == STF_NS_NPY) &&
                    fs->model->tensors[e.index].shard != shard)
                        continue;
                fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
        }
        fuse_lowlevel_notify_inval_inode(fs->se, stf_ns_shard_ino(fs->ns, shard), 0, 0);
}

void stfs_shard_event(void *ctx, const struct stf_shard *s, enum stf_watch_event ev, int err)
{
        struct stfs *fs = ctx;

        stfs_log_shard(s, ev, err);
        if ((ev == STF_WATCH_WRITTEN || ev == STF_WATCH_CHANGED) && fs && fs->se)
                drop_cached(fs, (uint32_t)(s - fs->model->shards));
}

int stfs_read_fetch(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                    uint64_t since)
{
        int ret = stf_watch_fetch(fs->watch, v, off, len);

        if (ret && !stf_watch_mend(fs->watch, v, off, len, since, -ret))
                ret = stf_watch_fetch(fs->watch, v, off, len);
        return ret ? -EIO : 0;
}

int stfs_read_gather(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                     uint64_t since, char *buf)
{
        int ret = stf_view_pread(v, fs->model, off, len, buf);

        if (ret && !stf_watch_mend(fs->watch, v, off, len, since, -ret))
                ret = stf_view_pread(v, fs->model, off, len, buf); /* once */
        return ret;
}

void stfs_read_replied(struct stfs *fs, const struct stf_view *v, uint64_t off, size_t len,
                       uint64_t since, int ret)
{
        if (ret == -EFAULT)
                stf_watch_mend(fs->watch, v, off, len, since, EFAULT);
        else if (!ret)
                stf_cache_served_view(fs->cache, v, off, len);
}

int stfs_read_span(struct stfs *fs, const struct stf_view *v, size_t size, off_t off, size_t *want)
{
        *want = 0;
        if (off < 0 || (uint64_t)off >= v->size)
                return 0;
        *want = v->size - (uint64_t)off < size ? (size_t)(v->size - (uint64_t)off) : size;
        stf_residency_count(fs->res, STF_COUNT_READ_BYTES, *want);
        if (!stf_watch_intact(fs->watch, v, (uint64_t)off, *want)) {
                stf_watch_fault(fs->watch, v, (uint64_t)off, *want);
                return -EIO;
        }
        return 0;
}

/* Reply to a read of [@off, @off + @size) of view @v. */
static void read_view(fuse_req_t req, struct stfs *fs, const struct stf_view *v, size_t size,
                      off_t off)
{
        struct iovec iov[READ_IOVS];
        uint64_t since = stf_watch_epoch(fs->watch);
        size_t n, got, want;
        char *buf;
        int ret = stfs_read_span(fs, v, size, off, &want);

        if (ret || !want) {
                if (ret)
                        fuse_reply_err(req, -ret);
                else
                        fuse_reply_buf(req, NULL, 0);
                return;
        }
        /* Pointers into the mappings and headers: the kernel copies once. */
        n = stf_view_iov(v, (uint64_t)off, want, iov, READ_IOVS, &got);
        if (got == want) {
                stfs_read_prefault(fs, iov, n);
                ret = stfs_read_fetch(fs, v, (uint64_t)off, want, since);
                if (ret) {
                        fuse_reply_err(req, -ret);
                        return;
                }
                ret = fuse_reply_iov(req, iov, (int)n);
                stfs_read_replied(fs, v, (uint64_t)off, want, since, ret);
                return;
        }
        /*
         * More than READ_IOVS extents (a subset file of many tiny tensors):
         * gather into one buffer rather than return a short read, which the
         * kernel would take for the end of the file.
         */
        buf = malloc(want);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        ret = stfs_read_gather(fs, v, (uint64_t)off, want, since, buf);
        if (ret)
                fuse_reply_err(req, -ret);
        else
                stfs_read_replied(fs, v, (uint64_t)off, want, since,
                                  fuse_reply_buf(req, buf, want));
        free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
        struct stfs *fs = fs_of(req);
        const struct stf_view *v;
        struct stf_view tmp;
        int ret;

        if (doc_of(fi)) {
                read_doc(req, doc_of(fi), size, off);
                return;
        }
        if (fs->reads) { /* a source that may stall: off the FUSE worker */
                stf_residency_count(fs->res, STF_COUNT_READ_REQUESTS, 1);
                stfs_reads_submit(fs, req, ino, size, off);
                return;
        }
        ret = stf_ns_view(fs->ns, ino, &tmp, &v);
        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        stf_residency_count(fs->res, STF_COUNT_READ_REQUESTS, 1);
        read_view(req, fs, v, size, off);
        stf_ns_view_put(fs->ns, v);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stf_ns_entry e;
        int ret = stf_ns_entry(fs_of(req)->ns, ino, &e);

        if (!ret && e.kind != STF_NS_DIR)
                ret = -ENOTDIR;
        if (!ret && fs_of(req)->no_opendir)
                ret = -ENOSYS; /* with NO_OPENDIR_SUPPORT: once, then never asked again */
        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        fi->cache_readdir = 1;
        fi->keep_cache = 1;
        fuse_reply_open(req, fi);
}

/* Fill up to @size bytes of entries from offset @off (see stf_ns_readdir). */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
        struct stfs *fs = fs_of(req);
        struct stf_ns_dirent d;
        size_t used = 0;
        char *buf = malloc(size);
        int ret = buf ? 0 : -ENOMEM;

        for (uint64_t at = (uint64_t)off; !ret; at = d.next) {
                struct fuse_entry_param e = {0};
                bool live;
                size_t need;

                ret = stf_ns_readdir(fs->ns, ino, at, &d);
                if (ret)
                        break;
                if (fill_attr(fs, d.ino, &e.attr, NULL, &live))
                        continue;
                if (plus) {
                        fill_entry(fs, &e);
                        if (live)
                                e.attr_timeout = 0;
                        e.ino = d.ino;
                        need = fuse_add_direntry_plus(req, buf + used, size - used, d.name, &e,
                                                      (off_t)d.next);
                } else {
                        need = fuse_add_direntry(req, buf + used, size - used, d.name, &e.attr,
                                                 (off_t)d.next);
                }
                if (need > size - used)
                        break;
                used += need;
        }
        if (ret < 0)
                fuse_reply_err(req, -ret);
        else
                fuse_reply_buf(req, buf, used);
        free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
        do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
        do_readdir(req, ino, size, off, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
        struct stfs *fs = fs_of(req);
        struct statvfs sv = {0};

        sv.f_bsize = 4096;
        sv.f_frsize = 4096;
        sv.f_blocks = (fs->model->total_bytes + 4095) / 4096;
        sv.f_files = stf_tree_count(fs->tree);
        sv.f_namemax = 255;
        sv.f_flag = ST_RDONLY;
        fuse_reply_statfs(req, &sv);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
        struct stfs *fs = fs_of(req);
        struct stf_ns_entry e;
        const char *val;
        char *buf;
        size_t cap;
        int len = stf_ns_entry(fs->ns, ino, &e);

        if (len) {
                fuse_reply_err(req, -len);
                return;
        }
        cap = stf_ns_xattr_cap(fs->ns, &e);
        buf = malloc(cap);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        val = buf;
        if (e.kind == STF_NS_TENSOR && !strcmp(name, "user.stfs.cuda"))
                len = stf_residency_cuda_xattr(fs->res, e.index, buf, cap);
        else
                len = stf_ns_xattr(fs->ns, &e, name, buf, cap, &val);
        if (len == -ERANGE)
                len = -E2BIG;
        if (len < 0)
                fuse_reply_err(req, -len);
        else if (size == 0)
                fuse_reply_xattr(req, (size_t)len);
        else if (size < (size_t)len)
                fuse_reply_err(req, ERANGE);
        else
                fuse_reply_buf(req, val, (size_t)len);
        free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
        struct stfs *fs = fs_of(req);
        struct stf_ns_entry e;
        const char *list;
        size_t len;
        int ret = stf_ns_entry(fs->ns, ino, &e);

        if (ret) {
                fuse_reply_err(req, -ret);
                return;
        }
        stf_ns_xattr_list(&e, &list, &len);
        if (size == 0)
                fuse_reply_xattr(req, len);
        else if (size < len)
                fuse_reply_err(req, ERANGE);
        else
                fuse_reply_buf(req, list, len);
}

/* Everything that would change the tree: EROFS. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
        fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
        fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
        fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
        struct stfs *fs = fs_of(req);
        struct stf_ns_entry e;
        char *reply;

        if (stf_ns_entry(fs->ns, ino, &e) || e.kind != STF_NS_CONTROL || !doc_of(fi)) {
                fuse_reply_err(req, EROFS);
                return;
        }
        reply = stfs_control_text(fs, fuse_req_ctx(req)->uid, buf, size);
        if (!reply) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        stfs_doc_set(doc_of(fi), reply);
        fuse_reply_write(req, size);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
        fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
        fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
        fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops stfs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .release = op_release,
    .ioctl = stfs_control_ioctl,
    .read = op_read,
    .write = op_write,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
};
