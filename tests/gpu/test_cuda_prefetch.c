/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU check of the CUDA prefetch target, linking core/ only (no FUSE, so it
 * runs on a machine without libfuse or /dev/fuse). Exits 77 (skip) where
 * libcuda.so.1 or a device is missing. CI runs it against tests/gpu's
 * fakecuda (LD_LIBRARY_PATH), tools/gpu-check.sh against the real driver.
 *
 * Writes a model of a few F32 tensors of odd shapes in a temp dir,
 * prefetches all of it to cuda:0 (and cuda:1 where there is one) whole and
 * as tensor-parallel slices (dim 0 and dim 1, world 2 and 4, every rank),
 * in big chunks and in 4 KiB ones (so every worker reuses its staging ring
 * many times), copies the device memory back and compares every byte with
 * the slice computed on the host. Against fakecuda it also checks that a
 * released job leaves no device, pinned, stream or event allocation.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include "fakecuda.h"
#include "gpu.h"
#include "model.h"
#include "prefetch.h"
#include "select.h"
#include "stwrite.h"
#include "tree.h"
#include "watch.h"

static CUresult (*p_init)(unsigned);
static CUresult (*p_count)(int *);
static CUresult (*p_dtoh)(void *, CUdeviceptr, size_t);
static CUresult (*p_htod)(CUdeviceptr, const void *, size_t);
static CUresult (*p_alloc)(CUdeviceptr *, size_t);
static CUresult (*p_free)(CUdeviceptr);
static CUresult (*p_hostalloc)(void **, size_t, unsigned);
static CUresult (*p_retain)(CUcontext *, CUdevice);
static CUresult (*p_setcur)(CUcontext);
static int (*p_stats)(char *, size_t);
static int ndevices;

static int fails;

#define CHECK(c, ...)                                                                              \
        do {                                                                                       \
                if (!(c)) {                                                                        \
                        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                       \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        fails++;                                                                   \
                }                                                                                  \
        } while (0)

/* Data bytes from a 64-bit LCG seeded with *@arg, in file order. */
static void fill_lcg(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        uint64_t *seed = arg;

        for (size_t k = 0; k < len; k++) {
                *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
                p[k] = (uint8_t)(*seed >> 56);
        }
}

/* A safetensors file with @n tensors of shapes @shapes (rank 2) in F32. */
static void write_model(const char *path, int n, const uint64_t (*shapes)[2], uint64_t seed)
{
        struct stw_tensor t[16];
        char names[16][8];
        int r;

        for (int i = 0; i < n && i < 16; i++) {
                snprintf(names[i], sizeof(names[i]), "t%d", i);
                t[i] = (struct stw_tensor){names[i], "F32", 2, {shapes[i][0], shapes[i][1]}, 32};
        }
        r = stw_write(
            path,
            &(struct stw_file){
                .t = t, .n = n < 16 ? (size_t)n : 16, .pad = true, .fill = fill_lcg, .arg = &seed});
        if (r) {
                fprintf(stderr, "cannot write %s: %s\n", path, strerror(-r));
                exit(1);
        }
}

static int load_cuda(void)
{
        void *lib = dlopen("libcuda.so.1", RTLD_NOW);
        int n = 0;

        if (!lib)
                return -1;
        *(void **)&p_init = dlsym(lib, "cuInit");
        *(void **)&p_count = dlsym(lib, "cuDeviceGetCount");
        *(void **)&p_dtoh = dlsym(lib, "cuMemcpyDtoH_v2");
        *(void **)&p_htod = dlsym(lib, "cuMemcpyHtoD_v2");
        *(void **)&p_alloc = dlsym(lib, "cuMemAlloc_v2");
        *(void **)&p_free = dlsym(lib, "cuMemFree_v2");
        *(void **)&p_hostalloc = dlsym(lib, "cuMemHostAlloc");
        *(void **)&p_retain = dlsym(lib, "cuDevicePrimaryCtxRetain");
        *(void **)&p_setcur = dlsym(lib, "cuCtxSetCurrent");
        *(void **)&p_stats = dlsym(lib, "fakecuda_stats"); /* only in the fake */
        if (!p_init || p_init(0) != CUDA_SUCCESS || p_count(&n) != CUDA_SUCCESS || n < 1)
                return -1;
        ndevices = n;
        return 0;
}

/* Make device @dev's primary context current on this thread (for DtoH). */
static int use_device(int dev)
{
        CUcontext ctx;

        return p_retain(&ctx, dev) == CUDA_SUCCESS && p_setcur(ctx) == CUDA_SUCCESS ? 0 : -1;
}

/* fakecuda's counter @key (0 against the real driver: nothing to check). */
static long fake_stat(const char *key)
{
        char buf[1024], pat[64];
        const char *at;

        if (!p_stats)
                return 0;
        p_stats(buf, sizeof(buf));
        snprintf(pat, sizeof(pat), "\"%s\": ", key);
        at = strstr(buf, pat);
        return at ? strtol(at + strlen(pat), NULL, 10) : -1;
}

/* After a job is released: nothing of it is left in the driver. */
static void check_released(const char *what)
{
        static const char *const keys[] = {"device_allocs", "pinned_allocs",
                                           "registered",    "streams",
                                           "events",        "leaked_at_ctx_release"};

        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                CHECK(fake_stat(keys[i]) == 0, "%s: fakecuda %s = %ld after release", what, keys[i],
                      fake_stat(keys[i]));
}

/* Run a job over every tensor; 0 and the device pointer of its memory. */
struct run {
        int dev;
        uint64_t chunk;
        struct stf_cuda_opts opts;
        int direct; /* copies from registered memory expected: 1 yes, 0 no, -1 either */
};

static int run_job(struct stf_model *m, struct stf_tree *t, const struct stf_slice *sl,
                   struct run *rn, struct stf_job **out)
{
        uint32_t *sel;
        size_t n;
        struct stf_plan *plan;
        char msg[256] = "";
        int ret;

        ret = stf_select(m, t, "", 1, &sel, &n);
        if (ret)
                return ret;
        ret = stf_plan_build(m, sel, n, sl, rn->chunk, &plan, msg, sizeof(msg));
        free(sel);
        if (ret) {
                fprintf(stderr, "plan: %s\n", msg);
                return ret;
        }
        ret =
            stf_job_start(m, plan, &stf_cuda_backend, &rn->opts,
                          &(struct stf_job_params){
                              .id = 1, .target = STF_TARGET_CUDA, .device = rn->dev, .threads = 3},
                          out);
        if (ret)
                return ret;
        stf_job_wait(*out);
        return 0;
}

/* Compare job @job's device bytes with slice @sl of every tensor, computed here. */
static void compare(struct stf_model *m, struct stf_job *job, const struct stf_slice *sl,
                    const uint8_t *back, const char *what)
{
        for (size_t i = 0; i < stf_job_info(job)->plan->ntensors; i++) {
                const struct stf_tensor *x = &m->tensors[stf_job_info(job)->plan->tensors[i]];
                const uint8_t *src = m->shards[x->shard].map + x->begin;
                uint64_t rows = x->shape[0], cols = x->shape[1] * 4;
                uint64_t first_row = 0, first_col = 0;

                if (sl->dim == 0) {
                        rows = x->shape[0] / sl->world;
                        first_row = sl->rank * rows;
                } else if (sl->dim == 1) {
                        cols = x->shape[1] / sl->world * 4;
                        first_col = sl->rank * cols;
                }
                for (uint64_t r = 0; r < rows; r++)
                        CHECK(!memcmp(back + stf_job_info(job)->plan->tensor_dst[i] + r * cols,
                                      src + (first_row + r) * x->shape[1] * 4 + first_col, cols),
                              "%s: %s row %" PRIu64 " differs", what, x->name, r);
        }
}

/* One job: slice @sl of every tensor as @rn says. */
static void check_job(struct stf_model *m, struct stf_tree *t, const struct stf_slice *sl,
                      struct run *rn)
{
        static const char *const staging[] = {"ring", "direct", "auto"};
        long direct0 = fake_stat("copies_registered"), direct;
        struct stf_job_progress st;
        struct stf_job *job = NULL;
        char hex[129], what[128];
        uint64_t dptr;
        uint8_t *back;
        int dev = rn->dev;

        snprintf(what, sizeof(what), "cuda:%d dim %d rank %u/%u chunk %" PRIu64 " staging %s", dev,
                 sl->dim, sl->rank, sl->world, rn->chunk, staging[rn->opts.staging]);
        if (run_job(m, t, sl, rn, &job)) {
                CHECK(0, "%s: the job did not start", what);
                return;
        }
        stf_job_progress(job, &st);
        CHECK(st.state == STF_JOB_DONE, "%s: state %u: %s", what, st.state, st.message);
        CHECK(st.bytes_done == st.bytes_total, "%s: %" PRIu64 " of %" PRIu64 " bytes", what,
              st.bytes_done, st.bytes_total);
        if (st.state == STF_JOB_DONE && !stf_cuda_job_handle(job, hex, &dptr)) {
                back = malloc(stf_job_info(job)->plan->total);
                CHECK(use_device(dev) == 0, "%s: no context", what);
                CHECK(p_dtoh(back, dptr, stf_job_info(job)->plan->total) == CUDA_SUCCESS,
                      "%s: DtoH", what);
                compare(m, job, sl, back, what);
                free(back);
        } else {
                CHECK(0, "%s: no device memory", what);
        }
        stf_job_release(job);
        stf_job_free(job);
        check_released(what);
        direct = fake_stat("copies_registered") - direct0;
        if (p_stats && rn->direct >= 0)
                CHECK((direct > 0) == rn->direct, "%s: %ld copies from registered memory", what,
                      direct);
}

/*
 * Drop the model's pages from the page cache (unmap them from this process,
 * then fadvise). False where the kernel keeps them (tmpfs, say).
 */
static bool drop_cache(struct stf_model *m)
{
        const struct stf_shard *sh = &m->shards[0];
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        unsigned char vec[4096];
        size_t n = (sh->size + page - 1) / page;

        madvise((void *)sh->map, sh->size, MADV_DONTNEED);
        fdatasync(sh->fd);
        posix_fadvise(sh->fd, 0, 0, POSIX_FADV_DONTNEED);
        if (n > sizeof(vec) || mincore((void *)sh->map, sh->size, vec))
                return false;
        for (size_t i = 0; i < n; i++)
                if (vec[i] & 1)
                        return false;
        return true;
}

/*
 * AUTO: direct from a resident source, the ring from a cold one (where the
 * page cache can be dropped here).
 */
static void check_auto(struct stf_model *m, struct stf_tree *t)
{
        struct stf_slice whole = {-1, 0, 0};
        struct run hot = {0, 4096, {STF_STAGING_AUTO, NULL}, 1}, cold = hot;
        FILE *f = fopen(m->shards[0].path, "rb");
        char buf[65536];

        while (f && fread(buf, 1, sizeof(buf), f) > 0)
                ;
        if (f)
                fclose(f);
        check_job(m, t, &whole, &hot);
        if (!drop_cache(m)) {
                printf("note: the page cache of %s cannot be dropped here: AUTO on a cold "
                       "source not checked\n",
                       m->shards[0].path);
                return;
        }
        cold.direct = 0;
        check_job(m, t, &whole, &cold);
}

/*
 * A shard its watch has lost (written to while mounted) fails a job on the
 * ring and on direct staging, the message naming the shard, and the job
 * leaves nothing in the driver.
 */
static void check_lost(struct stf_model *m, struct stf_tree *t)
{
        struct stf_slice whole = {-1, 0, 0};
        struct stf_job_progress p;
        struct stf_watch *w = NULL;
        struct stf_job *job;
        char want[256];

        if (stf_watch_new(m, NULL, NULL, NULL, &w)) {
                CHECK(0, "stf_watch_new");
                return;
        }
        stf_watch_written(w, 0);
        snprintf(want, sizeof(want), "cuda:0: %s was written while mounted", m->shards[0].name);
        for (uint32_t s = STF_STAGING_RING; s <= STF_STAGING_DIRECT; s++) {
                struct run rn = {0, 4096, {s, w}, -1};

                if (run_job(m, t, &whole, &rn, &job)) {
                        CHECK(0, "staging %u: the job did not start", s);
                        continue;
                }
                stf_job_progress(job, &p);
                CHECK(p.state == STF_JOB_FAILED && !strcmp(p.message, want),
                      "staging %u on a lost shard: state %u, \"%s\"", s, p.state, p.message);
                stf_job_release(job);
                stf_job_free(job);
                check_released("a job on a lost shard");
        }
        stf_watch_free(w);
}

static void check_slices(struct stf_model *m, struct stf_tree *t, struct run *rn)
{
        for (int dim = -1; dim <= 1; dim++)
                for (uint32_t world = dim < 0 ? 1 : 2; world <= (dim < 0 ? 1u : 4u); world *= 2)
                        for (uint32_t rank = 0; rank < world; rank++)
                                check_job(m, t, &(struct stf_slice){dim, rank, world}, rn);
}

int main(void)
{
        static const uint64_t shapes[][2] = {{64, 48}, {8, 96}, {128, 4}, {4, 1024}, {256, 256}};
        static const uint64_t chunks[] = {1 << 20, 4096};
        char dir[] = "/var/tmp/stfs-gpu-XXXXXX", path[256];
        struct stf_model *m = NULL;
        struct stf_tree *t = NULL;
        struct stf_diag d;

        if (load_cuda()) {
                printf("SKIP: no CUDA driver or device\n");
                return 77;
        }
        if (!mkdtemp(dir))
                return 1;
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        write_model(path, 5, shapes, 42);
        if (stf_model_open(path, &m, &d) || stf_tree_build_model(m, 0, &t, &d)) {
                fprintf(stderr, "open: %s\n", d.msg);
                return 1;
        }
        /*
         * whole, then slices of dim 0 and 1 for world 2 and 4, every rank;
         * through the ring and straight from the registered mapping
         */
        for (int dev = 0; dev < (ndevices > 1 ? 2 : 1); dev++)
                for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++)
                        for (uint32_t s = STF_STAGING_RING; s <= STF_STAGING_DIRECT; s++)
                                check_slices(m, t,
                                             &(struct run){dev, chunks[c], {s, NULL}, (int)s});
        check_auto(m, t);
        check_lost(m, t);
        printf("%s\n", fails ? "FAILED" : "cuda prefetch: every byte of every slice matches");
        stf_tree_free(t);
        stf_model_close(m);
        unlink(path);
        rmdir(dir);
        return fails ? 1 : 0;
}
