/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inspect and verify: look into and vet a safetensors model without
 * mounting it. They read the files with the same parser as stfs.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "describe.h"
#include "model.h"
#include "scan.h"
#include "strbuf.h"
#include "summary.h"
#include "text.h"

/*
 * The deepest module tree level shown: a hostile name of a million parts
 * would otherwise print paths quadratic in its length. Real models have
 * about ten.
 */
#define MAX_DEPTH 64

static const char *prog = "stfsctl";

static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void err(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", prog);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* ------------------------------------------------------------ formatting */

/* @v with thousands separators. */
static const char *grouped(uint64_t v, char *buf, size_t cap)
{
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
        size_t o = 0;

        for (int i = 0; i < n && o + 2 < cap; i++) {
                if (i && (n - i) % 3 == 0)
                        buf[o++] = ',';
                buf[o++] = tmp[i];
        }
        buf[o] = '\0';
        return buf;
}

/* Three significant digits and a unit: "614 K", "7.50 B", "1.17 MiB". */
static const char *scaled(uint64_t v, unsigned base, const char *const *units, char *buf,
                          size_t cap)
{
        double x = (double)v;
        unsigned u = 0;

        while (x >= base && units[u + 1]) {
                x /= base;
                u++;
        }
        if (u == 0)
                snprintf(buf, cap, "%" PRIu64 "%s%s", v, *units[0] ? " " : "", units[0]);
        else
                snprintf(buf, cap,
                         x < 10    ? "%.2f %s"
                         : x < 100 ? "%.1f %s"
                                   : "%.0f %s",
                         x, units[u]);
        return buf;
}

static const char *human_params(uint64_t v, char *buf, size_t cap)
{
        static const char *const units[] = {"", "K", "M", "B", "T", NULL};

        return scaled(v, 1000, units, buf, cap);
}

const char *ctl_human_bytes(uint64_t v, char *buf, size_t cap)
{
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", NULL};

        return scaled(v, 1024, units, buf, cap);
}

static void json_cstr(struct stf_strbuf *sb, const char *s)
{
        stf_strbuf_json_str(sb, s, strlen(s));
}

static int write_all(struct stf_strbuf *sb)
{
        char *text;
        size_t len;

        if (stf_strbuf_finish(sb, &text, &len)) {
                err("out of memory");
                return CTL_EXIT_USAGE;
        }
        fwrite(text, 1, len, stdout);
        free(text);
        return 0;
}

/* The tensor's display name: "NAME", or "COMPONENT/NAME" with several. */
static void put_tensor_name(FILE *f, const struct stf_model *m, const struct stf_tensor *t)
{
        if (m->ncomps > 1) {
                stf_text_put(f, m->comps[t->comp].name, strlen(m->comps[t->comp].name));
                fputc('/', f);
        }
        stf_text_put(f, t->name, t->name_len);
}

static void json_tensor_name(struct stf_strbuf *sb, const struct stf_model *m,
                             const struct stf_tensor *t)
{
        stf_strbuf_json_str(sb, t->name, t->name_len);
        stf_strbuf_puts(sb, ", \"component\": ");
        json_cstr(sb, m->comps[t->comp].name);
}

/*
 * Open @source for inspect/verify --scan, printing the parser's one line.
 * Every set of a folder (variants, consolidated.safetensors), each a
 * component: the mount shows one, inspect shows what there is.
 */
static int open_model(const char *source, struct stf_model **m)
{
        struct stf_diag diag = {{0}};
        int ret = stf_model_open_opts(source, &(struct stf_model_opts){.all_sets = true}, m, &diag);

        if (ret == 0)
                return 0;
        if (diag.msg[0])
                err("%s", diag.msg);
        else
                err("%s: %s", source, strerror(-ret));
        if (ret == -ENOMEM)
                return CTL_EXIT_USAGE;
        fprintf(stderr, "%s: 'stfsctl verify %s' lists every problem\n", prog, source);
        return CTL_EXIT_FAILED;
}

/* --------------------------------------------------------------- inspect */

struct inspect_opts {
        uint64_t depth, top;
        bool json;
};

/*
 * Walk the module tree down to @depth in listing order without recursion
 * (names can have a million parts). @visit gets each node with its path;
 * @leave is called after a node's children (for closing brackets).
 */
struct walker {
        const struct stf_summary *s;
        unsigned long depth; /* 1..MAX_DEPTH */
        void (*visit)(void *ctx, const struct stf_module *md, const char *path, size_t plen,
                      bool has_children);
        void (*leave)(void *ctx, const struct stf_module *md, bool has_children);
        void *ctx;
};

struct frame {
        size_t node, next; /* next child to visit */
        size_t plen;       /* length of the path up to and with this node */
};

static bool shown_children(const struct walker *w, const struct stf_module *md)
{
        return md->nchildren && md->depth < w->depth;
}

static int walk(const struct walker *w)
{
        struct frame *st = NULL;
        size_t n = 0, cap = 0;
        struct stf_strbuf path = {0};
        int ret = 0;

        stf_strbuf_append(&path, "", 0);
        for (size_t node = 0;;) {
                const struct stf_module *md = &w->s->modules[node];
                bool kids = shown_children(w, md);

                if (path.failed) {
                        ret = -ENOMEM;
                        break;
                }
                w->visit(w->ctx, md, path.buf, path.len, kids);
                if (kids) {
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 64;
                                struct frame *ns = realloc(st, ncap * sizeof(*ns));

                                if (!ns) {
                                        ret = -ENOMEM;
                                        break;
                                }
                                st = ns;
                                cap = ncap;
                        }
                        st[n++] = (struct frame){node, 0, path.len};
                } else {
                        w->leave(w->ctx, md, false);
                }
                /* The next node: the next child of the innermost open frame. */
                node = SIZE_MAX;
                while (n) {
                        struct frame *f = &st[n - 1];
                        const struct stf_module *p = &w->s->modules[f->node];

                        if (f->next < p->nchildren) {
                                const struct stf_module *c;

                                node = p->first_child + f->next++;
                                c = &w->s->modules[node];
                                path.len = f->plen;
                                if (p->depth > 0)
                                        stf_strbuf_append(&path, p->component ? "/" : ".", 1);
                                stf_strbuf_append(&path, c->name, c->name_len);
                                break;
                        }
                        w->leave(w->ctx, p, true);
                        n--;
                }
                if (node == SIZE_MAX)
                        break;
        }
        free(st);
        stf_strbuf_reset(&path);
        return ret;
}

struct inspect_ctx {
        const struct stf_model *m;
        struct stf_strbuf *sb; /* JSON */
        bool first;            /* no sibling written yet at this level (JSON) */
};

static void size_cols(const struct stf_module *md, char *pc, char *bc, char *tc, size_t cap)
{
        char a[32], b[32], c[32];

        human_params(md->size.params, a, sizeof(a));
        ctl_human_bytes(md->size.bytes, b, sizeof(b));
        grouped(md->size.tensors, c, sizeof(c));
        if (md->repeat > 1) {
                snprintf(pc, cap, "%" PRIu64 " x %s", md->repeat, a);
                snprintf(bc, cap, "%" PRIu64 " x %s", md->repeat, b);
                snprintf(tc, cap, "%" PRIu64 " x %s", md->repeat, c);
        } else {
                snprintf(pc, cap, "%s", a);
                snprintf(bc, cap, "%s", b);
                snprintf(tc, cap, "%s", c);
        }
}

static void text_visit(void *ctx, const struct stf_module *md, const char *path, size_t plen,
                       bool has_children)
{
        struct inspect_ctx *ic = ctx;
        char pc[64], bc[64], tc[64];

        size_cols(md, pc, bc, tc, sizeof(pc));
        printf("%16s %16s %14s  ", pc, bc, tc);
        if (md->depth == 0) {
                printf("(all)\n");
                return;
        }
        for (uint32_t i = 1; i < md->depth; i++)
                fputs("  ", stdout);
        stf_text_put(stdout, md->name, md->name_len);
        if (md->tensor != SIZE_MAX) {
                const struct stf_tensor *t = &ic->m->tensors[md->tensor];
                char shp[256];

                stf_shape_format(shp, sizeof(shp), t->shape, t->rank, false);
                printf("  %s %s", stf_dtype_info(t->dtype)->name, shp);
        }
        if (md->nchildren && !has_children)
                printf("  ...");
        putchar('\n');
}

static void text_leave(void *ctx, const struct stf_module *md, bool has_children)
{
}

static void json_visit(void *ctx, const struct stf_module *md, const char *path, size_t plen,
                       bool has_children)
{
        struct inspect_ctx *ic = ctx;
        struct stf_strbuf *sb = ic->sb;

        if (!ic->first)
                stf_strbuf_puts(sb, ",");
        stf_strbuf_printf(sb, "\n%*s{\"name\": ", (int)(2 + 2 * md->depth), "");
        stf_strbuf_json_str(sb, md->name, md->name_len);
        stf_strbuf_puts(sb, ", \"path\": ");
        stf_strbuf_json_str(sb, path, plen);
        stf_strbuf_printf(sb, ", \"repeat\": %" PRIu64, md->repeat);
        if (md->repeat > 1)
                stf_strbuf_printf(sb, ", \"first\": %" PRIu64 ", \"last\": %" PRIu64, md->first,
                                  md->first + md->repeat - 1);
        stf_strbuf_printf(
            sb, ", \"tensors\": %" PRIu64 ", \"params\": %" PRIu64 ", \"bytes\": %" PRIu64,
            md->size.tensors, md->size.params, md->size.bytes);
        if (md->tensor != SIZE_MAX) {
                const struct stf_tensor *t = &ic->m->tensors[md->tensor];

                stf_strbuf_printf(
                    sb, ", \"dtype\": \"%s\", \"shape\": ", stf_dtype_info(t->dtype)->name);
                stf_shape_append(sb, t->shape, t->rank, false);
        }
        if (md->component)
                stf_strbuf_puts(sb, ", \"component\": true");
        if (has_children) {
                stf_strbuf_puts(sb, ", \"children\": [");
                ic->first = true;
        } else {
                ic->first = false;
        }
}

static void json_leave(void *ctx, const struct stf_module *md, bool has_children)
{
        struct inspect_ctx *ic = ctx;

        if (has_children)
                stf_strbuf_printf(ic->sb, "\n%*s]}", (int)(2 + 2 * md->depth), "");
        else
                stf_strbuf_puts(ic->sb, "}");
        ic->first = false;
}

static uint32_t shard_comp(const struct stf_model *m, uint32_t si)
{
        for (uint32_t c = 0; c < m->ncomps; c++)
                if (si >= m->comps[c].first_shard &&
                    si < m->comps[c].first_shard + m->comps[c].nshards)
                        return c;
        return 0;
}

static void print_meta_value(const char *key, json_t *v)
{
        const char *s;
        char *dump = NULL;
        size_t len;

        printf("    ");
        stf_text_put(stdout, key, strlen(key));
        printf(": ");
        if (json_is_string(v)) {
                s = json_string_value(v);
                len = json_string_length(v);
        } else {
                dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                s = dump ? dump : "?";
                len = strlen(s);
        }
        if (len > 200) {
                stf_text_put(stdout, s, 200);
                printf("... (%zu bytes)", len);
        } else {
                stf_text_put(stdout, s, len);
        }
        putchar('\n');
        free(dump);
}

static void print_meta_object(const char *title, json_t *o)
{
        const char *key;
        json_t *v;

        if (!json_is_object(o))
                return;
        printf("  %s:%s\n", title, json_object_size(o) ? "" : " (none)");
        json_object_foreach(o, key, v)
        {
                print_meta_value(key, v);
        }
}

static int print_metadata(const struct stf_model *m)
{
        char *text;
        size_t len;
        json_t *doc, *comps;
        const char *name;
        json_t *c;

        if (stf_describe_metadata(m, &text, &len))
                return -ENOMEM;
        doc = json_loadb(text, len, 0, NULL);
        free(text);
        if (!doc)
                return -ENOMEM;
        printf("\nmetadata\n");
        comps = json_object_get(doc, "components");
        if (!comps) {
                print_meta_object("__metadata__", json_object_get(doc, "__metadata__"));
                print_meta_object("index metadata", json_object_get(doc, "index_metadata"));
        }
        json_object_foreach(comps, name, c)
        {
                char title[512];

                snprintf(title, sizeof(title), "%s: __metadata__", name);
                print_meta_object(title, json_object_get(c, "__metadata__"));
                snprintf(title, sizeof(title), "%s: index metadata", name);
                print_meta_object(title, json_object_get(c, "index_metadata"));
        }
        json_decref(doc);
        return 0;
}

/* The shards, one line each (up to 16; past that a pointer to --json). */
static void print_shards(const struct stf_model *m)
{
        char a[64], b[64];

        if (m->nshards > 1 && m->nshards <= 16) {
                printf("\n%-44s %10s %22s\n", "shard", "tensors", "bytes");
                for (uint32_t i = 0; i < m->nshards; i++) {
                        const struct stf_shard *sh = &m->shards[i];
                        uint64_t bytes = sh->size - sh->hdr->data_start;
                        int width = 44;

                        if (m->ncomps > 1) {
                                const char *cn = m->comps[shard_comp(m, i)].name;

                                stf_text_put(stdout, cn, strlen(cn));
                                putchar('/');
                                width -= (int)strlen(cn) + 1;
                        }
                        stf_text_put(stdout, sh->name, strlen(sh->name));
                        width -= (int)strlen(sh->name);
                        printf("%*s %10s %22s\n", width > 0 ? width : 0, "",
                               grouped(sh->hdr->ntensors, a, sizeof(a)),
                               grouped(bytes, b, sizeof(b)));
                }
        } else if (m->nshards > 16) {
                printf("\n(%" PRIu32 " shards: --json lists them)\n", m->nshards);
        }
}

/* The largest tensors of @s, one line each. */
static void print_largest(const struct stf_model *m, const struct stf_summary *s)
{
        char a[64], b[64];

        if (s->nlargest) {
                printf("\nlargest tensors\n");
                printf("%16s %16s  %-12s %-24s %s\n", "params", "bytes", "dtype", "shape", "name");
                for (size_t i = 0; i < s->nlargest; i++) {
                        const struct stf_tensor *t = &m->tensors[s->largest[i]];
                        char shp[256];

                        stf_shape_format(shp, sizeof(shp), t->shape, t->rank, false);
                        printf("%16s %16s  %-12s %-24s ", human_params(t->nelem, a, sizeof(a)),
                               ctl_human_bytes(t->size, b, sizeof(b)),
                               stf_dtype_info(t->dtype)->name, shp);
                        put_tensor_name(stdout, m, t);
                        putchar('\n');
                }
        }
}

static int inspect_text(const char *source, const struct stf_model *m, const struct stf_summary *s,
                        const struct inspect_opts *o)
{
        struct inspect_ctx ic = {.m = m};
        struct walker w = {s, o->depth ? o->depth : MAX_DEPTH, text_visit, text_leave, &ic};
        uint64_t file_bytes = 0, header_bytes = 0;
        char a[64], b[64], c[64];

        for (uint32_t i = 0; i < m->nshards; i++) {
                file_bytes += m->shards[i].size;
                header_bytes += m->shards[i].hdr->data_start;
        }
        printf("source:      ");
        stf_text_put(stdout, source, strlen(source));
        putchar('\n');
        if (m->ncomps > 1)
                printf("components:  %" PRIu32 "\n", m->ncomps);
        printf("shards:      %" PRIu32 " (%s bytes; headers %s bytes)\n", m->nshards,
               grouped(file_bytes, a, sizeof(a)), grouped(header_bytes, b, sizeof(b)));
        printf("tensors:     %s\n", grouped(s->total.tensors, a, sizeof(a)));
        printf("params:      %s (%s)\n", grouped(s->total.params, a, sizeof(a)),
               human_params(s->total.params, b, sizeof(b)));
        printf("bytes:       %s (%s)\n", grouped(s->total.bytes, a, sizeof(a)),
               ctl_human_bytes(s->total.bytes, b, sizeof(b)));

        printf("\n%-12s %10s %22s %22s\n", "dtype", "tensors", "params", "bytes");
        for (unsigned d = 0; d < STF_DT_COUNT; d++) {
                const struct stf_count *dc = &s->dtypes[d];

                if (!dc->tensors)
                        continue;
                printf("%-12s %10s %22s %22s\n", stf_dtype_info(d)->name,
                       grouped(dc->tensors, a, sizeof(a)), grouped(dc->params, b, sizeof(b)),
                       grouped(dc->bytes, c, sizeof(c)));
        }

        print_shards(m);

        if (print_metadata(m))
                return -ENOMEM;

        printf("\nmodules (depth %s; a run {a..b} shows N x one instance)\n",
               o->depth ? grouped(o->depth, a, sizeof(a)) : "all");
        printf("%16s %16s %14s  %s\n", "params", "bytes", "tensors", "name");
        if (walk(&w))
                return -ENOMEM;

        print_largest(m, s);
        return 0;
}

/* The "components" and "shards" lists of inspect --json (the latter left open). */
static void json_parts(struct stf_strbuf *sb, const struct stf_model *m)
{
        stf_strbuf_puts(sb, ",\n \"components\": [");
        for (uint32_t c = 0; c < m->ncomps; c++) {
                const struct stf_component *cp = &m->comps[c];

                stf_strbuf_puts(sb, c ? ",\n  {\"name\": " : "\n  {\"name\": ");
                json_cstr(sb, cp->name);
                stf_strbuf_puts(sb, ", \"source\": ");
                json_cstr(sb, cp->source);
                stf_strbuf_printf(sb, ", \"shards\": %" PRIu32 ", \"tensors\": %" PRIu32 "}",
                                  cp->nshards, cp->ntensors);
        }
        stf_strbuf_puts(sb, "\n ],\n \"shards\": [");
        for (uint32_t i = 0; i < m->nshards; i++) {
                const struct stf_shard *sh = &m->shards[i];

                stf_strbuf_puts(sb, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
                json_cstr(sb, sh->name);
                stf_strbuf_puts(sb, ", \"path\": ");
                json_cstr(sb, sh->path);
                stf_strbuf_puts(sb, ", \"component\": ");
                json_cstr(sb, m->comps[shard_comp(m, i)].name);
                stf_strbuf_printf(sb,
                                  ", \"size\": %" PRIu64 ", \"header_size\": %" PRIu64
                                  ", \"tensors\": %zu, \"bytes\": %" PRIu64 "}",
                                  sh->size, sh->hdr->data_start - 8, sh->hdr->ntensors,
                                  sh->size - sh->hdr->data_start);
        }
}

static int inspect_json(const char *source, const struct stf_model *m, const struct stf_summary *s,
                        const struct inspect_opts *o)
{
        struct stf_strbuf sb = {0};
        struct inspect_ctx ic = {.m = m, .sb = &sb, .first = true};
        struct walker w = {s, o->depth ? o->depth : MAX_DEPTH, json_visit, json_leave, &ic};
        char *meta;
        size_t mlen;
        bool first = true;

        stf_strbuf_puts(&sb, "{\"source\": ");
        json_cstr(&sb, source);
        json_parts(&sb, m);
        stf_strbuf_printf(&sb,
                          "\n ],\n \"tensors\": %" PRIu64 ", \"params\": %" PRIu64
                          ", \"bytes\": %" PRIu64 ",\n \"dtypes\": {",
                          s->total.tensors, s->total.params, s->total.bytes);
        for (unsigned d = 0; d < STF_DT_COUNT; d++) {
                const struct stf_count *dc = &s->dtypes[d];

                if (!dc->tensors)
                        continue;
                stf_strbuf_printf(&sb,
                                  "%s\n  \"%s\": {\"tensors\": %" PRIu64 ", \"params\": %" PRIu64
                                  ", \"bytes\": %" PRIu64 "}",
                                  first ? "" : ",", stf_dtype_info(d)->name, dc->tensors,
                                  dc->params, dc->bytes);
                first = false;
        }
        stf_strbuf_puts(&sb, first ? "},\n \"metadata\": " : "\n },\n \"metadata\": ");
        if (stf_describe_metadata(m, &meta, &mlen)) {
                stf_strbuf_reset(&sb);
                return -ENOMEM;
        }
        stf_strbuf_append(&sb, meta, mlen);
        free(meta);
        stf_strbuf_printf(&sb, ",\n \"depth\": %" PRIu64 ",\n \"modules\":", o->depth);
        if (walk(&w)) {
                stf_strbuf_reset(&sb);
                return -ENOMEM;
        }
        stf_strbuf_puts(&sb, ",\n \"largest\": [");
        for (size_t i = 0; i < s->nlargest; i++) {
                const struct stf_tensor *t = &m->tensors[s->largest[i]];

                stf_strbuf_puts(&sb, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
                json_tensor_name(&sb, m, t);
                stf_strbuf_printf(
                    &sb, ", \"dtype\": \"%s\", \"shape\": ", stf_dtype_info(t->dtype)->name);
                stf_shape_append(&sb, t->shape, t->rank, false);
                stf_strbuf_printf(&sb, ", \"params\": %" PRIu64 ", \"bytes\": %" PRIu64, t->nelem,
                                  t->size);
                stf_strbuf_puts(&sb, ", \"shard\": ");
                json_cstr(&sb, m->shards[t->shard].name);
                stf_strbuf_printf(&sb, ", \"offset\": %" PRIu64 "}", t->begin);
        }
        stf_strbuf_puts(&sb, s->nlargest ? "\n ]\n}\n" : "]\n}\n");
        return write_all(&sb) ? -ENOMEM : 0;
}

static void inspect_usage(FILE *f)
{
        fprintf(f, "usage: stfsctl inspect SOURCE [--depth N] [--top N] [--json]\n"
                   "\n"
                   "What is in a model, from its headers only: shards, tensors, parameters\n"
                   "and bytes, per dtype; __metadata__ and the index's metadata; a module\n"
                   "tree with sizes (runs of numbered siblings with the same structure\n"
                   "collapse: model.layers.{0..31}); the largest tensors.\n"
                   "\n"
                   "SOURCE is a .safetensors file, a *.safetensors.index.json, or a directory\n"
                   "holding them, as for stfs.\n"
                   "\n"
                   "  --depth N   module tree down to depth N (default 3; 0: all of it,\n"
                   "              at most 64 levels)\n"
                   "  --top N     the N largest tensors (default 10; 0: none)\n"
                   "  --json      one JSON document (keys in `man stfsctl` and the README)\n"
                   "  -h, --help  this text\n"
                   "\n"
                   "Exit status: 0, 1 when the model cannot be opened or is malformed (the\n"
                   "first problem is printed; `stfsctl verify` lists all), 2 on a usage or\n"
                   "system error.\n");
}

int ctl_inspect(int argc, char **argv)
{
        static const struct option longopts[] = {{"depth", required_argument, NULL, 'd'},
                                                 {"top", required_argument, NULL, 't'},
                                                 {"json", no_argument, NULL, 'j'},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {NULL, 0, NULL, 0}};
        struct inspect_opts o = {.depth = 3, .top = 10};
        struct stf_model *m = NULL;
        struct stf_summary *s = NULL;
        int c, ret;

        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        if (!stf_parse_u64(optarg, MAX_DEPTH, &o.depth)) {
                                err("inspect: --depth wants a number from 0 to %d, not '%s'",
                                    MAX_DEPTH, optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                case 't':
                        if (!stf_parse_u64(optarg, 1000000000, &o.top)) {
                                err("inspect: --top wants a number, not '%s'", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                case 'j':
                        o.json = true;
                        break;
                case 'h':
                        inspect_usage(stdout);
                        return 0;
                default:
                        inspect_usage(stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                inspect_usage(stderr);
                return CTL_EXIT_USAGE;
        }
        ret = open_model(argv[optind], &m);
        if (ret)
                return ret;
        if (stf_summary_build(m, o.top, &s)) {
                err("out of memory");
                stf_model_close(m);
                return CTL_EXIT_USAGE;
        }
        if (o.json)
                ret = inspect_json(argv[optind], m, s, &o);
        else
                ret = inspect_text(argv[optind], m, s, &o);
        stf_summary_free(s);
        stf_model_close(m);
        if (ret) {
                err("out of memory");
                return CTL_EXIT_USAGE;
        }
        return fflush(stdout) ? CTL_EXIT_USAGE : 0;
}

/* ---------------------------------------------------------------- verify */

struct verify_ctx {
        bool json;
        size_t count;
        struct stf_strbuf *sb;
};

static void on_problem(void *ctx, const struct stf_problem *p)
{
        struct verify_ctx *v = ctx;
        struct stf_strbuf *sb = v->sb;

        if (!v->json) {
                stf_text_put(stdout, p->msg, strlen(p->msg));
                putchar('\n');
                v->count++;
                return;
        }
        stf_strbuf_puts(sb, v->count ? ",\n  {\"file\": " : "\n  {\"file\": ");
        json_cstr(sb, p->file);
        stf_strbuf_puts(sb, ", \"tensor\": ");
        if (p->tensor)
                json_cstr(sb, p->tensor);
        else
                stf_strbuf_puts(sb, "null");
        if (p->offset >= 0)
                stf_strbuf_printf(sb, ", \"offset\": %" PRId64, p->offset);
        else
                stf_strbuf_puts(sb, ", \"offset\": null");
        stf_strbuf_puts(sb, ", \"message\": ");
        json_cstr(sb, p->msg);
        stf_strbuf_puts(sb, "}");
        v->count++;
}

struct progress {
        struct timespec start;
        int last_len;
};

static double since(const struct timespec *t0)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
        struct progress *pr = ctx;
        char line[160], a[32], b[32], r[32];
        double secs = since(&pr->start), frac = total ? (double)done / (double)total : 1;
        int width = 30, fill = (int)(frac * width), len;

        if (done == total && pr->last_len) {
                fprintf(stderr, "\r%*s\r", pr->last_len, "");
                return;
        }
        len =
            snprintf(line, sizeof(line), "\rscan [%.*s%*s] %3d%%  %s / %s  %s/s", fill,
                     "##############################", width - fill, "", (int)(frac * 100),
                     ctl_human_bytes(done, a, sizeof(a)), ctl_human_bytes(total, b, sizeof(b)),
                     ctl_human_bytes(secs > 0 ? (uint64_t)((double)done / secs) : 0, r, sizeof(r)));
        fprintf(stderr, "%s%*s", line, pr->last_len > len ? pr->last_len - len : 0, "");
        pr->last_len = len;
}

static void on_sigbus(int sig)
{
        static const char msg[] = "stfsctl: a shard changed (was truncated?) while it was "
                                  "being scanned\n";

        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
        _exit(CTL_EXIT_USAGE);
}

/* Scan @m and report: 1 when a tensor has NaN or Inf values, 0 when none, or -ENOMEM. */
/* One tensor's scan result as an element of "tensors" (the first when !@i). */
static void scan_tensor_json(struct stf_strbuf *sb, const struct stf_model *m, size_t i,
                             const struct stf_scan_stat *st)
{
        const struct stf_tensor *t = &m->tensors[i];

        stf_strbuf_puts(sb, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
        json_tensor_name(sb, m, t);
        stf_strbuf_printf(sb, ", \"dtype\": \"%s\"", stf_dtype_info(t->dtype)->name);
        if (stf_scan_applies(t->dtype))
                stf_strbuf_printf(sb, ", \"nan\": %" PRIu64 ", \"inf\": %" PRIu64, st->nan,
                                  st->inf);
        else
                stf_strbuf_puts(sb, ", \"nan\": null, \"inf\": null");
        stf_strbuf_printf(sb, ", \"all_zero\": %s}", st->all_zero ? "true" : "false");
}

/* One line for a tensor with NaN, Inf or only zeros; nothing for the others. */
static void scan_tensor_text(const struct stf_model *m, const struct stf_tensor *t,
                             const struct stf_scan_stat *st)
{
        if (!st->nan && !st->inf && !st->all_zero)
                return;
        put_tensor_name(stdout, m, t);
        printf("  %s", stf_dtype_info(t->dtype)->name);
        if (st->nan)
                printf("  NaN %" PRIu64, st->nan);
        if (st->inf)
                printf("  Inf %" PRIu64, st->inf);
        if (st->all_zero)
                printf("  all zeros");
        putchar('\n');
}

static long scan_report(const struct stf_model *m, unsigned threads, bool json,
                        struct stf_strbuf *sb)
{
        struct stf_scan_stat *st;
        struct stf_scan_opts so = {.threads = threads};
        struct progress pr;
        struct sigaction sa = {.sa_handler = on_sigbus}, old;
        uint64_t bytes = 0, nan = 0, inf = 0, nan_t = 0, inf_t = 0, zero_t = 0, na_t = 0;
        double secs;
        char a[32], b[32];
        int ret;

        st = calloc(m->ntensors ? m->ntensors : 1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        clock_gettime(CLOCK_MONOTONIC, &pr.start);
        pr.last_len = 0;
        if (isatty(STDERR_FILENO)) {
                so.progress = on_progress;
                so.ctx = &pr;
        }
        sigaction(SIGBUS, &sa, &old);
        ret = stf_scan_model(m, &so, st);
        sigaction(SIGBUS, &old, NULL);
        if (ret) {
                free(st);
                return -ENOMEM;
        }
        secs = since(&pr.start);

        if (json)
                stf_strbuf_puts(sb, ",\n \"scan\": {\"tensors\": [");
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *t = &m->tensors[i];

                bytes += t->size;
                nan += st[i].nan;
                inf += st[i].inf;
                nan_t += st[i].nan != 0;
                inf_t += st[i].inf != 0;
                zero_t += st[i].all_zero;
                na_t += !stf_scan_applies(t->dtype);
                if (json)
                        scan_tensor_json(sb, m, i, &st[i]);
                else
                        scan_tensor_text(m, t, &st[i]);
        }
        if (json) {
                stf_strbuf_printf(sb,
                                  "\n ],\n  \"bytes\": %" PRIu64 ", \"seconds\": %.3f"
                                  ", \"nan\": %" PRIu64 ", \"inf\": %" PRIu64
                                  ", \"nan_tensors\": %" PRIu64 ", \"inf_tensors\": %" PRIu64
                                  ", \"all_zero_tensors\": %" PRIu64 "}",
                                  bytes, secs, nan, inf, nan_t, inf_t, zero_t);
        } else {
                char c[32], d[32];

                printf(
                    "scan: %zu tensors, %s bytes in %.2f s (%s/s): %" PRIu64
                    " with NaN (%s values), %" PRIu64 " with Inf (%s values), %" PRIu64
                    " all zeros",
                    m->ntensors, grouped(bytes, a, sizeof(a)), secs,
                    ctl_human_bytes(secs > 0 ? (uint64_t)((double)bytes / secs) : 0, b, sizeof(b)),
                    nan_t, grouped(nan, c, sizeof(c)), inf_t, grouped(inf, d, sizeof(d)), zero_t);
                if (na_t)
                        printf("; NaN/Inf not applicable to %" PRIu64 " (integer, BOOL, F4, F6)",
                               na_t);
                putchar('\n');
        }
        free(st);
        return (long)(nan_t + inf_t ? 1 : 0);
}

static void verify_usage(FILE *f)
{
        fprintf(f, "usage: stfsctl verify SOURCE [--scan] [--threads N] [--json]\n"
                   "\n"
                   "Check every format rule and every index check of the parser, and report\n"
                   "every problem (not only the first) with its file, tensor and offset.\n"
                   "\n"
                   "  --scan       also read every byte, in parallel: per tensor of a floating\n"
                   "               type the count of NaN and Inf values, and for every tensor\n"
                   "               whether it is all zeros (a progress bar on a terminal)\n"
                   "  --threads N  scan threads (default: one per CPU)\n"
                   "  --json       one JSON document (keys in `man stfsctl` and the README)\n"
                   "  -h, --help   this text\n"
                   "\n"
                   "Exit status: 0 sound, 1 problems found (or NaN/Inf values with --scan),\n"
                   "2 on a usage or system error.\n");
}

/* The end of the problem list: how many, or what a sound model holds. */
static void verify_verdict(const struct verify_ctx *v, const struct stf_model *m)
{
        char a[32], b[32];

        if (v->json)
                stf_strbuf_printf(v->sb, "%s,\n \"sound\": %s", v->count ? "\n ]" : "]",
                                  v->count ? "false" : "true");
        else if (v->count)
                printf("%zu problem%s found\n", v->count, v->count == 1 ? "" : "s");
        else
                printf("sound: %" PRIu32 " shard%s, %s tensors, %s bytes of data\n", m->nshards,
                       m->nshards == 1 ? "" : "s", grouped(m->ntensors, a, sizeof(a)),
                       grouped(m->total_bytes, b, sizeof(b)));
}

int ctl_verify(int argc, char **argv)
{
        static const struct option longopts[] = {{"scan", no_argument, NULL, 's'},
                                                 {"threads", required_argument, NULL, 't'},
                                                 {"json", no_argument, NULL, 'j'},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {NULL, 0, NULL, 0}};
        struct stf_strbuf sb = {0};
        struct verify_ctx v = {.sb = &sb};
        struct stf_model *m = NULL;
        uint64_t threads = 0;
        bool scan = false;
        const char *source;
        long found = 0;
        int c, ret;

        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case 's':
                        scan = true;
                        break;
                case 't':
                        if (!stf_parse_u64(optarg, 4096, &threads) || !threads) {
                                err("verify: --threads wants a number from 1 to 4096, not '%s'",
                                    optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                case 'j':
                        v.json = true;
                        break;
                case 'h':
                        verify_usage(stdout);
                        return 0;
                default:
                        verify_usage(stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                verify_usage(stderr);
                return CTL_EXIT_USAGE;
        }
        source = argv[optind];
        if (v.json) {
                stf_strbuf_puts(&sb, "{\"source\": ");
                json_cstr(&sb, source);
                stf_strbuf_puts(&sb, ",\n \"problems\": [");
        }
        ret = stf_model_check(source, on_problem, &v, &m);
        if (ret && ret != -EINVAL) {
                err("%s: %s", source, strerror(-ret));
                stf_strbuf_reset(&sb);
                return CTL_EXIT_USAGE;
        }
        verify_verdict(&v, m);
        if (m && scan)
                found = scan_report(m, (unsigned)threads, v.json, &sb);
        else if (scan && !v.json)
                printf("scan skipped: the model has format problems\n");
        else if (v.json)
                stf_strbuf_puts(&sb, ",\n \"scan\": null");
        stf_model_close(m);
        if (found < 0) {
                err("out of memory");
                stf_strbuf_reset(&sb);
                return CTL_EXIT_USAGE;
        }
        if (v.json) {
                stf_strbuf_puts(&sb, "\n}\n");
                if (write_all(&sb))
                        return CTL_EXIT_USAGE;
        }
        if (fflush(stdout))
                return CTL_EXIT_USAGE;
        return v.count || found ? CTL_EXIT_FAILED : 0;
}
