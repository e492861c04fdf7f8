/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of core/target: the target and job state names stfs and stfsctl share. */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "stfs_ioctl.h"
#include "target.h"
#include "util.h"

START_TEST(test_parse_good)
{
        uint32_t t = 99;
        int32_t d = 99;

        ck_assert(stf_target_parse("host", &t, &d));
        ck_assert_uint_eq(t, STFS_TARGET_HOST);
        ck_assert_int_eq(d, 0);
        ck_assert(stf_target_parse("cuda:0", &t, &d));
        ck_assert_uint_eq(t, STFS_TARGET_CUDA);
        ck_assert_int_eq(d, 0);
        ck_assert(stf_target_parse("cuda:1023", &t, &d));
        ck_assert_int_eq(d, STF_CUDA_DEVICE_MAX);
        ck_assert(stf_target_valid(t, d));
}
END_TEST

START_TEST(test_parse_bad)
{
        static const char *const bad[] = {"",          "Host",
                                          "hosts",     "cuda",
                                          "cuda:",     "cuda:x",
                                          "cuda:-1",   "cuda:+1",
                                          "cuda: 1",   "cuda:1x",
                                          "cuda:1024", "cuda:4096",
                                          "gpu:0",     "cuda:99999999999999999999999"};
        uint32_t t = 99;
        int32_t d = 99;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_msg(!stf_target_parse(bad[i], &t, &d), "accepted '%s'", bad[i]);
                ck_assert_uint_eq(t, 99);
                ck_assert_int_eq(d, 99);
        }
        ck_assert(!stf_target_valid(STFS_TARGET_CUDA, -1));
        ck_assert(!stf_target_valid(STFS_TARGET_CUDA, STF_CUDA_DEVICE_MAX + 1));
        ck_assert(!stf_target_valid(7, 0));
}
END_TEST

START_TEST(test_format)
{
        char buf[32];

        ck_assert_int_eq(stf_target_format(buf, sizeof(buf), STFS_TARGET_HOST, 3), 4);
        ck_assert_str_eq(buf, "host");
        ck_assert_int_eq(stf_target_format(buf, sizeof(buf), STFS_TARGET_CUDA, 12), 7);
        ck_assert_str_eq(buf, "cuda:12");
}
END_TEST

START_TEST(test_state_names)
{
        ck_assert_str_eq(stf_job_state_name(STFS_JOB_QUEUED), "queued");
        ck_assert_str_eq(stf_job_state_name(STFS_JOB_RUNNING), "running");
        ck_assert_str_eq(stf_job_state_name(STFS_JOB_DONE), "done");
        ck_assert_str_eq(stf_job_state_name(STFS_JOB_FAILED), "failed");
        ck_assert_str_eq(stf_job_state_name(STFS_JOB_CANCELLED), "cancelled");
        ck_assert_str_eq(stf_job_state_name(5), "unknown");
        ck_assert_str_eq(stf_job_state_name(UINT32_MAX), "unknown");
}
END_TEST

static Suite *target_suite(void)
{
        Suite *s = suite_create("target");
        TCase *tc = tcase_create("names");

        tcase_add_test(tc, test_parse_good);
        tcase_add_test(tc, test_parse_bad);
        tcase_add_test(tc, test_format);
        tcase_add_test(tc, test_state_names);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(target_suite());
}
