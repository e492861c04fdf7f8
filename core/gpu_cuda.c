/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CUDA target through the driver API, resolved with dlsym at run time.
 * Only types come from cuda.h; nothing links against libcuda.
 *
 * Each worker owns a stream and RING pinned staging buffers with one event
 * each. A chunk waits for its buffer's previous copy (event), preads the
 * source span into it, and queues an async copy (1D, or 2D for a strided
 * slice); so reading chunk k+1 overlaps copying chunk k.
 *
 * Direct staging (STF_STAGING_DIRECT, or AUTO where the source pages are
 * resident): the range of each shard that the job reads is registered with
 * the driver read-only (cuMemHostRegister, which pins the page-cache pages
 * behind the mapping) and the copies read the mapping itself: no CPU copy
 * and no ring. Pinned pages cannot go away under the DMA, so a source
 * truncated meanwhile gives stale bytes, never SIGBUS. A shard whose range
 * cannot be registered falls back to the ring. The range is unregistered
 * when the job ends.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cuda.h>

#include "gpu.h"

#define RING STF_CUDA_RING

static struct {
        void *lib;
        const char *error;
        CUresult (*Init)(unsigned);
        CUresult (*DeviceGetCount)(int *);
        CUresult (*DeviceGet)(CUdevice *, int);
        CUresult (*PrimaryCtxRetain)(CUcontext *, CUdevice);
        CUresult (*PrimaryCtxRelease)(CUdevice);
        CUresult (*CtxSetCurrent)(CUcontext);
        CUresult (*MemAlloc)(CUdeviceptr *, size_t);
        CUresult (*MemFree)(CUdeviceptr);
        CUresult (*MemHostAlloc)(void **, size_t, unsigned);
        CUresult (*MemFreeHost)(void *);
        CUresult (*StreamCreate)(CUstream *, unsigned);
        CUresult (*StreamDestroy)(CUstream);
        CUresult (*StreamSynchronize)(CUstream);
        CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
        CUresult (*Memcpy2DAsync)(const CUDA_MEMCPY2D *, CUstream);
        CUresult (*EventCreate)(CUevent *, unsigned);
        CUresult (*EventRecord)(CUevent, CUstream);
        CUresult (*EventSynchronize)(CUevent);
        CUresult (*EventDestroy)(CUevent);
        CUresult (*IpcGetMemHandle)(CUipcMemHandle *, CUdeviceptr);
        CUresult (*GetErrorString)(CUresult, const char **);
        CUresult (*MemHostRegister)(void *, size_t, unsigned);
        CUresult (*MemHostUnregister)(void *);
} cu;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;

#define SYM(field, name)                                                                           \
        do {                                                                                       \
                *(void **)&cu.field = dlsym(cu.lib, name);                                         \
                if (!cu.field) {                                                                   \
                        cu.error = "libcuda.so.1 lacks " name;                                     \
                        return;                                                                    \
                }                                                                                  \
        } while (0)

static void load(void)
{
        cu.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!cu.lib) {
                cu.error = "the CUDA driver (libcuda.so.1) is not installed";
                return;
        }
        SYM(Init, "cuInit");
        SYM(DeviceGetCount, "cuDeviceGetCount");
        SYM(DeviceGet, "cuDeviceGet");
        SYM(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
        SYM(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
        SYM(CtxSetCurrent, "cuCtxSetCurrent");
        SYM(MemAlloc, "cuMemAlloc_v2");
        SYM(MemFree, "cuMemFree_v2");
        SYM(MemHostAlloc, "cuMemHostAlloc");
        SYM(MemFreeHost, "cuMemFreeHost");
        SYM(StreamCreate, "cuStreamCreate");
        SYM(StreamDestroy, "cuStreamDestroy_v2");
        SYM(StreamSynchronize, "cuStreamSynchronize");
        SYM(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
        SYM(Memcpy2DAsync, "cuMemcpy2DAsync_v2");
        SYM(EventCreate, "cuEventCreate");
        SYM(EventRecord, "cuEventRecord");
        SYM(EventSynchronize, "cuEventSynchronize");
        SYM(EventDestroy, "cuEventDestroy_v2");
        SYM(IpcGetMemHandle, "cuIpcGetMemHandle");
        SYM(GetErrorString, "cuGetErrorString");
        SYM(MemHostRegister, "cuMemHostRegister_v2");
        SYM(MemHostUnregister, "cuMemHostUnregister");
        if (cu.Init(0) != CUDA_SUCCESS)
                cu.error = "cuInit failed: no usable GPU or driver";
}

struct worker {
        CUstream stream;
        void *buf[RING];
        CUevent ev[RING];
        bool used[RING];
        size_t cap;
        unsigned slot;
};

/* A shard's range that the job reads, registered for direct staging. */
struct region {
        const uint8_t *p; /* page aligned, NULL: the shard goes through the ring */
        size_t len;
};

struct cuda_job {
        uint32_t nshards;        /* of the job's model, for direct_end */
        struct stf_watch *watch; /* mends failed reads; NULL: none */
        CUdevice dev;
        CUcontext ctx;
        CUdeviceptr base;
        bool have_ctx;
        struct region *direct; /* per shard; NULL for a ring job */
        struct worker w[STF_THREADS_MAX];
};

static int fail(CUresult r, const char *what, const struct stf_job_info *job, char *msg, size_t cap)
{
        const char *s = NULL;

        if (cu.GetErrorString)
                cu.GetErrorString(r, &s);
        snprintf(msg, cap, "cuda:%d: %s failed: %s", job->device, what, s ? s : "unknown error");
        return -EIO;
}

/* Are all pages of [p, p + len) (page aligned) in the page cache? */
static bool resident(const uint8_t *p, size_t len)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE), step = 4096 * page;
        unsigned char vec[4096];

        for (size_t o = 0; o < len; o += step) {
                size_t n = len - o < step ? len - o : step;

                if (mincore((void *)(p + o), n, vec))
                        return false;
                for (size_t i = 0; i < (n + page - 1) / page; i++)
                        if (!(vec[i] & 1))
                                return false;
        }
        return true;
}

/*
 * Register, per shard, the page-aligned range that the plan reads, where
 * @staging allows it (AUTO: only a resident range). A range the driver
 * refuses stays on the ring. Returns 0 or -ENOMEM.
 */
static int direct_begin(const struct stf_job_info *job, struct cuda_job *cj, uint32_t staging)
{
        const struct stf_plan *p = job->plan;
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
        uint32_t ns = job->model->nshards;
        uint64_t *lo = calloc(ns, sizeof(*lo)), *hi = calloc(ns, sizeof(*hi));

        cj->direct = calloc(ns, sizeof(*cj->direct));
        if (!lo || !hi || !cj->direct) {
                free(lo);
                free(hi);
                return -ENOMEM;
        }
        for (size_t i = 0; i < p->nchunks; i++) {
                const struct stf_chunk *c = &p->chunks[i];
                uint64_t end = c->src + (c->height - 1) * c->src_pitch + c->width;

                if (hi[c->shard] == 0 || c->src < lo[c->shard])
                        lo[c->shard] = c->src;
                hi[c->shard] = end > hi[c->shard] ? end : hi[c->shard];
        }
        for (uint32_t s = 0; s < ns; s++) {
                const struct stf_shard *sh = &job->model->shards[s];
                /* whole pages: the mapping's last page is mapped whole too */
                uint64_t a = lo[s] - lo[s] % page, b = (hi[s] + page - 1) / page * page;

                if (hi[s] == 0 || hi[s] > sh->size)
                        continue;
                if (staging == STF_STAGING_AUTO && !resident(sh->map + a, b - a))
                        continue;
                if (cu.MemHostRegister((void *)(sh->map + a), b - a,
                                       CU_MEMHOSTREGISTER_READ_ONLY) == CUDA_SUCCESS)
                        cj->direct[s] = (struct region){sh->map + a, b - a};
        }
        free(lo);
        free(hi);
        return 0;
}

/* Unregister what direct_begin registered (the job's context is current). */
static void direct_end(struct cuda_job *cj, uint32_t nshards)
{
        if (!cj->direct)
                return;
        for (uint32_t s = 0; s < nshards; s++)
                if (cj->direct[s].p)
                        cu.MemHostUnregister((void *)cj->direct[s].p);
        free(cj->direct);
        cj->direct = NULL;
}

static int cuda_begin(void *ctx, const struct stf_job_info *job, void **state, char *msg,
                      size_t cap)
{
        const struct stf_cuda_opts *opts = ctx;
        struct cuda_job *cj;
        CUresult r;
        int n = 0;

        *state = NULL; /* not @ctx: that is the options */
        pthread_once(&load_once, load);
        if (cu.error) {
                snprintf(msg, cap, "cuda:%d: %s", job->device, cu.error);
                return -ENODEV;
        }
        if (cu.DeviceGetCount(&n) != CUDA_SUCCESS || job->device < 0 || job->device >= n) {
                snprintf(msg, cap, "cuda:%d: no such device (%d CUDA devices)", job->device, n);
                return -ENODEV;
        }
        cj = calloc(1, sizeof(*cj));
        if (!cj)
                return -ENOMEM;
        *state = cj;
        cj->nshards = job->model->nshards;
        cj->watch = opts ? opts->watch : NULL;
        r = cu.DeviceGet(&cj->dev, job->device);
        if (r == CUDA_SUCCESS)
                r = cu.PrimaryCtxRetain(&cj->ctx, cj->dev);
        if (r != CUDA_SUCCESS)
                return fail(r, "context", job, msg, cap);
        cj->have_ctx = true;
        cu.CtxSetCurrent(cj->ctx);
        if (job->plan->total) {
                r = cu.MemAlloc(&cj->base, job->plan->total);
                if (r != CUDA_SUCCESS)
                        return fail(r, "cuMemAlloc", job, msg, cap);
        }
        return opts && opts->staging != STF_STAGING_RING ? direct_begin(job, cj, opts->staging) : 0;
}

static int cuda_worker_begin(void *state, const struct stf_job_info *job, unsigned wi, char *msg,
                             size_t cap)
{
        struct cuda_job *cj = state;
        struct worker *w = &cj->w[wi];
        CUresult r;

        cu.CtxSetCurrent(cj->ctx);
        r = cu.StreamCreate(&w->stream, CU_STREAM_NON_BLOCKING);
        for (int i = 0; r == CUDA_SUCCESS && i < RING; i++)
                r = cu.EventCreate(&w->ev[i], CU_EVENT_DISABLE_TIMING);
        return r == CUDA_SUCCESS ? 0 : fail(r, "stream setup", job, msg, cap);
}

/* One pread of a span into a staging buffer: an attempt of stf_watch_retry_shard. */
struct span_read {
        int fd; /* the shard's: a reopen puts the new file under the same number */
        void *buf;
        size_t len;
        uint64_t off;
        uint64_t at; /* where the last attempt stopped */
};

/* 0, -errno of pread, or -EIO for a short read (the file ends early). */
static int read_span(void *arg)
{
        struct span_read *sr = arg;
        size_t got = 0;

        while (got < sr->len) {
                ssize_t n =
                    pread(sr->fd, (char *)sr->buf + got, sr->len - got, (off_t)(sr->off + got));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        sr->at = sr->off + got;
                        return n < 0 ? -errno : -EIO;
                }
                got += (size_t)n;
        }
        return 0;
}

/* Read @len bytes of shard @shard at @off into @buf, mended once. */
static int read_shard(struct cuda_job *cj, const struct stf_job_info *job, uint32_t shard,
                      void *buf, size_t len, uint64_t off, char *msg, size_t cap)
{
        const struct stf_shard *sh = &job->model->shards[shard];
        struct span_read sr = {sh->fd, buf, len, off, off};
        int ret = stf_watch_retry_shard(cj->watch, shard, read_span, &sr);

        if (ret)
                snprintf(msg, cap, "cuda:%d: reading %s at byte %" PRIu64 " failed: %s",
                         job->device, sh->name, sr.at, strerror(-ret));
        return ret;
}

/*
 * Before a chunk of @len bytes at byte @off of shard @shard: refuse a shard
 * found truncated or changed (the ring would read the new bytes, a direct
 * copy the old ones), and for a direct copy bring a remote shard's pages
 * in (mended once), so that a dead mapping shows here, naming the shard,
 * and not in the copy.
 */
static int chunk_ready(struct cuda_job *cj, const struct stf_job_info *job, uint32_t shard,
                       uint64_t off, size_t len, bool direct, char *msg, size_t cap)
{
        const struct stf_shard *sh = &job->model->shards[shard];
        const char *lost = stf_watch_lost(cj->watch, shard, off + len);
        int ret;

        if (lost) {
                snprintf(msg, cap, "cuda:%d: %s was %s while mounted", job->device, sh->name, lost);
                return -EIO;
        }
        if (!direct)
                return 0;
        ret = stf_watch_fetch_mended(cj->watch, shard, sh->map + off, len);
        if (ret)
                snprintf(msg, cap, "cuda:%d: reading %s at byte %" PRIu64 " failed: %s",
                         job->device, sh->name, off, strerror(-ret));
        return ret;
}

/* Queue the copy of chunk @c from @src (its first row) to the job's memory. */
static CUresult queue_copy(struct cuda_job *cj, struct worker *w, const struct stf_chunk *c,
                           const void *src)
{
        CUDA_MEMCPY2D p = {0};

        if (c->height == 1)
                return cu.MemcpyHtoDAsync(cj->base + c->dst, src, c->width, w->stream);
        p.srcMemoryType = CU_MEMORYTYPE_HOST;
        p.srcHost = src;
        p.srcPitch = c->src_pitch;
        p.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        p.dstDevice = cj->base + c->dst;
        p.dstPitch = c->width;
        p.WidthInBytes = c->width;
        p.Height = c->height;
        return cu.Memcpy2DAsync(&p, w->stream);
}

/* Make every buffer of @w's ring hold @span bytes (after their copies). */
static CUresult grow_ring(struct worker *w, uint64_t span)
{
        CUresult r = CUDA_SUCCESS;

        for (int i = 0; i < RING; i++) {
                if (w->used[i])
                        cu.EventSynchronize(w->ev[i]);
                if (w->buf[i])
                        cu.MemFreeHost(w->buf[i]);
                w->buf[i] = NULL;
                w->used[i] = false;
        }
        w->cap = 0;
        for (int i = 0; r == CUDA_SUCCESS && i < RING; i++)
                r = cu.MemHostAlloc(&w->buf[i], span, 0);
        if (r == CUDA_SUCCESS)
                w->cap = span;
        return r;
}

static int cuda_chunk(void *state, const struct stf_job_info *job, unsigned wi,
                      const struct stf_chunk *c, char *msg, size_t cap)
{
        struct cuda_job *cj = state;
        struct worker *w = &cj->w[wi];
        const struct stf_shard *sh = &job->model->shards[c->shard];
        uint64_t span = (c->height - 1) * c->src_pitch + c->width;
        bool direct = cj->direct && cj->direct[c->shard].p;
        unsigned s = w->slot;
        CUresult r;
        int ret;

        ret = chunk_ready(cj, job, c->shard, c->src, span, direct, msg, cap);
        if (ret)
                return ret;
        if (direct) {
                r = queue_copy(cj, w, c, sh->map + c->src);
                return r == CUDA_SUCCESS ? 0 : fail(r, "async copy", job, msg, cap);
        }
        w->slot = (w->slot + 1) % RING;
        if (w->used[s]) {
                r = cu.EventSynchronize(w->ev[s]);
                if (r != CUDA_SUCCESS)
                        return fail(r, "copy", job, msg, cap);
        }
        if (span > w->cap) {
                /* grow the ring to the largest span (chunk size, or one long row) */
                r = grow_ring(w, span);
                if (r != CUDA_SUCCESS)
                        return fail(r, "cuMemHostAlloc", job, msg, cap);
        }
        ret = read_shard(cj, job, c->shard, w->buf[s], span, c->src, msg, cap);
        if (ret)
                return ret;
        r = queue_copy(cj, w, c, w->buf[s]);
        if (r == CUDA_SUCCESS)
                r = cu.EventRecord(w->ev[s], w->stream);
        if (r != CUDA_SUCCESS)
                return fail(r, "async copy", job, msg, cap);
        w->used[s] = true;
        return 0;
}

static int cuda_worker_end(void *state, const struct stf_job_info *job, unsigned wi, char *msg,
                           size_t cap)
{
        struct cuda_job *cj = state;
        struct worker *w = &cj->w[wi];
        CUresult r = CUDA_SUCCESS;

        if (w->stream)
                r = cu.StreamSynchronize(w->stream);
        for (int i = 0; i < RING; i++) {
                if (w->ev[i])
                        cu.EventDestroy(w->ev[i]);
                if (w->buf[i])
                        cu.MemFreeHost(w->buf[i]);
        }
        if (w->stream)
                cu.StreamDestroy(w->stream);
        memset(w, 0, sizeof(*w));
        return r == CUDA_SUCCESS ? 0 : fail(r, "stream synchronize", job, msg, cap);
}

/* Give back what the job holds on the device and in the driver; the
 * state itself stays (cuda_release frees it). */
static void free_device(struct cuda_job *cj)
{
        cu.CtxSetCurrent(cj->ctx);
        direct_end(cj, cj->nshards);
        if (cj->base)
                cu.MemFree(cj->base);
        cj->base = 0;
        if (cj->have_ctx)
                cu.PrimaryCtxRelease(cj->dev);
        cj->have_ctx = false;
}

/*
 * After the last copy of a job that moved every chunk: a registered shard
 * found truncated or changed meanwhile may have given the device old or
 * mixed bytes (its pinned pages): -EIO naming it.
 */
static int direct_check(struct cuda_job *cj, const struct stf_job_info *job, char *msg, size_t cap)
{
        for (uint32_t s = 0; s < cj->nshards; s++) {
                const struct region *g = &cj->direct[s];
                const struct stf_shard *sh = &job->model->shards[s];
                uint64_t end;
                const char *lost;

                if (!g->p)
                        continue;
                end = (uint64_t)(g->p + g->len - sh->map); /* whole pages: past the end */
                lost = stf_watch_lost(cj->watch, s, end < sh->size ? end : sh->size);
                if (lost) {
                        snprintf(msg, cap, "cuda:%d: %s was %s during the copies", job->device,
                                 sh->name, lost);
                        return -EIO;
                }
        }
        return 0;
}

/* The registrations end with the copies; a failed or cancelled job keeps
 * nothing on the device. */
static int cuda_end(void *state, const struct stf_job_info *job, int status, char *msg, size_t cap)
{
        struct cuda_job *cj = state;
        int ret = 0;

        if (!cj)
                return 0;
        if (cj->direct) {
                if (!status)
                        ret = direct_check(cj, job, msg, cap);
                cu.CtxSetCurrent(cj->ctx);
                direct_end(cj, cj->nshards);
        }
        if (status || ret)
                free_device(cj);
        return ret;
}

static void cuda_release(void *state)
{
        if (!state)
                return;
        free_device(state);
        free(state);
}

const struct stf_backend stf_cuda_backend = {
    .begin = cuda_begin,
    .worker_begin = cuda_worker_begin,
    .chunk = cuda_chunk,
    .worker_end = cuda_worker_end,
    .end = cuda_end,
    .release = cuda_release,
};

bool stf_cuda_built(void)
{
        return true;
}

int stf_cuda_job_handle(struct stf_job *job, char hex[129], uint64_t *dptr)
{
        struct cuda_job *cj = stf_job_backend_state(job);
        CUipcMemHandle h;

        if (!cj || !cj->base)
                return -ENODATA;
        cu.CtxSetCurrent(cj->ctx);
        if (cu.IpcGetMemHandle(&h, cj->base) != CUDA_SUCCESS)
                return -EIO;
        for (int i = 0; i < CU_IPC_HANDLE_SIZE; i++)
                snprintf(hex + 2 * i, 3, "%02x", (unsigned char)h.reserved[i]);
        *dptr = cj->base;
        return 0;
}
