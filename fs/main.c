/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stfs: mount a safetensors model as a read-only tree.
 *
 * Start-up order is chosen so that a bad SOURCE never leaves anything
 * mounted: the model is opened and fully validated, and the tree built,
 * before the mount; only then do we mount, tune the mount's readahead,
 * detach (unless -f) and serve.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "control.h"
#include "control.h"
#include "stfs.h"

struct options {
        char *source;
        int flat;
        int listviews;
        int fullnames;
        unsigned readahead_kb;
        int show_help;
        int show_version;
};

enum { KEY_HELP, KEY_VERSION };

#define OPT(t, p)                                                                                  \
        {                                                                                          \
                t, offsetof(struct options, p), 1                                                  \
        }
static const struct fuse_opt opt_spec[] = {
    OPT("flat", flat),
    OPT("listviews", listviews),
    OPT("fullnames", fullnames),
    {"readahead_kb=%u", offsetof(struct options, readahead_kb), 0},
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_END,
};

static bool use_syslog;

void stfs_log_to_syslog(void)
{
        openlog("stfs", LOG_PID, LOG_DAEMON);
        use_syslog = true;
}

void stfs_log(int prio, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        if (use_syslog) {
                vsyslog(prio, fmt, ap);
        } else {
                fputs("stfs: ", stderr);
                vfprintf(stderr, fmt, ap);
                fputc('\n', stderr);
        }
        va_end(ap);
}

static void fuse_log_to_us(enum fuse_log_level level, const char *fmt, va_list ap)
{
        if (use_syslog)
                vsyslog((int)level, fmt, ap);
        else
                vfprintf(stderr, fmt, ap);
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
        struct options *o = data;

        switch (key) {
        case FUSE_OPT_KEY_NONOPT:
                if (!o->source) {
                        o->source = strdup(arg);
                        return 0;
                }
                return 1;
        case KEY_HELP:
                o->show_help = 1;
                return 0;
        case KEY_VERSION:
                o->show_version = 1;
                return 0;
        default:
                return 1;
        }
}

static void usage(const char *prog)
{
        printf("usage: %s [options] SOURCE MOUNTPOINT\n"
               "\n"
               "Mount a safetensors model read-only: every tensor is a file.\n"
               "SOURCE is a .safetensors file, a *.safetensors.index.json, or a directory\n"
               "holding them (a Hugging Face snapshot; a diffusers folder mounts each\n"
               "part under its own name). Unmount with: fusermount3 -u MOUNTPOINT\n"
               "\n"
               "stfs options:\n"
               "    -o flat                every tensor in the root under its full name\n"
               "    -o listviews           list the T.npy and D.safetensors views too\n"
               "    -o fullnames           D.safetensors keeps full tensor names\n"
               "    -o readahead_kb=N      kernel readahead of the mount, as root (default 4096;\n"
               "                           0 leaves the kernel's default)\n"
               "    -o rw                  mount read-write (files stay read-only; the default\n"
               "                           is ro)\n"
               "    -h, --help             this help\n"
               "    -V, --version          print the version\n"
               "\n",
               prog);
        printf("FUSE options:\n");
        fuse_cmdline_help();
        fuse_lowlevel_help();
}

/* As root, raise the mount's bdi readahead: 128 KiB halves first reads. */
static void raise_readahead(const char *mountpoint, unsigned kb)
{
        char line[4096], path[128], want[PATH_MAX * 4 + 1];
        unsigned maj = 0, min = 0;
        bool found = false;
        size_t o = 0;
        FILE *f;

        if (kb == 0 || geteuid() != 0)
                return;
        /* mountinfo escapes space, tab, newline and backslash as \ooo. */
        for (const char *p = mountpoint; *p && o + 5 < sizeof(want); p++) {
                if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\\')
                        o += (size_t)snprintf(want + o, sizeof(want) - o, "\\%03o",
                                              (unsigned char)*p);
                else
                        want[o++] = *p;
        }
        want[o] = '\0';
        f = fopen("/proc/self/mountinfo", "r");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                unsigned a, b;
                char mp[4096];

                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) == 3 &&
                    !strcmp(mp, want)) {
                        maj = a;
                        min = b;
                        found = true;
                }
        }
        fclose(f);
        if (!found)
                return;
        snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
        f = fopen(path, "w");
        if (!f)
                return;
        fprintf(f, "%u\n", kb);
        if (fclose(f))
                stfs_log(LOG_WARNING, "cannot set %s", path);
}

/*
 * SOURCE made absolute (the daemon changes to / when it detaches) without
 * resolving symbolic links: the kind of a source and the directory of its
 * shards come from the path as given. In a Hugging Face cache the index is a
 * link to ../../blobs/HASH, a name that says neither.
 */
static char *absolute(const char *path)
{
        char *cwd, *out;

        if (path[0] == '/')
                return strdup(path);
        cwd = getcwd(NULL, 0);
        if (!cwd)
                return NULL;
        if (asprintf(&out, "%s/%s", cwd, path) < 0)
                out = NULL;
        free(cwd);
        return out;
}

int main(int argc, char **argv)
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct options o = {.readahead_kb = 4096};
        struct fuse_cmdline_opts cmd = {0};
        struct fuse_loop_config *loop = NULL;
        struct fuse_session *se = NULL;
        struct stfs fs = {.timeout = 86400.0 * 365, .lock = PTHREAD_MUTEX_INITIALIZER};
        struct stf_diag diag = {{0}};
        char *source = NULL, *fsname = NULL, *mountpoint = NULL;
        int ret = 1, err;

        if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1)
                return 1;
        if (o.show_help) {
                usage(argv[0]);
                ret = 0;
                goto out_args;
        }
        if (o.show_version) {
                printf("stfs %s (libfuse %s)\n", STF_VERSION, fuse_pkgversion());
                ret = 0;
                goto out_args;
        }
        /* Read-only by default; a later -o rw from the user wins. */
        if (fuse_opt_insert_arg(&args, 1, "-oro,default_permissions,subtype=stfs"))
                goto out_args;
        if (o.source) {
                source = absolute(o.source);
                if (!source || access(source, F_OK)) {
                        fprintf(stderr, "stfs: %s: %s\n", o.source, strerror(errno));
                        goto out_args;
                }
                /* fsname shows SOURCE in the mount table; commas escaped. */
                if (fuse_opt_add_opt_escaped(&fsname, source))
                        goto out_args;
        }
        if (fuse_parse_cmdline(&args, &cmd) != 0)
                goto out_args;
        if (!o.source || !cmd.mountpoint) {
                fprintf(stderr, "usage: %s [options] SOURCE MOUNTPOINT (see --help)\n", argv[0]);
                goto out_args;
        }
        mountpoint = realpath(cmd.mountpoint, NULL);
        if (!mountpoint) {
                fprintf(stderr, "stfs: %s: %s\n", cmd.mountpoint, strerror(errno));
                goto out_args;
        }
        {
                char *opt = NULL;

                if (asprintf(&opt, "-ofsname=%s", fsname) < 0 || fuse_opt_add_arg(&args, opt)) {
                        free(opt);
                        goto out_args;
                }
                free(opt);
        }

        err = stf_model_open(source, &fs.model, &diag);
        if (err) {
                fprintf(stderr, "stfs: %s\n", diag.msg);
                goto out_args;
        }
        err = stf_tree_build_model(fs.model, o.flat ? STF_TREE_FLAT : 0, &fs.tree, &diag);
        if (err) {
                fprintf(stderr, "stfs: %s: %s\n", source, diag.msg);
                goto out_model;
        }
        fs.uid = getuid();
        fs.gid = getgid();
        fs.debug = cmd.debug;
        if (stf_ns_new(fs.model, fs.tree,
                       (o.listviews ? STF_NS_LISTVIEWS : 0) | (o.fullnames ? STF_NS_FULLNAMES : 0),
                       &fs.ns)) {
                fprintf(stderr, "stfs: out of memory\n");
                goto out_tree;
        }
        fs.readahead_kb = o.readahead_kb > 1u << 20 ? 1u << 20 : o.readahead_kb;

        fuse_set_log_func(fuse_log_to_us);
        /* the parse left tens of MB of freed heap: give it back (RSS) */
        malloc_trim(0);
        if (stfs_control_init(&fs)) {
                fprintf(stderr, "stfs: out of memory\n");
                goto out_tree;
        }
        se = fuse_session_new(&args, &stfs_ops, sizeof(stfs_ops), &fs);
        if (!se)
                goto out_tree;
        fs.se = se;
        if (stf_watch_new(fs.model, stfs_log_truncated, NULL, &fs.watch))
                goto out_session;
        fs.mountpoint = mountpoint;
        if (fuse_set_signal_handlers(se))
                goto out_session;
        if (fuse_session_mount(se, mountpoint))
                goto out_signals;
        raise_readahead(mountpoint, o.readahead_kb);
        if (!cmd.foreground)
                stfs_log_to_syslog();
        if (fuse_daemonize(cmd.foreground))
                goto out_unmount;

        if (cmd.singlethread) {
                ret = fuse_session_loop(se);
        } else {
                loop = fuse_loop_cfg_create();
                if (!loop)
                        goto out_unmount;
                fuse_loop_cfg_set_clone_fd(loop, (unsigned)cmd.clone_fd);
                fuse_loop_cfg_set_max_threads(loop, cmd.max_threads);
                if (cmd.max_idle_threads != UINT_MAX) /* UINT_MAX: unset (3.14 logs it) */
                        fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads);
                ret = fuse_session_loop_mt(se, loop);
                fuse_loop_cfg_destroy(loop);
        }
        /* a positive value is the signal that ended the loop: a clean exit */
        ret = ret < 0 ? 1 : 0;
        /* stop prefetch jobs while the session can still take their pushes */
        stfs_control_destroy(&fs);

out_unmount:
        fuse_session_unmount(se);
out_signals:
        fuse_remove_signal_handlers(se);
out_session:
        stf_watch_free(fs.watch);
        fs.watch = NULL;
        fuse_session_destroy(se);
out_tree:
        stfs_control_destroy(&fs);
        stfs_free_cache(&fs);
        stf_ns_free(fs.ns);
        stf_tree_free(fs.tree);
out_model:
        stf_model_close(fs.model);
out_args:
        free(mountpoint);
        free(cmd.mountpoint);
        free(fsname);
        free(source);
        free(o.source);
        fuse_opt_free_args(&args);
        return ret;
}
