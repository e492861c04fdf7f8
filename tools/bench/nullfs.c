/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nullfs: a bench helper, not installed. A read-only FUSE mount with one
 * file, "data", whose READ replies come from memory (a fixed pattern, no
 * source at all), negotiated as stfs negotiates (fs/ops.c op_init): 1 MiB
 * requests, max_readahead from -o readahead_kb, no automatic data
 * invalidation, keep_cache, the multithreaded loop. Its first read through
 * a cold mount is the best any daemon that fills the FUSE page cache can do
 * on this kernel: bench row 1e (tools/bench/README.md).
 *
 * usage: nullfs [-f] [-s] [-o size=BYTES,readahead_kb=N,clone_fd,
 *                max_idle_threads=N,max_threads=N] MOUNTPOINT
 *
 * Byte i of "data" is pattern(i mod 1 MiB); readahead_kb only sets INIT's
 * max_readahead, which can lower the mount's bdi readahead, never raise it
 * (the bench writes /sys/class/bdi/.../read_ahead_kb as stfs does).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#define REQ_MAX (1u << 20)
#define DATA_INO 2

struct options {
        unsigned long long size;
        unsigned readahead_kb;
};

static const struct fuse_opt opt_spec[] = {
    {"size=%llu", offsetof(struct options, size), 0},
    {"readahead_kb=%u", offsetof(struct options, readahead_kb), 0},
    FUSE_OPT_END,
};

static struct options opts = {.size = 1ull << 30, .readahead_kb = 4096};

/* Twice the largest request: a reply at any offset is one slice of it. */
static unsigned char pattern[2 * REQ_MAX];

static void fill_pattern(void)
{
        for (size_t i = 0; i < sizeof(pattern); i++) {
                size_t j = i % REQ_MAX;

                pattern[i] = (unsigned char)(j * 131 + (j >> 12));
        }
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
        conn->max_write = REQ_MAX;
        conn->max_readahead = opts.readahead_kb * 1024u;
        conn->max_background = 64;
        conn->congestion_threshold = 48;
        conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
        conn->want &=
            ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static int fill_stat(fuse_ino_t ino, struct stat *st)
{
        memset(st, 0, sizeof(*st));
        st->st_ino = ino;
        if (ino == FUSE_ROOT_ID) {
                st->st_mode = S_IFDIR | 0555;
                st->st_nlink = 2;
        } else if (ino == DATA_INO) {
                st->st_mode = S_IFREG | 0444;
                st->st_nlink = 1;
                st->st_size = (off_t)opts.size;
        } else {
                return ENOENT;
        }
        return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e = {.attr_timeout = 86400, .entry_timeout = 86400};

        if (parent != FUSE_ROOT_ID || strcmp(name, "data") != 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        e.ino = DATA_INO;
        fill_stat(DATA_INO, &e.attr);
        fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stat st;
        int err = fill_stat(ino, &st);

        if (err)
                fuse_reply_err(req, err);
        else
                fuse_reply_attr(req, &st, 86400);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        if (ino != DATA_INO) {
                fuse_reply_err(req, EISDIR);
                return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY) {
                fuse_reply_err(req, EROFS);
                return;
        }
        fi->keep_cache = 1;
        fi->noflush = 1;
        fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
        unsigned long long end = opts.size;

        if ((unsigned long long)off >= end) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        if (size > REQ_MAX)
                size = REQ_MAX;
        if (size > end - (unsigned long long)off)
                size = (size_t)(end - (unsigned long long)off);
        fuse_reply_buf(req, (const char *)pattern + (size_t)off % REQ_MAX, size);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
};

static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *cmd)
{
        struct fuse_loop_config *loop;
        int ret;

        if (cmd->singlethread)
                return fuse_session_loop(se);
        loop = fuse_loop_cfg_create();
        if (!loop)
                return -ENOMEM;
        fuse_loop_cfg_set_clone_fd(loop, (unsigned)cmd->clone_fd);
        fuse_loop_cfg_set_max_threads(loop, cmd->max_threads);
        if (cmd->max_idle_threads != UINT_MAX) /* UINT_MAX: unset */
                fuse_loop_cfg_set_idle_threads(loop, cmd->max_idle_threads);
        ret = fuse_session_loop_mt(se, loop);
        fuse_loop_cfg_destroy(loop);
        return ret;
}

int main(int argc, char **argv)
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct fuse_cmdline_opts cmd = {0};
        struct fuse_session *se;
        int ret = 1;

        if (fuse_opt_parse(&args, &opts, opt_spec, NULL) || fuse_parse_cmdline(&args, &cmd))
                goto out_args;
        if (cmd.show_help || !cmd.mountpoint) {
                fprintf(stderr,
                        "usage: %s [-f] [-s] [-o size=BYTES,readahead_kb=N,clone_fd,"
                        "max_idle_threads=N,max_threads=N] MOUNTPOINT\n",
                        argv[0]);
                ret = !cmd.show_help;
                goto out_args;
        }
        fill_pattern();
        se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
        if (!se)
                goto out_args;
        if (fuse_set_signal_handlers(se))
                goto out_session;
        if (fuse_session_mount(se, cmd.mountpoint))
                goto out_signals;
        if (!fuse_daemonize(cmd.foreground))
                ret = serve(se, &cmd) < 0;
        fuse_session_unmount(se);
out_signals:
        fuse_remove_signal_handlers(se);
out_session:
        fuse_session_destroy(se);
out_args:
        free(cmd.mountpoint);
        fuse_opt_free_args(&args);
        return ret;
}
