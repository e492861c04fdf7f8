/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/fstype: which statfs types are remote, the names, and
 * the descriptor form on a local file and a bad descriptor. (A real FUSE
 * source, sshfs, is classified in the fault-network suite.)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "fstype.h"
#include "util.h"

START_TEST(test_remote_types)
{
        static const struct {
                long magic;
                const char *name;
        } remote[] = {{0x65735546, "fuse"},   {0x6969, "nfs"},     {0xff534d42, "cifs"},
                      {0xfe534d42, "smb2"},   {0x01021997, "9p"},  {0x00c36400, "ceph"},
                      {0x0bd00bd0, "lustre"}, {0x47504653, "gpfs"}};
        const char *name;

        for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
                name = NULL;
                ck_assert_msg(stf_fstype_classify(remote[i].magic, &name), "%s", remote[i].name);
                ck_assert_str_eq(name, remote[i].name);
        }
        /* f_type sign-extended, as a 32-bit long would carry it */
        ck_assert(stf_fstype_classify((long)(int)0xff534d42, &name));
        ck_assert_str_eq(name, "cifs");
        ck_assert(stf_fstype_classify(0x6969, NULL));
}
END_TEST

START_TEST(test_local_types)
{
        const char *name;

        ck_assert(!stf_fstype_classify(0xef53, &name));
        ck_assert_str_eq(name, "ext4");
        ck_assert(!stf_fstype_classify(0x01021994, &name));
        ck_assert_str_eq(name, "tmpfs");
        ck_assert(!stf_fstype_classify(0x794c7630, &name));
        ck_assert_str_eq(name, "overlay");
        /* not in the list: local, and said so */
        ck_assert(!stf_fstype_classify(0x12345678, &name));
        ck_assert_str_eq(name, "unknown");
}
END_TEST

START_TEST(test_fd)
{
        char *dir = ut_mkdtemp(), *p = ut_printf("%s/f", dir);
        const char *name = NULL;
        int fd = open(p, O_CREAT | O_RDWR | O_CLOEXEC, 0600);

        ck_assert_int_ge(fd, 0);
        /* the scratch directory is on a local disk or tmpfs here */
        ck_assert_int_eq(stf_fstype_fd(fd, &name), 0);
        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(stf_fstype_fd(fd, NULL), 0);
        close(fd);
        ck_assert_int_eq(stf_fstype_fd(fd, &name), -EBADF);
        ck_assert_str_eq(name, "unknown");
        free(p);
        ut_rmtree(dir);
}
END_TEST

static Suite *fstype_suite(void)
{
        Suite *s = suite_create("fstype");
        TCase *tc = tcase_create("fstype");

        tcase_add_test(tc, test_remote_types);
        tcase_add_test(tc, test_local_types);
        tcase_add_test(tc, test_fd);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(fstype_suite());
}
