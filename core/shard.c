/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "fstype.h"
#include "pool.h"
#include "shard.h"

#define LFS_POINTER "version https://git-lfs.github.com/spec/"

#define OPEN_THREADS 8

int stf_shard_init(struct stf_shard *s, const char *path)
{
        memset(s, 0, sizeof(*s));
        s->fd = -1;
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        s->name = strrchr(s->path, '/') ? strrchr(s->path, '/') + 1 : s->path;
        s->rel = s->name;
        return 0;
}

static const char *file_kind(mode_t m)
{
        return S_ISFIFO(m)   ? "a FIFO"
               : S_ISDIR(m)  ? "a directory"
               : S_ISCHR(m)  ? "a character device"
               : S_ISBLK(m)  ? "a block device"
               : S_ISSOCK(m) ? "a socket"
                             : "not a file";
}

int stf_open_regular(const char *path, struct stat *st, struct stf_sink *sink)
{
        int fd, ret;

        if (stat(path, st)) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot open: %s", path, strerror(errno));
                return ret;
        }
        if (!S_ISREG(st->st_mode))
                goto out_not_regular;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot open: %s", path, strerror(errno));
                return ret;
        }
        if (fstat(fd, st)) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot stat: %s", path, strerror(errno));
                close(fd);
                return ret;
        }
        if (S_ISREG(st->st_mode))
                return fd;
        close(fd);
out_not_regular:
        stf_sink_report(sink, path, NULL, -1, "%s: not a regular file (%s)", path,
                        file_kind(st->st_mode));
        return -EINVAL;
}

int stf_shard_raise_fd_limit(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl))
                return -errno;
        if (rl.rlim_cur == rl.rlim_max)
                return 0;
        rl.rlim_cur = rl.rlim_max;
        return setrlimit(RLIMIT_NOFILE, &rl) ? -errno : 0;
}

/* The parse budget of one stf_shard_open_all (see STF_PARSE_BUDGET). */
struct budget {
        pthread_mutex_t lock;
        pthread_cond_t freed;
        uint64_t in_flight;
};

static void budget_take(struct budget *b, uint64_t n)
{
        pthread_mutex_lock(&b->lock);
        while (b->in_flight && b->in_flight + n > STF_PARSE_BUDGET)
                pthread_cond_wait(&b->freed, &b->lock);
        b->in_flight += n;
        pthread_mutex_unlock(&b->lock);
}

static void budget_give(struct budget *b, uint64_t n)
{
        pthread_mutex_lock(&b->lock);
        b->in_flight -= n;
        pthread_cond_broadcast(&b->freed);
        pthread_mutex_unlock(&b->lock);
}

/* FNV-1a over 8-byte words (the tail bytewise): a header check, not a secret. */
static uint64_t head_sum(const uint8_t *p, size_t n)
{
        uint64_t h = 0xcbf29ce484222325ull;
        size_t i = 0;

        for (; i + 8 <= n; i += 8)
                h = (h ^ stf_le64(p + i)) * 0x100000001b3ull;
        for (; i < n; i++)
                h = (h ^ p[i]) * 0x100000001b3ull;
        return h;
}

static int shard_open(struct stf_shard *s, struct budget *b, struct stf_sink *sink)
{
        const char *path = s->path;
        struct stat st;
        uint64_t text;
        void *map;
        int ret;

        s->fd = stf_open_regular(path, &st, sink);
        if (s->fd < 0)
                return s->fd;
        s->size = (uint64_t)st.st_size;
        s->mtime = st.st_mtim;
        if (s->size < 8) {
                stf_sink_report(sink, path, NULL, 0,
                                "%s: byte 0: file is %" PRIu64
                                " bytes, too short for the 8-byte header size",
                                path, s->size);
                return -EINVAL;
        }
        map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
        if (map == MAP_FAILED) {
                ret = -errno;
                stf_sink_report(sink, path, NULL, -1, "%s: cannot map: %s", path, strerror(errno));
                return ret;
        }
        s->map = map;
        /* a clone without Git LFS has these ~130-byte text files instead */
        if (s->size < 1024 && s->size >= strlen(LFS_POINTER) &&
            !memcmp(map, LFS_POINTER, strlen(LFS_POINTER))) {
                stf_sink_report(sink, path, NULL, 0,
                                "%s: a Git LFS pointer file, not the weights (the repository "
                                "was cloned without Git LFS: run 'git lfs pull' in it)",
                                path);
                return -EINVAL;
        }
        /* The JSON text the parse will read: the header size, within the file. */
        text = stf_le64(s->map);
        if (text > s->size - 8)
                text = s->size - 8;
        budget_take(b, text);
        ret = stf_header_validate(path, s->map, s->size, s->size, sink, &s->hdr);
        /*
         * The JSON tree is freed, but into this thread's malloc arena, where
         * the next header, parsed on another thread, cannot reuse it: give
         * a big one back before the next parse may start.
         */
        if (text >= STF_PARSE_BUDGET / 8)
                malloc_trim(0);
        budget_give(b, text);
        if (!ret)
                s->head_sum = head_sum(s->map, s->hdr->data_start);
        return ret;
}

bool stf_shard_unchanged(const struct stf_shard *s, const struct stat *st)
{
        return S_ISREG(st->st_mode) && (uint64_t)st->st_size == s->size &&
               st->st_mtim.tv_sec == s->mtime.tv_sec && st->st_mtim.tv_nsec == s->mtime.tv_nsec;
}

/* Does the file @fd begin with the header bytes of @s? 0, -ESTALE or -errno. */
static int same_head(int fd, const struct stf_shard *s)
{
        size_t n = (size_t)s->hdr->data_start, got = 0;
        uint8_t *buf = malloc(n);
        int ret = 0;

        if (!buf)
                return -ENOMEM;
        while (!ret && got < n) {
                ssize_t r = pread(fd, buf + got, n - got, (off_t)got);

                if (r > 0)
                        got += (size_t)r;
                else if (r == 0)
                        ret = -EIO;
                else if (errno != EINTR)
                        ret = -errno;
        }
        if (!ret && head_sum(buf, n) != s->head_sum)
                ret = -ESTALE;
        free(buf);
        return ret;
}

int stf_shard_stat_now(int fd, struct stat *st)
{
        struct statx x;

        if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC,
                  STATX_TYPE | STATX_MODE | STATX_SIZE | STATX_MTIME | STATX_INO, &x) == 0) {
                memset(st, 0, sizeof(*st));
                st->st_mode = x.stx_mode;
                st->st_size = (off_t)x.stx_size;
                st->st_ino = x.stx_ino;
                st->st_mtim.tv_sec = x.stx_mtime.tv_sec;
                st->st_mtim.tv_nsec = x.stx_mtime.tv_nsec;
                return 0;
        }
        if (errno != ENOSYS && errno != EINVAL)
                return -errno;
        return fstat(fd, st) ? -errno : 0;
}

int stf_shard_reopen(struct stf_shard *s)
{
        struct stat st;
        void *map;
        int fd, ret;

        if (!s->map || !s->hdr)
                return -EINVAL;
        fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return -errno;
        ret = stf_shard_stat_now(fd, &st);
        if (ret)
                goto out_close;
        ret = -ESTALE;
        if (!stf_shard_unchanged(s, &st))
                goto out_close;
        ret = same_head(fd, s);
        if (ret)
                goto out_close;
        /* mapped aside first: a file that cannot be mapped leaves the old mapping be */
        map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
                ret = -errno;
                goto out_close;
        }
        if (mremap(map, s->size, s->size, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)s->map) ==
            MAP_FAILED) {
                ret = -errno;
                munmap(map, s->size);
                goto out_close;
        }
        if (s->large) /* the new mapping lacks the advice */
                madvise((void *)s->map, s->size, MADV_HUGEPAGE);
        if (dup3(fd, s->fd, O_CLOEXEC) < 0)
                ret = -errno;
out_close:
        close(fd);
        return ret;
}

void stf_shard_close(struct stf_shard *s)
{
        stf_header_free(s->hdr);
        if (s->map)
                munmap((void *)s->map, s->size);
        if (s->fd >= 0)
                close(s->fd);
        free(s->path);
}

/* Each shard reports into its own held sink, handed on in shard order. */
struct opener {
        struct stf_shard *v;
        int *rets;
        struct stf_held *held;
        struct budget budget;
};

static int open_one(void *ctx, unsigned worker, size_t i)
{
        struct opener *o = ctx;

        o->rets[i] = shard_open(&o->v[i], &o->budget, &o->held[i].sink);
        return o->rets[i];
}

int stf_shard_open_all(struct stf_shard *v, uint32_t n, struct stf_sink *sink)
{
        struct opener o = {.v = v,
                           .budget = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}};
        /* The first problem mode stops at the first failure: no later shard is needed. */
        struct stf_pool pool = {.ntasks = n,
                                .threads = OPEN_THREADS,
                                .task = open_one,
                                .keep_going = stf_sink_all(sink),
                                .ctx = &o};
        int ret = 0;

        if (n == 0)
                return 0;
        if (pool.threads > stf_pool_threads(0))
                pool.threads = stf_pool_threads(0);
        o.rets = calloc(n, sizeof(*o.rets));
        o.held = calloc(n, sizeof(*o.held));
        if (!o.rets || !o.held) {
                ret = -ENOMEM;
                goto out_arrays;
        }
        for (uint32_t i = 0; i < n; i++)
                stf_held_init(&o.held[i], sink);
        stf_pool_run(&pool);
        for (uint32_t i = 0; i < n; i++) {
                int err = stf_held_flush(&o.held[i], sink);

                /* In the check mode a failure with no problem reported is an error. */
                if (!err && o.rets[i] && (!stf_sink_all(sink) || !o.held[i].sink.count))
                        err = o.rets[i];
                if (!ret)
                        ret = err;
                if (ret && !stf_sink_all(sink))
                        break;
        }
out_arrays:
        for (uint32_t i = 0; o.held && i < n; i++)
                stf_held_free(&o.held[i]);
        free(o.held);
        free(o.rets);
        return ret;
}

bool stf_shard_advise_large(struct stf_shard *s)
{
        s->large = s->map && stf_fstype_fd(s->fd, NULL) == 0 &&
                   madvise((void *)s->map, s->size, MADV_HUGEPAGE) == 0;
        return s->large;
}
