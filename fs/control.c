/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control plane glue: the mount's residency (core/residency: the job
 * table, what is resident where) with the host target, and its end at
 * exit. The requests themselves come in through ioctl.c and textcmd.c.
 *
 * Host target: each chunk is handed to fuse_lowlevel_notify_store pointing
 * into the shard mapping, so the kernel copies the source bytes straight
 * into the mount's page cache of the tensor file (and its .npy view keeps
 * its own cache). Later reads and mmaps of the tensor are then served by
 * the kernel without a READ to the daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "control.h"
#include "residency.h"

/*
 * notify_store needs the kernel to know the inode (ENOENT otherwise): a
 * lookup of the tensor through the mount makes it known. This runs on a
 * job thread, never on a FUSE worker, so the lookups are served by the
 * session loop as usual. The walk goes one component at a time from the
 * mount's root (openat, never a path: a tensor's path can be longer than
 * PATH_MAX, and the tree as deep as the model makes it). On success *@pin
 * is an O_PATH descriptor of the tensor: the kernel may forget an inode
 * that nothing holds (reclaim) between the lookup and the second store, so
 * the caller keeps it open until the store is done, then closes it.
 */
static int make_known(struct stfs *fs, uint64_t ino, int *pin)
{
        const struct stf_node *n;
        uint64_t *chain = NULL;
        size_t depth = 0, cap = 0;
        int dir, ret = 0;

        for (uint64_t i = ino; i != STF_ROOT_INO; i = n->parent) {
                n = stf_tree_node(fs->tree, i);
                if (!n)
                        return -ENOENT;
                if (depth == cap) {
                        uint64_t *nc = realloc(chain, (cap ? cap * 2 : 64) * sizeof(*nc));

                        if (!nc) {
                                free(chain);
                                return -ENOMEM;
                        }
                        chain = nc;
                        cap = cap ? cap * 2 : 64;
                }
                chain[depth++] = i;
        }
        dir = open(fs->mountpoint, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                ret = -errno;
        while (!ret && depth > 1) {
                int next = openat(dir, stf_tree_node(fs->tree, chain[--depth])->name,
                                  O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                if (next < 0)
                        ret = -errno;
                close(dir);
                dir = next;
        }
        if (!ret && depth == 1) {
                *pin = openat(dir, stf_tree_node(fs->tree, chain[0])->name,
                              O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (*pin < 0)
                        ret = -errno;
        }
        if (dir >= 0)
                close(dir);
        free(chain);
        return ret;
}

/*
 * Push bytes [@off, @end) of the tensor file @ino (its data at @data, byte
 * @begin of shard @shard). A shard truncated while mounted is refused like
 * a read (EIO): the kernel would copy the zeros of a partial last page of
 * the mapping into the page cache, and every later read would get them.
 */
static int push_range(struct stfs *fs, uint64_t ino, uint32_t shard, uint64_t begin,
                      const uint8_t *data, uint64_t off, uint64_t end, char *msg, size_t cap)
{
        struct fuse_bufvec bv = FUSE_BUFVEC_INIT(end - off);
        const char *name = fs->model->shards[shard].name;
        const char *lost = stf_watch_lost(fs->watch, shard, begin + end);
        int ret;

        if (lost) {
                snprintf(msg, cap, "host: %s was %s while mounted", name, lost);
                return -EIO;
        }
        /* a remote source's bytes are read here, where a failure can be mended */
        ret = stf_watch_fetch_mended(fs->watch, shard, data + off, end - off);
        if (ret) {
                snprintf(msg, cap, "host: reading %s failed: %s", name, strerror(-ret));
                return -EIO;
        }
        bv.buf[0].mem = (void *)(data + off);
        ret = fuse_lowlevel_notify_store(fs->se, ino, (off_t)off, &bv, 0);
        if (ret == -ENOENT) {
                int pin = -1;

                /* the open file pins the inode until the store is done */
                if (make_known(fs, ino, &pin) == 0)
                        ret = fuse_lowlevel_notify_store(fs->se, ino, (off_t)off, &bv, 0);
                if (pin >= 0)
                        close(pin);
        }
        if (ret) {
                snprintf(msg, cap, "host: pushing bytes of %s into the page cache failed: %s", name,
                         strerror(-ret));
                return ret;
        }
        stf_residency_count(fs->res, STF_COUNT_PUSHED_BYTES, end - off);
        stf_cache_served(fs->cache, shard, begin + off, begin + end);
        return 0;
}

/*
 * The kernel marks a page it is given by notify_store up to date only when
 * the store starts at the page's first byte and covers the page (or reaches
 * the end of the file); a page stored in pieces stays not up to date and
 * reads of it still come to the daemon. So each row is widened to whole
 * pages of the tensor file (clipped at its end), and rows whose pages touch
 * are pushed as one range. With page-multiple chunks nothing is widened; a
 * chunk size that is not one, or a slice, pushes a little more than asked.
 */
static int host_chunk(void *state, const struct stf_job_info *job, unsigned worker,
                      const struct stf_chunk *c, char *msg, size_t cap)
{
        struct stfs *fs = state;
        const struct stf_tensor *t = &job->model->tensors[c->tensor];
        const uint8_t *data = job->model->shards[c->shard].map + t->begin;
        uint64_t ino = stf_tree_tensor_ino(fs->tree, c->tensor);
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), a = 0, b = 0;
        int ret;

        for (uint64_t r = 0; r < c->height; r++) {
                uint64_t s = c->file_off + r * c->src_pitch, e = s + c->width;

                s -= s % page;
                if (e % page)
                        e = e - e % page + page < t->size ? e - e % page + page : t->size;
                if (b > a && s <= b) {
                        b = e > b ? e : b;
                        continue;
                }
                if (b > a) {
                        ret = push_range(fs, ino, c->shard, t->begin, data, a, b, msg, cap);
                        if (ret)
                                return ret;
                }
                a = s;
                b = e;
        }
        if (b > a) {
                ret = push_range(fs, ino, c->shard, t->begin, data, a, b, msg, cap);
                if (ret)
                        return ret;
        }
        stf_residency_count(fs->res, STF_COUNT_PUSHED_CHUNKS, 1);
        return 0;
}

static const struct stf_backend host_backend = {.chunk = host_chunk};

int stfs_control_init(struct stfs *fs)
{
        return stf_residency_new(fs->model, fs->tree, &host_backend, fs, &fs->res);
}

void stfs_control_drop_host(void *arg, uint32_t t)
{
        struct stfs *fs = arg;
        uint64_t ino = stf_tree_tensor_ino(fs->tree, t);

        /* the tensor file and its .npy view each have a page cache */
        fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
        fuse_lowlevel_notify_inval_inode(fs->se, stf_ns_npy_ino(fs->ns, t), 0, 0);
}

/*
 * Cancel every job and wait until none runs. This runs after the session
 * loop has ended, and a host job may be blocked in a lookup through the
 * mount (make_known) that nobody will answer: after a signal the mount is
 * still there, and libfuse drops (never answers) requests its workers read
 * once the session has exited. Waiting for such a job would hang the
 * daemon for ever. So after a grace period the connection is cut: the
 * session's /dev/fuse descriptor is replaced with /dev/null (the number
 * stays valid for libfuse's unmount and close), the kernel aborts the
 * connection, every pending request fails with ENOTCONN and the jobs end.
 * A job waiting on a stalled source is not waited for beyond @wait_ms.
 */
bool stfs_control_stop(struct stfs *fs, unsigned wait_ms)
{
        uint64_t t0 = stf_now_ns();
        bool cut = false;

        if (!fs->res)
                return true;
        while (stf_residency_cancel_all(fs->res)) {
                if (!cut && fs->se && stf_now_ns() - t0 > 500000000ull) {
                        int null = open("/dev/null", O_RDWR | O_CLOEXEC);

                        cut = true;
                        stfs_log(LOG_WARNING, "prefetch jobs still running at exit: disconnecting");
                        if (null >= 0) {
                                dup3(null, fuse_session_fd(fs->se), O_CLOEXEC);
                                close(null);
                        }
                }
                /* a job reading a stalled source comes back when it answers */
                if (stf_now_ns() - t0 > wait_ms * 1000000ull)
                        return false;
                usleep(2000);
        }
        return true;
}

void stfs_control_destroy(struct stfs *fs)
{
        stf_residency_free(fs->res);
        fs->res = NULL;
}
