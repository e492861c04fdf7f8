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
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <syslog.h>
#include <unistd.h>

#include "control.h"
#include "docs.h"
#include "log.h"
#include "ops.h"
#include "passthrough.h"
#include "reads.h"
#include "stfs.h"

struct options {
        char *source;
        int flat;
        int listviews;
        int fullnames;
        int allsets;
        char *variant;
        unsigned readahead_kb;
        char *view_cache;
        char *passthrough;
        char *check_interval;
        char *cache;
        char *read_timeout;
        char *async_reads;
        unsigned data_threads;
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
    OPT("allsets", allsets),
    {"variant=%s", offsetof(struct options, variant), 0},
    {"readahead_kb=%u", offsetof(struct options, readahead_kb), 0},
    {"view_cache=%s", offsetof(struct options, view_cache), 0},
    {"passthrough=%s", offsetof(struct options, passthrough), 0},
    {"check_interval=%s", offsetof(struct options, check_interval), 0},
    {"cache=%s", offsetof(struct options, cache), 0},
    {"read_timeout=%s", offsetof(struct options, read_timeout), 0},
    {"async_reads=%s", offsetof(struct options, async_reads), 0},
    {"data_threads=%u", offsetof(struct options, data_threads), 0},
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_END,
};

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
               "    -o listviews           list the views (T.npy, D.part.safetensors, the\n"
               "                           whole-set files) too\n"
               "    -o fullnames           D.part.safetensors keeps full tensor names\n"
               "    -o variant=NAME        the NAME variant of each set where there is one\n"
               "                           (diffusion_pytorch_model.NAME.safetensors)\n"
               "    -o allsets             every set of a folder, each under its own name\n"
               "    -o readahead_kb=N      kernel readahead of the mount, as root (default 4096;\n"
               "                           0 leaves the kernel's default)\n"
               "    -o view_cache=SIZE     bytes of views kept built (K, M, G suffixes;\n"
               "                           default 64M; see README, Reliability)\n"
               "    -o passthrough=MODE    auto (default): as root, the kernel serves whole\n"
               "                           files (.stfs/shards) from the source; off: never\n"
               "    -o check_interval=S    seconds between checks of shards on network storage\n"
               "                           for changes (default 5; 0: none; see README)\n"
               "    -o cache=MODE          single (default): once bytes are in the mount's\n"
               "                           page cache the daemon drops the source's copy;\n"
               "                           double: keep both (see README, Memory)\n"
               "    -o async_reads=MODE    auto (default): data reads on their own threads when\n"
               "                           the source is on a network filesystem (FUSE, NFS,\n"
               "                           SMB, ...), zero-copy replies otherwise; on; off\n"
               "    -o data_threads=N      threads of async reads (default 16)\n"
               "    -o read_timeout=S      an async read waiting longer than S seconds on the\n"
               "                           source fails with EIO (default 30; 0: wait for ever)\n"
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

/* The device number of the mount at @mountpoint (the last in mountinfo). */
static bool mount_dev(const char *mountpoint, unsigned *maj, unsigned *min)
{
        char line[4096], want[PATH_MAX * 4 + 1];
        bool found = false;
        size_t o = 0;
        FILE *f;

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
                return false;
        while (fgets(line, sizeof(line), f)) {
                unsigned a, b;
                char mp[4096];

                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) == 3 &&
                    !strcmp(mp, want)) {
                        *maj = a;
                        *min = b;
                        found = true;
                }
        }
        fclose(f);
        return found;
}

/* As root, raise the mount's bdi readahead: 128 KiB halves first reads. */
static void raise_readahead(unsigned maj, unsigned min, unsigned kb)
{
        char path[128];
        FILE *f;

        if (kb == 0 || geteuid() != 0)
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

/* The command line, parsed; what start-up needs from it. */
struct start {
        struct fuse_args args;
        struct options o;
        struct fuse_cmdline_opts cmd;
        char *source;     /* absolute */
        char *mountpoint; /* real path */
        struct stf_watch_opts watch;
        struct stfs_reads_opts reads;
        unsigned conn; /* the FUSE connection's id (fusectl), 0: unknown */
};

static void start_free(struct start *st)
{
        free(st->mountpoint);
        free(st->cmd.mountpoint);
        free(st->source);
        free(st->o.source);
        free(st->o.variant);
        free(st->o.view_cache);
        free(st->o.passthrough);
        free(st->o.check_interval);
        free(st->o.cache);
        free(st->o.read_timeout);
        free(st->o.async_reads);
        fuse_opt_free_args(&st->args);
}

/* Where fusectl is mounted (the kernel's documented place), its magic. */
#define FUSECTL_DIR "/sys/fs/fuse/connections"
#define FUSECTL_SUPER_MAGIC 0x65735543

/*
 * Abort FUSE connection @conn through fusectl, where it is mounted: every
 * request of the mount still in flight ends at once (ECONNABORTED), whatever
 * threads of ours still hold the device. Call it after the unmount: an
 * aborted device polls POLLERR, and libfuse's unmount then leaves the dead
 * mount in place. ENOENT then: the connection ended with the unmount
 * (nothing held the mount). One line is logged either way (the tests look
 * for it).
 */
static void abort_connection(unsigned conn)
{
        struct statfs sfs;
        char path[96];
        int fd, err;

        if (statfs(FUSECTL_DIR, &sfs) || sfs.f_type != FUSECTL_SUPER_MAGIC) {
                stfs_log(LOG_WARNING, "fusectl is not mounted at " FUSECTL_DIR
                                      ": the close of the device at exit ends the connection");
                return;
        }
        if (!conn) {
                stfs_log(LOG_WARNING, "the connection's id is unknown (not in mountinfo): the "
                                      "close of the device at exit ends it");
                return;
        }
        snprintf(path, sizeof(path), FUSECTL_DIR "/%u/abort", conn);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
                stfs_log(LOG_NOTICE, "connection %u ended with the unmount", conn);
                return;
        }
        if (fd < 0 || write(fd, "1", 1) != 1) {
                err = errno;
                if (fd >= 0)
                        close(fd);
                stfs_log(LOG_WARNING,
                         "cannot abort the connection through %s (%s): the close of the device "
                         "at exit ends it",
                         path, strerror(err));
                return;
        }
        close(fd);
        stfs_log(LOG_NOTICE, "connection %u aborted through %s", conn, path);
}

/*
 * "S", seconds (decimals allowed, 0 to @max) into milliseconds in *@ms (a
 * positive value stays at least 1); @s NULL: @def_ms. False when @s is not
 * such a number.
 */
static bool parse_seconds(const char *s, double max, unsigned def_ms, unsigned *ms)
{
        char *end;
        double v;

        if (!s) {
                *ms = def_ms;
                return true;
        }
        errno = 0;
        v = strtod(s, &end);
        if (end == s || *end || errno || !(v >= 0 && v <= max))
                return false;
        *ms = (unsigned)(v * 1000 + 0.5);
        if (v > 0 && *ms == 0)
                *ms = 1;
        return true;
}

/* -o async_reads, data_threads, read_timeout into st->reads; false (said on
 * stderr) when one is malformed. */
static bool parse_reads(struct start *st)
{
        struct stfs_reads_opts *r = &st->reads;

        r->mode = STFS_READS_AUTO;
        if (st->o.async_reads && !stfs_reads_parse_mode(st->o.async_reads, &r->mode)) {
                fprintf(stderr, "stfs: -o async_reads=%s: auto, on or off\n", st->o.async_reads);
                return false;
        }
        r->threads = st->o.data_threads ? st->o.data_threads : STFS_READS_THREADS_DEFAULT;
        if (r->threads > STFS_READS_THREADS_MAX) {
                fprintf(stderr, "stfs: -o data_threads=%u: at most %u\n", r->threads,
                        STFS_READS_THREADS_MAX);
                return false;
        }
        /* up to a week: the milliseconds fit an unsigned */
        if (!parse_seconds(st->o.read_timeout, 7 * 86400.0, STFS_READ_TIMEOUT_DEFAULT_S * 1000u,
                           &r->timeout_ms)) {
                fprintf(stderr, "stfs: -o read_timeout=%s: seconds, 0 to 604800\n",
                        st->o.read_timeout);
                return false;
        }
        return true;
}

/* "SIZE" with an optional K, M or G suffix (powers of 1024). */
static bool parse_size(const char *s, size_t *out)
{
        unsigned shift = 0;
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (end == s || errno || *s == '-')
                return false;
        if (*end) {
                const char *units = "KMG", *u = strchr(units, *end);

                if (!u || end[1])
                        return false;
                shift = 10 * (unsigned)(u - units + 1);
        }
        if (v > (SIZE_MAX >> shift))
                return false;
        *out = (size_t)v << shift;
        return true;
}

/* Add -o fsname=SOURCE: the mount table shows it (commas escaped). */
static int add_fsname(struct start *st)
{
        char *fsname = NULL, *opt = NULL;
        int ret = -1;

        if (!fuse_opt_add_opt_escaped(&fsname, st->source) &&
            asprintf(&opt, "-ofsname=%s", fsname) >= 0) {
                ret = fuse_opt_add_arg(&st->args, opt) ? -1 : 0;
                free(opt);
        }
        free(fsname);
        return ret;
}

/*
 * Parse the command line. Returns 0 to go on, 1 when done (help, version),
 * -1 on a usage error (said on stderr).
 */
static int parse(struct start *st, int argc, char **argv)
{
        struct stat mst;

        st->args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
        st->o.readahead_kb = 4096;
        if (fuse_opt_parse(&st->args, &st->o, opt_spec, opt_proc) == -1)
                return -1;
        if (st->o.show_help) {
                usage(argv[0]);
                return 1;
        }
        if (st->o.show_version) {
                printf("stfs %s (libfuse %s)\n", STF_VERSION, fuse_pkgversion());
                return 1;
        }
        if (!parse_reads(st))
                return -1;
        /* Read-only by default; a later -o rw from the user wins. */
        if (fuse_opt_insert_arg(&st->args, 1, "-oro,default_permissions,subtype=stfs"))
                return -1;
        if (st->o.source) {
                st->source = absolute(st->o.source);
                if (!st->source || access(st->source, F_OK)) {
                        fprintf(stderr, "stfs: %s: %s\n", st->o.source, strerror(errno));
                        return -1;
                }
        }
        if (fuse_parse_cmdline(&st->args, &st->cmd) != 0)
                return -1;
        if (!st->o.source || !st->cmd.mountpoint) {
                fprintf(stderr, "usage: %s [options] SOURCE MOUNTPOINT (see --help)\n", argv[0]);
                return -1;
        }
        st->mountpoint = realpath(st->cmd.mountpoint, NULL);
        if (!st->mountpoint) {
                fprintf(stderr, "stfs: %s: %s\n", st->cmd.mountpoint, strerror(errno));
                return -1;
        }
        /* On a file the mount would succeed and every access fail with EIO. */
        if (!stat(st->mountpoint, &mst) && !S_ISDIR(mst.st_mode)) {
                fprintf(stderr, "stfs: %s: not a directory (a mount point must be one)\n",
                        st->cmd.mountpoint);
                return -1;
        }
        /* -o check_interval: at most a day, default 5 s */
        if (!parse_seconds(st->o.check_interval, 86400, 5000, &st->watch.check_ms)) {
                fprintf(stderr,
                        "stfs: -o check_interval=%s: not a number of seconds (0 to 86400)\n",
                        st->o.check_interval);
                return -1;
        }
        return add_fsname(st);
}

/* The passthrough state of -o passthrough=MODE. 0 or -1 (said on stderr). */
static int load_passthrough(struct stfs *fs, const struct start *st)
{
        enum stfs_pt_mode mode = STFS_PT_AUTO;

        if (st->o.passthrough && stfs_pt_parse_mode(st->o.passthrough, &mode)) {
                fprintf(stderr, "stfs: -o passthrough=%s: not auto or off\n", st->o.passthrough);
                return -1;
        }
        if (stfs_pt_new(mode, fs->model, &fs->pt)) {
                fprintf(stderr, "stfs: out of memory\n");
                return -1;
        }
        return 0;
}

/* -o cache=MODE: the single-copy policy. 0 or -1 (said on stderr). */
static int load_cache(struct stfs *fs, const struct start *st)
{
        enum stf_cache_mode mode = STF_CACHE_SINGLE;

        if (st->o.cache && stf_cache_mode_parse(st->o.cache, &mode)) {
                fprintf(stderr, "stfs: -o cache=%s: not a mode (single, double)\n", st->o.cache);
                return -1;
        }
        if (stf_cache_new(fs->model, mode, NULL, NULL, &fs->cache)) {
                fprintf(stderr, "stfs: out of memory\n");
                return -1;
        }
        /*
         * Single mode reads local sources in large folios (measured on a
         * cold read through the mount: the daemon's CPU a GiB less than
         * half, row 1a at the source's speed), which its drops then free
         * whole. Not in double mode: there every folio stays, and on the
         * machine measured (a VM) the daemon's CPU a GiB rose instead
         * (README, Memory).
         */
        if (mode == STF_CACHE_SINGLE) {
                bool all = fs->model->nshards > 0;

                for (uint32_t i = 0; i < fs->model->nshards; i++)
                        all &= stf_shard_advise_large(&fs->model->shards[i]);
                fs->large_folios = all;
        }
        return 0;
}

/* Everything of the mount but the session: model, tree, namespace, live
 * documents, control plane. 0 or -1 (said on stderr); unload either way. */
static int load(struct stfs *fs, const struct start *st)
{
        struct stf_diag diag = {{0}};
        unsigned ns_flags =
            (st->o.listviews ? STF_NS_LISTVIEWS : 0) | (st->o.fullnames ? STF_NS_FULLNAMES : 0);

        /* One descriptor per shard stays open: allow what the system allows. */
        stf_shard_raise_fd_limit();
        if (stf_model_open_opts(st->source,
                                &(struct stf_model_opts){.variant = st->o.variant,
                                                         .all_sets = st->o.allsets,
                                                         .companions = true},
                                &fs->model, &diag)) {
                fprintf(stderr, "stfs: %s\n", diag.msg);
                return -1;
        }
        if (stf_tree_build_model(fs->model, st->o.flat ? STF_TREE_FLAT : 0, &fs->tree, &diag)) {
                fprintf(stderr, "stfs: %s: %s\n", st->source, diag.msg);
                return -1;
        }
        fs->uid = getuid();
        fs->gid = getgid();
        fs->debug = st->cmd.debug;
        fs->readahead_kb = st->o.readahead_kb > 1u << 20 ? 1u << 20 : st->o.readahead_kb;
        fs->mountpoint = st->mountpoint;
        /* the parse left tens of MB of freed heap: give it back (RSS) */
        malloc_trim(0);
        /*
         * Views and documents a reader makes us build are large blocks that
         * live briefly (README, Reliability: the memory a reader can cause).
         * A fixed threshold keeps them mapped, so a free gives them back; the
         * default raises the threshold after each such free and keeps them.
         */
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        if (stf_ns_new(fs->model, fs->tree, ns_flags, &fs->ns) || stfs_docs_new(&fs->docs) ||
            stfs_control_init(fs)) {
                fprintf(stderr, "stfs: out of memory\n");
                return -1;
        }
        if (load_cache(fs, st))
                return -1;
        if (st->o.view_cache) {
                size_t budget;

                if (!parse_size(st->o.view_cache, &budget)) {
                        fprintf(stderr, "stfs: -o view_cache=%s: not a size (N, NK, NM, NG)\n",
                                st->o.view_cache);
                        return -1;
                }
                stf_ns_set_view_cache(fs->ns, budget);
        }
        return load_passthrough(fs, st);
}

static void unload(struct stfs *fs)
{
        stfs_control_destroy(fs);
        stf_cache_free(fs->cache);
        stfs_docs_free(fs->docs);
        stf_ns_free(fs->ns);
        stf_tree_free(fs->tree);
        stf_model_close(fs->model);
        stfs_pt_free(fs->pt);
}

/* Serve requests until unmounted or signalled. Returns the exit status. */
static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *cmd)
{
        struct fuse_loop_config *loop;
        int ret;

        if (cmd->singlethread) {
                ret = fuse_session_loop(se);
        } else {
                loop = fuse_loop_cfg_create();
                if (!loop)
                        return 1;
                fuse_loop_cfg_set_clone_fd(loop, (unsigned)cmd->clone_fd);
                fuse_loop_cfg_set_max_threads(loop, cmd->max_threads);
                if (cmd->max_idle_threads != UINT_MAX) /* UINT_MAX: unset (3.14 logs it) */
                        fuse_loop_cfg_set_idle_threads(loop, cmd->max_idle_threads);
                ret = fuse_session_loop_mt(se, loop);
                fuse_loop_cfg_destroy(loop);
        }
        /* a positive value is the signal that ended the loop: a clean exit */
        return ret < 0 ? 1 : 0;
}

/* How long exit waits for threads reading a stalled source. */
#define EXIT_WAIT_MS 2000

/* Async reads where wanted (after daemonizing: threads do not survive the
 * fork). Failing to start them leaves the zero-copy replies. */
static void start_reads(struct stfs *fs, const struct start *st)
{
        const char *why = NULL;
        int ret;

        if (!stfs_reads_wanted(fs, &st->reads, &why))
                return;
        ret = stfs_reads_new(fs, &st->reads, &fs->reads);
        if (ret)
                stfs_log(LOG_ERR,
                         "source on %s: cannot start the data threads (%s): reads stay on "
                         "the FUSE workers",
                         why, strerror(-ret));
}

/*
 * Threads still wait on a stalled source at exit: they use the model and
 * the mount's objects, so nothing is freed. Unmount (a lazy one), cut the
 * connection (every reader of the mount gets an answer), and leave; the
 * process is gone once the source answers or its waits are killed.
 */
static void leave_stuck(struct fuse_session *se, const struct start *st, unsigned stuck, int ret)
{
        int dev;

        stfs_log(LOG_WARNING,
                 "%u threads still wait on the source at exit: unmounting without them", stuck);
        /*
         * Unmount before the abort: an aborted device polls POLLERR and
         * libfuse's unmount then leaves the dead mount in place. Hold the
         * device meanwhile, so that libfuse's close of it does not end the
         * connection (a race with the abort); without fusectl our close
         * does, once the abort was tried.
         */
        dev = fcntl(fuse_session_fd(se), F_DUPFD_CLOEXEC, 0);
        fuse_session_unmount(se);
        abort_connection(st->conn);
        if (dev >= 0)
                close(dev);
        fuse_remove_signal_handlers(se);
        _exit(ret);
}

int main(int argc, char **argv)
{
        struct start st = {0};
        struct fuse_session *se;
        struct stfs fs = {.timeout = 86400.0 * 365};
        int ret = parse(&st, argc, argv);
        unsigned maj, min, stuck;

        if (ret) {
                start_free(&st);
                return ret < 0 ? 1 : 0;
        }
        ret = 1;
        stfs_log_init();
        if (load(&fs, &st))
                goto out_unload;
        se = fuse_session_new(&st.args, &stfs_ops, sizeof(stfs_ops), &fs);
        if (!se)
                goto out_unload;
        fs.se = se;
        if (fuse_set_signal_handlers(se))
                goto out_session;
        if (fuse_session_mount(se, st.mountpoint))
                goto out_signals;
        stfs_pt_attach(fs.pt, se); /* before the kernel's INIT is read */
        if (mount_dev(st.mountpoint, &maj, &min)) {
                raise_readahead(maj, min, st.o.readahead_kb);
                st.conn = maj << 20 | min; /* the kernel's dev_t: fusectl's name */
        }
        if (!st.cmd.foreground)
                stfs_log_to_syslog();
        if (fuse_daemonize(st.cmd.foreground))
                goto out_unmount;
        /* its thread after the fork of fuse_daemonize: a fork keeps no thread */
        if (stf_watch_new(fs.model, &st.watch, stfs_shard_event, &fs, &fs.watch))
                goto out_unmount;
        stf_residency_set_watch(fs.res, fs.watch);
        start_reads(&fs, &st);
        ret = serve(se, &st.cmd);
        /* answer reads in flight and stop prefetch jobs while the session
         * can still take replies and pushes */
        stuck = stfs_reads_stop(fs.reads, EXIT_WAIT_MS);
        if (!stfs_control_stop(&fs, EXIT_WAIT_MS))
                stuck++;
        if (stuck)
                leave_stuck(se, &st, stuck, ret);
        stfs_reads_free(fs.reads);
        fs.reads = NULL;

out_unmount:
        fuse_session_unmount(se);
out_signals:
        fuse_remove_signal_handlers(se);
out_session:
        stf_watch_free(fs.watch);
        fs.watch = NULL;
        fuse_session_destroy(se);
out_unload:
        unload(&fs);
        start_free(&st);
        return ret;
}
