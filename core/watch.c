/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shard watcher (see watch.h). The thread sleeps in poll() on the
 * inotify descriptor and an eventfd, with the check interval as timeout
 * when some shard is checked. The eventfd wakes it to stop, or to report
 * a whole-shard loss a reader found. It is stopped by asking, never
 * cancelled, so it always leaves through its own return (a cancelled
 * thread's frame is unwound behind the sanitizers' back and left its stack
 * poisoned).
 *
 * Per shard, the fields readers test (size, lost, reopened) are atomics;
 * the reopen itself runs under the shard's mutex, which only menders
 * take. stf_shard_reopen keeps the mapping's address and the descriptor's
 * number, so no reader needs to hold anything across a reopen.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fstype.h"
#include "text.h"
#include "watch.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older C libraries lack the name */
#endif

/* A shard is reopened at most once per this many ns (watch.h). */
#define REOPEN_GAP_NS 100000000ull
/* How long stf_watch_free waits for a thread stuck on a stalled source. */
#define STOP_WAIT_NS 2000000000ull

enum { KEPT, LOST_WRITTEN, LOST_CHANGED };

struct shard_state {
        uint64_t size;        /* atomic: its size now; 0 after a whole loss */
        uint64_t reopened;    /* atomic: the epoch of its last reopen, 0 never */
        uint64_t tried_ns;    /* the last reopen attempt (under lock) */
        uint32_t reopens;     /* atomic: successful reopens */
        int error;            /* atomic: the last error seen (errno), 0 none */
        uint8_t lost;         /* atomic: KEPT, LOST_WRITTEN or LOST_CHANGED */
        uint8_t said_short;   /* atomic: reported short */
        uint8_t said_lost;    /* atomic: the whole loss was reported */
        uint8_t unreachable;  /* atomic: a reopen failed (reported once) */
        bool remote;          /* on a remote filesystem */
        bool checked;         /* fstat'ed each check interval */
        const char *fs;       /* its filesystem's name */
        int wd;               /* its inotify watch, or -1 */
        pthread_mutex_t lock; /* serializes reopens */
};

struct stf_watch {
        const struct stf_model *model;
        stf_watch_report_fn report;
        void *ctx;
        struct shard_state *st;
        uint64_t epoch; /* atomic: reopens so far */
        unsigned check_ms;
        bool any_checked;
        int inotify_fd; /* -1: none */
        int wake_fd;    /* eventfd: stop, or losses to report */
        bool stopping;  /* atomic */
        bool done;      /* atomic: the thread has returned */
        pthread_t thread;
        bool running;
};

static uint64_t now_ns(void)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void tell(struct stf_watch *w, uint32_t shard, enum stf_watch_event ev, int err)
{
        if (w->report)
                w->report(w->ctx, &w->model->shards[shard], ev, err);
}

static void wake(struct stf_watch *w)
{
        uint64_t one = 1;

        while (write(w->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
}

/* Report the whole-shard losses not yet reported (on the thread). */
static void say_losses(struct stf_watch *w)
{
        for (uint32_t i = 0; i < w->model->nshards; i++) {
                struct shard_state *st = &w->st[i];
                uint8_t lost = LOAD(st->lost);

                if (lost != KEPT && !__atomic_exchange_n(&st->said_lost, 1, __ATOMIC_ACQ_REL))
                        tell(w, i, lost == LOST_WRITTEN ? STF_WATCH_WRITTEN : STF_WATCH_CHANGED,
                             LOAD(st->error));
        }
}

/* Shard @i lost every byte (@how): refuse it from now on, and report it
 * from the thread (or here, when there is none). */
static void lose(struct stf_watch *w, uint32_t i, uint8_t how, int err)
{
        struct shard_state *st = &w->st[i];
        uint8_t kept = KEPT;

        if (err)
                STORE(st->error, err);
        __atomic_compare_exchange_n(&st->lost, &kept, how, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        STORE(st->size, 0);
        if (w->running)
                wake(w);
        else
                say_losses(w);
}

void stf_watch_refresh(struct stf_watch *w)
{
        for (uint32_t i = 0; i < w->model->nshards; i++) {
                struct stat sb;

                if (LOAD(w->st[i].lost) != KEPT)
                        STORE(w->st[i].size, 0);
                else if (!fstat(w->model->shards[i].fd, &sb))
                        STORE(w->st[i].size, (uint64_t)sb.st_size);
        }
}

void stf_watch_written(struct stf_watch *w, uint32_t shard)
{
        struct stat sb;

        /* a shorter file is a truncation: its lost range alone is refused */
        if (!w || (!fstat(w->model->shards[shard].fd, &sb) &&
                   (uint64_t)sb.st_size < w->model->shards[shard].size))
                return;
        lose(w, shard, LOST_WRITTEN, 0);
}

/* The shards IN_MODIFY events in @buf (@n bytes) name were written to. */
static void note_writes(struct stf_watch *w, const char *buf, ssize_t n)
{
        for (ssize_t at = 0; at + (ssize_t)sizeof(struct inotify_event) <= n;) {
                const struct inotify_event *ev = (const void *)(buf + at);

                if (ev->mask & IN_MODIFY)
                        for (uint32_t i = 0; i < w->model->nshards; i++)
                                if (w->st[i].wd == ev->wd)
                                        stf_watch_written(w, i);
                at += (ssize_t)sizeof(*ev) + ev->len;
        }
}

void stf_watch_check(struct stf_watch *w)
{
        for (uint32_t i = 0; i < w->model->nshards; i++) {
                const struct stf_shard *s = &w->model->shards[i];
                uint64_t since = stf_watch_epoch(w);
                struct stat sb;
                int ret;

                if (LOAD(w->stopping))
                        return;
                if (!w->st[i].checked || LOAD(w->st[i].lost) != KEPT)
                        continue;
                ret = -stf_shard_stat_now(s->fd, &sb);
                /* a check stuck on a stalled source may return after the free */
                if (LOAD(w->stopping))
                        return;
                if (ret)
                        stf_watch_mend_shard(w, i, since, ret);
                else if (!stf_shard_unchanged(s, &sb))
                        lose(w, i, LOST_CHANGED, 0);
        }
}

/* poll()'s timeout: the time left to @next (ns, monotonic), or -1. */
static int time_left(const struct stf_watch *w, uint64_t next)
{
        uint64_t now = now_ns();

        if (!w->any_checked)
                return -1;
        return next > now ? (int)((next - now + 999999) / 1000000) : 0;
}

static void *run(void *arg)
{
        struct stf_watch *w = arg;
        char buf[4096] __attribute__((aligned(8)));
        struct pollfd p[2] = {{.fd = w->inotify_fd, .events = POLLIN},
                              {.fd = w->wake_fd, .events = POLLIN}};
        uint64_t next = now_ns() + w->check_ms * 1000000ull;

        while (!LOAD(w->stopping)) {
                int r = poll(p, 2, time_left(w, next));

                if (r < 0 && errno != EINTR)
                        break;
                if (r > 0 && p[1].revents) {
                        uint64_t n;

                        if (read(w->wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
                                break;
                }
                if (r > 0 && p[0].revents) {
                        ssize_t n = read(w->inotify_fd, buf, sizeof(buf));

                        if (n <= 0 && errno != EINTR && errno != EAGAIN)
                                break;
                        note_writes(w, buf, n);
                        stf_watch_refresh(w);
                }
                if (w->any_checked && now_ns() >= next) {
                        stf_watch_check(w);
                        next = now_ns() + w->check_ms * 1000000ull;
                }
                if (!LOAD(w->stopping))
                        say_losses(w);
        }
        STORE(w->done, true);
        return NULL;
}

/* Classify each shard's filesystem; watch them with inotify where it works. */
static void classify(struct stf_watch *w, const struct stf_watch_opts *o)
{
        for (uint32_t i = 0; i < w->model->nshards; i++) {
                struct shard_state *st = &w->st[i];

                st->remote = stf_fstype_fd(w->model->shards[i].fd, &st->fs) > 0;
                if (w->inotify_fd >= 0)
                        st->wd = inotify_add_watch(w->inotify_fd, w->model->shards[i].path,
                                                   IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE);
                /* inotify sees no remote change; a shard it does not watch, none */
                st->checked = o && o->check_ms && (o->check_all || st->remote || st->wd < 0);
                w->any_checked |= st->checked;
        }
}

/* Start the thread; without one, sizes stay as they are but for faults. */
static void start(struct stf_watch *w, const struct stf_watch_opts *o)
{
        w->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        classify(w, o);
        if (w->wake_fd < 0 || (w->inotify_fd < 0 && !w->any_checked))
                return;
        w->running = pthread_create(&w->thread, NULL, run, w) == 0;
}

int stf_watch_new(const struct stf_model *m, const struct stf_watch_opts *o,
                  stf_watch_report_fn report, void *ctx, struct stf_watch **out)
{
        struct stf_watch *w = calloc(1, sizeof(*w));

        if (!w)
                return -ENOMEM;
        w->model = m;
        w->report = report;
        w->ctx = ctx;
        w->inotify_fd = w->wake_fd = -1;
        w->check_ms = o ? o->check_ms : 0;
        w->st = calloc(m->nshards + 1, sizeof(*w->st));
        if (!w->st) {
                free(w);
                return -ENOMEM;
        }
        for (uint32_t i = 0; i < m->nshards; i++) {
                w->st[i].size = m->shards[i].size;
                w->st[i].wd = -1;
                w->st[i].fs = "unknown";
                pthread_mutex_init(&w->st[i].lock, NULL);
        }
        start(w, o);
        *out = w;
        return 0;
}

void stf_watch_free(struct stf_watch *w)
{
        if (!w)
                return;
        if (w->running) {
                uint64_t t0 = now_ns();
                struct timespec tick = {0, 5000000};

                STORE(w->stopping, true);
                wake(w);
                while (!LOAD(w->done) && now_ns() - t0 < STOP_WAIT_NS)
                        nanosleep(&tick, NULL);
                if (!LOAD(w->done)) {
                        /* stuck in a call to a stalled source: leave it be (watch.h) */
                        pthread_detach(w->thread);
                        return;
                }
                pthread_join(w->thread, NULL);
        }
        if (w->wake_fd >= 0)
                close(w->wake_fd);
        if (w->inotify_fd >= 0)
                close(w->inotify_fd);
        for (uint32_t i = 0; i < w->model->nshards; i++)
                pthread_mutex_destroy(&w->st[i].lock);
        free(w->st);
        free(w);
}

bool stf_watch_covers(const struct stf_watch *w, uint32_t shard, uint64_t end)
{
        return !w || end <= LOAD(w->st[shard].size);
}

/* The end, in its shard file, of shard extent @e. */
static uint64_t file_end(const struct stf_watch *w, const struct stf_extent *e)
{
        return (uint64_t)(e->ptr - w->model->shards[e->shard].map) + e->len;
}

/* The next shard extent of @v under [@off, @off + @len) from extent *@i
 * on, or NULL; *@i moves past it. Start *@i at stf_view_find(v, off). */
static const struct stf_extent *next_ext(const struct stf_view *v, uint64_t off, size_t len,
                                         size_t *i)
{
        for (; *i < v->n && v->ext[*i].off < off + len; (*i)++)
                if (v->ext[*i].shard >= 0)
                        return &v->ext[(*i)++];
        return NULL;
}

bool stf_watch_intact(const struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len)
{
        const struct stf_extent *e;

        if (!w || len == 0 || v->n == 0)
                return true;
        for (size_t i = stf_view_find(v, off); (e = next_ext(v, off, len, &i));)
                if (!stf_watch_covers(w, (uint32_t)e->shard, file_end(w, e)))
                        return false;
        return true;
}

void stf_watch_report(struct stf_watch *w, uint32_t shard)
{
        /* a whole loss is reported by the thread, as such */
        if (!w || LOAD(w->st[shard].lost) != KEPT)
                return;
        if (!__atomic_exchange_n(&w->st[shard].said_short, 1, __ATOMIC_ACQ_REL))
                tell(w, shard, STF_WATCH_SHORT, 0);
}

bool stf_watch_fault(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len)
{
        const struct stf_extent *e;
        bool bad = false;

        if (!w || len == 0 || v->n == 0)
                return false;
        for (size_t i = stf_view_find(v, off); (e = next_ext(v, off, len, &i));) {
                struct shard_state *st = &w->st[e->shard];
                struct stat sb;

                if (LOAD(st->lost) != KEPT) {
                        bad = true;
                        continue;
                }
                /* a file that cannot be asked is not short: stf_watch_mend's part */
                if (!fstat(w->model->shards[e->shard].fd, &sb) &&
                    (uint64_t)sb.st_size < file_end(w, e))
                        STORE(st->size, (uint64_t)sb.st_size);
                if (!stf_watch_covers(w, (uint32_t)e->shard, file_end(w, e))) {
                        stf_watch_report(w, (uint32_t)e->shard);
                        bad = true;
                }
        }
        return bad;
}

const char *stf_watch_lost(struct stf_watch *w, uint32_t shard, uint64_t end)
{
        if (stf_watch_covers(w, shard, end))
                return NULL;
        stf_watch_report(w, shard);
        return stf_watch_state(w, shard);
}

bool stf_watch_remote(const struct stf_watch *w, uint32_t shard)
{
        return w && w->st[shard].remote;
}

uint64_t stf_watch_epoch(const struct stf_watch *w)
{
        return w ? LOAD(w->epoch) : 0;
}

int stf_watch_fetch_shard(const struct stf_watch *w, uint32_t shard, const void *p, size_t len)
{
        uintptr_t page = 4096, a = (uintptr_t)p & ~(page - 1), b = (uintptr_t)p + len;

        if (!w || !w->st[shard].remote || len == 0)
                return 0;
        if (madvise((void *)a, b - a, MADV_POPULATE_READ) == 0 || errno == EINVAL)
                return 0;
        return -errno;
}

int stf_watch_fetch(const struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len)
{
        const struct stf_extent *e;

        if (!w || len == 0 || v->n == 0)
                return 0;
        for (size_t i = stf_view_find(v, off); (e = next_ext(v, off, len, &i));) {
                uint64_t skip = off > e->off ? off - e->off : 0;
                uint64_t end = off + len < e->off + e->len ? off + len - e->off : e->len;
                int ret = stf_watch_fetch_shard(w, (uint32_t)e->shard, e->ptr + skip,
                                                (size_t)(end - skip));

                if (ret)
                        return ret;
        }
        return 0;
}

/* Reopen shard @i, under its lock; 0 or -EIO (see stf_watch_mend). */
static int reopen_locked(struct stf_watch *w, uint32_t i, int err)
{
        struct shard_state *st = &w->st[i];
        uint64_t now = now_ns();
        int ret;

        if (st->tried_ns && now - st->tried_ns < REOPEN_GAP_NS)
                return -EIO;
        st->tried_ns = now;
        ret = stf_shard_reopen((struct stf_shard *)&w->model->shards[i]);
        if (!ret) {
                STORE(st->reopened, __atomic_add_fetch(&w->epoch, 1, __ATOMIC_ACQ_REL));
                __atomic_add_fetch(&st->reopens, 1, __ATOMIC_RELAXED);
                STORE(st->unreachable, 0);
                tell(w, i, STF_WATCH_REOPENED, err);
                return 0;
        }
        if (ret == -ESTALE) {
                lose(w, i, LOST_CHANGED, err);
                return -EIO;
        }
        STORE(st->error, -ret);
        if (!__atomic_exchange_n(&st->unreachable, 1, __ATOMIC_ACQ_REL))
                tell(w, i, STF_WATCH_UNREACHABLE, -ret);
        return -EIO;
}

int stf_watch_mend_shard(struct stf_watch *w, uint32_t shard, uint64_t since, int err)
{
        struct shard_state *st;
        int ret;

        if (!w)
                return -EIO;
        st = &w->st[shard];
        if (err)
                STORE(st->error, err);
        if (LOAD(st->lost) != KEPT)
                return -EIO;
        if (LOAD(st->reopened) > since)
                return 0;
        pthread_mutex_lock(&st->lock);
        if (LOAD(st->lost) != KEPT)
                ret = -EIO;
        else if (LOAD(st->reopened) > since)
                ret = 0;
        else
                ret = reopen_locked(w, shard, err);
        pthread_mutex_unlock(&st->lock);
        return ret;
}

int stf_watch_retry_shard(struct stf_watch *w, uint32_t shard, int (*attempt)(void *arg), void *arg)
{
        uint64_t since = stf_watch_epoch(w);
        int ret = attempt(arg);

        if (ret && !stf_watch_mend_shard(w, shard, since, -ret))
                ret = attempt(arg);
        return ret;
}

struct fetch_arg {
        const struct stf_watch *w;
        uint32_t shard;
        const void *p;
        size_t len;
};

static int fetch_attempt(void *arg)
{
        const struct fetch_arg *fa = arg;

        return stf_watch_fetch_shard(fa->w, fa->shard, fa->p, fa->len);
}

int stf_watch_fetch_mended(struct stf_watch *w, uint32_t shard, const void *p, size_t len)
{
        struct fetch_arg fa = {w, shard, p, len};

        return stf_watch_retry_shard(w, shard, fetch_attempt, &fa);
}

int stf_watch_mend(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len,
                   uint64_t since, int err)
{
        const struct stf_extent *e;
        int ret = 0;

        if (!w || stf_watch_fault(w, v, off, len))
                return -EIO;
        for (size_t i = stf_view_find(v, off); (e = next_ext(v, off, len, &i));)
                if (stf_watch_mend_shard(w, (uint32_t)e->shard, since, err))
                        ret = -EIO;
        return ret;
}

const char *stf_watch_state(const struct stf_watch *w, uint32_t i)
{
        const struct shard_state *st;
        uint8_t lost;

        if (!w)
                return "ok";
        st = &w->st[i];
        lost = LOAD(st->lost);

        if (lost != KEPT)
                return lost == LOST_WRITTEN ? "written" : "changed";
        if (LOAD(st->size) < w->model->shards[i].size)
                return "truncated";
        return LOAD(st->unreachable) ? "unreachable" : "ok";
}

void stf_watch_status_json(const struct stf_watch *w, struct stf_strbuf *sb)
{
        bool first = true;

        stf_strbuf_puts(sb, "\"shards\": [");
        for (uint32_t i = 0; w && i < w->model->nshards; i++) {
                const struct shard_state *st = &w->st[i];
                const struct stf_shard *s = &w->model->shards[i];
                const char *state = stf_watch_state(w, i);
                int err = LOAD(st->error);

                if (!strcmp(state, "ok") && !LOAD(st->reopens))
                        continue;
                stf_strbuf_puts(sb, first ? "\n  {\"shard\": " : ",\n  {\"shard\": ");
                first = false;
                stf_strbuf_json_str(sb, s->rel, strlen(s->rel));
                stf_strbuf_printf(sb, ", \"fs\": \"%s\", \"state\": \"%s\", \"reopened\": %u, ",
                                  st->fs, state, LOAD(st->reopens));
                if (err) {
                        stf_strbuf_puts(sb, "\"error\": ");
                        stf_strbuf_json_str(sb, strerror(err), strlen(strerror(err)));
                        stf_strbuf_puts(sb, "}");
                } else {
                        stf_strbuf_puts(sb, "\"error\": null}");
                }
        }
        stf_strbuf_printf(sb, "%s], \"check_interval_ms\": %u", first ? "" : "\n ",
                          w ? w->check_ms : 0);
}
