/* SPDX-License-Identifier: Apache-2.0 */
#ifndef FAKECUDA_H
#define FAKECUDA_H

/*
 * fakecuda: a strict test double of the CUDA driver API, built only for
 * tests as libcuda.so.1 (tests/gpu/) and found through LD_LIBRARY_PATH by
 * the daemon, the GPU test and the benchmark. Device memory is host memory:
 * one memfd per allocation, so another process can open an IPC handle.
 *
 * Strict where the real driver is:
 *  - every call but cuInit fails with CUDA_ERROR_NOT_INITIALIZED before it;
 *    calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT on a
 *    thread with none current (or a released primary context);
 *  - async copies from pinned or registered host memory read the source
 *    when the stream's worker thread executes them, after a small random
 *    delay; from pageable memory they snapshot it at once (as the driver
 *    stages it); so reusing a pinned buffer before its event completed
 *    corrupts the destination;
 *  - freed, foreign or out-of-range device pointers are errors
 *    (CUDA_ERROR_INVALID_VALUE when queued, CUDA_ERROR_ILLEGAL_ADDRESS,
 *    sticky on the stream, when a copy finds its memory gone);
 *  - cuMemHostRegister of a read-only mapping needs
 *    CU_MEMHOSTREGISTER_READ_ONLY; overlapping registrations fail.
 *
 * Environment (read at cuInit):
 *  FAKECUDA_DEVICES=N     devices (default 2; 0: cuInit fails, no device)
 *  FAKECUDA_MEM=BYTES     memory per device, suffix K/M/G (default 4G);
 *                         cuMemAlloc past it: CUDA_ERROR_OUT_OF_MEMORY
 *  FAKECUDA_FAIL=name:N[:code],...  the Nth call (1-based) of entry point
 *                         `name` (exported name, e.g. cuMemAlloc_v2) fails
 *                         with `code` (default 999, CUDA_ERROR_UNKNOWN)
 *  FAKECUDA_LOST=D:N      device D is lost after its Nth executed copy:
 *                         every later call on it fails with
 *                         CUDA_ERROR_DEVICE_UNAVAILABLE (frees succeed)
 *  FAKECUDA_DELAY_US=N    most random delay before each stream op (200)
 *  FAKECUDA_STATS=PATH    keep a JSON line of the counters below in PATH,
 *                         rewritten on every change and at exit
 */

#include <stddef.h>

/*
 * The counters as one JSON object: live device allocations and bytes,
 * pinned (cuMemHostAlloc) allocations and bytes, registered ranges and
 * bytes, streams, events, primary context references, opened IPC
 * mappings, allocations a primary context still held when released, and
 * totals of copies by source kind. Returns the length (as snprintf).
 */
int fakecuda_stats(char *buf, size_t cap);

#endif
