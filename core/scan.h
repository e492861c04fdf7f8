/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SCAN_H
#define STF_SCAN_H

/*
 * Read every byte of a model and count, per tensor, its NaN and Inf values
 * and whether it is all zeros: what `stfsctl verify --scan` runs.
 *
 * Which values are NaN or Inf, by dtype:
 *   F16, BF16, F32, F64   IEEE 754: exponent all ones; mantissa 0 is Inf,
 *                         anything else NaN (either sign)
 *   C64                   two F32: an element is NaN when either part is,
 *                         Inf when either part is (both can hold, as in
 *                         NumPy's isnan/isinf)
 *   F8_E5M2               IEEE-like: 0x7C/0xFC Inf, 0x7D-0x7F/0xFD-0xFF NaN
 *   F8_E4M3 (E4M3FN)      no Inf; NaN 0x7F and 0xFF only
 *   F8_E4M3FNUZ, _E5M2FNUZ  no Inf; NaN 0x80 only (no negative zero)
 *   F8_E8M0               no Inf; NaN 0xFF only
 *   F4, F6_E2M3, F6_E3M2  neither: not applicable (all codes are finite)
 *   BOOL, integers        not applicable
 * "All zeros": the tensor has at least one byte and every byte is 0 (every
 * value +0; for F8_E8M0, which has no zero, every value is 2^-127).
 *
 * The scan reads through the shards' mappings, in chunks on a pool of
 * threads; after each chunk it drops its pages from the process
 * (MADV_DONTNEED: the kernel page cache keeps them while memory allows), so
 * the process's memory stays flat on a model bigger than RAM. A shard
 * truncated while it is scanned raises SIGBUS, as any mapping read does.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "model.h"

/* Does @dt have NaN or Inf encodings at all (the F and C types but F4/F6)? */
bool stf_scan_applies(unsigned dt);

/* The result for one tensor. */
struct stf_scan_stat {
        uint64_t nan;  /* elements that are NaN (0 where not applicable) */
        uint64_t inf;  /* elements that are +-Inf (0 where not applicable) */
        bool all_zero; /* at least one byte, and every byte 0 */
};

/*
 * Count in @len bytes at @p, holding whole elements of @dt, and add to *@st;
 * *@nonzero is set when a byte is not 0 (left alone otherwise). Pure: for
 * tests and for the pool.
 */
void stf_scan_buffer(unsigned dt, const uint8_t *p, size_t len, uint64_t *nan, uint64_t *inf,
                     bool *nonzero);

struct stf_scan_opts {
        unsigned threads; /* 0: one per online CPU */
        size_t chunk;     /* bytes per piece of work; 0: 8 MiB (rounded up to 8 bytes) */
        /*
         * Optional: called on the calling thread once at the start (@done
         * 0), about every 100 ms while the scan runs, and once at the end
         * with @done == @total (bytes); @done never goes down.
         */
        void (*progress)(void *ctx, uint64_t done, uint64_t total);
        void *ctx;
};

/*
 * Scan every tensor of @m into @out (m->ntensors entries, by tensor index).
 * @opts may be NULL (defaults). Returns 0 or -ENOMEM. The model must have
 * been validated (stf_model_open does): every tensor lies in its shard.
 */
int stf_scan_model(const struct stf_model *m, const struct stf_scan_opts *opts,
                   struct stf_scan_stat *out);

#endif
