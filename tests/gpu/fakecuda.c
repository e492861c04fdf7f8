/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fakecuda: the CUDA driver API in host memory, for tests (see fakecuda.h
 * for what it checks and its environment). Only cuda.h's types and
 * prototypes are used; nothing of the real driver.
 *
 * One global lock guards every table and counter, and stream workers copy
 * under it: slow, simple, and a copy can never race a free. Device
 * addresses are synthetic ((device + 1) << 40 + offset, never reused), so
 * host code that dereferences a device pointer crashes instead of passing.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cuda.h>

#include "fakecuda.h"

#define MAX_DEV 16
#define MAX_FAIL 8
#define DEV_SPAN (1ull << 40)
#define MAGIC "fakecuda"

struct ctx {
        int dev;
        int refs;
};

struct dalloc {
        CUdeviceptr ptr;
        size_t size;
        int dev;
        int fd;     /* memfd; -1 for an opened IPC mapping */
        char *host; /* where its bytes are */
        bool ipc;   /* opened with cuIpcOpenMemHandle */
        uint64_t id;
        ino_t ino;
};

struct hrange {
        char *p;
        size_t size;
        bool registered; /* cuMemHostRegister; else cuMemHostAlloc */
        unsigned flags;
        struct ctx *ctx;
};

enum { OP_COPY, OP_EVENT };

/* A copy: @height rows of @width bytes; a side is a host or device address. */
struct side {
        bool device;
        uint64_t addr;
        size_t pitch;
};

struct op {
        struct op *next;
        int kind;
        struct side src, dst;
        size_t width, height;
        char *snapshot; /* pageable source, staged at queue time */
        struct event *ev;
        uint64_t gen;
};

struct stream {
        struct ctx *ctx;
        pthread_t th;
        struct op *head, *tail;
        uint64_t queued, done;
        CUresult err; /* sticky */
        bool stop;
        unsigned seed;
};

struct event {
        struct ctx *ctx;
        uint64_t rec, done;
        CUresult err;
        int pending; /* queued record ops */
        bool dead;   /* destroyed while pending */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static __thread struct ctx *cur;

static struct {
        bool configured, init;
        int ndev;
        long pending[MAX_DEV]; /* queued stream ops per device */
        uint64_t mem;
        unsigned delay_us;
        const char *stats_path;
        struct {
                char name[64];
                unsigned long nth, calls;
                CUresult code;
        } fail[MAX_FAIL];
        int nfail;
        int lost_dev;
        unsigned long lost_after;
        bool lost[MAX_DEV];
        unsigned long copies[MAX_DEV];
        uint64_t used[MAX_DEV];
        uint64_t next_addr[MAX_DEV];
        struct ctx ctx[MAX_DEV];
        struct dalloc *a;
        size_t na, capa;
        struct hrange *h;
        size_t nh, caph;
        uint64_t next_id;
        long streams, events, ipc_open, leaked;
        uint64_t total_allocs, total_registers, copies_pinned, copies_registered, copies_pageable,
            bytes_registered;
} g = {.lost_dev = -1};

/* ------------------------------------------------------------ stats */

int fakecuda_stats(char *buf, size_t cap)
{
        long allocs = 0, pinned = 0, regs = 0, refs = 0;
        uint64_t bytes = 0, pbytes = 0, rbytes = 0;

        for (size_t i = 0; i < g.na; i++) {
                if (!g.a[i].ipc) {
                        allocs++;
                        bytes += g.a[i].size;
                }
        }
        for (size_t i = 0; i < g.nh; i++) {
                if (g.h[i].registered) {
                        regs++;
                        rbytes += g.h[i].size;
                } else {
                        pinned++;
                        pbytes += g.h[i].size;
                }
        }
        for (int d = 0; d < MAX_DEV; d++)
                refs += g.ctx[d].refs;
        return snprintf(buf, cap,
                        "{\"pid\": %d, \"device_allocs\": %ld, \"device_bytes\": %" PRIu64
                        ", \"pinned_allocs\": %ld, \"pinned_bytes\": %" PRIu64
                        ", \"registered\": %ld, \"registered_bytes\": %" PRIu64
                        ", \"streams\": %ld, \"events\": %ld, \"ctx_refs\": %ld, \"ipc_open\": %ld"
                        ", \"leaked_at_ctx_release\": %ld, \"total_device_allocs\": %" PRIu64
                        ", \"total_registers\": %" PRIu64 ", \"copies_pinned\": %" PRIu64
                        ", \"copies_registered\": %" PRIu64 ", \"copies_pageable\": %" PRIu64
                        ", \"bytes_from_registered\": %" PRIu64 "}\n",
                        (int)getpid(), allocs, bytes, pinned, pbytes, regs, rbytes, g.streams,
                        g.events, refs, g.ipc_open, g.leaked, g.total_allocs, g.total_registers,
                        g.copies_pinned, g.copies_registered, g.copies_pageable,
                        g.bytes_registered);
}

/* Rewrite FAKECUDA_STATS (atomically: a reader never sees half a file). Under mu. */
static void stats_changed(void)
{
        char buf[1024], tmp[4096];
        int n, fd;

        if (!g.stats_path)
                return;
        n = fakecuda_stats(buf, sizeof(buf));
        snprintf(tmp, sizeof(tmp), "%s.%d.tmp", g.stats_path, (int)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        if (write(fd, buf, (size_t)n) == n)
                rename(tmp, g.stats_path);
        else
                unlink(tmp);
        close(fd);
}

__attribute__((destructor)) static void at_exit(void)
{
        pthread_mutex_lock(&mu);
        stats_changed();
        pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------ environment */

static uint64_t parse_size(const char *s)
{
        char *end;
        uint64_t v = strtoull(s, &end, 10);

        switch (*end) {
        case 'G':
        case 'g':
                v <<= 10; /* fall through */
        case 'M':
        case 'm':
                v <<= 10; /* fall through */
        case 'K':
        case 'k':
                v <<= 10;
                break;
        default:
                break;
        }
        return v;
}

static void parse_fail(const char *spec)
{
        char *copy = strdup(spec), *save = NULL;

        for (char *t = strtok_r(copy, ",", &save); t && g.nfail < MAX_FAIL;
             t = strtok_r(NULL, ",", &save)) {
                char *c1 = strchr(t, ':'), *c2;

                if (!c1)
                        continue;
                *c1 = '\0';
                c2 = strchr(c1 + 1, ':');
                snprintf(g.fail[g.nfail].name, sizeof(g.fail[0].name), "%s", t);
                g.fail[g.nfail].nth = strtoul(c1 + 1, NULL, 10);
                g.fail[g.nfail].code = c2 ? (CUresult)atoi(c2 + 1) : CUDA_ERROR_UNKNOWN;
                g.nfail++;
        }
        free(copy);
}

static void configure(void)
{
        const char *s;

        g.ndev = (s = getenv("FAKECUDA_DEVICES")) ? atoi(s) : 2;
        if (g.ndev < 0 || g.ndev > MAX_DEV)
                g.ndev = MAX_DEV;
        g.mem = (s = getenv("FAKECUDA_MEM")) ? parse_size(s) : 4ull << 30;
        g.delay_us = (s = getenv("FAKECUDA_DELAY_US")) ? (unsigned)atoi(s) : 200;
        g.stats_path = getenv("FAKECUDA_STATS");
        if ((s = getenv("FAKECUDA_FAIL")))
                parse_fail(s);
        if ((s = getenv("FAKECUDA_LOST")) && strchr(s, ':')) {
                g.lost_dev = atoi(s);
                g.lost_after = strtoul(strchr(s, ':') + 1, NULL, 10);
        }
        for (int d = 0; d < MAX_DEV; d++) {
                g.ctx[d].dev = d;
                g.next_addr[d] = (uint64_t)(d + 1) * DEV_SPAN;
        }
}

/* Should this call of @name fail? Its code, or CUDA_SUCCESS. Under mu. */
static CUresult injected(const char *name)
{
        for (int i = 0; i < g.nfail; i++) {
                if (strcmp(g.fail[i].name, name))
                        continue;
                if (++g.fail[i].calls == g.fail[i].nth)
                        return g.fail[i].code;
        }
        return CUDA_SUCCESS;
}

/*
 * Entry of every call: initialized, not injected to fail, and (@need_ctx)
 * a live current context whose device is not lost. Takes mu; the caller
 * releases it (also on failure, through OUT).
 */
static CUresult enter(const char *name, bool need_ctx)
{
        CUresult r;

        pthread_mutex_lock(&mu);
        if (!g.init)
                return CUDA_ERROR_NOT_INITIALIZED;
        r = injected(name);
        if (r)
                return r;
        if (!need_ctx)
                return CUDA_SUCCESS;
        if (!cur || cur->refs <= 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (g.lost[cur->dev])
                return CUDA_ERROR_DEVICE_UNAVAILABLE;
        return CUDA_SUCCESS;
}

static CUresult out(CUresult r)
{
        pthread_mutex_unlock(&mu);
        return r;
}

/* ------------------------------------------------------------ lookup */

static struct dalloc *find_dev(uint64_t p, size_t len)
{
        for (size_t i = 0; i < g.na; i++) {
                struct dalloc *a = &g.a[i];

                if (p >= a->ptr && p - a->ptr <= a->size && len <= a->size - (p - a->ptr))
                        return a;
        }
        return NULL;
}

static struct hrange *find_host(const void *p, size_t len)
{
        const char *c = p;

        for (size_t i = 0; i < g.nh; i++) {
                struct hrange *h = &g.h[i];

                if (c >= h->p && (size_t)(c - h->p) <= h->size &&
                    len <= h->size - (size_t)(c - h->p))
                        return h;
        }
        return NULL;
}

static bool overlaps_host(const char *p, size_t len)
{
        for (size_t i = 0; i < g.nh; i++)
                if (p < g.h[i].p + g.h[i].size && g.h[i].p < p + len)
                        return true;
        return false;
}

static void drop_alloc(size_t i)
{
        struct dalloc *a = &g.a[i];

        munmap(a->host, a->size ? a->size : 1);
        if (a->fd >= 0)
                close(a->fd);
        if (!a->ipc)
                g.used[a->dev] -= a->size;
        else
                g.ipc_open--;
        g.a[i] = g.a[--g.na];
}

static CUresult add_host(char *p, size_t size, bool registered, unsigned flags)
{
        if (g.nh == g.caph) {
                size_t ncap = g.caph ? g.caph * 2 : 16;
                struct hrange *nh = realloc(g.h, ncap * sizeof(*nh));

                if (!nh)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                g.h = nh;
                g.caph = ncap;
        }
        g.h[g.nh++] = (struct hrange){p, size, registered, flags, cur};
        return CUDA_SUCCESS;
}

static CUresult add_alloc(struct dalloc a)
{
        if (g.na == g.capa) {
                size_t ncap = g.capa ? g.capa * 2 : 16;
                struct dalloc *na = realloc(g.a, ncap * sizeof(*na));

                if (!na)
                        return CUDA_ERROR_OUT_OF_MEMORY;
                g.a = na;
                g.capa = ncap;
        }
        g.a[g.na++] = a;
        return CUDA_SUCCESS;
}

/* ------------------------------------------------ init, devices, ctx */

CUresult cuInit(unsigned int Flags)
{
        pthread_mutex_lock(&mu);
        if (!g.configured) {
                configure();
                g.configured = true;
        }
        g.init = g.ndev > 0; /* else every later call: not initialized */
        pthread_mutex_unlock(&mu);
        if (Flags)
                return CUDA_ERROR_INVALID_VALUE;
        return g.ndev ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

CUresult cuDriverGetVersion(int *driverVersion)
{
        if (!driverVersion)
                return CUDA_ERROR_INVALID_VALUE;
        *driverVersion = CUDA_VERSION;
        return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count)
{
        CUresult r = enter("cuDeviceGetCount", false);

        if (r)
                return out(r);
        *count = g.ndev;
        return out(CUDA_SUCCESS);
}

static bool valid_dev(CUdevice dev)
{
        return dev >= 0 && dev < g.ndev;
}

/* enter() for a call about device @dev. */
static CUresult enter_dev(const char *name, CUdevice dev)
{
        CUresult r = enter(name, false);

        return r ? r : valid_dev(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
        CUresult r = enter_dev("cuDeviceGet", ordinal);

        if (r)
                return out(r);
        *device = ordinal;
        return out(CUDA_SUCCESS);
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
        CUresult r = enter_dev("cuDeviceGetName", dev);

        if (r)
                return out(r);
        snprintf(name, (size_t)len, "fakecuda device %d (host memory)", dev);
        return out(CUDA_SUCCESS);
}

CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev)
{
        CUresult r = enter_dev("cuDeviceTotalMem_v2", dev);

        if (r)
                return out(r);
        *bytes = g.mem;
        return out(CUDA_SUCCESS);
}

CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
        CUresult r = enter_dev("cuDeviceGetAttribute", dev);

        if (r)
                return out(r);
        switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
                *pi = 9;
                break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
                *pi = 4;
                break;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
                *pi = dev + 1;
                break;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
        case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED:
        case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED:
        case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM:
        case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT:
                *pi = 1;
                break;
        default:
                *pi = 0;
        }
        return out(CUDA_SUCCESS);
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
        CUresult r = enter_dev("cuDevicePrimaryCtxRetain", dev);

        if (r)
                return out(r);
        if (g.lost[dev])
                return out(CUDA_ERROR_DEVICE_UNAVAILABLE);
        g.ctx[dev].refs++;
        *pctx = (CUcontext)&g.ctx[dev];
        stats_changed();
        return out(CUDA_SUCCESS);
}

/*
 * The last release destroys the context and, as the driver does, whatever
 * it still holds: counted as leaked, so a test sees it.
 */
CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
        CUresult r = enter_dev("cuDevicePrimaryCtxRelease_v2", dev);

        if (r)
                return out(r);
        if (g.ctx[dev].refs <= 0)
                return out(CUDA_ERROR_INVALID_CONTEXT);
        if (--g.ctx[dev].refs == 0) {
                for (size_t i = g.na; i-- > 0;) {
                        if (g.a[i].dev == dev && !g.a[i].ipc) {
                                g.leaked++;
                                drop_alloc(i);
                        }
                }
                for (size_t i = g.nh; i-- > 0;) {
                        if (g.h[i].ctx == &g.ctx[dev] && !g.h[i].registered) {
                                g.leaked++;
                                munmap(g.h[i].p, g.h[i].size);
                                g.h[i] = g.h[--g.nh];
                        }
                }
        }
        stats_changed();
        return out(CUDA_SUCCESS);
}

static bool valid_ctx(CUcontext c)
{
        struct ctx *x = (struct ctx *)c;

        return x >= g.ctx && x < g.ctx + g.ndev;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
        CUresult r = enter("cuCtxSetCurrent", false);

        if (r)
                return out(r);
        if (ctx && !valid_ctx(ctx))
                return out(CUDA_ERROR_INVALID_CONTEXT);
        cur = (struct ctx *)ctx;
        return out(CUDA_SUCCESS);
}

CUresult cuCtxGetCurrent(CUcontext *pctx)
{
        CUresult r = enter("cuCtxGetCurrent", false);

        if (r)
                return out(r);
        *pctx = (CUcontext)cur;
        return out(CUDA_SUCCESS);
}

CUresult cuCtxGetDevice(CUdevice *device)
{
        CUresult r = enter("cuCtxGetDevice", true);

        if (r)
                return out(r);
        *device = cur->dev;
        return out(CUDA_SUCCESS);
}

/* ------------------------------------------------------ device memory */

CUresult cuMemAlloc(CUdeviceptr *dptr, size_t bytesize)
{
        CUresult r = enter("cuMemAlloc_v2", true);
        struct dalloc a = {0};
        int dev;

        if (r)
                return out(r);
        if (!dptr || !bytesize)
                return out(CUDA_ERROR_INVALID_VALUE);
        dev = cur->dev;
        if (bytesize > g.mem - g.used[dev])
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        a.fd = memfd_create("fakecuda", MFD_CLOEXEC);
        if (a.fd < 0 || ftruncate(a.fd, (off_t)bytesize))
                goto out_close;
        a.host = mmap(NULL, bytesize, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd, 0);
        if (a.host == MAP_FAILED)
                goto out_close;
        struct stat st;
        fstat(a.fd, &st);
        a.ino = st.st_ino;
        a.size = bytesize;
        a.dev = dev;
        a.id = ++g.next_id;
        a.ptr = g.next_addr[dev];
        /* 512-byte aligned, and a gap so that p + size is no other allocation */
        g.next_addr[dev] += (bytesize + 4096 + 511) & ~(uint64_t)511;
        if (add_alloc(a)) {
                munmap(a.host, bytesize);
                goto out_close;
        }
        g.used[dev] += bytesize;
        g.total_allocs++;
        *dptr = a.ptr;
        stats_changed();
        return out(CUDA_SUCCESS);
out_close:
        if (a.fd >= 0)
                close(a.fd);
        return out(CUDA_ERROR_OUT_OF_MEMORY);
}

static size_t find_base(CUdeviceptr p, bool ipc)
{
        for (size_t i = 0; i < g.na; i++)
                if (g.a[i].ptr == p && g.a[i].ipc == ipc)
                        return i;
        return (size_t)-1;
}

/* Frees succeed on a lost device: the memory is gone with it. */
CUresult cuMemFree(CUdeviceptr dptr)
{
        CUresult r = enter("cuMemFree_v2", false);
        size_t i;

        if (r)
                return out(r);
        if (!cur || cur->refs <= 0)
                return out(CUDA_ERROR_INVALID_CONTEXT);
        i = find_base(dptr, false);
        if (i == (size_t)-1)
                return out(CUDA_ERROR_INVALID_VALUE);
        drop_alloc(i);
        stats_changed();
        return out(CUDA_SUCCESS);
}

CUresult cuMemGetInfo(size_t *free_, size_t *total)
{
        CUresult r = enter("cuMemGetInfo_v2", true);

        if (r)
                return out(r);
        *free_ = g.mem - g.used[cur->dev];
        *total = g.mem;
        return out(CUDA_SUCCESS);
}

/* -------------------------------------------------- pinned host memory */

CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
        CUresult r = enter("cuMemHostAlloc", true);
        void *p;

        if (r)
                return out(r);
        if (!pp || !bytesize || Flags & ~0xfu)
                return out(CUDA_ERROR_INVALID_VALUE);
        p = mmap(NULL, bytesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        r = add_host(p, bytesize, false, Flags);
        if (r) {
                munmap(p, bytesize);
                return out(r);
        }
        *pp = p;
        stats_changed();
        return out(CUDA_SUCCESS);
}

CUresult cuMemFreeHost(void *p)
{
        CUresult r = enter("cuMemFreeHost", false);

        if (r)
                return out(r);
        if (!cur || cur->refs <= 0)
                return out(CUDA_ERROR_INVALID_CONTEXT);
        for (size_t i = 0; i < g.nh; i++) {
                if (g.h[i].p == p && !g.h[i].registered) {
                        munmap(g.h[i].p, g.h[i].size);
                        g.h[i] = g.h[--g.nh];
                        stats_changed();
                        return out(CUDA_SUCCESS);
                }
        }
        return out(CUDA_ERROR_INVALID_VALUE);
}

/*
 * Is [p, p + len) mapped, and writable? From /proc/self/maps: the driver
 * refuses to register a read-only mapping without the read-only flag.
 */
static bool mapped(const char *p, size_t len, bool *writable)
{
        uintptr_t a = (uintptr_t)p, e = a + len, at = a;
        char line[512];
        FILE *f = fopen("/proc/self/maps", "re");

        *writable = true;
        if (!f)
                return false;
        while (at < e && fgets(line, sizeof(line), f)) {
                uintptr_t lo, hi;
                char perms[8];

                if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) != 3)
                        continue;
                if (hi <= at || lo > at)
                        continue;
                if (perms[1] != 'w')
                        *writable = false;
                at = hi;
        }
        fclose(f);
        return at >= e;
}

CUresult cuMemHostRegister(void *p, size_t bytesize, unsigned int Flags)
{
        CUresult r = enter("cuMemHostRegister_v2", true);
        bool writable;

        if (r)
                return out(r);
        if (!p || !bytesize || Flags & ~0xfu)
                return out(CUDA_ERROR_INVALID_VALUE);
        if (overlaps_host(p, bytesize))
                return out(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        if (!mapped(p, bytesize, &writable))
                return out(CUDA_ERROR_INVALID_VALUE);
        if (!writable && !(Flags & CU_MEMHOSTREGISTER_READ_ONLY))
                return out(CUDA_ERROR_NOT_PERMITTED);
        r = add_host(p, bytesize, true, Flags);
        if (!r) {
                g.total_registers++;
                stats_changed();
        }
        return out(r);
}

CUresult cuMemHostUnregister(void *p)
{
        CUresult r = enter("cuMemHostUnregister", false);

        if (r)
                return out(r);
        if (!cur || cur->refs <= 0)
                return out(CUDA_ERROR_INVALID_CONTEXT);
        for (size_t i = 0; i < g.nh; i++) {
                if (g.h[i].p == p && g.h[i].registered) {
                        g.h[i] = g.h[--g.nh];
                        stats_changed();
                        return out(CUDA_SUCCESS);
                }
        }
        return out(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED);
}

/* ------------------------------------------------------------- copies */

/* Where @len bytes at @s are, or NULL (under mu). */
static char *resolve(const struct side *s, size_t len, int *dev)
{
        if (s->device) {
                struct dalloc *a = find_dev(s->addr, len);

                if (!a)
                        return NULL;
                *dev = a->dev;
                return a->host + (s->addr - a->ptr);
        }
        return (char *)(uintptr_t)s->addr;
}

static size_t span(size_t pitch, size_t width, size_t height)
{
        return height ? (height - 1) * pitch + width : 0;
}

/*
 * Run a copy now (under mu). A device side must still be allocated; a
 * host side still pinned or registered, unless @sync (a synchronous copy,
 * which may use pageable memory) or the source was staged at queue time.
 */
static CUresult run_copy(struct op *o, bool sync)
{
        size_t slen = span(o->src.pitch, o->width, o->height);
        size_t dlen = span(o->dst.pitch, o->width, o->height);
        int dev = -1;
        char *src = o->snapshot, *dst;
        struct hrange *h;

        if (!src) {
                if (!sync && !o->src.device && !find_host((void *)(uintptr_t)o->src.addr, slen))
                        return CUDA_ERROR_ILLEGAL_ADDRESS;
                src = resolve(&o->src, slen, &dev);
        }
        h = o->dst.device ? NULL : find_host((void *)(uintptr_t)o->dst.addr, dlen);
        if (!o->dst.device && ((!h && !sync) || (h && h->flags & CU_MEMHOSTREGISTER_READ_ONLY)))
                return CUDA_ERROR_ILLEGAL_ADDRESS;
        dst = resolve(&o->dst, dlen, &dev);
        if (!src || !dst)
                return CUDA_ERROR_ILLEGAL_ADDRESS;
        if (dev >= 0 && g.lost[dev])
                return CUDA_ERROR_DEVICE_UNAVAILABLE;
        for (size_t r = 0; r < o->height; r++)
                memcpy(dst + r * o->dst.pitch, src + r * o->src.pitch, o->width);
        if (dev >= 0 && dev == g.lost_dev && ++g.copies[dev] >= g.lost_after)
                g.lost[dev] = true;
        return CUDA_SUCCESS;
}

static void *stream_main(void *arg)
{
        struct stream *s = arg;

        pthread_mutex_lock(&mu);
        for (;;) {
                struct op *o;

                while (!s->head && !s->stop)
                        pthread_cond_wait(&cv, &mu);
                if (!s->head)
                        break;
                o = s->head;
                if (g.delay_us) {
                        unsigned us = (unsigned)rand_r(&s->seed) % (g.delay_us + 1);

                        pthread_mutex_unlock(&mu);
                        usleep(us);
                        pthread_mutex_lock(&mu);
                }
                if (o->kind == OP_COPY && !s->err)
                        s->err = run_copy(o, false);
                if (o->kind == OP_EVENT) {
                        o->ev->done = o->gen;
                        o->ev->err = s->err;
                        if (--o->ev->pending == 0 && o->ev->dead)
                                free(o->ev);
                }
                s->head = o->next;
                if (!s->head)
                        s->tail = NULL;
                s->done++;
                g.pending[s->ctx->dev]--;
                free(o->snapshot);
                free(o);
                pthread_cond_broadcast(&cv);
        }
        pthread_mutex_unlock(&mu);
        return NULL;
}

static void push(struct stream *s, struct op *o)
{
        o->next = NULL;
        if (s->tail)
                s->tail->next = o;
        else
                s->head = o;
        s->tail = o;
        s->queued++;
        g.pending[s->ctx->dev]++;
        pthread_cond_broadcast(&cv);
}

static void drain(struct stream *s)
{
        while (s->done < s->queued)
                pthread_cond_wait(&cv, &mu);
}

CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
        CUresult r = enter("cuStreamCreate", true);
        struct stream *s;

        if (r)
                return out(r);
        s = calloc(1, sizeof(*s));
        if (!s)
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        s->ctx = cur;
        s->seed = (unsigned)(uintptr_t)s ^ (unsigned)getpid();
        if (pthread_create(&s->th, NULL, stream_main, s)) {
                free(s);
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        }
        g.streams++;
        *phStream = (CUstream)s;
        stats_changed();
        return out(CUDA_SUCCESS);
}

/* The queued work still runs; then the worker ends. */
CUresult cuStreamDestroy(CUstream hStream)
{
        CUresult r = enter("cuStreamDestroy_v2", false);
        struct stream *s = (struct stream *)hStream;

        if (r)
                return out(r);
        if (!s)
                return out(CUDA_ERROR_INVALID_HANDLE);
        drain(s);
        s->stop = true;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        pthread_join(s->th, NULL);
        pthread_mutex_lock(&mu);
        free(s);
        g.streams--;
        stats_changed();
        return out(CUDA_SUCCESS);
}

CUresult cuStreamSynchronize(CUstream hStream)
{
        CUresult r = enter("cuStreamSynchronize", true);
        struct stream *s = (struct stream *)hStream;

        if (r)
                return out(r);
        if (!s)
                return out(CUDA_ERROR_INVALID_HANDLE);
        drain(s);
        return out(s->err ? s->err : g.lost[s->ctx->dev] ? CUDA_ERROR_DEVICE_UNAVAILABLE : 0);
}

CUresult cuStreamQuery(CUstream hStream)
{
        CUresult r = enter("cuStreamQuery", true);
        struct stream *s = (struct stream *)hStream;

        if (r)
                return out(r);
        if (!s)
                return out(CUDA_ERROR_INVALID_HANDLE);
        return out(s->err ? s->err : s->done < s->queued ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);
}

/*
 * Queue a copy (under mu, context checked). The device sides must be
 * allocated now; a pinned or registered host source is read when the copy
 * runs, a pageable one now. Device-to-pageable copies run at once, after
 * the stream's earlier work (the driver does that synchronously too).
 */
static CUresult queue_copy(struct stream *s, struct side src, struct side dst, size_t width,
                           size_t height)
{
        size_t slen = span(src.pitch, width, height), dlen = span(dst.pitch, width, height);
        int dev = -1;
        struct op *o;

        if (!s)
                return CUDA_ERROR_INVALID_HANDLE;
        if (s->ctx->refs <= 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (!width || !height)
                return CUDA_SUCCESS;
        if ((height > 1 && (src.pitch < width || dst.pitch < width)) || !src.addr || !dst.addr)
                return CUDA_ERROR_INVALID_VALUE;
        if ((src.device && !resolve(&src, slen, &dev)) ||
            (dst.device && !resolve(&dst, dlen, &dev)))
                return CUDA_ERROR_INVALID_VALUE;
        if (dev >= 0 && g.lost[dev])
                return CUDA_ERROR_DEVICE_UNAVAILABLE;
        o = calloc(1, sizeof(*o));
        if (!o)
                return CUDA_ERROR_OUT_OF_MEMORY;
        *o = (struct op){.kind = OP_COPY, .src = src, .dst = dst, .width = width, .height = height};
        if (!src.device) {
                struct hrange *h = find_host((void *)(uintptr_t)src.addr, slen);

                if (h && h->registered) {
                        g.copies_registered++;
                        g.bytes_registered += width * height;
                } else if (h) {
                        g.copies_pinned++;
                } else {
                        g.copies_pageable++;
                        o->snapshot = malloc(slen);
                        if (!o->snapshot) {
                                free(o);
                                return CUDA_ERROR_OUT_OF_MEMORY;
                        }
                        memcpy(o->snapshot, (void *)(uintptr_t)src.addr, slen);
                }
        }
        if (!dst.device && !find_host((void *)(uintptr_t)dst.addr, dlen)) {
                CUresult r;

                drain(s);
                r = s->err ? s->err : run_copy(o, true);
                free(o->snapshot);
                free(o);
                return r;
        }
        push(s, o);
        return CUDA_SUCCESS;
}

static struct side host_side(const void *p, size_t pitch)
{
        return (struct side){false, (uint64_t)(uintptr_t)p, pitch};
}

static struct side dev_side(CUdeviceptr p, size_t pitch)
{
        return (struct side){true, p, pitch};
}

CUresult cuMemcpyHtoDAsync(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                           CUstream hStream)
{
        CUresult r = enter("cuMemcpyHtoDAsync_v2", true);

        if (r)
                return out(r);
        return out(queue_copy((struct stream *)hStream, host_side(srcHost, ByteCount),
                              dev_side(dstDevice, ByteCount), ByteCount, 1));
}

CUresult cuMemcpyDtoHAsync(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
{
        CUresult r = enter("cuMemcpyDtoHAsync_v2", true);

        if (r)
                return out(r);
        return out(queue_copy((struct stream *)hStream, dev_side(srcDevice, ByteCount),
                              host_side(dstHost, ByteCount), ByteCount, 1));
}

/* One side of a 2D copy; host or device memory only (no arrays). */
static bool side_2d(CUmemorytype t, const void *host, CUdeviceptr dev, size_t x, size_t y,
                    size_t pitch, struct side *s)
{
        if (t == CU_MEMORYTYPE_HOST)
                *s = host_side((const char *)host + y * pitch + x, pitch);
        else if (t == CU_MEMORYTYPE_DEVICE)
                *s = dev_side(dev + y * pitch + x, pitch);
        else
                return false;
        return true;
}

CUresult cuMemcpy2DAsync(const CUDA_MEMCPY2D *p, CUstream hStream)
{
        CUresult r = enter("cuMemcpy2DAsync_v2", true);
        struct side src, dst;

        if (r)
                return out(r);
        if (!p ||
            !side_2d(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY,
                     p->srcPitch, &src) ||
            !side_2d(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY,
                     p->dstPitch, &dst))
                return out(CUDA_ERROR_INVALID_VALUE);
        return out(queue_copy((struct stream *)hStream, src, dst, p->WidthInBytes, p->Height));
}

/* Synchronous copies: pageable memory is fine; they wait for nothing. */
static CUresult sync_copy(struct side src, struct side dst, size_t n)
{
        struct op o = {.kind = OP_COPY, .src = src, .dst = dst, .width = n, .height = 1};
        int dev = -1;

        if ((src.device && !resolve(&src, n, &dev)) || (dst.device && !resolve(&dst, n, &dev)))
                return CUDA_ERROR_INVALID_VALUE;
        return n ? run_copy(&o, true) : CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
        CUresult r = enter("cuMemcpyHtoD_v2", true);

        if (r)
                return out(r);
        return out(
            sync_copy(host_side(srcHost, ByteCount), dev_side(dstDevice, ByteCount), ByteCount));
}

CUresult cuMemcpyDtoH(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
        CUresult r = enter("cuMemcpyDtoH_v2", true);

        if (r)
                return out(r);
        return out(
            sync_copy(dev_side(srcDevice, ByteCount), host_side(dstHost, ByteCount), ByteCount));
}

/* Wait until every stream of the current context's device is idle. */
CUresult cuCtxSynchronize(void)
{
        CUresult r = enter("cuCtxSynchronize", true);

        if (r)
                return out(r);
        while (g.pending[cur->dev])
                pthread_cond_wait(&cv, &mu);
        return out(g.lost[cur->dev] ? CUDA_ERROR_DEVICE_UNAVAILABLE : CUDA_SUCCESS);
}

/* ------------------------------------------------------------- events */

CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
        CUresult r = enter("cuEventCreate", true);
        struct event *e;

        if (r)
                return out(r);
        e = calloc(1, sizeof(*e));
        if (!e)
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        e->ctx = cur;
        g.events++;
        *phEvent = (CUevent)e;
        stats_changed();
        return out(CUDA_SUCCESS);
}

CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
        CUresult r = enter("cuEventRecord", true);
        struct event *e = (struct event *)hEvent;
        struct stream *s = (struct stream *)hStream;
        struct op *o;

        if (r)
                return out(r);
        if (!e || !s || e->dead)
                return out(CUDA_ERROR_INVALID_HANDLE);
        o = calloc(1, sizeof(*o));
        if (!o)
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        o->kind = OP_EVENT;
        o->ev = e;
        o->gen = ++e->rec;
        e->pending++;
        push(s, o);
        return out(CUDA_SUCCESS);
}

CUresult cuEventSynchronize(CUevent hEvent)
{
        CUresult r = enter("cuEventSynchronize", false);
        struct event *e = (struct event *)hEvent;

        if (r)
                return out(r);
        if (!e || e->dead)
                return out(CUDA_ERROR_INVALID_HANDLE);
        while (e->done < e->rec)
                pthread_cond_wait(&cv, &mu);
        if (g.lost[e->ctx->dev])
                return out(CUDA_ERROR_DEVICE_UNAVAILABLE);
        return out(e->err);
}

CUresult cuEventQuery(CUevent hEvent)
{
        CUresult r = enter("cuEventQuery", false);
        struct event *e = (struct event *)hEvent;

        if (r)
                return out(r);
        if (!e || e->dead)
                return out(CUDA_ERROR_INVALID_HANDLE);
        return out(e->done < e->rec ? CUDA_ERROR_NOT_READY : e->err);
}

/* A recorded event may be destroyed before it completes: freed when it does. */
CUresult cuEventDestroy(CUevent hEvent)
{
        CUresult r = enter("cuEventDestroy_v2", false);
        struct event *e = (struct event *)hEvent;

        if (r)
                return out(r);
        if (!e || e->dead)
                return out(CUDA_ERROR_INVALID_HANDLE);
        g.events--;
        if (e->pending)
                e->dead = true;
        else
                free(e);
        stats_changed();
        return out(CUDA_SUCCESS);
}

/* ---------------------------------------------------------------- IPC */

struct ipc {
        char magic[8];
        int32_t pid, fd, dev, pad;
        uint64_t size, ino, id;
};

CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
        CUresult r = enter("cuIpcGetMemHandle", true);
        struct ipc h;
        size_t i;

        if (r)
                return out(r);
        memset(&h, 0, sizeof(h));
        memcpy(h.magic, MAGIC, 8);
        i = find_base(dptr, false);
        if (i == (size_t)-1)
                return out(CUDA_ERROR_INVALID_VALUE);
        h.pid = (int32_t)getpid();
        h.fd = g.a[i].fd;
        h.dev = g.a[i].dev;
        h.size = g.a[i].size;
        h.ino = g.a[i].ino;
        h.id = g.a[i].id;
        memset(pHandle, 0, sizeof(*pHandle));
        memcpy(pHandle->reserved, &h, sizeof(h));
        return out(CUDA_SUCCESS);
}

/* Maps the exporter's memfd through /proc: gone (freed) is INVALID_HANDLE. */
CUresult cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags)
{
        CUresult r = enter("cuIpcOpenMemHandle_v2", true);
        struct dalloc a = {.fd = -1, .ipc = true};
        struct ipc h;
        char path[64];
        struct stat st;
        int fd;

        if (r)
                return out(r);
        memcpy(&h, handle.reserved, sizeof(h));
        if (memcmp(h.magic, MAGIC, 8) || Flags != CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS ||
            !valid_dev(h.dev))
                return out(CUDA_ERROR_INVALID_VALUE);
        snprintf(path, sizeof(path), "/proc/%d/fd/%d", h.pid, h.fd);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return out(CUDA_ERROR_INVALID_HANDLE);
        if (fstat(fd, &st) || st.st_ino != h.ino || (uint64_t)st.st_size != h.size) {
                close(fd);
                return out(CUDA_ERROR_INVALID_HANDLE);
        }
        a.host = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (a.host == MAP_FAILED)
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        a.size = h.size;
        a.dev = h.dev;
        a.id = ++g.next_id;
        a.ptr = g.next_addr[h.dev];
        g.next_addr[h.dev] += (h.size + 4096 + 511) & ~(uint64_t)511;
        if (add_alloc(a)) {
                munmap(a.host, h.size);
                return out(CUDA_ERROR_OUT_OF_MEMORY);
        }
        g.ipc_open++;
        *pdptr = a.ptr;
        stats_changed();
        return out(CUDA_SUCCESS);
}

CUresult cuIpcCloseMemHandle(CUdeviceptr dptr)
{
        CUresult r = enter("cuIpcCloseMemHandle", true);
        size_t i;

        if (r)
                return out(r);
        i = find_base(dptr, true);
        if (i == (size_t)-1)
                return out(CUDA_ERROR_INVALID_VALUE);
        drop_alloc(i);
        stats_changed();
        return out(CUDA_SUCCESS);
}

/* -------------------------------------------------------------- errors */

static const struct {
        CUresult code;
        const char *name, *text;
} errors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE",
     "CUDA-capable device(s) is/are busy or unavailable"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
     "an illegal memory access was encountered"},
    {CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
     "part or all of the requested memory range is already mapped"},
    {CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
     "pointer does not correspond to a registered memory region"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult lookup_error(CUresult error, const char **pStr, bool name)
{
        if (!pStr)
                return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
                if (errors[i].code == error) {
                        *pStr = name ? errors[i].name : errors[i].text;
                        return CUDA_SUCCESS;
                }
        }
        *pStr = NULL;
        return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char **pStr)
{
        return lookup_error(error, pStr, false);
}

CUresult cuGetErrorName(CUresult error, const char **pStr)
{
        return lookup_error(error, pStr, true);
}
