/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The magic numbers are the kernel's (linux/magic.h and the filesystems'
 * own headers for those out of tree: Lustre, GPFS, BeeGFS, PanFS). They
 * are written out here rather than taken from linux/magic.h, which lacks
 * the out-of-tree ones and varies with the headers' age.
 */
#include <errno.h>
#include <stddef.h>
#include <sys/vfs.h>

#include "fstype.h"

struct fstype {
        unsigned long magic;
        const char *name;
        bool remote;
};

static const struct fstype types[] = {
    /* remote: changes elsewhere are not seen by inotify; reads can stall */
    {0x65735546, "fuse", true},
    {0x6969, "nfs", true},
    {0xff534d42, "cifs", true},
    {0xfe534d42, "smb2", true},
    {0x517b, "smb", true},
    {0x01021997, "9p", true},
    {0x00c36400, "ceph", true},
    {0x5346414f, "afs", true},
    {0x6b414653, "afs", true},
    {0x73757245, "coda", true},
    {0x564c, "ncp", true},
    {0x0bd00bd0, "lustre", true},
    {0x47504653, "gpfs", true},
    {0x19830326, "beegfs", true},
    {0x20030528, "orangefs", true},
    {0xaad7aaea, "panfs", true},
    {0x01161970, "gfs2", true},
    {0x7461636f, "ocfs2", true},
    /* local ones a model is commonly on, named for the log */
    {0xef53, "ext4", false},
    {0x58465342, "xfs", false},
    {0x9123683e, "btrfs", false},
    {0x01021994, "tmpfs", false},
    {0x794c7630, "overlay", false},
    {0x2fc12fc1, "zfs", false},
    {0xf2f52010, "f2fs", false},
    {0x4d44, "vfat", false},
    {0x2011bab0, "exfat", false},
    {0x5346544e, "ntfs", false},
    {0x9660, "iso9660", false},
    {0x73717368, "squashfs", false},
    {0xe0f5e1e2, "erofs", false},
};

bool stf_fstype_classify(long magic, const char **name)
{
        /* f_type is a signed long: 0xff534d42 comes back negative on 32 bits */
        unsigned long m = (unsigned long)magic & 0xffffffffu;

        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
                if (types[i].magic == m) {
                        if (name)
                                *name = types[i].name;
                        return types[i].remote;
                }
        if (name)
                *name = "unknown";
        return false;
}

int stf_fstype_fd(int fd, const char **name)
{
        struct statfs sf;

        if (fstatfs(fd, &sf)) {
                if (name)
                        *name = "unknown";
                return -errno;
        }
        return stf_fstype_classify((long)sf.f_type, name) ? 1 : 0;
}
