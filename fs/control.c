/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control plane. Requests are validated completely before anything
 * changes (a malformed one is EINVAL and leaves no trace). Jobs are kept
 * until unmount so their status stays readable; ids are their position.
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
#include "gpu.h"
#include "select.h"
#include "stfs_ioctl.h"
#include "strbuf.h"

/* The fs side of a target: forwards to core's backend, records results. */
struct target {
        struct stfs *fs;
        const struct stf_backend *inner;
        void *inner_ctx; /* host: this target; cuda: &cuda */
        struct stf_cuda_opts cuda;
};

/*
 * notify_store needs the kernel to know the inode (ENOENT otherwise): a
 * lookup of the tensor through the mount makes it known. This runs on a
 * job thread, never on a FUSE worker, so the lookups are served by the
 * session loop as usual. The walk goes one component at a time from the
 * mount's root (openat, never a path: a tensor's path can be longer than
 * PATH_MAX, and the tree as deep as the model makes it).
 */
static int make_known(struct stfs *fs, uint64_t ino)
{
        const struct stf_node *n;
        uint64_t *chain = NULL;
        size_t depth = 0, cap = 0;
        struct stat st;
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
        if (!ret && depth == 1 &&
            fstatat(dir, stf_tree_node(fs->tree, chain[0])->name, &st, AT_SYMLINK_NOFOLLOW))
                ret = -errno;
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
        int ret;

        if (!stf_watch_covers(fs->watch, shard, begin + end)) {
                stf_watch_report(fs->watch, shard);
                snprintf(msg, cap, "host: %s was truncated while mounted",
                         fs->model->shards[shard].name);
                return -EIO;
        }
        bv.buf[0].mem = (void *)(data + off);
        ret = fuse_lowlevel_notify_store(fs->se, ino, (off_t)off, &bv, 0);
        if (ret == -ENOENT && make_known(fs, ino) == 0)
                ret = fuse_lowlevel_notify_store(fs->se, ino, (off_t)off, &bv, 0);
        if (ret) {
                snprintf(msg, cap, "host: pushing into the page cache failed: %s", strerror(-ret));
                return ret;
        }
        __atomic_add_fetch(&fs->pushed_bytes, end - off, __ATOMIC_RELAXED);
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
static int host_chunk(void *ctx, struct stf_job *job, unsigned worker, const struct stf_chunk *c,
                      char *msg, size_t cap)
{
        struct stfs *fs = ((struct target *)ctx)->fs;
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
        __atomic_add_fetch(&fs->pushed_chunks, 1, __ATOMIC_RELAXED);
        return 0;
}

static const struct stf_backend host_backend = {.chunk = host_chunk};

static int fwd_begin(void *ctx, struct stf_job *job, char *msg, size_t cap)
{
        const struct target *tg = ctx;

        return tg->inner->begin ? tg->inner->begin(tg->inner_ctx, job, msg, cap) : 0;
}

static int fwd_worker_begin(void *ctx, struct stf_job *job, unsigned w, char *msg, size_t cap)
{
        const struct target *tg = ctx;

        return tg->inner->worker_begin ? tg->inner->worker_begin(tg->inner_ctx, job, w, msg, cap)
                                       : 0;
}

static int fwd_chunk(void *ctx, struct stf_job *job, unsigned w, const struct stf_chunk *c,
                     char *msg, size_t cap)
{
        const struct target *tg = ctx;

        return tg->inner->chunk(tg->inner_ctx, job, w, c, msg, cap);
}

static int fwd_worker_end(void *ctx, struct stf_job *job, unsigned w, char *msg, size_t cap)
{
        const struct target *tg = ctx;

        return tg->inner->worker_end ? tg->inner->worker_end(tg->inner_ctx, job, w, msg, cap) : 0;
}

/* After the workers: remember where the job's tensors now are. */
static int fwd_end(void *ctx, struct stf_job *job, int status, char *msg, size_t cap)
{
        struct target *tg = ctx;
        struct stfs *fs = tg->fs;
        int ret = tg->inner->end ? tg->inner->end(tg->inner_ctx, job, status, msg, cap) : 0;
        bool complete;

        pthread_mutex_lock(&job->lock);
        complete = !status && !ret && job->next_chunk >= job->plan->nchunks;
        pthread_mutex_unlock(&job->lock);
        if (!complete)
                return ret;
        pthread_mutex_lock(&fs->jobs_lock);
        for (size_t i = 0; i < job->plan->ntensors; i++) {
                uint32_t t = job->plan->tensors[i];

                /* a slice pushed part of the file only: not resident */
                if (job->target == STFS_TARGET_HOST)
                        fs->host_resident[t] |=
                            job->plan->tensor_size[i] == fs->model->tensors[t].size;
                else
                        fs->cuda_job[t] = job;
        }
        pthread_mutex_unlock(&fs->jobs_lock);
        return ret;
}

static const struct stf_backend fwd_backend = {
    .begin = fwd_begin,
    .worker_begin = fwd_worker_begin,
    .chunk = fwd_chunk,
    .worker_end = fwd_worker_end,
    .end = fwd_end,
};

int stfs_control_init(struct stfs *fs)
{
        pthread_mutex_init(&fs->jobs_lock, NULL);
        fs->host_resident = calloc(fs->model->ntensors + 1, 1);
        fs->cuda_job = calloc(fs->model->ntensors + 1, sizeof(*fs->cuda_job));
        return fs->host_resident && fs->cuda_job ? 0 : -ENOMEM;
}

/* Cancel every job; is any still running? */
static bool cancel_all(struct stfs *fs)
{
        bool running = false;

        pthread_mutex_lock(&fs->jobs_lock);
        for (size_t i = 0; i < fs->njobs; i++) {
                struct stf_job *job = fs->jobs[i];

                stf_job_cancel(job);
                pthread_mutex_lock(&job->lock);
                running = running || job->state == STFS_JOB_RUNNING;
                pthread_mutex_unlock(&job->lock);
        }
        pthread_mutex_unlock(&fs->jobs_lock);
        return running;
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
 */
static void stop_jobs(struct stfs *fs)
{
        uint64_t t0 = stf_now_ns();
        bool cut = false;

        while (cancel_all(fs)) {
                if (!cut && fs->se && stf_now_ns() - t0 > 500000000ull) {
                        int null = open("/dev/null", O_RDWR | O_CLOEXEC);

                        cut = true;
                        stfs_log(LOG_WARNING, "prefetch jobs still running at exit: disconnecting");
                        if (null >= 0) {
                                dup3(null, fuse_session_fd(fs->se), O_CLOEXEC);
                                close(null);
                        }
                }
                usleep(2000);
        }
}

void stfs_control_destroy(struct stfs *fs)
{
        if (!fs->host_resident && !fs->cuda_job && !fs->jobs)
                return; /* not initialized, or already destroyed */
        stop_jobs(fs);
        for (size_t i = 0; i < fs->njobs; i++) {
                struct stf_job *job = fs->jobs[i];
                void *tg = job->backend_ctx;

                stf_job_cancel(job);
                stf_job_wait(job);
                if (job->target == STFS_TARGET_CUDA)
                        stf_cuda_job_release(job);
                stf_job_free(job);
                free(tg);
        }
        free(fs->jobs);
        free(fs->host_resident);
        free(fs->cuda_job);
        fs->jobs = NULL;
        fs->njobs = 0;
        fs->host_resident = NULL;
        fs->cuda_job = NULL;
        pthread_mutex_destroy(&fs->jobs_lock);
}

/*
 * Does @job hold tensor @t whole (not a slice of it)? Its tensors are in
 * layout order (shard, offset): a binary search, then the run of tensors at
 * that offset (zero-size ones share it with the next).
 */
static bool holds_whole(const struct stfs *fs, const struct stf_job *job, uint32_t t)
{
        const struct stf_tensor *ts = fs->model->tensors, *want = &ts[t];
        const struct stf_plan *p = job->plan;
        size_t lo = 0, hi = p->ntensors;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct stf_tensor *x = &ts[p->tensors[mid]];

                if (x->shard < want->shard || (x->shard == want->shard && x->begin < want->begin))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (; lo < p->ntensors; lo++) {
                const struct stf_tensor *x = &ts[p->tensors[lo]];

                if (x->shard != want->shard || x->begin != want->begin)
                        break;
                if (p->tensors[lo] == t)
                        return p->tensor_size[lo] == want->size;
        }
        return false;
}

/* Start a job. 0 and *@id, or -errno with @msg. */
static int start_job(struct stfs *fs, const struct stfs_prefetch_req *rq, uint64_t *id, char *msg,
                     size_t cap)
{
        struct stf_slice slice = {rq->slice_dim, rq->slice_rank, rq->slice_world};
        uint64_t chunk, page = (uint64_t)sysconf(_SC_PAGESIZE);
        struct stf_plan *plan = NULL;
        struct target *tg;
        struct stf_job *job;
        uint32_t *sel = NULL;
        size_t n = 0, k = 0;
        int ret;

        if (rq->version != STFS_IOC_VERSION || rq->target > STFS_TARGET_CUDA ||
            rq->threads > STF_THREADS_MAX || rq->slice_dim < -1 ||
            (rq->flags & ~STFS_STAGING_MASK) ||
            (rq->flags & STFS_STAGING_MASK) > STFS_STAGING_AUTO ||
            (rq->target == STFS_TARGET_HOST && rq->flags) ||
            (rq->target == STFS_TARGET_CUDA && rq->device < 0)) {
                snprintf(msg, cap, "malformed prefetch request");
                return -EINVAL;
        }
        ret = stf_select(fs->model, fs->tree, rq->selection, sizeof(rq->selection), &sel, &n);
        if (ret) {
                snprintf(msg, cap, "%s",
                         ret == -ENOENT ? "the selection matches no tensor"
                                        : "malformed selection");
                return ret;
        }
        /*
         * A slice that does not fit a selected tensor is malformed whether
         * or not that tensor is resident: check the whole selection first.
         */
        if (rq->slice_dim >= 0) {
                ret = stf_plan_build(fs->model, sel, n, &slice, UINT64_MAX, &plan, msg, cap);
                stf_plan_free(plan);
                plan = NULL;
                if (ret) {
                        free(sel);
                        return ret;
                }
        }
        /* idempotent: what is already resident is skipped */
        pthread_mutex_lock(&fs->jobs_lock);
        for (size_t i = 0; i < n; i++) {
                bool have =
                    rq->target == STFS_TARGET_HOST
                        ? fs->host_resident[sel[i]]
                        : fs->cuda_job[sel[i]] && fs->cuda_job[sel[i]]->device == rq->device &&
                              rq->slice_dim < 0 && holds_whole(fs, fs->cuda_job[sel[i]], sel[i]);
                if (!have)
                        sel[k++] = sel[i];
        }
        pthread_mutex_unlock(&fs->jobs_lock);
        /* host pushes whole pages (host_chunk): whole-page chunks push no byte twice */
        chunk = rq->chunk;
        if (rq->target == STFS_TARGET_HOST && chunk % page && chunk < UINT64_MAX - page)
                chunk += page - chunk % page;
        ret = stf_plan_build(fs->model, sel, k, &slice, chunk, &plan, msg, cap);
        free(sel);
        if (ret)
                return ret;
        tg = calloc(1, sizeof(*tg));
        if (!tg) {
                stf_plan_free(plan);
                return -ENOMEM;
        }
        tg->fs = fs;
        tg->inner = rq->target == STFS_TARGET_HOST ? &host_backend : &stf_cuda_backend;
        tg->inner_ctx = rq->target == STFS_TARGET_HOST ? (void *)tg : &tg->cuda;
        tg->cuda.staging = rq->flags & STFS_STAGING_MASK;
        pthread_mutex_lock(&fs->jobs_lock);
        if (fs->njobs == fs->jobs_cap) {
                size_t ncap = fs->jobs_cap ? fs->jobs_cap * 2 : 16;
                struct stf_job **nj = realloc(fs->jobs, ncap * sizeof(*nj));

                if (!nj) {
                        pthread_mutex_unlock(&fs->jobs_lock);
                        stf_plan_free(plan);
                        free(tg);
                        return -ENOMEM;
                }
                fs->jobs = nj;
                fs->jobs_cap = ncap;
        }
        ret = stf_job_start(fs->model, plan, &fwd_backend, tg, rq->target, rq->device, rq->threads,
                            rq->selection, fs->njobs + 1, &job);
        if (ret) {
                pthread_mutex_unlock(&fs->jobs_lock);
                free(tg);
                snprintf(msg, cap, "cannot start the job");
                return ret;
        }
        fs->jobs[fs->njobs++] = job;
        *id = job->id;
        pthread_mutex_unlock(&fs->jobs_lock);
        return 0;
}

static struct stf_job *job_get(struct stfs *fs, uint64_t id)
{
        struct stf_job *job = NULL;

        pthread_mutex_lock(&fs->jobs_lock);
        if (id >= 1 && id <= fs->njobs)
                job = fs->jobs[id - 1];
        pthread_mutex_unlock(&fs->jobs_lock);
        return job;
}

/* Evict the selection from @target; 0 and *@count, or -errno. */
static int evict(struct stfs *fs, const struct stfs_evict_req *rq, uint64_t *count)
{
        uint32_t *sel = NULL;
        size_t n = 0;
        int ret;

        if (rq->version != STFS_IOC_VERSION || rq->target > STFS_TARGET_CUDA)
                return -EINVAL;
        ret = stf_select(fs->model, fs->tree, rq->selection, sizeof(rq->selection), &sel, &n);
        if (ret)
                return ret;
        *count = 0;
        for (size_t i = 0; i < n; i++) {
                uint32_t t = sel[i];

                if (rq->target == STFS_TARGET_HOST) {
                        uint64_t ino = stf_tree_tensor_ino(fs->tree, t);

                        fuse_lowlevel_notify_inval_inode(fs->se, ino, 0, 0);
                        fuse_lowlevel_notify_inval_inode(fs->se, stf_ns_npy_ino(fs->ns, t), 0, 0);
                        pthread_mutex_lock(&fs->jobs_lock);
                        *count += fs->host_resident[t];
                        fs->host_resident[t] = 0;
                        pthread_mutex_unlock(&fs->jobs_lock);
                } else {
                        pthread_mutex_lock(&fs->jobs_lock);
                        if (fs->cuda_job[t] && fs->cuda_job[t]->device == rq->device) {
                                struct stf_job *job = fs->cuda_job[t];
                                bool all = true;

                                /* free a job's memory once none of its tensors is kept */
                                for (size_t k = 0; k < job->plan->ntensors; k++) {
                                        uint32_t o = job->plan->tensors[k];

                                        if (o == t)
                                                fs->cuda_job[o] = NULL;
                                        all = all && fs->cuda_job[o] != job;
                                }
                                if (all)
                                        stf_cuda_job_release(job);
                                (*count)++;
                        }
                        pthread_mutex_unlock(&fs->jobs_lock);
                }
        }
        free(sel);
        return 0;
}

void stfs_control_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                        struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                        size_t in_bufsz, size_t out_bufsz)
{
        struct stfs *fs = fuse_req_userdata(req);
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        const struct stf_node *n = stf_tree_node(fs->tree, ino);
        char msg[STFS_MESSAGE_MAX];
        int ret;

        if (!n || n->kind != STF_NODE_SPECIAL || n->index != STF_SPECIAL_CONTROL) {
                fuse_reply_err(req, ENOTTY);
                return;
        }
        if (ctx->uid != fs->uid && ctx->uid != 0) {
                fuse_reply_err(req, EACCES);
                return;
        }
        if (flags & FUSE_IOCTL_COMPAT) {
                fuse_reply_err(req, ENOSYS);
                return;
        }
        /*
         * One of our requests, but with another struct size or direction
         * in the number (a client built against another layout): that is
         * a malformed request, not an unknown one.
         */
        if (_IOC_TYPE(cmd) == STFS_IOC_MAGIC && _IOC_NR(cmd) >= _IOC_NR(STFS_IOC_PREFETCH) &&
            _IOC_NR(cmd) <= _IOC_NR(STFS_IOC_EVICT) && cmd != STFS_IOC_PREFETCH &&
            cmd != STFS_IOC_STATUS && cmd != STFS_IOC_CANCEL && cmd != STFS_IOC_EVICT) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        switch (cmd) {
        case STFS_IOC_PREFETCH: {
                struct stfs_prefetch_req rq;

                if (in_bufsz != sizeof(rq) || out_bufsz != sizeof(rq)) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                memcpy(&rq, in_buf, sizeof(rq));
                ret = start_job(fs, &rq, &rq.job, msg, sizeof(msg));
                if (ret) {
                        if (fs->debug)
                                stfs_log(3, "prefetch refused: %s", msg);
                        fuse_reply_err(req, -ret);
                        return;
                }
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
                return;
        }
        case STFS_IOC_STATUS: {
                struct stfs_status_req rq;
                struct stf_job *job;

                if (in_bufsz != sizeof(rq) || out_bufsz != sizeof(rq)) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                memcpy(&rq, in_buf, sizeof(rq));
                job = rq.version == STFS_IOC_VERSION ? job_get(fs, rq.job) : NULL;
                if (!job) {
                        fuse_reply_err(req, rq.version == STFS_IOC_VERSION ? ENOENT : EINVAL);
                        return;
                }
                stf_job_status(job, &rq);
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
                return;
        }
        case STFS_IOC_CANCEL: {
                struct stfs_cancel_req rq;
                struct stf_job *job;

                if (in_bufsz != sizeof(rq)) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                memcpy(&rq, in_buf, sizeof(rq));
                job = rq.version == STFS_IOC_VERSION ? job_get(fs, rq.job) : NULL;
                if (!job) {
                        fuse_reply_err(req, rq.version == STFS_IOC_VERSION ? ENOENT : EINVAL);
                        return;
                }
                stf_job_cancel(job);
                fuse_reply_ioctl(req, 0, NULL, 0);
                return;
        }
        case STFS_IOC_EVICT: {
                struct stfs_evict_req rq;

                if (in_bufsz != sizeof(rq) || out_bufsz != sizeof(rq)) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                memcpy(&rq, in_buf, sizeof(rq));
                ret = evict(fs, &rq, &rq.count);
                if (ret) {
                        fuse_reply_err(req, -ret);
                        return;
                }
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
                return;
        }
        default:
                fuse_reply_err(req, ENOTTY);
        }
}

static const char *state_name(uint32_t s)
{
        static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};

        return s < 5 ? names[s] : "unknown";
}

char *stfs_status_json(struct stfs *fs, size_t *len)
{
        struct stf_strbuf sb = {0};
        char *out = NULL;

        stf_strbuf_puts(&sb, "{\"jobs\": [");
        pthread_mutex_lock(&fs->jobs_lock);
        for (size_t i = 0; i < fs->njobs; i++) {
                struct stfs_status_req st;
                double secs;

                stf_job_status(fs->jobs[i], &st);
                secs = (double)st.elapsed_ns / 1e9;
                stf_strbuf_printf(&sb, "%s\n  {\"id\": %" PRIu64 ", \"selection\": ", i ? "," : "",
                                  st.job);
                stf_strbuf_json_str(&sb, fs->jobs[i]->selection, strlen(fs->jobs[i]->selection));
                if (st.target == STFS_TARGET_HOST)
                        stf_strbuf_puts(&sb, ", \"target\": \"host\"");
                else
                        stf_strbuf_printf(&sb, ", \"target\": \"cuda:%d\"", st.device);
                stf_strbuf_printf(&sb,
                                  ", \"state\": \"%s\", \"tensors\": %u, \"bytes_done\": %" PRIu64
                                  ", \"bytes_total\": %" PRIu64
                                  ", \"seconds\": %.6f, \"throughput_bps\": %.0f, \"error\": ",
                                  state_name(st.state), st.tensors, st.bytes_done, st.bytes_total,
                                  secs, secs > 0 ? (double)st.bytes_done / secs : 0.0);
                if (st.state == STFS_JOB_FAILED)
                        stf_strbuf_json_str(&sb, st.message, strlen(st.message));
                else
                        stf_strbuf_puts(&sb, "null");
                stf_strbuf_puts(&sb, "}");
        }
        pthread_mutex_unlock(&fs->jobs_lock);
        stf_strbuf_printf(&sb,
                          "\n ],\n \"counters\": {\"read_requests\": %" PRIu64
                          ", \"read_bytes\": %" PRIu64 ", \"pushed_bytes\": %" PRIu64
                          ", \"pushed_chunks\": %" PRIu64 "}\n}\n",
                          __atomic_load_n(&fs->read_requests, __ATOMIC_RELAXED),
                          __atomic_load_n(&fs->read_bytes, __ATOMIC_RELAXED),
                          __atomic_load_n(&fs->pushed_bytes, __ATOMIC_RELAXED),
                          __atomic_load_n(&fs->pushed_chunks, __ATOMIC_RELAXED));
        if (stf_strbuf_finish(&sb, &out, len))
                return NULL;
        return out;
}

int stfs_cuda_xattr(struct stfs *fs, size_t t, char *buf, size_t cap)
{
        struct stf_job *job;
        char hex[129];
        uint64_t dptr;
        int ret = -ENODATA;

        pthread_mutex_lock(&fs->jobs_lock);
        job = fs->cuda_job[t];
        if (job && !stf_cuda_job_handle(job, hex, &dptr)) {
                for (size_t i = 0; i < job->plan->ntensors; i++) {
                        if (job->plan->tensors[i] != t)
                                continue;
                        ret = snprintf(buf, cap,
                                       "device=%d handle=%s offset=%" PRIu64 " size=%" PRIu64
                                       " dptr=0x%" PRIx64,
                                       job->device, hex, job->plan->tensor_dst[i],
                                       job->plan->tensor_size[i], dptr);
                        break;
                }
        }
        pthread_mutex_unlock(&fs->jobs_lock);
        return ret;
}

/* Parse "cuda:N" or "host". */
static bool parse_target(const char *s, struct stfs_prefetch_req *rq)
{
        char *end;
        long d;

        if (!strcmp(s, "host")) {
                rq->target = STFS_TARGET_HOST;
                return true;
        }
        if (strncmp(s, "cuda:", 5))
                return false;
        d = strtol(s + 5, &end, 10);
        if (*end || end == s + 5 || d < 0 || d > 1024)
                return false;
        rq->target = STFS_TARGET_CUDA;
        rq->device = (int32_t)d;
        return true;
}

/* A whole decimal number <= @max (no sign, no trailing bytes). */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
        char *end;
        unsigned long long v;

        if (*s < '0' || *s > '9')
                return false;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end || v > max)
                return false;
        *out = v;
        return true;
}

/* "ring", "direct" or "auto" (STFS_STAGING_*). */
static bool parse_staging(const char *s, uint32_t *flags)
{
        static const char *const names[] = {"ring", "direct", "auto"};

        for (uint32_t i = 0; i < 3; i++) {
                if (!strcmp(s, names[i])) {
                        *flags = i;
                        return true;
                }
        }
        return false;
}

static int bad_option(const char *tok, char *msg, size_t cap)
{
        snprintf(msg, cap, "bad option '%.60s'", tok);
        return -EINVAL;
}

/* One text command; appends its reply line to @sb. */
static void text_command(struct stfs *fs, char *line, struct stf_strbuf *sb)
{
        char *save = NULL, *cmd = strtok_r(line, " \t", &save), *tok;
        char msg[STFS_MESSAGE_MAX] = "";
        int ret = 0;

        if (!cmd)
                return;
        if (!strcmp(cmd, "prefetch") || !strcmp(cmd, "evict")) {
                static struct stfs_prefetch_req zero;
                struct stfs_prefetch_req *rq = malloc(sizeof(*rq));
                size_t used = 0;
                uint64_t v = 0;

                if (!rq) {
                        stf_strbuf_puts(sb, "error: out of memory\n");
                        return;
                }
                *rq = zero;
                rq->version = STFS_IOC_VERSION;
                rq->slice_dim = -1;
                while ((tok = strtok_r(NULL, " \t", &save))) {
                        size_t tl = strlen(tok);

                        if (parse_target(tok, rq))
                                continue;
                        if (!strncmp(tok, "cuda:", 5)) {
                                /* a mistyped target must not become a host job */
                                ret = bad_option(tok, msg, sizeof(msg));
                        } else if (!strncmp(tok, "threads=", 8)) {
                                if (!parse_u64(tok + 8, UINT32_MAX, &v))
                                        ret = bad_option(tok, msg, sizeof(msg));
                                rq->threads = (uint32_t)v;
                        } else if (!strncmp(tok, "chunk=", 6)) {
                                if (!parse_u64(tok + 6, UINT64_MAX, &rq->chunk))
                                        ret = bad_option(tok, msg, sizeof(msg));
                        } else if (!strncmp(tok, "staging=", 8)) {
                                if (!parse_staging(tok + 8, &rq->flags))
                                        ret = bad_option(tok, msg, sizeof(msg));
                        } else if (!strncmp(tok, "slice=", 6)) {
                                int end = 0;

                                if (sscanf(tok + 6, "%d:%u/%u%n", &rq->slice_dim, &rq->slice_rank,
                                           &rq->slice_world, &end) != 3 ||
                                    tok[6 + end] || strchr(tok + 6, '-') || strchr(tok + 6, '+'))
                                        ret = bad_option(tok, msg, sizeof(msg));
                        } else if (used + tl + 2 < sizeof(rq->selection)) {
                                memcpy(rq->selection + used, tok, tl);
                                used += tl;
                                rq->selection[used++] = '\n';
                        } else {
                                ret = -EINVAL;
                                snprintf(msg, sizeof(msg), "selection too long");
                        }
                }
                if (!ret && !strcmp(cmd, "prefetch")) {
                        ret = start_job(fs, rq, &rq->job, msg, sizeof(msg));
                        if (!ret)
                                stf_strbuf_printf(sb, "job %" PRIu64 "\n", rq->job);
                } else if (!ret) {
                        struct stfs_evict_req *ev = calloc(1, sizeof(*ev));

                        if (!ev) {
                                ret = -ENOMEM;
                        } else {
                                ev->version = STFS_IOC_VERSION;
                                ev->target = rq->target;
                                ev->device = rq->device;
                                memcpy(ev->selection, rq->selection, sizeof(ev->selection));
                                ret = evict(fs, ev, &ev->count);
                                if (!ret)
                                        stf_strbuf_printf(sb, "evicted %" PRIu64 "\n", ev->count);
                                free(ev);
                        }
                }
                free(rq);
        } else if (!strcmp(cmd, "cancel") || !strcmp(cmd, "status")) {
                tok = strtok_r(NULL, " \t", &save);
                if (!tok && !strcmp(cmd, "status")) {
                        size_t len;
                        char *js = stfs_status_json(fs, &len);

                        if (js)
                                stf_strbuf_append(sb, js, len);
                        free(js);
                        return;
                }
                struct stf_job *job = tok ? job_get(fs, strtoull(tok, NULL, 10)) : NULL;

                if (!job) {
                        ret = -ENOENT;
                        snprintf(msg, sizeof(msg), "no such job");
                } else if (!strcmp(cmd, "cancel")) {
                        stf_job_cancel(job);
                        stf_strbuf_puts(sb, "ok\n");
                } else {
                        struct stfs_status_req st;

                        stf_job_status(job, &st);
                        stf_strbuf_printf(sb, "job %" PRIu64 " %s %" PRIu64 "/%" PRIu64 " %s\n",
                                          st.job, state_name(st.state), st.bytes_done,
                                          st.bytes_total, st.message);
                }
        } else {
                ret = -EINVAL;
                snprintf(msg, sizeof(msg), "unknown command '%.40s'", cmd);
        }
        if (ret)
                stf_strbuf_printf(sb, "error: %s: %s\n", strerror(-ret), msg[0] ? msg : cmd);
}

char *stfs_control_text(struct stfs *fs, uid_t uid, const char *text, size_t len)
{
        struct stf_strbuf sb = {0};
        char *copy, *line, *save = NULL, *out = NULL;

        if (uid != fs->uid && uid != 0)
                return strdup("error: Permission denied\n");
        copy = strndup(text, len);
        if (!copy)
                return NULL;
        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                text_command(fs, line, &sb);
        free(copy);
        if (stf_strbuf_finish(&sb, &out, NULL))
                return NULL;
        return out;
}
