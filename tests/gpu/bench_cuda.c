/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_cuda SOURCE [DEVICE [THREADS [REPS]]]: bench row 8 without a mount,
 * linking core/ only, for tools/gpu-check.sh on a GPU machine that may have
 * no FUSE. The CUDA prefetch of every tensor of SOURCE (a .safetensors
 * file, an index or a directory) to DEVICE, the source warm in the page
 * cache, with ring staging and with direct staging, against a plain
 * cuMemcpyHtoD of the same bytes from one pinned buffer. The first job of
 * each kind is checked: every tensor is copied back and compared with the
 * source; with $IPC_READ set (tests/gpu/ipc_read), another process also
 * opens the first ring job's IPC handle and its bytes are compared. Prints
 * one line per measure, "NAME SECONDS BYTES" (the median of REPS runs), for
 * the script to turn into ratios; exit 1 on any failure, 77 without a
 * driver or device.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "model.h"
#include "prefetch.h"
#include "select.h"
#include "tree.h"

#define REPS_MAX 32

static struct {
        CUresult (*init)(unsigned);
        CUresult (*count)(int *);
        CUresult (*retain)(CUcontext *, CUdevice);
        CUresult (*setcur)(CUcontext);
        CUresult (*alloc)(CUdeviceptr *, size_t);
        CUresult (*free_)(CUdeviceptr);
        CUresult (*hostalloc)(void **, size_t, unsigned);
        CUresult (*freehost)(void *);
        CUresult (*htod)(CUdeviceptr, const void *, size_t);
        CUresult (*dtoh)(void *, CUdeviceptr, size_t);
        CUresult (*sync)(void);
} cu;

static int load(int device)
{
        void *lib = dlopen("libcuda.so.1", RTLD_NOW);
        CUcontext ctx;
        int n = 0;

        if (!lib)
                return -1;
        *(void **)&cu.init = dlsym(lib, "cuInit");
        *(void **)&cu.count = dlsym(lib, "cuDeviceGetCount");
        *(void **)&cu.retain = dlsym(lib, "cuDevicePrimaryCtxRetain");
        *(void **)&cu.setcur = dlsym(lib, "cuCtxSetCurrent");
        *(void **)&cu.alloc = dlsym(lib, "cuMemAlloc_v2");
        *(void **)&cu.free_ = dlsym(lib, "cuMemFree_v2");
        *(void **)&cu.hostalloc = dlsym(lib, "cuMemHostAlloc");
        *(void **)&cu.freehost = dlsym(lib, "cuMemFreeHost");
        *(void **)&cu.htod = dlsym(lib, "cuMemcpyHtoD_v2");
        *(void **)&cu.dtoh = dlsym(lib, "cuMemcpyDtoH_v2");
        *(void **)&cu.sync = dlsym(lib, "cuCtxSynchronize");
        if (!cu.init || !cu.sync || cu.init(0) || cu.count(&n) || device >= n)
                return -1;
        return cu.retain(&ctx, device) || cu.setcur(ctx) ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
        qsort(v, (size_t)n, sizeof(*v), cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Read every shard to its end: the source warm, as row 8a wants it. */
static void warm(const struct stf_model *m)
{
        static char buf[1 << 20];

        for (uint32_t s = 0; s < m->nshards; s++)
                for (off_t o = 0; pread(m->shards[s].fd, buf, sizeof(buf), o) > 0;
                     o += (off_t)sizeof(buf))
                        ;
}

/* Every tensor of @job back from the device, compared with the source. */
static int check(const struct stf_model *m, struct stf_job *job)
{
        char hex[129];
        uint64_t dptr;
        uint8_t *back;
        int bad = 0;

        if (stf_cuda_job_handle(job, hex, &dptr))
                return -1;
        back = malloc(stf_job_info(job)->plan->total ? stf_job_info(job)->plan->total : 1);
        if (!back || cu.dtoh(back, dptr, stf_job_info(job)->plan->total)) {
                free(back);
                return -1;
        }
        for (size_t i = 0; i < stf_job_info(job)->plan->ntensors; i++) {
                const struct stf_tensor *t = &m->tensors[stf_job_info(job)->plan->tensors[i]];

                if (memcmp(back + stf_job_info(job)->plan->tensor_dst[i],
                           m->shards[t->shard].map + t->begin, t->size)) {
                        fprintf(stderr, "bench_cuda: %s differs on the device\n", t->name);
                        bad = -1;
                }
        }
        free(back);
        return bad;
}

/*
 * Another process ($IPC_READ) opens @job's IPC handle on @device and reads
 * the first tensor back: the bytes must be the source's. 0, or -1.
 */
static int check_ipc(const struct stf_model *m, struct stf_job *job, int device)
{
        const char *exe = getenv("IPC_READ");
        const struct stf_tensor *t = &m->tensors[stf_job_info(job)->plan->tensors[0]];
        char hex[129], cmd[512];
        uint64_t dptr, got = 0;
        uint8_t *buf;
        FILE *p;
        size_t n;

        if (!exe || !stf_job_info(job)->plan->ntensors || stf_cuda_job_handle(job, hex, &dptr))
                return exe ? -1 : 0;
        buf = malloc(t->size + 1);
        snprintf(cmd, sizeof(cmd), "'%s' %d %s %" PRIu64 " %" PRIu64, exe, device, hex,
                 stf_job_info(job)->plan->tensor_dst[0], t->size);
        p = buf ? popen(cmd, "r") : NULL;
        while (p && (n = fread(buf + got, 1, t->size + 1 - got, p)) > 0)
                got += n;
        if (!p || pclose(p) != 0 || got != t->size ||
            memcmp(buf, m->shards[t->shard].map + t->begin, t->size)) {
                fprintf(stderr,
                        "bench_cuda: %s read through its IPC handle by another process "
                        "differs\n",
                        t->name);
                free(buf);
                return -1;
        }
        printf("# ipc: %s (%" PRIu64 " bytes) read by another process: equal\n", t->name, got);
        free(buf);
        return 0;
}

/* One timed prefetch of every tensor; seconds, or < 0 on failure. */
static double prefetch(struct stf_model *m, struct stf_tree *t, int device, unsigned threads,
                       uint32_t staging, bool verify, uint64_t *bytes)
{
        struct stf_cuda_opts opts = {staging, NULL};
        struct stf_job_progress st;
        struct stf_plan *plan;
        struct stf_job *job;
        char msg[256] = "";
        uint32_t *sel;
        size_t n;
        uint64_t t0;
        double secs;

        if (stf_select(m, t, "", 1, &sel, &n))
                return -1;
        if (stf_plan_build(m, sel, n, NULL, 0, &plan, msg, sizeof(msg))) {
                free(sel);
                fprintf(stderr, "bench_cuda: %s\n", msg);
                return -1;
        }
        free(sel);
        t0 = stf_now_ns();
        if (stf_job_start(
                m, plan, &stf_cuda_backend, &opts,
                &(struct stf_job_params){
                    .id = 1, .target = STF_TARGET_CUDA, .device = device, .threads = threads},
                &job))
                return -1;
        stf_job_wait(job);
        secs = (double)(stf_now_ns() - t0) / 1e9;
        stf_job_progress(job, &st);
        *bytes = st.bytes_total;
        if (st.state != STF_JOB_DONE) {
                fprintf(stderr, "bench_cuda: the job failed: %s\n", st.message);
                secs = -1;
        } else if (verify &&
                   (check(m, job) || (staging == STF_STAGING_RING && check_ipc(m, job, device)))) {
                secs = -1;
        }
        stf_job_release(job);
        stf_job_free(job);
        return secs;
}

/* The baseline: one cuMemcpyHtoD of all tensor bytes from a pinned buffer. */
static double pinned(const struct stf_model *m, int reps, uint64_t *bytes)
{
        double v[REPS_MAX];
        uint64_t total = 0, at = 0;
        CUdeviceptr d;
        uint8_t *h;

        for (size_t i = 0; i < m->ntensors; i++)
                total += m->tensors[i].size;
        *bytes = total;
        if (cu.hostalloc((void **)&h, total, 0))
                return -1;
        if (cu.alloc(&d, total)) {
                cu.freehost(h);
                return -1;
        }
        for (size_t i = 0; i < m->ntensors; i++) {
                memcpy(h + at, m->shards[m->tensors[i].shard].map + m->tensors[i].begin,
                       m->tensors[i].size);
                at += m->tensors[i].size;
        }
        cu.htod(d, h, total); /* first touch */
        for (int r = 0; r < reps; r++) {
                uint64_t t0 = stf_now_ns();

                cu.htod(d, h, total);
                cu.sync();
                v[r] = (double)(stf_now_ns() - t0) / 1e9;
        }
        cu.free_(d);
        cu.freehost(h);
        return median(v, reps);
}

int main(int argc, char **argv)
{
        static const char *const names[] = {"prefetch_ring", "prefetch_direct"};
        int device = argc > 2 ? atoi(argv[2]) : 0, reps = argc > 4 ? atoi(argv[4]) : 5;
        unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 0;
        struct stf_model *m = NULL;
        struct stf_tree *t = NULL;
        struct stf_diag d;
        uint64_t bytes = 0;
        double v[REPS_MAX], s;

        if (argc < 2 || reps < 1 || reps > REPS_MAX) {
                fprintf(stderr, "usage: bench_cuda SOURCE [DEVICE [THREADS [REPS]]]\n");
                return 2;
        }
        if (load(device)) {
                printf("SKIP: no CUDA driver or no device %d\n", device);
                return 77;
        }
        if (stf_model_open(argv[1], &m, &d) || stf_tree_build_model(m, 0, &t, &d)) {
                fprintf(stderr, "bench_cuda: %s\n", d.msg);
                return 1;
        }
        warm(m);
        for (uint32_t staging = STF_STAGING_RING; staging <= STF_STAGING_DIRECT; staging++) {
                for (int r = 0; r < reps; r++) {
                        v[r] = prefetch(m, t, device, threads, staging, r == 0, &bytes);
                        if (v[r] < 0)
                                return 1;
                }
                printf("%s %.6f %" PRIu64 "\n", names[staging], median(v, reps), bytes);
        }
        s = pinned(m, reps, &bytes);
        if (s < 0)
                return 1;
        printf("pinned_htod %.6f %" PRIu64 "\n", s, bytes);
        stf_tree_free(t);
        stf_model_close(m);
        return 0;
}
