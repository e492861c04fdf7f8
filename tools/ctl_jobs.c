/* SPDX-License-Identifier: Apache-2.0 */
/*
 * prefetch / status / cancel / evict: thin clients of the control ioctls.
 * Progress: a bar redrawn in place on a terminal, one line a second
 * otherwise, so logs stay readable.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "stfs_ioctl.h"
#include "target.h"
#include "text.h"

/*
 * A message from the daemon (a reason, a job's error) names tensors and
 * files of an untrusted model: escaped for the terminal (core/text).
 */
struct safe_msg {
        char s[4 * STFS_MESSAGE_MAX]; /* each unsafe byte becomes \xHH */
};

static const char *safe(const char *msg, struct safe_msg *buf)
{
        stf_text_escape_buf(msg, buf->s, sizeof(buf->s));
        return buf->s;
}

static int open_control(const char *mnt)
{
        char path[4096];
        int fd;

        snprintf(path, sizeof(path), "%s/.stfs/control", mnt);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                fprintf(stderr, "stfsctl: %s: %s\n", path, strerror(errno));
        return fd;
}

/*
 * Say why request @what was refused with @err: the daemon's reason
 * (STFS_IOC_REASON, asked from this thread) or, from a daemon that keeps
 * none, @fallback or the errno's text.
 */
static void refused(int fd, const char *what, int err, const char *fallback)
{
        struct stfs_reason_req rq = {.version = STFS_IOC_VERSION};
        struct safe_msg m;

        if (!ioctl(fd, STFS_IOC_REASON, &rq) && rq.error == err && rq.message[0])
                fprintf(stderr, "stfsctl: %s: %s\n", what, safe(rq.message, &m));
        else
                fprintf(stderr, "stfsctl: %s: %s\n", what, fallback ? fallback : strerror(err));
}

static bool parse_size(const char *s, uint64_t *out)
{
        char *end;
        unsigned long long v = strtoull(s, &end, 10);

        switch (*end) {
        case 'k':
        case 'K':
                v <<= 10;
                end++;
                break;
        case 'm':
        case 'M':
                v <<= 20;
                end++;
                break;
        case 'g':
        case 'G':
                v <<= 30;
                end++;
                break;
        }
        if (end == s || (*end && strcmp(end, "iB") && strcmp(end, "B")))
                return false;
        *out = v;
        return true;
}

/* Append @pat to a selection buffer; false when it does not fit. */
static bool add_pattern(char *sel, size_t cap, size_t *used, const char *pat)
{
        size_t n = strlen(pat);

        if (*used + n + 2 > cap)
                return false;
        memcpy(sel + *used, pat, n);
        *used += n;
        sel[(*used)++] = '\n';
        sel[*used] = '\0';
        return true;
}

static void progress(const struct stfs_status_req *st, bool tty, bool final)
{
        double secs = (double)st->elapsed_ns / 1e9;
        double rate = secs > 0 ? (double)st->bytes_done / secs : 0;
        double frac = st->bytes_total ? (double)st->bytes_done / (double)st->bytes_total : 1;
        double eta = rate > 0 ? (double)(st->bytes_total - st->bytes_done) / rate : 0;
        char done[32], total[32], bar[31];
        int fill = (int)(frac * 30);

        ctl_human_bytes(st->bytes_done, done, sizeof(done));
        ctl_human_bytes(st->bytes_total, total, sizeof(total));
        for (int i = 0; i < 30; i++)
                bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "%s[%s] %s / %s  %.2f GB/s  ETA %.0fs  %s%s", tty ? "\r" : "", bar, done,
                total, rate / 1e9, eta, stf_job_state_name(st->state),
                tty && !final ? "   " : "\n");
        fflush(stderr);
}

static int get_status(int fd, uint64_t job, struct stfs_status_req *st)
{
        memset(st, 0, sizeof(*st));
        st->version = STFS_IOC_VERSION;
        st->job = job;
        return ioctl(fd, STFS_IOC_STATUS, st);
}

/* Poll until the job ends; exit status 0 when it is done. */
static int wait_job(int fd, uint64_t job)
{
        bool tty = isatty(STDERR_FILENO);
        struct stfs_status_req st;
        struct safe_msg m;
        uint64_t last = 0;

        for (;;) {
                struct timespec ts = {0, 100 * 1000 * 1000};

                if (get_status(fd, job, &st)) {
                        fprintf(stderr, "stfsctl: status of job %" PRIu64 ": %s\n", job,
                                strerror(errno));
                        return CTL_EXIT_FAILED;
                }
                if (st.state >= STFS_JOB_DONE)
                        break;
                if (tty || st.elapsed_ns - last >= 1000000000ull) {
                        progress(&st, tty, false);
                        last = st.elapsed_ns;
                }
                nanosleep(&ts, NULL);
        }
        progress(&st, tty, true);
        if (st.state == STFS_JOB_FAILED)
                fprintf(stderr, "stfsctl: job %" PRIu64 " failed: %s\n", job, safe(st.message, &m));
        return st.state == STFS_JOB_DONE ? 0 : CTL_EXIT_FAILED;
}

int ctl_prefetch(int argc, char **argv)
{
        struct stfs_prefetch_req *rq = calloc(1, sizeof(*rq));
        const char *mnt = NULL;
        bool wait = false;
        size_t used = 0;
        int fd, ret = CTL_EXIT_USAGE;

        if (!rq)
                return CTL_EXIT_USAGE;
        rq->version = STFS_IOC_VERSION;
        rq->slice_dim = -1;
        for (int i = 0; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

                if (!strcmp(a, "--wait")) {
                        wait = true;
                } else if (!strcmp(a, "--to") && v) {
                        if (!stf_target_parse(v, &rq->target, &rq->device))
                                goto usage;
                        i++;
                } else if (!strcmp(a, "--threads") && v) {
                        rq->threads = (uint32_t)strtoul(v, NULL, 10);
                        i++;
                } else if (!strcmp(a, "--chunk") && v) {
                        if (!parse_size(v, &rq->chunk))
                                goto usage;
                        i++;
                } else if (!strcmp(a, "--staging") && v) {
                        if (!strcmp(v, "ring"))
                                rq->flags = STFS_STAGING_RING;
                        else if (!strcmp(v, "direct"))
                                rq->flags = STFS_STAGING_DIRECT;
                        else if (!strcmp(v, "auto"))
                                rq->flags = STFS_STAGING_AUTO;
                        else
                                goto usage;
                        i++;
                } else if (!strcmp(a, "--slice") && v) {
                        if (sscanf(v, "%d:%u/%u", &rq->slice_dim, &rq->slice_rank,
                                   &rq->slice_world) != 3)
                                goto usage;
                        i++;
                } else if (a[0] == '-' && a[1] == '-') {
                        goto usage;
                } else if (!mnt) {
                        mnt = a;
                } else if (!add_pattern(rq->selection, sizeof(rq->selection), &used, a)) {
                        fprintf(stderr, "stfsctl: selection longer than %d bytes\n",
                                STFS_SELECTION_MAX);
                        goto out;
                }
        }
        if (!mnt)
                goto usage;
        fd = open_control(mnt);
        if (fd < 0) {
                ret = CTL_EXIT_FAILED;
                goto out;
        }
        if (ioctl(fd, STFS_IOC_PREFETCH, rq)) {
                refused(fd, "prefetch", errno,
                        errno == ENOENT ? "the selection matches no tensor" : NULL);
                ret = CTL_EXIT_FAILED;
        } else {
                printf("job %" PRIu64 "\n", rq->job);
                fflush(stdout);
                ret = wait ? wait_job(fd, rq->job) : 0;
        }
        close(fd);
        goto out;
usage:
        fprintf(stderr, "usage: stfsctl prefetch MNT [SELECTION...] [--to host|cuda:N] "
                        "[--threads N] [--chunk SIZE] [--slice DIM:RANK/WORLD]\n"
                        "       [--staging ring|direct|auto] [--wait]\n");
out:
        free(rq);
        return ret;
}

int ctl_status(int argc, char **argv)
{
        struct stfs_status_req st;
        struct safe_msg m;
        char path[4096], buf[65536];
        ssize_t n;
        int fd;

        if (argc < 1 || argc > 2) {
                fprintf(stderr, "usage: stfsctl status MNT [JOB]\n");
                return CTL_EXIT_USAGE;
        }
        if (argc == 1) {
                snprintf(path, sizeof(path), "%s/.stfs/status", argv[0]);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        fprintf(stderr, "stfsctl: %s: %s\n", path, strerror(errno));
                        return CTL_EXIT_FAILED;
                }
                while ((n = read(fd, buf, sizeof(buf))) > 0)
                        fwrite(buf, 1, (size_t)n, stdout);
                close(fd);
                return n < 0 ? CTL_EXIT_FAILED : 0;
        }
        fd = open_control(argv[0]);
        if (fd < 0)
                return CTL_EXIT_FAILED;
        if (get_status(fd, strtoull(argv[1], NULL, 10), &st)) {
                fprintf(stderr, "stfsctl: job %s: %s\n", argv[1], strerror(errno));
                close(fd);
                return CTL_EXIT_FAILED;
        }
        close(fd);
        printf("job %" PRIu64 " %s %" PRIu64 "/%" PRIu64 " bytes %u tensors %.3fs%s%s\n", st.job,
               stf_job_state_name(st.state), st.bytes_done, st.bytes_total, st.tensors,
               (double)st.elapsed_ns / 1e9, st.message[0] ? ": " : "", safe(st.message, &m));
        return st.state == STFS_JOB_FAILED ? CTL_EXIT_FAILED : 0;
}

int ctl_cancel(int argc, char **argv)
{
        struct stfs_cancel_req rq = {.version = STFS_IOC_VERSION};
        int fd, ret = 0;

        if (argc != 2) {
                fprintf(stderr, "usage: stfsctl cancel MNT JOB\n");
                return CTL_EXIT_USAGE;
        }
        rq.job = strtoull(argv[1], NULL, 10);
        fd = open_control(argv[0]);
        if (fd < 0)
                return CTL_EXIT_FAILED;
        if (ioctl(fd, STFS_IOC_CANCEL, &rq)) {
                fprintf(stderr, "stfsctl: cancel job %s: %s\n", argv[1], strerror(errno));
                ret = CTL_EXIT_FAILED;
        }
        close(fd);
        return ret;
}

int ctl_evict(int argc, char **argv)
{
        struct stfs_evict_req *rq = calloc(1, sizeof(*rq));
        const char *mnt = NULL;
        size_t used = 0;
        int fd, ret = CTL_EXIT_USAGE;

        if (!rq)
                return CTL_EXIT_USAGE;
        rq->version = STFS_IOC_VERSION;
        for (int i = 0; i < argc; i++) {
                if (!strcmp(argv[i], "--to") && i + 1 < argc) {
                        if (!stf_target_parse(argv[++i], &rq->target, &rq->device))
                                goto usage;
                } else if (argv[i][0] == '-' && argv[i][1] == '-') {
                        goto usage;
                } else if (!mnt) {
                        mnt = argv[i];
                } else if (!add_pattern(rq->selection, sizeof(rq->selection), &used, argv[i])) {
                        goto usage;
                }
        }
        if (!mnt)
                goto usage;
        fd = open_control(mnt);
        if (fd < 0) {
                ret = CTL_EXIT_FAILED;
                goto out;
        }
        ret = 0;
        if (ioctl(fd, STFS_IOC_EVICT, rq)) {
                refused(fd, "evict", errno, NULL);
                ret = CTL_EXIT_FAILED;
        } else {
                printf("evicted %" PRIu64 " tensors\n", rq->count);
        }
        close(fd);
        goto out;
usage:
        fprintf(stderr, "usage: stfsctl evict MNT [SELECTION...] [--to host|cuda:N]\n");
out:
        free(rq);
        return ret;
}
