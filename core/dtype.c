/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <string.h>

#include "dtype.h"

static const struct stf_dtype_info table[STF_DT_COUNT] = {
    [STF_DT_BOOL] = {"BOOL", 8, false, "|b1", true},
    [STF_DT_U8] = {"U8", 8, false, "|u1", true},
    [STF_DT_I8] = {"I8", 8, false, "|i1", true},
    [STF_DT_F8_E5M2] = {"F8_E5M2", 8, true, "|u1", false},
    [STF_DT_F8_E4M3] = {"F8_E4M3", 8, true, "|u1", false},
    [STF_DT_F8_E8M0] = {"F8_E8M0", 8, true, "|u1", false},
    [STF_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8, true, "|u1", false},
    [STF_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8, true, "|u1", false},
    [STF_DT_I16] = {"I16", 16, false, "<i2", true},
    [STF_DT_U16] = {"U16", 16, false, "<u2", true},
    [STF_DT_F16] = {"F16", 16, true, "<f2", true},
    [STF_DT_BF16] = {"BF16", 16, true, "<u2", false},
    [STF_DT_I32] = {"I32", 32, false, "<i4", true},
    [STF_DT_U32] = {"U32", 32, false, "<u4", true},
    [STF_DT_F32] = {"F32", 32, true, "<f4", true},
    [STF_DT_F64] = {"F64", 64, true, "<f8", true},
    [STF_DT_I64] = {"I64", 64, false, "<i8", true},
    [STF_DT_U64] = {"U64", 64, false, "<u8", true},
    [STF_DT_C64] = {"C64", 64, true, "<c8", true},
    [STF_DT_F4] = {"F4", 4, true, "|u1", false},
    [STF_DT_F6_E2M3] = {"F6_E2M3", 6, true, "|u1", false},
    [STF_DT_F6_E3M2] = {"F6_E3M2", 6, true, "|u1", false},
};

const struct stf_dtype_info *stf_dtype_info(unsigned dt)
{
        return dt < STF_DT_COUNT ? &table[dt] : NULL;
}

int stf_dtype_lookup(const char *name, size_t len, enum stf_dtype *out)
{
        for (unsigned i = 0; i < STF_DT_COUNT; i++) {
                if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0) {
                        *out = (enum stf_dtype)i;
                        return 0;
                }
        }
        return -EINVAL;
}
