/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every allocation of the parsers, failed in turn (jansson's test suite has
 * the same idea): for N = 1, 2, ... run a parser entry with its Nth
 * allocation failing, until a run makes fewer than N allocations; then the
 * same with every allocation from the Nth on failing (memory that stays
 * short, where cleanup code must not need any). Each run must return 0 or
 * -ENOMEM (out of memory is never reported as a malformed file, and a
 * check never reports fewer problems as if that were all of them), leave
 * its outputs NULL on failure, and leak nothing.
 *
 * Allocations are counted where core/ makes them: this executable is linked
 * with -Wl,--wrap for malloc, calloc, realloc, free, strdup, strndup and
 * asprintf (meson.build), which redirects the calls of core/ and of this
 * file, and jansson's go through json_set_alloc_funcs. Allocations inside
 * libc (opendir, pthread_create) are not counted or failed. A leak is seen
 * by the count of live blocks, so it works without valgrind or ASan (and
 * under them).
 *
 * Entries walked: stf_header_parse, stf_index_parse, stf_model_open on a
 * generated 3-shard model (through its index and through its directory),
 * stf_model_check on it and on a broken copy, stf_tree_build in both
 * modes, stf_select.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_helpers.h"
#include "index.h"
#include "model.h"
#include "select.h"
#include "tree.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_asprintf(char **out, const char *fmt, ...);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);

static atomic_long calls;   /* allocations since the last reset */
static atomic_long live;    /* blocks allocated and not freed */
static atomic_long fail_at; /* the call to fail (1-based); 0: none */
static atomic_bool fail_on; /* and every one after it (memory stays short) */
static atomic_bool failed;  /* the failure was injected */

/* Should this allocation fail? Counts it. */
static bool fail_now(void)
{
        long n = atomic_fetch_add(&calls, 1) + 1, at = atomic_load(&fail_at);

        if (at && (n == at || (n > at && atomic_load(&fail_on)))) {
                atomic_store(&failed, true);
                return true;
        }
        return false;
}

static void *counted(void *p)
{
        if (p)
                atomic_fetch_add(&live, 1);
        return p;
}

void *__wrap_malloc(size_t n)
{
        return fail_now() ? NULL : counted(__real_malloc(n));
}

void *__wrap_calloc(size_t n, size_t size)
{
        return fail_now() ? NULL : counted(__real_calloc(n, size));
}

void *__wrap_realloc(void *p, size_t n)
{
        void *q;

        if (fail_now())
                return NULL;
        q = __real_realloc(p, n);
        if (!p)
                return counted(q);
        if (n == 0 && !q)
                atomic_fetch_sub(&live, 1); /* glibc: realloc(p, 0) frees p */
        return q;
}

void __wrap_free(void *p)
{
        if (p)
                atomic_fetch_sub(&live, 1);
        __real_free(p);
}

char *__wrap_strdup(const char *s)
{
        return fail_now() ? NULL : counted(__real_strdup(s));
}

char *__wrap_strndup(const char *s, size_t n)
{
        return fail_now() ? NULL : counted(__real_strndup(s, n));
}

int __wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
        int r;

        if (fail_now())
                return -1;
        r = __real_vasprintf(out, fmt, ap);
        if (r >= 0)
                counted(*out);
        return r;
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = __wrap_vasprintf(out, fmt, ap);
        va_end(ap);
        return r;
}

/* jansson's allocator: the same counting. */
static void *json_alloc(size_t n)
{
        return __wrap_malloc(n);
}

static void json_release(void *p)
{
        __wrap_free(p);
}

/* ---- the walk ---------------------------------------------------------- */

/*
 * One entry under test: runs it, checks what it made against a good run
 * (@good true the first time: no failure injected), frees it. Returns its
 * result.
 */
typedef int (*entry_fn)(void *ctx, bool good);

static int failures;

static void walk_mode(const char *name, entry_fn fn, void *ctx, bool on)
{
        const char *only = getenv("FAILALLOC_ONLY");
        long base, n, total;
        int ret;

        if (only && strcmp(only, name))
                return;
        atomic_store(&fail_on, on);
        atomic_store(&fail_at, 0);
        atomic_store(&calls, 0);
        ret = fn(ctx, true);
        total = atomic_load(&calls);
        if (ret) {
                printf("not ok %s: fails without an injected failure: %d\n", name, ret);
                failures++;
                return;
        }
        for (n = 1;; n++) {
                base = atomic_load(&live);
                atomic_store(&failed, false);
                atomic_store(&calls, 0);
                atomic_store(&fail_at, n);
                ret = fn(ctx, false);
                atomic_store(&fail_at, 0);
                if (!atomic_load(&failed))
                        break; /* fewer than n allocations: walked them all */
                if (ret != 0 && ret != -ENOMEM) {
                        printf("not ok %s: allocation %ld%s failed: returned %d, not -ENOMEM\n",
                               name, n, on ? " and on" : "", ret);
                        failures++;
                }
                if (atomic_load(&live) != base) {
                        printf("not ok %s: allocation %ld%s failed: %ld blocks leaked\n", name, n,
                               on ? " and on" : "", atomic_load(&live) - base);
                        failures++;
                }
        }
        printf("ok %s: %ld allocations (%ld in the first run), each failed %s\n", name, n - 1,
               total, on ? "with every one after it" : "alone");
}

/* Fail each allocation alone, then each with every one after it. */
static void walk(const char *name, entry_fn fn, void *ctx)
{
        walk_mode(name, fn, ctx, false);
        walk_mode(name, fn, ctx, true);
}

/* Did the entry fail cleanly, or succeed despite the failure with the same result? */
static int settle(const char *name, bool good, int ret, const char *msg, bool same)
{
        if (ret == -ENOMEM && !strstr(msg, "out of memory") && msg[0]) {
                /* A diag that blames the input would mislead: allowed only empty or "out of
                 * memory". */
                printf("not ok %s: -ENOMEM with the message '%s'\n", name, msg);
                failures++;
        }
        if (!ret && !same) {
                printf("not ok %s: succeeded%s with a different result\n", name,
                       good ? "" : " after a failed allocation");
                if (getenv("FAILALLOC_DEBUG"))
                        abort();
                failures++;
        }
        if (ret && ret != -ENOMEM)
                printf("# %s: %d: %s\n", name, ret, msg);
        return ret;
}

/* stf_header_parse */
struct buf {
        uint8_t *p;
        size_t len;
        size_t ntensors;
};

static int run_header(void *ctx, bool good)
{
        struct buf *b = ctx;
        struct stf_diag d = {{0}};
        struct stf_header *h = (void *)1;
        int ret = stf_header_parse("f.safetensors", b->p, b->len, b->len, &h, &d);

        if (ret && h) {
                printf("not ok header: output set on failure\n");
                failures++;
        }
        ret = settle("stf_header_parse", good, ret, d.msg, ret || h->ntensors == b->ntensors);
        stf_header_free(ret ? NULL : h);
        return ret;
}

/* stf_index_parse */
static const char index_text[] =
    "{\"metadata\":{\"total_size\":16},\"weight_map\":{\"a.w\":\"s-1.safetensors\","
    "\"a.b\":\"s-1.safetensors\",\"b.w\":\"s-2.safetensors\",\"c.w\":\"s-3.safetensors\"}}";

static int run_index(void *ctx, bool good)
{
        json_t *wm = NULL, *names = NULL, *meta = NULL;
        struct stf_diag d = {{0}};
        int ret = stf_index_parse("i.json", index_text, strlen(index_text), &wm, &names, &meta, &d);

        ret = settle("stf_index_parse", good, ret, d.msg, ret || json_array_size(names) == 3);
        json_decref(wm);
        json_decref(names);
        json_decref(meta);
        return ret;
}

/* stf_model_open and stf_model_check */
struct model_ctx {
        const char *source;
        size_t ntensors;
        bool check;       /* stf_model_check instead of stf_model_open */
        size_t nproblems; /* check: problems of a sound run */
        size_t seen;
};

static void count_problem(void *ctx, const struct stf_problem *p)
{
        ((struct model_ctx *)ctx)->seen++;
}

static int run_model(void *ctx, bool good)
{
        struct model_ctx *c = ctx;
        struct stf_diag d = {{0}};
        struct stf_model *m = (void *)1;
        int ret;

        if (!c->check) {
                ret = stf_model_open(c->source, &m, &d);
                if (ret && m) {
                        printf("not ok stf_model_open: output set on failure\n");
                        failures++;
                }
                ret = settle("stf_model_open", good, ret, d.msg, ret || m->ntensors == c->ntensors);
                stf_model_close(ret ? NULL : m);
                return ret;
        }
        c->seen = 0;
        ret = stf_model_check(c->source, count_problem, c, NULL);
        if (good)
                c->nproblems = c->seen;
        /* A broken model: -EINVAL with every problem is its good result. */
        if (ret == -EINVAL && c->nproblems && c->seen == c->nproblems)
                return 0;
        if (ret == -EINVAL && !good && c->seen < c->nproblems) {
                printf("not ok stf_model_check(%s): a failed allocation lost problems "
                       "(%zu of %zu) but returned -EINVAL, not -ENOMEM\n",
                       c->source, c->seen, c->nproblems);
                failures++;
                return 0;
        }
        return settle("stf_model_check", good, ret, "", ret || c->seen == c->nproblems);
}

/* stf_tree_build */
static const char *const tree_names[] = {
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.10.mlp.up_proj.weight",
    "model.layers.2.mlp.up_proj.weight",
    "a.b",
    "a.b.c",
    "x..y",
    ".lead",
    "p%q/r",
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLLL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "L.a",
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LLL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LL"
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
    "LX.a",
};

static int run_tree(void *ctx, bool good)
{
        size_t n = sizeof(tree_names) / sizeof(tree_names[0]);
        struct stf_tree_entry e[sizeof(tree_names) / sizeof(tree_names[0]) * 2];
        unsigned flags = *(unsigned *)ctx;
        struct stf_diag d = {{0}};
        struct stf_tree *t = (void *)1;
        int ret;

        for (size_t i = 0; i < n; i++) {
                e[i] = (struct stf_tree_entry){NULL, tree_names[i], strlen(tree_names[i])};
                e[n + i] =
                    (struct stf_tree_entry){"unet/sub", tree_names[i], strlen(tree_names[i])};
        }
        ret = stf_tree_build(e, 2 * n, flags, &t, &d);
        if (ret && t) {
                printf("not ok stf_tree_build: output set on failure\n");
                failures++;
        }
        ret = settle(flags ? "stf_tree_build(flat)" : "stf_tree_build", good, ret, d.msg,
                     ret || stf_tree_tensor_ino(t, 2 * n - 1) != 0);
        stf_tree_free(ret ? NULL : t);
        return ret;
}

/* stf_select on the model opened once */
struct select_ctx {
        struct stf_model *m;
        struct stf_tree *t;
};

static int run_select(void *ctx, bool good)
{
        struct select_ctx *c = ctx;
        static const char text[] = "a.* b/w c.w";
        uint32_t *v = NULL;
        size_t n = 0;
        int ret = stf_select(c->m, c->t, text, sizeof(text), &v, &n);

        ret = settle("stf_select", good, ret, "", ret || n == 4);
        free(v);
        return ret;
}

/* ---- the model on disk --------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

static void put(const char *dir, const char *name, const void *data, size_t len)
{
        char *p = join(dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd)) {
                perror(p);
                exit(1);
        }
        free(p);
}

static void put_shard(const char *dir, const char *name, const char *const *names,
                      const size_t *sizes, size_t n)
{
        size_t len;
        uint8_t *b = fuzz_st_build(names, sizes, n, &len);

        if (!b)
                abort();
        put(dir, name, b, len);
        free(b);
}

static void make_model(const char *dir, bool broken)
{
        static const char *const s1[] = {"a.w", "a.b"}, *const s2[] = {"b.w"},
                                 *const s3[] = {"c.w"}, *const s3x[] = {"c.w", "c.x"};
        static const size_t z1[] = {2, 1}, z2[] = {4}, z3[] = {2, 3};

        put(dir, "model.safetensors.index.json", index_text, strlen(index_text));
        put_shard(dir, "s-1.safetensors", s1, z1, 2);
        put_shard(dir, "s-2.safetensors", s2, z2, 1);
        /* broken: one tensor the index does not list, one shard unreadable */
        put_shard(dir, "s-3.safetensors", broken ? s3x : s3, z3, broken ? 2 : 1);
        if (broken)
                put(dir, "s-2.safetensors", "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
}

static void rm_model(const char *dir)
{
        static const char *const files[] = {"model.safetensors.index.json", "s-1.safetensors",
                                            "s-2.safetensors", "s-3.safetensors"};

        for (size_t i = 0; i < 4; i++) {
                char *p = join(dir, files[i]);

                unlink(p);
                free(p);
        }
        rmdir(dir);
}

int main(void)
{
        const char *tmp = getenv("TMPDIR");
        char *dir, *bad, *idx;
        struct buf hb;
        struct stf_diag d;
        struct select_ctx sc;
        unsigned tree_mode = 0, flat_mode = STF_TREE_FLAT;
        static const char *const hn[] = {"model.embed_tokens.weight", "model.norm.weight",
                                         "lm_head.weight", "x"};
        static const size_t hz[] = {8, 4, 8, 0};

        setvbuf(stdout, NULL, _IOLBF, 0);
        json_set_alloc_funcs(json_alloc, json_release);
        if (asprintf(&dir, "%s/stfs-failalloc-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0 ||
            !mkdtemp(dir) ||
            asprintf(&bad, "%s/stfs-failalloc-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0 ||
            !mkdtemp(bad))
                return 1;
        make_model(dir, false);
        make_model(bad, true);
        idx = join(dir, "model.safetensors.index.json");

        hb.p = fuzz_st_build(hn, hz, 4, &hb.len);
        hb.ntensors = 4;
        walk("stf_header_parse", run_header, &hb);
        walk("stf_index_parse", run_index, NULL);
        walk("stf_model_open(index)", run_model, &(struct model_ctx){idx, 4, false, 0, 0});
        walk("stf_model_open(directory)", run_model, &(struct model_ctx){dir, 4, false, 0, 0});
        walk("stf_model_check(sound)", run_model, &(struct model_ctx){dir, 4, true, 0, 0});
        walk("stf_model_check(broken)", run_model, &(struct model_ctx){bad, 0, true, 0, 0});
        walk("stf_tree_build", run_tree, &tree_mode);
        walk("stf_tree_build(flat)", run_tree, &flat_mode);
        if (stf_model_open(dir, &sc.m, &d) || stf_tree_build_model(sc.m, 0, &sc.t, &d)) {
                printf("not ok setup: %s\n", d.msg);
                return 1;
        }
        walk("stf_select", run_select, &sc);
        stf_tree_free(sc.t);
        stf_model_close(sc.m);

        free(hb.p);
        free(idx);
        rm_model(dir);
        rm_model(bad);
        free(dir);
        free(bad);
        printf("%s: %d problems\n", failures ? "FAIL" : "PASS", failures);
        return failures ? 1 : 0;
}
