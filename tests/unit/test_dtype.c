/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of core/dtype: the 22 names, their sizes, exact-name lookup. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "dtype.h"
#include "util.h"

static const struct {
        const char *name;
        enum stf_dtype dt;
        unsigned bits;
        bool is_float;
} want[] = {
    {"BOOL", STF_DT_BOOL, 8, false},
    {"U8", STF_DT_U8, 8, false},
    {"I8", STF_DT_I8, 8, false},
    {"F8_E5M2", STF_DT_F8_E5M2, 8, true},
    {"F8_E4M3", STF_DT_F8_E4M3, 8, true},
    {"F8_E8M0", STF_DT_F8_E8M0, 8, true},
    {"F8_E4M3FNUZ", STF_DT_F8_E4M3FNUZ, 8, true},
    {"F8_E5M2FNUZ", STF_DT_F8_E5M2FNUZ, 8, true},
    {"I16", STF_DT_I16, 16, false},
    {"U16", STF_DT_U16, 16, false},
    {"F16", STF_DT_F16, 16, true},
    {"BF16", STF_DT_BF16, 16, true},
    {"I32", STF_DT_I32, 32, false},
    {"U32", STF_DT_U32, 32, false},
    {"F32", STF_DT_F32, 32, true},
    {"F64", STF_DT_F64, 64, true},
    {"I64", STF_DT_I64, 64, false},
    {"U64", STF_DT_U64, 64, false},
    {"C64", STF_DT_C64, 64, true},
    {"F4", STF_DT_F4, 4, true},
    {"F6_E2M3", STF_DT_F6_E2M3, 6, true},
    {"F6_E3M2", STF_DT_F6_E3M2, 6, true},
};

#define NWANT (sizeof(want) / sizeof(want[0]))

START_TEST(test_count)
{
        ck_assert_uint_eq(STF_DT_COUNT, 22);
        ck_assert_uint_eq(NWANT, 22);
}
END_TEST

/* Every name looks up to its enum, and the table agrees (loop over 22). */
START_TEST(test_lookup_all)
{
        enum stf_dtype dt = STF_DT_COUNT;
        const struct stf_dtype_info *info;

        ck_assert_int_eq(stf_dtype_lookup(want[_i].name, strlen(want[_i].name), &dt), 0);
        ck_assert_int_eq(dt, want[_i].dt);
        info = stf_dtype_info(want[_i].dt);
        ck_assert_ptr_nonnull(info);
        ck_assert_str_eq(info->name, want[_i].name);
        ck_assert_uint_eq(info->bits, want[_i].bits);
        ck_assert_int_eq(info->is_float, want[_i].is_float);
        ck_assert_ptr_nonnull(info->npy_descr);
        ck_assert_uint_ge(strlen(info->npy_descr), 3);
        /* A NumPy descr: byte order, kind, item size. */
        ck_assert_msg(strchr("<|", info->npy_descr[0]) != NULL, "%s: descr %s", info->name,
                      info->npy_descr);
        /* Sub-byte types are served as packed bytes. */
        if (info->bits < 8) {
                ck_assert_str_eq(info->npy_descr, "|u1");
                ck_assert(!info->npy_exact);
        } else {
                ck_assert_int_eq(atoi(info->npy_descr + 2), (int)info->bits / 8);
        }
}
END_TEST

START_TEST(test_bits_spot)
{
        ck_assert_uint_eq(stf_dtype_info(STF_DT_F4)->bits, 4);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_F6_E2M3)->bits, 6);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_F6_E3M2)->bits, 6);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_BOOL)->bits, 8);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_C64)->bits, 64);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_BF16)->bits, 16);
        ck_assert_uint_eq(stf_dtype_info(STF_DT_F8_E8M0)->bits, 8);
}
END_TEST

START_TEST(test_npy_descr)
{
        ck_assert_str_eq(stf_dtype_info(STF_DT_BF16)->npy_descr, "<u2");
        ck_assert(!stf_dtype_info(STF_DT_BF16)->npy_exact);
        ck_assert_str_eq(stf_dtype_info(STF_DT_F32)->npy_descr, "<f4");
        ck_assert(stf_dtype_info(STF_DT_F32)->npy_exact);
        ck_assert_str_eq(stf_dtype_info(STF_DT_F16)->npy_descr, "<f2");
        ck_assert_str_eq(stf_dtype_info(STF_DT_BOOL)->npy_descr, "|b1");
        ck_assert_str_eq(stf_dtype_info(STF_DT_I64)->npy_descr, "<i8");
        ck_assert_str_eq(stf_dtype_info(STF_DT_U8)->npy_descr, "|u1");
        ck_assert(!stf_dtype_info(STF_DT_F8_E4M3)->npy_exact);
        ck_assert(!stf_dtype_info(STF_DT_F4)->npy_exact);
}
END_TEST

START_TEST(test_names_distinct)
{
        for (unsigned i = 0; i < STF_DT_COUNT; i++)
                for (unsigned j = i + 1; j < STF_DT_COUNT; j++)
                        ck_assert_str_ne(stf_dtype_info(i)->name, stf_dtype_info(j)->name);
}
END_TEST

static void expect_unknown(const char *name, size_t len)
{
        enum stf_dtype dt = STF_DT_COUNT;

        ck_assert_msg(stf_dtype_lookup(name, len, &dt) == -EINVAL, "'%.*s' (%zu bytes) accepted",
                      (int)len, name, len);
        ck_assert_int_eq(dt, STF_DT_COUNT);
}

START_TEST(test_unknown_names)
{
        static const char *const bad[] = {
            "",        "F33",          "FP32",    "F3",       "F",      "F8",
            "F6",      "F8_E4M3FN",    "float32", "int8",     "C128",   "U128",
            "BF8",     "F8_E5M2FNUZZ", " F32",    "F32 ",     "F32\n",  "__metadata__",
            "F4_E2M1", "BOO",          "BOOLEAN", "F6_E2M3 ", "BF16\t", "U8x",
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                expect_unknown(bad[i], strlen(bad[i]));
}
END_TEST

START_TEST(test_case_variants)
{
        static const char *const bad[] = {"bf16", "Bf16", "bF16",    "f32",     "bool",
                                          "Bool", "u8",   "f8_e5m2", "F8_e4m3", "F8_E4M3fnuz",
                                          "c64",  "f4",   "f6_e2m3", "F6_E3m2", "i64"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                expect_unknown(bad[i], strlen(bad[i]));
}
END_TEST

/* The length is authoritative: neither a prefix nor a longer buffer matches. */
START_TEST(test_length_exact)
{
        enum stf_dtype dt;

        expect_unknown("F32", 2);     /* "F3" */
        expect_unknown("BF16", 3);    /* "BF1" */
        expect_unknown("F32\0", 4);   /* embedded NUL */
        expect_unknown("F8_E4M3", 6); /* "F8_E4M" */
        ck_assert_int_eq(stf_dtype_lookup("F16XYZ", 3, &dt), 0);
        ck_assert_int_eq(dt, STF_DT_F16);
        ck_assert_int_eq(stf_dtype_lookup("F8_E4M3FNUZ", 7, &dt), 0);
        ck_assert_int_eq(dt, STF_DT_F8_E4M3);
        ck_assert_int_eq(stf_dtype_lookup("F4", 2, &dt), 0);
        ck_assert_int_eq(dt, STF_DT_F4);
}
END_TEST

START_TEST(test_info_out_of_range)
{
        ck_assert_ptr_null(stf_dtype_info(STF_DT_COUNT));
        ck_assert_ptr_null(stf_dtype_info(STF_DT_COUNT + 1));
        ck_assert_ptr_null(stf_dtype_info(255));
        ck_assert_ptr_null(stf_dtype_info(UINT_MAX));
        ck_assert_ptr_null(stf_dtype_info((unsigned)-1));
        ck_assert_ptr_nonnull(stf_dtype_info(0));
        ck_assert_ptr_nonnull(stf_dtype_info(STF_DT_COUNT - 1));
}
END_TEST

static Suite *dtype_suite(void)
{
        Suite *s = suite_create("dtype");
        TCase *tc = tcase_create("table");

        tcase_add_test(tc, test_count);
        tcase_add_loop_test(tc, test_lookup_all, 0, (int)NWANT);
        tcase_add_test(tc, test_bits_spot);
        tcase_add_test(tc, test_npy_descr);
        tcase_add_test(tc, test_names_distinct);
        suite_add_tcase(s, tc);

        tc = tcase_create("errors");
        tcase_add_test(tc, test_unknown_names);
        tcase_add_test(tc, test_case_variants);
        tcase_add_test(tc, test_length_exact);
        tcase_add_test(tc, test_info_out_of_range);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(dtype_suite());
}
