/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Malformed (and a few sound) models with their expected results, as
 * jansson's test suites keep them: CASES_DIR/NAME.safetensors or a model
 * directory CASES_DIR/NAME/, and CASES_DIR/NAME.expect holding either "ok"
 * or a fragment the refusal message must contain.
 *
 *   fuzz_cases [--no-rss] CASES_DIR
 *
 * A directory case is opened through its model.safetensors.index.json when
 * it has one, else as a directory. Besides the files, a few cases too big
 * to commit are written to a scratch directory at run time (gens[] below:
 * 100 MB headers, and the JSON tree amplification of KNOWN).
 *
 * Each case runs in a child process: stf_model_open, then for a sound model
 * the tree, and stf_model_check, whose first problem must be the refusal
 * message word for word (stfsctl verify prints the line stfs would). The
 * parent compares the result with the expectation and bounds the child's
 * peak RSS (getrusage through wait4):
 *
 *     peak RSS <= RSS_SLACK + RSS_FACTOR x (bytes of the case's files)
 *
 * that is 64 MiB + 3 x the input size. The RSS counts the pages of the
 * mapped file that were touched as well as the heap (jansson's tree of the
 * header, the tensor table). --no-rss leaves the bound out: meson passes it
 * to sanitized builds, whose allocator keeps freed memory in quarantine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "model.h"
#include "tree.h"

#define RSS_SLACK (64ull << 20)
#define RSS_FACTOR 3ull

static bool check_rss = true;

struct result {
        int ret;
        char msg[STF_DIAG_MAX];   /* stf_model_open's diagnostic */
        char first[STF_DIAG_MAX]; /* stf_model_check's first problem */
        size_t nproblems;
        int check_ret, tree_ret;
};

static void first_problem(void *ctx, const struct stf_problem *p)
{
        struct result *r = ctx;

        if (r->nproblems++ == 0)
                snprintf(r->first, sizeof(r->first), "%s", p->msg);
}

/* In the child: open, build the tree, check. */
static void run_case(const char *source, struct result *r)
{
        struct stf_diag d = {{0}};
        struct stf_model *m = NULL;
        struct stf_tree *t = NULL;

        memset(r, 0, sizeof(*r));
        r->ret = stf_model_open(source, &m, &d);
        snprintf(r->msg, sizeof(r->msg), "%s", r->ret ? d.msg : "ok");
        if (!r->ret) {
                r->tree_ret = stf_tree_build_model(m, 0, &t, &d);
                stf_tree_free(t);
                stf_model_close(m);
        }
        r->check_ret = stf_model_check(source, first_problem, r, NULL);
}

static uint64_t path_bytes(const char *path)
{
        struct stat st;
        uint64_t sum = 0;
        DIR *d;
        struct dirent *de;

        if (stat(path, &st))
                return 0;
        if (!S_ISDIR(st.st_mode))
                return (uint64_t)st.st_size;
        d = opendir(path);
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                char *p;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
                    asprintf(&p, "%s/%s", path, de->d_name) < 0)
                        continue;
                sum += path_bytes(p);
                free(p);
        }
        closedir(d);
        return sum;
}

/*
 * Run one case; returns 0 when it went as @expect says. @label names it in
 * the output.
 */
static int check_case(const char *label, const char *source, const char *expect, uint64_t factor)
{
        struct result r;
        struct rusage ru;
        struct timespec t0, t1;
        uint64_t bytes = path_bytes(source), rss, bound;
        int pfd[2], status, bad = 0;
        ssize_t got = 0;
        pid_t pid;

        if (pipe(pfd))
                return -1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                close(pfd[0]);
                run_case(source, &r);
                if (write(pfd[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
                        _exit(3);
                _exit(0);
        }
        close(pfd[1]);
        while (got < (ssize_t)sizeof(r)) {
                ssize_t n = read(pfd[0], (char *)&r + got, sizeof(r) - (size_t)got);

                if (n <= 0)
                        break;
                got += n;
        }
        close(pfd[0]);
        if (wait4(pid, &status, 0, &ru) != pid)
                return -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        rss = (uint64_t)ru.ru_maxrss * 1024;
        bound = RSS_SLACK + factor * bytes;
        if (!WIFEXITED(status) || WEXITSTATUS(status) || got != (ssize_t)sizeof(r)) {
                printf("FAIL %s: the child died (status 0x%x)\n", label, status);
                return 1;
        }
        if (!strcmp(expect, "ok")) {
                if (r.ret || r.tree_ret || r.check_ret || r.nproblems) {
                        printf("FAIL %s: expected ok, got %d (%s); tree %d; check %d, %zu "
                               "problems\n",
                               label, r.ret, r.msg, r.tree_ret, r.check_ret, r.nproblems);
                        bad = 1;
                }
        } else {
                if (!r.ret || !strstr(r.msg, expect)) {
                        printf("FAIL %s: expected a refusal with \"%s\", got %d: %s\n", label,
                               expect, r.ret, r.msg);
                        bad = 1;
                }
                for (const char *c = r.msg; *c; c++) {
                        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                                printf("FAIL %s: a control byte in the message\n", label);
                                bad = 1;
                                break;
                        }
                }
                if (r.ret == -ENOMEM) {
                        printf("FAIL %s: ENOMEM for a malformed input\n", label);
                        bad = 1;
                }
                if (!r.check_ret || !r.nproblems || strcmp(r.first, r.msg)) {
                        printf("FAIL %s: stf_model_check disagrees: %d, %zu problems, first "
                               "\"%s\"\n",
                               label, r.check_ret, r.nproblems, r.first);
                        bad = 1;
                }
        }
        if (check_rss && rss > bound) {
                printf("FAIL %s: peak RSS %llu KiB over the bound %llu KiB (input %llu bytes)\n",
                       label, (unsigned long long)rss >> 10, (unsigned long long)bound >> 10,
                       (unsigned long long)bytes);
                bad = 1;
        }
        printf("%s %s: %s [%.2f s, peak RSS %llu KiB, input %llu bytes]\n", bad ? "not ok" : "ok",
               label, r.msg,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
               (unsigned long long)rss >> 10, (unsigned long long)bytes);
        fflush(stdout);
        return bad;
}

static char *read_expect(const char *path)
{
        FILE *f = fopen(path, "r");
        char buf[STF_DIAG_MAX];
        size_t n;

        if (!f)
                return NULL;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = '\0';
        return n ? strdup(buf) : NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
        size_t a = strlen(s), b = strlen(suffix);

        return a >= b && !strcmp(s + a - b, suffix);
}

static int skip_hidden(const struct dirent *de)
{
        return de->d_name[0] != '.';
}

/* The committed cases. Returns the number of failures; -1 on a setup error. */
static int run_dir(const char *dir, int *count)
{
        struct dirent **ents;
        int n = scandir(dir, &ents, skip_hidden, alphasort), fails = 0;

        if (n < 0) {
                fprintf(stderr, "fuzz_cases: %s: %s\n", dir, strerror(errno));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                const char *e = ents[i]->d_name;
                char *name = NULL, *st = NULL, *sub = NULL, *idx = NULL, *ex = NULL, *expect;
                struct stat sb;
                const char *source = NULL;

                if (!ends_with(e, ".expect")) {
                        /* Every input has its expectation. */
                        char *p = NULL;

                        if (asprintf(&p, "%s/%.*s.expect", dir,
                                     (int)(strlen(e) - (ends_with(e, ".safetensors") ? 12 : 0)),
                                     e) >= 0 &&
                            access(p, F_OK)) {
                                printf("FAIL %s: no .expect file for it\n", e);
                                fails++;
                        }
                        free(p);
                        free(ents[i]);
                        continue;
                }
                name = strndup(e, strlen(e) - strlen(".expect"));
                if (!name || asprintf(&ex, "%s/%s", dir, e) < 0 ||
                    asprintf(&st, "%s/%s.safetensors", dir, name) < 0 ||
                    asprintf(&sub, "%s/%s", dir, name) < 0 ||
                    asprintf(&idx, "%s/%s/model.safetensors.index.json", dir, name) < 0)
                        return -1;
                expect = read_expect(ex);
                if (!stat(st, &sb))
                        source = st;
                else if (!stat(sub, &sb) && S_ISDIR(sb.st_mode))
                        source = access(idx, F_OK) ? sub : idx;
                if (!expect || !source) {
                        printf("FAIL %s: %s\n", name,
                               expect ? "no NAME.safetensors or NAME/ beside NAME.expect"
                                      : "empty or unreadable .expect");
                        fails++;
                } else {
                        int r = check_case(name, source, expect, RSS_FACTOR);

                        if (r < 0)
                                return -1;
                        fails += r;
                        ++*count;
                }
                free(expect);
                free(name);
                free(ex);
                free(st);
                free(sub);
                free(idx);
                free(ents[i]);
        }
        free(ents);
        return fails;
}

/* ---- generated cases: too big to commit -------------------------------- */

/*
 * A generated header: @head, then @fill repeated (a byte) or @unit (a
 * printf format of one %llu, the unit's number) until about @total bytes,
 * then @tail. @factor: the case's RSS factor (see KNOWN below).
 */
struct gen {
        const char *label;
        const char *head;
        char fill;
        const char *unit;
        uint64_t total;
        const char *tail;
        const char *expect;
        uint64_t factor;
};

#define BIG 100000000ull /* STF_HEADER_MAX: headers at the limit */

/*
 * KNOWN: jansson builds the whole JSON tree of a header before any format
 * rule is checked, and a node costs 20 to 80 times the bytes of its text
 * (measured: "1," 20x, "[]," 45x, "{}," 78x; a zero-size tensor entry 19x).
 * These cases are sized at 1-2 MB and bounded at RSS_SLACK + 100 x input,
 * which catches a regression but is no claim of a small bound: at the
 * 100 MB header limit the same headers take 2 to 8 GB.
 */
#define KNOWN 100ull

static const struct gen gens[] = {
    /* 100 MB of '[': jansson's depth limit (2048) refuses it at byte 2057. */
    {"gen-100MB-brackets", "", '[', NULL, BIG, "", "maximum parsing depth", RSS_FACTOR},
    /* JSON whitespace around {} up to the limit is sound. */
    {"gen-100MB-whitespace", "{", ' ', NULL, BIG, "}", "ok", RSS_FACTOR},
    /* One 100 MB metadata string: sound. */
    {"gen-100MB-metadata-string", "{\"__metadata__\":{\"k\":\"", 'x', NULL, BIG, "\"}}", "ok",
     RSS_FACTOR},
    /* 100 MB of ',' inside an array: a syntax error at once. */
    {"gen-100MB-commas", "{\"__metadata__\":{\"k\":[1", ',', NULL, BIG, "]}}", "not valid JSON",
     RSS_FACTOR},
    /* DOM amplification (KNOWN): each unit is a JSON node. */
    {"gen-1MB-metadata-objects", "{\"__metadata__\":{\"k\":[", 0, "{},", 1000000, "{}]}}",
     "is not a string", KNOWN},
    {"gen-1MB-metadata-arrays", "{\"__metadata__\":{\"k\":[", 0, "[],", 1000000, "[]]}}",
     "is not a string", KNOWN},
    {"gen-1MB-shape-dims", "{\"t\":{\"dtype\":\"U8\",\"data_offsets\":[0,0],\"shape\":[", 0, "1,",
     1000000, "0]}}", "ok", KNOWN},
    {"gen-2MB-zero-size-tensors", "{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
     0, ",\"t%llu\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}", 2000000, "}", "ok",
     KNOWN},
};

static bool put_le64(FILE *f, uint64_t n)
{
        uint8_t le[8];

        stf_put_le64(le, n);
        return fwrite(le, 8, 1, f) == 1;
}

static int write_gen(const char *path, const struct gen *g)
{
        FILE *f = fopen(path, "w");
        bool ok;

        if (!f)
                return -1;
        if (!g->unit) {
                static char chunk[1 << 20];
                uint64_t left = g->total - strlen(g->head) - strlen(g->tail);

                memset(chunk, g->fill, sizeof(chunk));
                ok = put_le64(f, g->total) && fputs(g->head, f) >= 0;
                while (ok && left) {
                        size_t k = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);

                        ok = fwrite(chunk, 1, k, f) == k;
                        left -= k;
                }
                ok = ok && fputs(g->tail, f) >= 0;
        } else {
                /* Small enough to build in memory, so the size is known first. */
                char *buf = malloc(g->total + 256), *p = buf;
                size_t tl = strlen(g->tail);

                ok = buf != NULL;
                if (ok)
                        p = stpcpy(buf, g->head);
                for (unsigned long long i = 0; ok && (uint64_t)(p - buf) + tl < g->total; i++)
                        p += sprintf(p, g->unit, i);
                if (ok) {
                        p = stpcpy(p, g->tail);
                        ok = put_le64(f, (uint64_t)(p - buf)) &&
                             fwrite(buf, 1, (size_t)(p - buf), f) == (size_t)(p - buf);
                }
                free(buf);
        }
        return fclose(f) == 0 && ok ? 0 : -1;
}

static int run_generated(int *count)
{
        const char *tmp = getenv("TMPDIR");
        char *dir = NULL, *path = NULL;
        int fails = 0;

        if (asprintf(&dir, "%s/stfs-cases-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0 ||
            !mkdtemp(dir) || asprintf(&path, "%s/big.safetensors", dir) < 0)
                return -1;
        for (size_t i = 0; i < sizeof(gens) / sizeof(gens[0]); i++) {
                int r = write_gen(path, &gens[i]);

                if (!r)
                        r = check_case(gens[i].label, path, gens[i].expect, gens[i].factor);
                unlink(path);
                if (r < 0) {
                        fails = -1;
                        break;
                }
                fails += r;
                ++*count;
        }
        rmdir(dir);
        free(path);
        free(dir);
        return fails;
}

int main(int argc, char **argv)
{
        int count = 0, fails, gfails;

        if (argc == 3 && !strcmp(argv[1], "--no-rss")) {
                check_rss = false;
                argv++;
                argc--;
        }
        if (argc != 2) {
                fprintf(stderr, "usage: %s [--no-rss] CASES_DIR\n", argv[0]);
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        fails = run_dir(argv[1], &count);
        gfails = fails < 0 ? 0 : run_generated(&count);
        if (fails < 0 || gfails < 0) {
                fprintf(stderr, "fuzz_cases: setup error: %s\n", strerror(errno));
                return 1;
        }
        if (check_rss)
                printf("%d cases, %d failed; RSS bound %llu MiB + %llu x input\n", count,
                       fails + gfails, RSS_SLACK >> 20, RSS_FACTOR);
        else
                printf("%d cases, %d failed; RSS not checked\n", count, fails + gfails);
        return fails + gfails || count == 0 ? 1 : 0;
}
