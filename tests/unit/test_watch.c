/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/watch: shard sizes kept by the inotify thread, range
 * checks over views of one and of many extents (the binary search), faults
 * naming only the shards that are short, and each shard reported once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include "view.h"
#include "watch.h"
#include "util.h"

#define NT 64 /* tensors of shard a */

struct fixture {
        char *dir, *a, *b;
        struct stf_model *m;
        struct stf_watch *w;
        unsigned said[2], written;
        unsigned events[STF_WATCH_UNREACHABLE + 1]; /* per event, both shards */
        int last_err;
        struct ut_tensor ta[NT];
        char names[NT][16];
};

static void count(void *ctx, const struct stf_shard *s, enum stf_watch_event ev, int err)
{
        struct fixture *f = ctx;

        __atomic_add_fetch(&f->events[ev], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&f->last_err, err, __ATOMIC_RELAXED);
        if (ev == STF_WATCH_REOPENED || ev == STF_WATCH_UNREACHABLE)
                return;
        __atomic_add_fetch(&f->written, ev == STF_WATCH_WRITTEN, __ATOMIC_RELAXED);
        __atomic_add_fetch(&f->said[strcmp(s->name, "a.safetensors") ? 1 : 0], 1, __ATOMIC_RELAXED);
}

/* Shard a: NT tensors of 16 bytes; shard b: one of 32. */
static void setup(struct fixture *f)
{
        static const struct ut_tensor tb[] = {{"b", 32}};
        struct stf_diag diag = {{0}};
        FILE *idx;
        char *p;

        memset(f, 0, sizeof(*f));
        f->dir = ut_mkdtemp();
        for (int i = 0; i < NT; i++) {
                snprintf(f->names[i], sizeof(f->names[i]), "a.%03d", i);
                f->ta[i] = (struct ut_tensor){f->names[i], 16};
        }
        f->a = ut_printf("%s/a.safetensors", f->dir);
        f->b = ut_printf("%s/b.safetensors", f->dir);
        ut_write_st_u8(f->a, f->ta, NT, 1000);
        ut_write_st_u8(f->b, tb, 1, 1000);
        p = ut_printf("%s/model.safetensors.index.json", f->dir);
        idx = fopen(p, "w");
        ck_assert_ptr_nonnull(idx);
        fprintf(idx, "{\"weight_map\": {\"b\": \"b.safetensors\"");
        for (int i = 0; i < NT; i++)
                fprintf(idx, ", \"%s\": \"a.safetensors\"", f->names[i]);
        fprintf(idx, "}}");
        ck_assert_int_eq(fclose(idx), 0);
        free(p);
        ck_assert_int_eq(stf_model_open(f->dir, &f->m, &diag), 0);
        ck_assert_int_eq(stf_watch_new(f->m, NULL, count, f, &f->w), 0);
}

static void teardown(struct fixture *f)
{
        stf_watch_free(f->w);
        stf_model_close(f->m);
        free(f->a);
        free(f->b);
        ut_rmtree(f->dir);
}

static uint32_t shard_of(const struct stf_model *m, const char *file)
{
        for (uint32_t i = 0; i < m->nshards; i++)
                if (!strcmp(m->shards[i].name, file))
                        return i;
        ck_abort_msg("no shard %s", file);
        return 0;
}

/* Wait (5 s at most) for the watcher to see shard @s end before @end. */
static bool wait_short(struct fixture *f, uint32_t s, uint64_t end)
{
        struct timespec tick = {0, 2000000};

        for (int i = 0; i < 2500; i++) {
                if (!stf_watch_covers(f->w, s, end))
                        return true;
                nanosleep(&tick, NULL);
        }
        return false;
}

/* A view of the whole model: every tensor, both shards (full names). */
static struct stf_view *whole(struct fixture *f, struct stf_tree **t)
{
        struct stf_diag diag = {{0}};
        struct stf_view *v;

        ck_assert_int_eq(stf_tree_build_model(f->m, 0, t, &diag), 0);
        ck_assert_int_eq(stf_view_subset(f->m, *t, STF_ROOT_INO, true, &v), 0);
        return v;
}

/* The extent of @v that holds tensor @t's bytes. */
static const struct stf_extent *ext_of(const struct stf_view *v, const struct stf_model *m,
                                       size_t t)
{
        const struct stf_tensor *ts = &m->tensors[t];

        for (size_t i = 0; i < v->n; i++)
                if (v->ext[i].ptr == m->shards[ts->shard].map + ts->begin)
                        return &v->ext[i];
        ck_abort_msg("tensor %zu not in view", t);
        return NULL;
}

START_TEST(test_untouched)
{
        struct fixture f;
        struct stf_tree *t;
        struct stf_view *v;
        uint32_t a;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        ck_assert(stf_watch_covers(f.w, a, f.m->shards[a].size));
        ck_assert(!stf_watch_covers(f.w, a, f.m->shards[a].size + 1));
        ck_assert(stf_watch_covers(NULL, 0, UINT64_MAX));
        v = whole(&f, &t);
        ck_assert(stf_watch_intact(f.w, v, 0, (size_t)v->size));
        ck_assert(stf_watch_intact(NULL, v, 0, (size_t)v->size));
        stf_watch_fault(f.w, v, 0, (size_t)v->size); /* nothing short: nothing said */
        ck_assert_uint_eq(f.said[0] + f.said[1], 0);
        stf_view_free(v);
        stf_tree_free(t);
        teardown(&f);
}
END_TEST

/*
 * Shard a cut in the middle of its data: the watcher thread sees it;
 * ranges before the cut stay intact, ranges over it do not, in a view of
 * many extents; a fault over both shards names a alone, once.
 */
START_TEST(test_truncated)
{
        struct fixture f;
        struct stf_tree *t;
        struct stf_view *v;
        const struct stf_extent *first, *mid, *last;
        size_t half = NT / 2;
        uint32_t a;
        uint64_t cut;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        v = whole(&f, &t);
        first = ext_of(v, f.m, 1);
        mid = ext_of(v, f.m, half);
        last = ext_of(v, f.m, NT - 1);
        cut = (uint64_t)(mid->ptr - f.m->shards[a].map) + 8; /* inside tensor "half" */
        ck_assert_int_eq(truncate(f.a, (off_t)cut), 0);
        ck_assert_msg(wait_short(&f, a, cut + 1), "the watcher never saw the truncation");
        ck_assert(stf_watch_covers(f.w, a, cut));
        ck_assert(stf_watch_intact(f.w, v, first->off, (size_t)first->len));
        ck_assert(stf_watch_intact(f.w, v, 0, (size_t)first->off));
        ck_assert(!stf_watch_intact(f.w, v, mid->off, 1));
        ck_assert(!stf_watch_intact(f.w, v, last->off, (size_t)last->len));
        ck_assert(!stf_watch_intact(f.w, v, first->off, (size_t)(mid->off + 1 - first->off)));
        ck_assert_uint_eq(f.said[0], 0); /* the thread keeps sizes; faults report */
        stf_watch_fault(f.w, v, 0, (size_t)v->size);
        stf_watch_fault(f.w, v, mid->off, 4);
        ck_assert_uint_eq(f.said[0], 1);
        ck_assert_uint_eq(f.said[1], 0);
        stf_watch_fault(f.w, v, first->off, (size_t)first->len); /* intact: nothing */
        ck_assert_uint_eq(f.said[0], 1);
        stf_view_free(v);
        stf_tree_free(t);
        teardown(&f);
}
END_TEST

/*
 * Shard a overwritten in place, same size: the thread reports it at once
 * (written), every range of it is refused, shard b stays intact, and a
 * fault over both says nothing more.
 */
START_TEST(test_written_in_place)
{
        struct timespec tick = {0, 2000000};
        struct fixture f;
        struct stf_tree *t;
        struct stf_view *v;
        const struct stf_extent *first, *bext;
        uint32_t a;
        FILE *fp;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        v = whole(&f, &t);
        first = ext_of(v, f.m, 1);
        bext = ext_of(v, f.m, NT); /* "b" sorts after every a.NNN */
        ck_assert_int_eq(bext->shard, (int32_t)shard_of(f.m, "b.safetensors"));
        fp = fopen(f.a, "r+b");
        ck_assert_ptr_nonnull(fp);
        ck_assert_int_eq(fseek(fp, (long)(first->ptr - f.m->shards[a].map), SEEK_SET), 0);
        ck_assert_uint_eq(fwrite("XXXXXXXX", 1, 8, fp), 8);
        ck_assert_int_eq(fclose(fp), 0);
        for (int i = 0; i < 2500 && !__atomic_load_n(&f.written, __ATOMIC_RELAXED); i++)
                nanosleep(&tick, NULL);
        ck_assert_msg(__atomic_load_n(&f.written, __ATOMIC_RELAXED) == 1,
                      "the watcher never saw the write");
        ck_assert_uint_eq(__atomic_load_n(&f.said[0], __ATOMIC_RELAXED), 1);
        ck_assert(!stf_watch_covers(f.w, a, 1));
        ck_assert(!stf_watch_intact(f.w, v, first->off, 1));
        ck_assert(!stf_watch_intact(f.w, v, ext_of(v, f.m, NT - 1)->off, 1));
        ck_assert(stf_watch_intact(f.w, v, bext->off, (size_t)bext->len));
        stf_watch_refresh(f.w); /* the size on disk is whole: still refused */
        ck_assert(!stf_watch_intact(f.w, v, first->off, 1));
        stf_watch_fault(f.w, v, 0, (size_t)v->size);
        ck_assert_uint_eq(f.said[0], 1);
        ck_assert_uint_eq(f.said[1], 0);
        ck_assert_uint_eq(f.written, 1);
        stf_watch_written(NULL, 0);
        stf_view_free(v);
        stf_tree_free(t);
        teardown(&f);
}
END_TEST

/* Each shard is reported once, and one shard's report does not stand in
 * for another's. */
START_TEST(test_report_once)
{
        struct fixture f;

        setup(&f);
        stf_watch_report(f.w, 0);
        stf_watch_report(f.w, 0);
        ck_assert_uint_eq(f.said[0] + f.said[1], 1);
        stf_watch_report(f.w, 1);
        stf_watch_report(f.w, 1);
        ck_assert_uint_eq(f.said[0], 1);
        ck_assert_uint_eq(f.said[1], 1);
        stf_watch_report(NULL, 0);
        teardown(&f);
}
END_TEST

/* A fault asks the file itself (the thread may not have run yet). */
START_TEST(test_fault_asks_file)
{
        struct fixture f;
        struct stf_view tv;
        uint32_t b;

        setup(&f);
        b = shard_of(f.m, "b.safetensors");
        stf_watch_free(f.w);
        ck_assert_int_eq(stf_watch_new(f.m, NULL, NULL, NULL, &f.w), 0); /* no report function */
        stf_view_init_tensor(&tv, f.m, (size_t)(f.m->ntensors - 1));
        ck_assert_int_eq(tv.one.shard, (int32_t)b);
        ck_assert_int_eq(truncate(f.b, (off_t)(f.m->shards[b].size - 1)), 0);
        stf_watch_fault(f.w, &tv, 0, (size_t)tv.size);
        ck_assert(!stf_watch_intact(f.w, &tv, 0, (size_t)tv.size));
        /* a whole extent is checked: its head is refused too */
        ck_assert(!stf_watch_intact(f.w, &tv, 0, 1));
        stf_view_init_tensor(&tv, f.m, 0); /* shard a: untouched */
        ck_assert(stf_watch_intact(f.w, &tv, 0, (size_t)tv.size));
        /*
         * No check that growing the file back makes it cover again: the
         * growth is itself a write (IN_MODIFY at full size), and whether the
         * watcher thread has seen it before the check is a race. Such a
         * shard is refused once the event is seen (test_written_in_place).
         */
        teardown(&f);
}
END_TEST

/* Copy @path to a new file renamed over it, same bytes and mtime. */
static void same_copy(const char *path)
{
        char *tmp = ut_printf("%s.new", path), buf[4096];
        struct stat st;
        FILE *in = fopen(path, "rb"), *out = fopen(tmp, "wb");
        size_t n;

        ck_assert_ptr_nonnull(in);
        ck_assert_ptr_nonnull(out);
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
                ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
        fclose(in);
        ck_assert_int_eq(fclose(out), 0);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_eq(utimensat(AT_FDCWD, tmp, (struct timespec[2]){st.st_atim, st.st_mtim}, 0),
                         0);
        ck_assert_int_eq(rename(tmp, path), 0);
        free(tmp);
}

/* A new mtime on @path, bytes untouched (no IN_MODIFY: only a check sees it). */
static void touch_mtime(const char *path, time_t mtime)
{
        struct timespec t[2] = {{mtime, 0}, {mtime, 0}};

        ck_assert_int_eq(utimensat(AT_FDCWD, path, t, 0), 0);
}

static bool wait_events(struct fixture *f, enum stf_watch_event ev, unsigned n)
{
        struct timespec tick = {0, 2000000};

        for (int i = 0; i < 2500; i++) {
                if (__atomic_load_n(&f->events[ev], __ATOMIC_RELAXED) >= n)
                        return true;
                nanosleep(&tick, NULL);
        }
        return false;
}

static char *status_of(struct stf_watch *w)
{
        struct stf_strbuf sb = {0};
        char *out;

        stf_watch_status_json(w, &sb);
        ck_assert_int_eq(stf_strbuf_finish(&sb, &out, NULL), 0);
        return out;
}

/*
 * A read failed while the file is fine (a copy put in its place, as a
 * network client that reconnected sees it): one reopen, however many
 * readers failed since the same epoch; a failure right after it is refused
 * (at most one reopen per 100 ms); the status counts it.
 */
START_TEST(test_mend_reopens_once)
{
        struct timespec gap = {0, 150000000};
        struct fixture f;
        uint64_t since;
        uint32_t a;
        char *st;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        since = stf_watch_epoch(f.w);
        same_copy(f.a);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, since, EIO), 0);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, since, EIO), 0); /* reopened since */
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 1);
        ck_assert_int_eq(f.last_err, EIO);
        ck_assert_uint_gt(stf_watch_epoch(f.w), since);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, stf_watch_epoch(f.w), EFAULT), -EIO);
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 1);
        nanosleep(&gap, NULL);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, stf_watch_epoch(f.w), EFAULT), 0);
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 2);
        ck_assert_str_eq(stf_watch_state(f.w, a), "ok");
        ck_assert(stf_watch_covers(f.w, a, f.m->shards[a].size));
        st = status_of(f.w);
        ut_assert_has(st, "{\"shard\": \"a.safetensors\", \"fs\": \"");
        ut_assert_has(st, "\"state\": \"ok\", \"reopened\": 2, \"error\": \"Bad address\"}");
        ck_assert_ptr_null(strstr(st, "b.safetensors")); /* untouched: not listed */
        free(st);
        ck_assert_uint_eq(f.said[0] + f.said[1], 0);
        ck_assert_int_eq(stf_watch_fetch_shard(f.w, a, f.m->shards[a].map, 64), 0); /* local */
        ck_assert_int_eq(stf_watch_mend_shard(NULL, 0, 0, EIO), -EIO);
        teardown(&f);
}
END_TEST

/*
 * The reopen finds another file (mtime): the shard is lost as a whole,
 * reported once as changed (by the thread), every range of it refused,
 * shard b untouched; over a view, mend reopens b and refuses the range.
 */
START_TEST(test_mend_finds_change)
{
        struct fixture f;
        struct stf_tree *t;
        struct stf_view *v;
        const struct stf_extent *bext;
        uint32_t a;
        char *st;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        touch_mtime(f.a, 5000);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, stf_watch_epoch(f.w), EIO), -EIO);
        ck_assert(!stf_watch_covers(f.w, a, 1));
        ck_assert_msg(wait_events(&f, STF_WATCH_CHANGED, 1), "no change reported");
        ck_assert_int_eq(f.last_err, EIO);
        ck_assert_str_eq(stf_watch_state(f.w, a), "changed");
        v = whole(&f, &t);
        bext = ext_of(v, f.m, NT);
        ck_assert(stf_watch_intact(f.w, v, bext->off, (size_t)bext->len));
        ck_assert(!stf_watch_intact(f.w, v, 0, (size_t)v->size));
        ck_assert_int_eq(stf_watch_mend(f.w, v, 0, (size_t)v->size, 0, EIO), -EIO);
        ck_assert_int_eq(stf_watch_mend(f.w, v, bext->off, (size_t)bext->len, 0, EIO), 0);
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 1); /* b */
        ck_assert_uint_eq(f.events[STF_WATCH_CHANGED], 1);
        ck_assert_uint_eq(f.said[0], 1);
        st = status_of(f.w);
        ut_assert_has(st, "\"state\": \"changed\"");
        free(st);
        stf_view_free(v);
        stf_tree_free(t);
        teardown(&f);
}
END_TEST

/* The file is gone: reported unreachable once, reads refused, status says so. */
START_TEST(test_mend_unreachable)
{
        struct timespec gap = {0, 150000000};
        struct fixture f;
        uint32_t a;
        char *st;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        ck_assert_int_eq(unlink(f.a), 0);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, stf_watch_epoch(f.w), EIO), -EIO);
        nanosleep(&gap, NULL);
        ck_assert_int_eq(stf_watch_mend_shard(f.w, a, stf_watch_epoch(f.w), EIO), -EIO);
        ck_assert_uint_eq(f.events[STF_WATCH_UNREACHABLE], 1);
        ck_assert_int_eq(f.last_err, ENOENT);
        ck_assert_str_eq(stf_watch_state(f.w, a), "unreachable");
        st = status_of(f.w);
        ut_assert_has(st, "\"state\": \"unreachable\", \"reopened\": 0, \"error\": \"No such file");
        free(st);
        teardown(&f);
}
END_TEST

/* An attempt that fails @fails times with @err, counting its calls. */
struct attempt {
        int fails, err, calls;
};

static int try_once(void *arg)
{
        struct attempt *a = arg;

        return a->calls++ < a->fails ? -a->err : 0;
}

/*
 * The retry step of prefetch: a failed attempt reopens the shard and is
 * tried once more; a second failure is the result; a shard that cannot be
 * mended is not tried again; no watch, one attempt. stf_watch_lost names a
 * changed shard's state.
 */
START_TEST(test_retry_shard)
{
        struct timespec gap = {0, 150000000};
        struct attempt once = {1, ENOTCONN, 0}, twice = {2, ESTALE, 0}, none = {5, EIO, 0};
        struct fixture f;
        uint32_t a;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        ck_assert_ptr_null(stf_watch_lost(f.w, a, f.m->shards[a].size));
        same_copy(f.a);
        ck_assert_int_eq(stf_watch_retry_shard(f.w, a, try_once, &once), 0);
        ck_assert_int_eq(once.calls, 2);
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 1);
        ck_assert_int_eq(f.last_err, ENOTCONN);
        nanosleep(&gap, NULL);
        ck_assert_int_eq(stf_watch_retry_shard(f.w, a, try_once, &twice), -ESTALE);
        ck_assert_int_eq(twice.calls, 2);
        ck_assert_uint_eq(f.events[STF_WATCH_REOPENED], 2);
        ck_assert_int_eq(stf_watch_retry_shard(NULL, a, try_once, &none), -EIO);
        ck_assert_int_eq(none.calls, 1);
        nanosleep(&gap, NULL);
        touch_mtime(f.a, 5000);
        none.calls = 0;
        ck_assert_int_eq(stf_watch_retry_shard(f.w, a, try_once, &none), -EIO);
        ck_assert_int_eq(none.calls, 1); /* another file: not tried again */
        ck_assert_str_eq(stf_watch_lost(f.w, a, 1), "changed");
        ck_assert_ptr_null(stf_watch_lost(NULL, a, 1));
        teardown(&f);
}
END_TEST

/* The periodic check (every shard, 20 ms) sees a new mtime without inotify's help. */
START_TEST(test_check_sees_change)
{
        struct stf_watch_opts o = {.check_ms = 20, .check_all = true};
        struct fixture f;
        uint32_t a, b;
        char *st;

        setup(&f);
        a = shard_of(f.m, "a.safetensors");
        b = shard_of(f.m, "b.safetensors");
        stf_watch_free(f.w);
        ck_assert_int_eq(stf_watch_new(f.m, &o, count, &f, &f.w), 0);
        touch_mtime(f.b, 7000);
        ck_assert_msg(wait_events(&f, STF_WATCH_CHANGED, 1), "the check never saw the change");
        ck_assert(!stf_watch_covers(f.w, b, 1));
        ck_assert(stf_watch_covers(f.w, a, f.m->shards[a].size));
        ck_assert_uint_eq(f.said[1], 1);
        ck_assert_uint_eq(f.said[0], 0);
        stf_watch_check(f.w); /* again: nothing new */
        ck_assert_uint_eq(f.said[1], 1);
        st = status_of(f.w);
        ut_assert_has(st, "\"check_interval_ms\": 20");
        free(st);
        teardown(&f);
}
END_TEST

static Suite *watch_suite(void)
{
        Suite *s = suite_create("watch");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_untouched);
        tcase_add_test(tc, test_truncated);
        tcase_add_test(tc, test_report_once);
        tcase_add_test(tc, test_written_in_place);
        tcase_add_test(tc, test_fault_asks_file);
        tcase_add_test(tc, test_mend_reopens_once);
        tcase_add_test(tc, test_mend_finds_change);
        tcase_add_test(tc, test_mend_unreachable);
        tcase_add_test(tc, test_retry_shard);
        tcase_add_test(tc, test_check_sees_change);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(watch_suite());
}
