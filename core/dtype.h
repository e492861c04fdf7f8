/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_DTYPE_H
#define STF_DTYPE_H

/*
 * The safetensors dtype table: the 22 names the format defines, each with
 * its size in bits and how NumPy can hold it. Immutable, thread-safe.
 */

#include <stdbool.h>
#include <stddef.h>

enum stf_dtype {
        STF_DT_BOOL,
        STF_DT_U8,
        STF_DT_I8,
        STF_DT_F8_E5M2,
        STF_DT_F8_E4M3,
        STF_DT_F8_E8M0,
        STF_DT_F8_E4M3FNUZ,
        STF_DT_F8_E5M2FNUZ,
        STF_DT_I16,
        STF_DT_U16,
        STF_DT_F16,
        STF_DT_BF16,
        STF_DT_I32,
        STF_DT_U32,
        STF_DT_F32,
        STF_DT_F64,
        STF_DT_I64,
        STF_DT_U64,
        STF_DT_C64,
        STF_DT_F4,
        STF_DT_F6_E2M3,
        STF_DT_F6_E3M2,
        STF_DT_COUNT
};

struct stf_dtype_info {
        const char *name; /* as written in a header, e.g. "BF16" */
        unsigned bits;    /* bits per element: 4, 6, 8, 16, 32 or 64 */
        bool is_float;    /* a floating type (NaN/Inf meaningful) */
        /*
         * NumPy descr of the .npy view. Types NumPy lacks get an unsigned
         * integer of the same width ("<u2" for BF16); sub-byte types get "|u1"
         * and are served as packed bytes.
         */
        const char *npy_descr;
        bool npy_exact; /* false when npy_descr is a stand-in */
};

/* Info for @dt, or NULL when @dt is out of range. */
const struct stf_dtype_info *stf_dtype_info(unsigned dt);

/*
 * Look up a dtype by its exact (case-sensitive) name of @len bytes.
 * Returns 0 and sets *@out, or -EINVAL for an unknown name.
 */
int stf_dtype_lookup(const char *name, size_t len, enum stf_dtype *out);

#endif
