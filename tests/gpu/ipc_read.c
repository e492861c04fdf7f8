/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ipc_read DEVICE HANDLE OFFSET SIZE: what another process sees of a CUDA
 * prefetch. Opens HANDLE (128 hex digits, from the user.stfs.cuda xattr)
 * with cuIpcOpenMemHandle on device DEVICE, copies SIZE bytes at OFFSET
 * back to the host and writes them to stdout. Exit 0, or 1 with the
 * failing call on stderr. Works against fakecuda and the real driver.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOAD(var, name)                                                                            \
        do {                                                                                       \
                *(void **)&var = dlsym(lib, name);                                                 \
                if (!var) {                                                                        \
                        fprintf(stderr, "ipc_read: libcuda.so.1 lacks %s\n", name);                \
                        return 1;                                                                  \
                }                                                                                  \
        } while (0)

static int check(CUresult r, const char *what)
{
        if (r != CUDA_SUCCESS)
                fprintf(stderr, "ipc_read: %s failed (%d)\n", what, (int)r);
        return r != CUDA_SUCCESS;
}

int main(int argc, char **argv)
{
        CUresult (*init)(unsigned), (*retain)(CUcontext *, CUdevice), (*setcur)(CUcontext);
        CUresult (*open_)(CUdeviceptr *, CUipcMemHandle, unsigned), (*close_)(CUdeviceptr);
        CUresult (*dtoh)(void *, CUdeviceptr, size_t);
        CUipcMemHandle h;
        CUdeviceptr p;
        CUcontext ctx;
        size_t off, size;
        void *lib;
        char *buf;
        int ret;

        if (argc != 5 || strlen(argv[2]) != 2 * sizeof(h.reserved)) {
                fprintf(stderr, "usage: ipc_read DEVICE HANDLE OFFSET SIZE\n");
                return 2;
        }
        for (size_t i = 0; i < sizeof(h.reserved); i++)
                h.reserved[i] =
                    (char)strtoul((char[3]){argv[2][2 * i], argv[2][2 * i + 1], 0}, NULL, 16);
        off = strtoull(argv[3], NULL, 10);
        size = strtoull(argv[4], NULL, 10);
        lib = dlopen("libcuda.so.1", RTLD_NOW);
        if (!lib) {
                fprintf(stderr, "ipc_read: %s\n", dlerror());
                return 1;
        }
        LOAD(init, "cuInit");
        LOAD(retain, "cuDevicePrimaryCtxRetain");
        LOAD(setcur, "cuCtxSetCurrent");
        LOAD(open_, "cuIpcOpenMemHandle_v2");
        LOAD(close_, "cuIpcCloseMemHandle");
        LOAD(dtoh, "cuMemcpyDtoH_v2");
        buf = malloc(size ? size : 1);
        if (!buf)
                return 1;
        if (check(init(0), "cuInit") || check(retain(&ctx, atoi(argv[1])), "context") ||
            check(setcur(ctx), "cuCtxSetCurrent") ||
            check(open_(&p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS), "cuIpcOpenMemHandle")) {
                free(buf);
                return 1;
        }
        ret = check(dtoh(buf, p + off, size), "cuMemcpyDtoH");
        ret |= check(close_(p), "cuIpcCloseMemHandle");
        if (!ret && fwrite(buf, 1, size, stdout) != size)
                ret = 1;
        free(buf);
        return ret;
}
