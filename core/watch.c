/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The shard watcher (see watch.h). The thread sleeps in poll() on the
 * inotify descriptor and an eventfd that stf_watch_free signals: it is
 * stopped by asking, never cancelled, so it always leaves through its own
 * return (a cancelled thread's frame is unwound behind the sanitizers'
 * back and left its stack poisoned).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "watch.h"

struct stf_watch {
        const struct stf_model *model;
        stf_watch_report_fn report;
        void *ctx;
        uint64_t *size;   /* per shard: its size now (atomic) */
        uint8_t *said;    /* per shard: reported (atomic) */
        uint8_t *written; /* per shard: written to while mounted (atomic) */
        int *wd;          /* per shard: its inotify watch, or -1 */
        int inotify_fd;   /* -1: none */
        int stop_fd;      /* eventfd: the thread's signal to return */
        pthread_t thread;
        bool running;
};

void stf_watch_refresh(struct stf_watch *w)
{
        for (uint32_t i = 0; i < w->model->nshards; i++) {
                struct stat st;

                if (__atomic_load_n(&w->written[i], __ATOMIC_RELAXED))
                        __atomic_store_n(&w->size[i], 0, __ATOMIC_RELAXED);
                else if (!fstat(w->model->shards[i].fd, &st))
                        __atomic_store_n(&w->size[i], (uint64_t)st.st_size, __ATOMIC_RELAXED);
        }
}

static void say(struct stf_watch *w, uint32_t shard, bool written)
{
        if (__atomic_exchange_n(&w->said[shard], 1, __ATOMIC_RELAXED))
                return;
        if (w->report)
                w->report(w->ctx, &w->model->shards[shard], written);
}

void stf_watch_written(struct stf_watch *w, uint32_t shard)
{
        struct stat st;

        /* a shorter file is a truncation: its lost range alone is refused */
        if (!w || (!fstat(w->model->shards[shard].fd, &st) &&
                   (uint64_t)st.st_size < w->model->shards[shard].size))
                return;
        __atomic_store_n(&w->written[shard], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&w->size[shard], 0, __ATOMIC_RELAXED);
        say(w, shard, true);
}

/* The shards IN_MODIFY events in @buf (@n bytes) name were written to. */
static void note_writes(struct stf_watch *w, const char *buf, ssize_t n)
{
        for (ssize_t at = 0; at + (ssize_t)sizeof(struct inotify_event) <= n;) {
                const struct inotify_event *ev = (const void *)(buf + at);

                if (ev->mask & IN_MODIFY)
                        for (uint32_t i = 0; i < w->model->nshards; i++)
                                if (w->wd[i] == ev->wd)
                                        stf_watch_written(w, i);
                at += (ssize_t)sizeof(*ev) + ev->len;
        }
}

static void *run(void *arg)
{
        struct stf_watch *w = arg;
        char buf[4096] __attribute__((aligned(8)));
        struct pollfd p[2] = {{.fd = w->inotify_fd, .events = POLLIN},
                              {.fd = w->stop_fd, .events = POLLIN}};
        ssize_t n;

        for (;;) {
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return NULL;
                }
                if (p[1].revents)
                        return NULL;
                n = read(w->inotify_fd, buf, sizeof(buf));
                if (n <= 0 && errno != EINTR && errno != EAGAIN)
                        return NULL;
                note_writes(w, buf, n);
                stf_watch_refresh(w);
        }
}

/* Start the thread; without inotify or a thread, sizes stay as they are. */
static void start(struct stf_watch *w)
{
        w->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (w->inotify_fd < 0)
                return;
        w->stop_fd = eventfd(0, EFD_CLOEXEC);
        if (w->stop_fd < 0)
                return;
        for (uint32_t i = 0; i < w->model->nshards; i++)
                w->wd[i] = inotify_add_watch(w->inotify_fd, w->model->shards[i].path,
                                             IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE);
        w->running = pthread_create(&w->thread, NULL, run, w) == 0;
}

int stf_watch_new(const struct stf_model *m, stf_watch_report_fn report, void *ctx,
                  struct stf_watch **out)
{
        struct stf_watch *w = calloc(1, sizeof(*w));

        if (!w)
                return -ENOMEM;
        w->model = m;
        w->report = report;
        w->ctx = ctx;
        w->inotify_fd = w->stop_fd = -1;
        w->size = calloc(m->nshards + 1, sizeof(*w->size));
        w->said = calloc(m->nshards + 1, sizeof(*w->said));
        w->written = calloc(m->nshards + 1, sizeof(*w->written));
        w->wd = calloc(m->nshards + 1, sizeof(*w->wd));
        if (!w->size || !w->said || !w->written || !w->wd) {
                stf_watch_free(w);
                return -ENOMEM;
        }
        for (uint32_t i = 0; i < m->nshards; i++) {
                w->size[i] = m->shards[i].size;
                w->wd[i] = -1;
        }
        start(w);
        *out = w;
        return 0;
}

void stf_watch_free(struct stf_watch *w)
{
        if (!w)
                return;
        if (w->running) {
                uint64_t one = 1;

                while (write(w->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
                        ;
                pthread_join(w->thread, NULL);
        }
        if (w->stop_fd >= 0)
                close(w->stop_fd);
        if (w->inotify_fd >= 0)
                close(w->inotify_fd);
        free(w->said);
        free(w->written);
        free(w->wd);
        free(w->size);
        free(w);
}

bool stf_watch_covers(const struct stf_watch *w, uint32_t shard, uint64_t end)
{
        return !w || end <= __atomic_load_n(&w->size[shard], __ATOMIC_RELAXED);
}

/* The end, in its shard file, of shard extent @e. */
static uint64_t file_end(const struct stf_watch *w, const struct stf_extent *e)
{
        return (uint64_t)(e->ptr - w->model->shards[e->shard].map) + e->len;
}

bool stf_watch_intact(const struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len)
{
        if (!w || len == 0 || v->n == 0)
                return true;
        for (size_t i = stf_view_find(v, off); i < v->n && v->ext[i].off < off + len; i++) {
                const struct stf_extent *e = &v->ext[i];

                if (e->shard >= 0 && !stf_watch_covers(w, (uint32_t)e->shard, file_end(w, e)))
                        return false;
        }
        return true;
}

void stf_watch_report(struct stf_watch *w, uint32_t shard)
{
        if (w)
                say(w, shard, __atomic_load_n(&w->written[shard], __ATOMIC_RELAXED));
}

void stf_watch_fault(struct stf_watch *w, const struct stf_view *v, uint64_t off, size_t len)
{
        if (!w || len == 0 || v->n == 0)
                return;
        for (size_t i = stf_view_find(v, off); i < v->n && v->ext[i].off < off + len; i++) {
                const struct stf_extent *e = &v->ext[i];
                struct stat st;

                if (e->shard < 0)
                        continue;
                if (__atomic_load_n(&w->written[e->shard], __ATOMIC_RELAXED)) {
                        stf_watch_report(w, (uint32_t)e->shard);
                        continue;
                }
                if (!fstat(w->model->shards[e->shard].fd, &st)) {
                        if ((uint64_t)st.st_size >= file_end(w, e))
                                continue;
                        __atomic_store_n(&w->size[e->shard], (uint64_t)st.st_size,
                                         __ATOMIC_RELAXED);
                }
                stf_watch_report(w, (uint32_t)e->shard);
        }
}
