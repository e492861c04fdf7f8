/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE passthrough through libfuse 3.14's custom I/O hooks (see
 * passthrough.h for what and when). The hooks run on every message, so they
 * look at as little as they can: the read hook at the opcode of each request
 * until INIT has been seen, the write hook at a thread-local mark that only
 * stfs_pt_reply_open sets around its own fuse_reply_open (libfuse sends a
 * reply on the thread that makes it) and at the unique number of INIT.
 */
#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include "fstype.h"
#include "log.h"
#include "passthrough.h"
#include "stfs.h"

/*
 * The kernel ABI this module speaks, from the kernel's include/uapi/linux/
 * fuse.h (protocol 7.40+). The system's <linux/fuse.h> may be older than
 * the running kernel (Debian 12: 7.38, no passthrough), so what is needed is
 * written here, in one place, under names of our own. The layouts are the
 * kernel's and must not change.
 */
#define PT_OP_INIT 26u                  /* enum fuse_opcode FUSE_INIT */
#define PT_INIT_EXT (1u << 30)          /* init flags: flags2 is valid */
#define PT_FLAGS2_PASSTHROUGH (1u << 5) /* FUSE_PASSTHROUGH (1ULL << 37) in flags2 */
#define PT_WRITEBACK_CACHE (1u << 16)   /* passthrough excludes it */
#define PT_FOPEN_PASSTHROUGH (1u << 7)  /* fuse_open_out.open_flags */

struct pt_in_header { /* struct fuse_in_header */
        uint32_t len;
        uint32_t opcode;
        uint64_t unique;
        uint64_t nodeid;
        uint32_t uid, gid, pid;
        uint16_t total_extlen, padding;
};

struct pt_init_in { /* struct fuse_init_in, up to flags2 */
        uint32_t major, minor, max_readahead, flags, flags2;
};

struct pt_out_header { /* struct fuse_out_header */
        uint32_t len;
        int32_t error;
        uint64_t unique;
};

struct pt_init_out { /* struct fuse_init_out (64 bytes since 7.23) */
        uint32_t major, minor, max_readahead, flags;
        uint16_t max_background, congestion_threshold;
        uint32_t max_write, time_gran;
        uint16_t max_pages, map_alignment;
        uint32_t flags2;
        uint32_t max_stack_depth; /* unused[0] before 7.40 */
        uint32_t unused[6];
};

struct pt_open_out { /* struct fuse_open_out */
        uint64_t fh;
        uint32_t open_flags;
        int32_t backing_id; /* padding before 7.40 */
};

struct pt_backing_map { /* struct fuse_backing_map */
        int32_t fd;
        uint32_t flags;
        uint64_t padding;
};

#define PT_IOC_BACKING_OPEN _IOW(229, 1, struct pt_backing_map) /* FUSE_DEV_IOC_BACKING_OPEN */

_Static_assert(sizeof(struct pt_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct pt_out_header) == 16, "fuse_out_header");
_Static_assert(sizeof(struct pt_init_out) == 64, "fuse_init_out");
_Static_assert(sizeof(struct pt_open_out) == 16, "fuse_open_out");
_Static_assert(sizeof(struct pt_backing_map) == 16, "fuse_backing_map");

enum pt_state {
        PT_OFF,         /* serve every file through the daemon */
        PT_NEGOTIATING, /* hooks installed, INIT not yet answered */
        PT_ON,          /* the kernel took FUSE_PASSTHROUGH */
};

struct stfs_pt {
        enum stfs_pt_mode mode;
        int state;            /* enum pt_state (atomic) */
        const char *why_off;  /* why it is off (static text), NULL: asked to be */
        int devfd;            /* the session's /dev/fuse descriptor */
        uint64_t init_unique; /* of the INIT request; 0: not seen yet */
        pthread_mutex_t lock; /* ids, logged */
        int32_t *ids;         /* [nshards]: backing id > 0, 0 not asked, -errno refused */
        uint32_t nshards;
        uint32_t stack_depth; /* asked for in INIT */
        bool logged;          /* the one line at the first whole-file open */
};

/* The backing id an OPEN reply being sent on this thread carries; 0: none. */
static __thread int32_t reply_backing;

int stfs_pt_parse_mode(const char *s, enum stfs_pt_mode *mode)
{
        if (!strcmp(s, "auto"))
                *mode = STFS_PT_AUTO;
        else if (!strcmp(s, "off"))
                *mode = STFS_PT_OFF;
        else
                return -EINVAL;
        return 0;
}

/* The stacking depth to ask for: see stfs_pt_new in the header. */
static uint32_t stack_depth(const struct stf_model *m)
{
        for (uint32_t i = 0; i < m->nshards; i++) {
                const char *name;

                if (stf_fstype_fd(m->shards[i].fd, &name) >= 0 &&
                    (!strcmp(name, "overlay") || !strcmp(name, "fuse")))
                        return 2; /* FILESYSTEM_MAX_STACK_DEPTH */
        }
        return 1;
}

int stfs_pt_new(enum stfs_pt_mode mode, const struct stf_model *m, struct stfs_pt **out)
{
        struct stfs_pt *pt = calloc(1, sizeof(*pt));

        if (!pt)
                return -ENOMEM;
        pt->ids = calloc(m->nshards ? m->nshards : 1, sizeof(*pt->ids));
        if (!pt->ids) {
                free(pt);
                return -ENOMEM;
        }
        pt->mode = mode;
        pt->nshards = m->nshards;
        pt->stack_depth = mode == STFS_PT_OFF ? 1 : stack_depth(m);
        pt->devfd = -1;
        pt->state = PT_OFF;
        pthread_mutex_init(&pt->lock, NULL);
        *out = pt;
        return 0;
}

void stfs_pt_free(struct stfs_pt *pt)
{
        if (!pt)
                return;
        pthread_mutex_destroy(&pt->lock);
        free(pt->ids);
        free(pt);
}

static int state_of(struct stfs_pt *pt)
{
        return __atomic_load_n(&pt->state, __ATOMIC_ACQUIRE);
}

static void turn_off(struct stfs_pt *pt, const char *why)
{
        pt->why_off = why;
        __atomic_store_n(&pt->state, PT_OFF, __ATOMIC_RELEASE);
}

/* Whether CAP_SYS_ADMIN is in this process's effective set. */
static bool may_admin(void)
{
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};

        if (syscall(SYS_capget, &hdr, data))
                return false;
        return data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

static struct stfs_pt *pt_of(void *userdata)
{
        return ((struct stfs *)userdata)->pt;
}

/* The kernel's INIT: does it offer passthrough? Remember its unique. */
static void saw_request(struct stfs_pt *pt, const void *buf, size_t len)
{
        struct pt_in_header in;
        struct pt_init_in init = {0};

        if (len < sizeof(in))
                return;
        memcpy(&in, buf, sizeof(in));
        if (in.opcode != PT_OP_INIT)
                return;
        memcpy(&init, (const char *)buf + sizeof(in),
               len - sizeof(in) < sizeof(init) ? len - sizeof(in) : sizeof(init));
        if (!(init.flags & PT_INIT_EXT) || !(init.flags2 & PT_FLAGS2_PASSTHROUGH)) {
                turn_off(pt, "the kernel does not offer it (Linux 6.9+ with "
                             "CONFIG_FUSE_PASSTHROUGH)");
                return;
        }
        pt->init_unique = in.unique;
}

static ssize_t hook_read(int fd, void *buf, size_t len, void *userdata)
{
        struct stfs_pt *pt = pt_of(userdata);
        ssize_t n = read(fd, buf, len);

        if (n > 0 && state_of(pt) == PT_NEGOTIATING && !pt->init_unique)
                saw_request(pt, buf, (size_t)n);
        return n;
}

/* writev of @iov with its second element replaced by @arg (@len bytes). */
static ssize_t send_patched(int fd, const struct iovec *iov, int count, void *arg, size_t len)
{
        struct iovec v[2] = {iov[0], {arg, len}};

        (void)count; /* 2: the callers checked */
        return writev(fd, v, 2);
}

/* libfuse's INIT reply, with passthrough asked for. */
static ssize_t send_init(struct stfs_pt *pt, int fd, struct iovec *iov, int count)
{
        struct pt_init_out out;
        ssize_t n;

        if (count != 2 || iov[1].iov_len != sizeof(out)) {
                turn_off(pt, "libfuse's INIT reply is not the size expected");
                return writev(fd, iov, count);
        }
        memcpy(&out, iov[1].iov_base, sizeof(out));
        if (out.flags & PT_WRITEBACK_CACHE) {
                turn_off(pt, "the writeback cache is on");
                return writev(fd, iov, count);
        }
        out.flags |= PT_INIT_EXT;
        out.flags2 |= PT_FLAGS2_PASSTHROUGH;
        out.max_stack_depth = pt->stack_depth;
        n = send_patched(fd, iov, count, &out, sizeof(out));
        if (n < 0)
                turn_off(pt, "the INIT reply failed");
        else
                __atomic_store_n(&pt->state, PT_ON, __ATOMIC_RELEASE);
        return n;
}

static ssize_t hook_writev(int fd, struct iovec *iov, int count, void *userdata)
{
        struct stfs_pt *pt = pt_of(userdata);
        const struct pt_out_header *oh = iov[0].iov_base;
        struct pt_open_out open;

        if (count < 1 || iov[0].iov_len != sizeof(*oh))
                return writev(fd, iov, count);
        if (pt->init_unique && oh->unique == pt->init_unique && oh->error == 0 &&
            state_of(pt) == PT_NEGOTIATING)
                return send_init(pt, fd, iov, count);
        if (!reply_backing || oh->error != 0 || count != 2 || iov[1].iov_len != sizeof(open))
                return writev(fd, iov, count);
        memcpy(&open, iov[1].iov_base, sizeof(open));
        open.open_flags |= PT_FOPEN_PASSTHROUGH;
        open.backing_id = reply_backing;
        return send_patched(fd, iov, count, &open, sizeof(open));
}

int stfs_pt_attach(struct stfs_pt *pt, struct fuse_session *se)
{
        static const struct fuse_custom_io io = {.read = hook_read, .writev = hook_writev};
        int ret;

        if (pt->mode == STFS_PT_OFF) {
                turn_off(pt, NULL);
                return 0;
        }
        if (!may_admin()) {
                turn_off(pt, "no CAP_SYS_ADMIN (the kernel lends backing files to root only)");
                return 0;
        }
        pt->devfd = fuse_session_fd(se);
        __atomic_store_n(&pt->state, PT_NEGOTIATING, __ATOMIC_RELEASE);
        /* the fd libfuse mounted with; it stays the session's to close */
        ret = fuse_session_custom_io(se, &io, pt->devfd);
        if (ret)
                turn_off(pt, "libfuse refused the I/O hooks");
        return ret;
}

/*
 * The backing id of shard @shard, registered on first use. A refusal turns
 * passthrough off for every shard not registered yet (the reason is the
 * same for all: privileges, the file system of the source). Under pt->lock.
 */
static int32_t backing_locked(struct stfs_pt *pt, uint32_t shard, int fd, const char *path)
{
        struct pt_backing_map map = {.fd = fd};
        int id;

        if (pt->ids[shard] || state_of(pt) != PT_ON)
                return pt->ids[shard];
        id = ioctl(pt->devfd, PT_IOC_BACKING_OPEN, &map);
        if (id > 0) {
                pt->ids[shard] = id;
                return id;
        }
        pt->ids[shard] = id < 0 ? -errno : -EIO;
        stfs_log(LOG_WARNING,
                 "passthrough off: the kernel refused %s as a backing file (%s); whole files "
                 "are served by the daemon",
                 path, strerror(-pt->ids[shard]));
        pt->logged = true;
        turn_off(pt, "a backing file was refused");
        return pt->ids[shard];
}

/* The line of the first whole-file open: on, or why not. Under pt->lock. */
static void log_once_locked(struct stfs_pt *pt, bool on)
{
        if (pt->logged || (!on && !pt->why_off))
                return;
        if (on)
                stfs_log(LOG_INFO, "passthrough on: the kernel serves whole files "
                                   "(.stfs/shards) from the source");
        else
                stfs_log(LOG_INFO, "passthrough off: %s; whole files are served by the daemon",
                         pt->why_off);
        pt->logged = true;
}

void stfs_pt_reply_open(struct stfs_pt *pt, fuse_req_t req, struct fuse_file_info *fi,
                        uint32_t shard, int fd, const char *path)
{
        int32_t id = 0;

        if (pt && shard < pt->nshards) {
                pthread_mutex_lock(&pt->lock);
                id = backing_locked(pt, shard, fd, path);
                log_once_locked(pt, id > 0);
                pthread_mutex_unlock(&pt->lock);
        }
        if (id <= 0) {
                fuse_reply_open(req, fi);
                return;
        }
        /* the kernel takes no other open flag with passthrough (keep_cache
         * gives the opener EIO) */
        fi->direct_io = 0;
        fi->keep_cache = 0;
        reply_backing = id;
        fuse_reply_open(req, fi);
        reply_backing = 0;
}
