/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/summary: counts per dtype (exact parameter counts, the
 * sub-byte dtypes included), the module tree and the collapse of numbered
 * siblings, the largest tensors.
 *
 * Models are built in memory: a struct stf_model holding only the tensor
 * table the summary reads (sorted by component, then name bytes, as
 * model.h promises), no files.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "summary.h"
#include "util.h"

#define MAXT 4096

struct fake {
        struct stf_model m;
        struct stf_component comps[4];
        struct stf_tensor t[MAXT];
        uint64_t shapes[MAXT][4];
        char *names[MAXT];
        struct stf_summary *s;
};

static struct fake *fake_new(void)
{
        struct fake *f = calloc(1, sizeof(*f));

        ck_assert_ptr_nonnull(f);
        f->m.tensors = f->t;
        f->m.comps = f->comps;
        f->m.ncomps = 1;
        f->comps[0].name = (char *)"";
        return f;
}

/* Add tensor @name of component @comp: @rank dims follow. */
static void add(struct fake *f, uint32_t comp, const char *name, enum stf_dtype dt, uint32_t rank,
                ...)
{
        struct stf_tensor *t = &f->t[f->m.ntensors];
        va_list ap;
        uint64_t nelem = 1;

        ck_assert_uint_lt(f->m.ntensors, MAXT);
        f->names[f->m.ntensors] = strdup(name);
        va_start(ap, rank);
        for (uint32_t d = 0; d < rank; d++) {
                f->shapes[f->m.ntensors][d] = va_arg(ap, uint64_t);
                nelem *= f->shapes[f->m.ntensors][d];
        }
        va_end(ap);
        *t = (struct stf_tensor){.name = f->names[f->m.ntensors],
                                 .name_len = (uint32_t)strlen(name),
                                 .rank = rank,
                                 .shape = f->shapes[f->m.ntensors],
                                 .nelem = nelem,
                                 .size = nelem * stf_dtype_info(dt)->bits / 8,
                                 .dtype = (uint8_t)dt,
                                 .comp = comp};
        ck_assert_uint_eq(nelem * stf_dtype_info(dt)->bits % 8, 0);
        f->m.ntensors++;
}

/* Sort as model.h promises, then summarize. */
static const struct stf_summary *build(struct fake *f, size_t top)
{
        stf_model_sort_table(f->t, f->m.ntensors);
        ck_assert_int_eq(stf_summary_build(&f->m, top, &f->s), 0);
        ck_assert_ptr_nonnull(f->s);
        return f->s;
}

static void fake_free(struct fake *f)
{
        stf_summary_free(f->s);
        for (size_t i = 0; i < f->m.ntensors; i++)
                free(f->names[i]);
        free(f);
}

/* The child of @md named @name, or NULL. */
static const struct stf_module *kid(const struct stf_summary *s, const struct stf_module *md,
                                    const char *name)
{
        for (size_t i = 0; i < md->nchildren; i++) {
                const struct stf_module *c = &s->modules[md->first_child + i];

                if (!strcmp(c->name, name))
                        return c;
        }
        return NULL;
}

/* The module at a path of names (NULL terminated); fails the test if absent. */
static const struct stf_module *at(const struct stf_summary *s, ...)
{
        const struct stf_module *md = &s->modules[0];
        const char *name;
        va_list ap;

        va_start(ap, s);
        while ((name = va_arg(ap, const char *))) {
                const struct stf_module *c = kid(s, md, name);

                ck_assert_msg(c != NULL, "no child '%s' under '%s'", name, md->name);
                md = c;
        }
        va_end(ap);
        return md;
}

/* The names of @md's children, joined with ' '. */
static const char *kids(const struct stf_summary *s, const struct stf_module *md)
{
        static char buf[4096];
        size_t o = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < md->nchildren && o < sizeof(buf); i++)
                o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", i ? " " : "",
                                      s->modules[md->first_child + i].name);
        return buf;
}

static void check_count(const struct stf_count *c, uint64_t tensors, uint64_t params,
                        uint64_t bytes)
{
        ck_assert_uint_eq(c->tensors, tensors);
        ck_assert_uint_eq(c->params, params);
        ck_assert_uint_eq(c->bytes, bytes);
}

/* The modules array is breadth first, children contiguous, depths right. */
static void check_shape_of_tree(const struct stf_summary *s)
{
        ck_assert_uint_ge(s->nmodules, 1);
        ck_assert_uint_eq(s->modules[0].depth, 0);
        ck_assert_str_eq(s->modules[0].name, "");
        check_count(&s->modules[0].size, s->total.tensors, s->total.params, s->total.bytes);
        for (size_t i = 0; i < s->nmodules; i++) {
                const struct stf_module *md = &s->modules[i];
                struct stf_count sum = {md->tensor != SIZE_MAX, 0, 0};

                ck_assert_uint_eq(strlen(md->name), md->name_len);
                ck_assert_uint_ge(md->repeat, 1);
                if (md->nchildren) {
                        ck_assert_uint_gt(md->first_child, i);
                        ck_assert_uint_le(md->first_child + md->nchildren, s->nmodules);
                }
                for (size_t k = 0; k < md->nchildren; k++) {
                        const struct stf_module *c = &s->modules[md->first_child + k];

                        ck_assert_uint_eq(c->depth, md->depth + 1);
                        sum.tensors += c->size.tensors * c->repeat;
                        sum.params += c->size.params * c->repeat;
                        sum.bytes += c->size.bytes * c->repeat;
                }
                /* A node's own tensor plus its children's instances. */
                if (md->tensor == SIZE_MAX)
                        check_count(&md->size, sum.tensors, sum.params, sum.bytes);
                else
                        ck_assert_uint_eq(md->size.tensors, sum.tensors);
        }
}

START_TEST(test_number)
{
        uint64_t v = 99;

        ck_assert(stf_summary_number("0", 1, &v) && v == 0);
        ck_assert(stf_summary_number("17", 2, &v) && v == 17);
        ck_assert(stf_summary_number("999999999999999999", 18, &v) && v == 999999999999999999ull);
        ck_assert(!stf_summary_number("1000000000000000000", 19, &v));
        ck_assert(!stf_summary_number("", 0, &v));
        ck_assert(!stf_summary_number("01", 2, &v));
        ck_assert(!stf_summary_number("00", 2, &v));
        ck_assert(!stf_summary_number("1a", 2, &v));
        ck_assert(!stf_summary_number("-1", 2, &v));
        ck_assert(!stf_summary_number("+1", 2, &v));
        ck_assert(!stf_summary_number(" 1", 2, &v));
}
END_TEST

START_TEST(test_empty_model)
{
        struct fake *f = fake_new();
        const struct stf_summary *s = build(f, 10);

        ck_assert_uint_eq(s->nmodules, 1);
        ck_assert_uint_eq(s->modules[0].nchildren, 0);
        ck_assert_uint_eq(s->nlargest, 0);
        check_count(&s->total, 0, 0, 0);
        fake_free(f);
}
END_TEST

START_TEST(test_dtype_counts_exact)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;

        add(f, 0, "f4", STF_DT_F4, 2, (uint64_t)2, (uint64_t)8);       /* 16 params, 8 bytes */
        add(f, 0, "f4b", STF_DT_F4, 1, (uint64_t)6);                   /* 6 params, 3 bytes */
        add(f, 0, "f6a", STF_DT_F6_E2M3, 2, (uint64_t)4, (uint64_t)4); /* 16, 12 */
        add(f, 0, "f6b", STF_DT_F6_E3M2, 1, (uint64_t)4);              /* 4, 3 */
        add(f, 0, "bf", STF_DT_BF16, 2, (uint64_t)3, (uint64_t)5);     /* 15, 30 */
        add(f, 0, "scalar", STF_DT_F32, 0);                            /* 1, 4 */
        add(f, 0, "empty", STF_DT_F32, 2, (uint64_t)3, (uint64_t)0);   /* 0, 0 */
        add(f, 0, "c", STF_DT_C64, 1, (uint64_t)3);                    /* 3, 24 */
        add(f, 0, "big", STF_DT_U8, 2, (uint64_t)1 << 20, (uint64_t)1 << 20);
        s = build(f, 0);
        check_count(&s->dtypes[STF_DT_F4], 2, 22, 11);
        check_count(&s->dtypes[STF_DT_F6_E2M3], 1, 16, 12);
        check_count(&s->dtypes[STF_DT_F6_E3M2], 1, 4, 3);
        check_count(&s->dtypes[STF_DT_BF16], 1, 15, 30);
        check_count(&s->dtypes[STF_DT_F32], 2, 1, 4);
        check_count(&s->dtypes[STF_DT_C64], 1, 3, 24);
        check_count(&s->dtypes[STF_DT_U8], 1, 1ull << 40, 1ull << 40);
        check_count(&s->dtypes[STF_DT_F16], 0, 0, 0);
        check_count(&s->total, 9, 22 + 16 + 4 + 15 + 1 + 3 + (1ull << 40),
                    11 + 12 + 3 + 30 + 4 + 24 + (1ull << 40));
        ck_assert_uint_eq(s->nlargest, 0);
        ck_assert_ptr_null(s->largest);
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

/* A llama-like model of @layers identical layers. */
static void llama(struct fake *f, int layers, int hidden)
{
        char n[128];

        add(f, 0, "model.embed_tokens.weight", STF_DT_BF16, 2, (uint64_t)256, (uint64_t)hidden);
        add(f, 0, "model.norm.weight", STF_DT_F32, 1, (uint64_t)hidden);
        add(f, 0, "lm_head.weight", STF_DT_F16, 2, (uint64_t)256, (uint64_t)hidden);
        for (int i = 0; i < layers; i++) {
                snprintf(n, sizeof(n), "model.layers.%d.self_attn.q_proj.weight", i);
                add(f, 0, n, STF_DT_BF16, 2, (uint64_t)hidden, (uint64_t)hidden);
                snprintf(n, sizeof(n), "model.layers.%d.mlp.up_proj.weight", i);
                add(f, 0, n, STF_DT_F16, 2, (uint64_t)2 * hidden, (uint64_t)hidden);
                snprintf(n, sizeof(n), "model.layers.%d.input_layernorm.weight", i);
                add(f, 0, n, STF_DT_F32, 1, (uint64_t)hidden);
        }
}

START_TEST(test_llama_collapse)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;
        const struct stf_module *layers, *run, *q;
        uint64_t per = 64 * 64 + 2 * 64 * 64 + 64;

        llama(f, 32, 64);
        s = build(f, 0);
        check_shape_of_tree(s);
        ck_assert_str_eq(kids(s, &s->modules[0]), "lm_head model");
        ck_assert_str_eq(kids(s, at(s, "model", NULL)), "embed_tokens layers norm");
        layers = at(s, "model", "layers", NULL);
        ck_assert_uint_eq(layers->nchildren, 1);
        run = at(s, "model", "layers", "{0..31}", NULL);
        ck_assert_uint_eq(run->repeat, 32);
        ck_assert_uint_eq(run->first, 0);
        ck_assert_uint_eq(run->depth, 3);
        check_count(&run->size, 3, per, 64 * 64 * 2 + 2 * 64 * 64 * 2 + 64 * 4);
        check_count(&layers->size, 96, 32 * per, 32 * run->size.bytes);
        ck_assert_str_eq(kids(s, run), "input_layernorm mlp self_attn");
        q = at(s, "model", "layers", "{0..31}", "self_attn", "q_proj", "weight", NULL);
        ck_assert_uint_ne(q->tensor, SIZE_MAX);
        ck_assert_str_eq(f->t[q->tensor].name, "model.layers.0.self_attn.q_proj.weight");
        ck_assert_uint_eq(q->nchildren, 0);
        ck_assert_uint_eq(at(s, "model", "layers", NULL)->tensor, SIZE_MAX);
        fake_free(f);
}
END_TEST

START_TEST(test_numeric_order)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;

        /* Bytewise "10" < "9"; listing order puts 9 before 10. */
        for (int i = 0; i < 12; i++) {
                char n[64];

                snprintf(n, sizeof(n), "x.%d.w", i);
                add(f, 0, n, STF_DT_F32, 1, (uint64_t)4);
        }
        s = build(f, 0);
        ck_assert_str_eq(kids(s, at(s, "x", NULL)), "{0..11}");
        fake_free(f);

        f = fake_new();
        add(f, 0, "y.10.w", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "y.9.w", STF_DT_F16, 1, (uint64_t)4);
        add(f, 0, "y.2.w", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "y.b", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "y.a10", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "y.a9", STF_DT_F32, 1, (uint64_t)4);
        s = build(f, 0);
        ck_assert_str_eq(kids(s, at(s, "y", NULL)), "2 9 10 a9 a10 b");
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_runs_break)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;
        char n[64];

        /*
         * 0, then 01 (not a number; listed between 0 and 1) | 1 | 2 differs |
         * 3 4 | gap | 6 7 8
         */
        for (int i = 0; i < 9; i++) {
                if (i == 5)
                        continue;
                snprintf(n, sizeof(n), "l.%d.w", i);
                add(f, 0, n, i == 2 ? STF_DT_F16 : STF_DT_F32, 1, (uint64_t)8);
        }
        add(f, 0, "l.01.w", STF_DT_F32, 1, (uint64_t)8);
        s = build(f, 0);
        ck_assert_str_eq(kids(s, at(s, "l", NULL)), "0 01 1 2 {3..4} {6..8}");
        ck_assert_uint_eq(at(s, "l", "{6..8}", NULL)->repeat, 3);
        ck_assert_uint_eq(at(s, "l", "{6..8}", NULL)->first, 6);
        ck_assert_uint_eq(at(s, "l", "2", NULL)->repeat, 1);
        check_count(&at(s, "l", NULL)->size, 9, 72, 8 * 4 * 8 + 8 * 2);
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_same_structure_is_deep)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;

        /* Same sizes, different shapes: not the same structure. */
        add(f, 0, "a.0.w", STF_DT_F32, 2, (uint64_t)2, (uint64_t)8);
        add(f, 0, "a.1.w", STF_DT_F32, 2, (uint64_t)8, (uint64_t)2);
        /* Same sizes, different names below. */
        add(f, 0, "b.0.x", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "b.1.y", STF_DT_F32, 1, (uint64_t)4);
        /* Same sizes, one has an extra zero-size tensor. */
        add(f, 0, "c.0.w", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "c.1.w", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "c.1.z", STF_DT_F32, 1, (uint64_t)0);
        /* Leaves themselves collapse when dtype and shape agree. */
        add(f, 0, "d.0", STF_DT_BF16, 1, (uint64_t)3);
        add(f, 0, "d.1", STF_DT_BF16, 1, (uint64_t)3);
        add(f, 0, "d.2", STF_DT_BF16, 1, (uint64_t)3);
        /* A node that is a tensor and a prefix must agree on both. */
        add(f, 0, "e.0", STF_DT_F32, 1, (uint64_t)1);
        add(f, 0, "e.0.b", STF_DT_F32, 1, (uint64_t)1);
        add(f, 0, "e.1.a", STF_DT_F32, 1, (uint64_t)1);
        add(f, 0, "e.1.b", STF_DT_F32, 1, (uint64_t)1);
        s = build(f, 0);
        ck_assert_str_eq(kids(s, at(s, "a", NULL)), "0 1");
        ck_assert_str_eq(kids(s, at(s, "b", NULL)), "0 1");
        ck_assert_str_eq(kids(s, at(s, "c", NULL)), "0 1");
        ck_assert_str_eq(kids(s, at(s, "d", NULL)), "{0..2}");
        ck_assert_uint_ne(at(s, "d", "{0..2}", NULL)->tensor, SIZE_MAX);
        ck_assert_str_eq(kids(s, at(s, "e", NULL)), "0 1");
        ck_assert_uint_ne(at(s, "e", "0", NULL)->tensor, SIZE_MAX);
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_nested_moe)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;
        const struct stf_module *layers, *experts;
        char n[128];

        for (int i = 0; i < 4; i++) {
                snprintf(n, sizeof(n), "model.layers.%d.mlp.gate.weight", i);
                add(f, 0, n, STF_DT_F32, 2, (uint64_t)64, (uint64_t)16);
                for (int j = 0; j < 64; j++) {
                        snprintf(n, sizeof(n), "model.layers.%d.mlp.experts.%d.up.weight", i, j);
                        add(f, 0, n, STF_DT_BF16, 2, (uint64_t)8, (uint64_t)16);
                        snprintf(n, sizeof(n), "model.layers.%d.mlp.experts.%d.down.weight", i, j);
                        add(f, 0, n, STF_DT_BF16, 2, (uint64_t)16, (uint64_t)8);
                }
        }
        s = build(f, 0);
        layers = at(s, "model", "layers", "{0..3}", NULL);
        experts = at(s, "model", "layers", "{0..3}", "mlp", "experts", "{0..63}", NULL);
        ck_assert_uint_eq(layers->repeat, 4);
        ck_assert_uint_eq(experts->repeat, 64);
        check_count(&experts->size, 2, 256, 512);
        check_count(&at(s, "model", "layers", "{0..3}", "mlp", "experts", NULL)->size, 128,
                    64 * 256, 64 * 512);
        check_count(&layers->size, 129, 64 * 256 + 1024, 64 * 512 + 4096);
        check_count(&s->total, 4 * 129, 4 * (64 * 256 + 1024), 4 * (64 * 512 + 4096));
        /* Collapsed: far fewer modules than tensors. */
        ck_assert_uint_lt(s->nmodules, 20);
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_prefix_tensor_and_low_bytes)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;
        const struct stf_module *p;

        /*
         * Bytewise: "p" < "p!x" < "p-y.z" < "p.a" < "p.b": the node "p" must be
         * found again after its siblings "p!x" and "p-y".
         */
        add(f, 0, "p", STF_DT_F32, 1, (uint64_t)1);
        add(f, 0, "p!x", STF_DT_F32, 1, (uint64_t)2);
        add(f, 0, "p-y.z", STF_DT_F32, 1, (uint64_t)3);
        add(f, 0, "p.a", STF_DT_F32, 1, (uint64_t)4);
        add(f, 0, "p.b", STF_DT_F32, 1, (uint64_t)5);
        add(f, 0, "a..b", STF_DT_F32, 1, (uint64_t)6);
        add(f, 0, ".lead", STF_DT_F32, 1, (uint64_t)7);
        add(f, 0, "trail.", STF_DT_F32, 1, (uint64_t)8);
        add(f, 0, "", STF_DT_F32, 1, (uint64_t)9);
        s = build(f, 0);
        ck_assert_str_eq(kids(s, &s->modules[0]), " a p p!x p-y trail");
        p = at(s, "p", NULL);
        ck_assert_uint_ne(p->tensor, SIZE_MAX);
        ck_assert_str_eq(f->t[p->tensor].name, "p");
        ck_assert_str_eq(kids(s, p), "a b");
        check_count(&p->size, 3, 10, 40);
        ck_assert_str_eq(kids(s, at(s, "a", NULL)), "");
        ck_assert_str_eq(kids(s, at(s, "a", "", NULL)), "b");
        ck_assert_str_eq(kids(s, at(s, "", NULL)), "lead");
        ck_assert_uint_ne(at(s, "", NULL)->tensor, SIZE_MAX);
        ck_assert_str_eq(kids(s, at(s, "trail", NULL)), "");
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_components)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;

        f->m.ncomps = 2;
        f->comps[0].name = (char *)"unet";
        f->comps[1].name = (char *)"text_encoder";
        add(f, 0, "conv_in.weight", STF_DT_F16, 1, (uint64_t)8);
        add(f, 1, "conv_in.weight", STF_DT_F32, 1, (uint64_t)8);
        add(f, 1, "layers.0.w", STF_DT_F32, 1, (uint64_t)2);
        add(f, 1, "layers.1.w", STF_DT_F32, 1, (uint64_t)2);
        s = build(f, 0);
        ck_assert_str_eq(kids(s, &s->modules[0]), "text_encoder unet");
        ck_assert(at(s, "unet", NULL)->component);
        ck_assert(!at(s, "unet", "conv_in", NULL)->component);
        check_count(&at(s, "unet", NULL)->size, 1, 8, 16);
        check_count(&at(s, "text_encoder", NULL)->size, 3, 12, 48);
        ck_assert_str_eq(kids(s, at(s, "text_encoder", "layers", NULL)), "{0..1}");
        check_shape_of_tree(s);
        fake_free(f);
}
END_TEST

START_TEST(test_largest)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;

        add(f, 0, "small", STF_DT_U8, 1, (uint64_t)1);
        add(f, 0, "l.10", STF_DT_F32, 1, (uint64_t)100);
        add(f, 0, "l.9", STF_DT_F32, 1, (uint64_t)100);
        add(f, 0, "huge", STF_DT_U8, 1, (uint64_t)1000);
        add(f, 0, "mid", STF_DT_F16, 1, (uint64_t)150);
        add(f, 0, "zero", STF_DT_U8, 1, (uint64_t)0);
        for (int i = 0; i < 100; i++) {
                char n[32];

                snprintf(n, sizeof(n), "pad.%d", i);
                add(f, 0, n, STF_DT_U8, 1, (uint64_t)2);
        }
        /* Few of many: the short list; ties in listing order (9 before 10). */
        s = build(f, 4);
        ck_assert_uint_eq(s->nlargest, 4);
        ck_assert_str_eq(f->t[s->largest[0]].name, "huge");
        ck_assert_str_eq(f->t[s->largest[1]].name, "l.9");
        ck_assert_str_eq(f->t[s->largest[2]].name, "l.10");
        ck_assert_str_eq(f->t[s->largest[3]].name, "mid");
        stf_summary_free(f->s);
        /* Most of them (a full sort), and more than there are. */
        ck_assert_int_eq(stf_summary_build(&f->m, 1000, &f->s), 0);
        s = f->s;
        ck_assert_uint_eq(s->nlargest, f->m.ntensors);
        ck_assert_str_eq(f->t[s->largest[0]].name, "huge");
        ck_assert_str_eq(f->t[s->largest[1]].name, "l.9");
        ck_assert_str_eq(f->t[s->largest[4]].name, "pad.0");
        ck_assert_str_eq(f->t[s->largest[5]].name, "pad.1");
        ck_assert_str_eq(f->t[s->largest[13]].name, "pad.9");
        ck_assert_str_eq(f->t[s->largest[14]].name, "pad.10");
        ck_assert_str_eq(f->t[s->largest[f->m.ntensors - 1]].name, "zero");
        for (size_t i = 1; i < s->nlargest; i++)
                ck_assert_uint_ge(f->t[s->largest[i - 1]].size, f->t[s->largest[i]].size);
        fake_free(f);
}
END_TEST

START_TEST(test_deep_name_no_recursion)
{
        struct fake *f = fake_new();
        const struct stf_summary *s;
        size_t parts = 200000;
        char *name = malloc(parts * 2);

        /* "a.a.a. ... .a" with 200,000 parts, twice (numbered): deep compare. */
        for (size_t i = 0; i < parts; i++) {
                name[2 * i] = 'a';
                name[2 * i + 1] = '.';
        }
        name[0] = '0';
        name[2 * parts - 1] = '\0';
        add(f, 0, name, STF_DT_F32, 1, (uint64_t)1);
        name[0] = '1';
        add(f, 0, name, STF_DT_F32, 1, (uint64_t)1);
        free(name);
        s = build(f, 1);
        ck_assert_uint_eq(s->nmodules, parts + 1);
        ck_assert_str_eq(s->modules[1].name, "{0..1}");
        ck_assert_uint_eq(s->modules[s->nmodules - 1].depth, parts);
        check_count(&s->modules[1].size, 1, 1, 4);
        fake_free(f);
}
END_TEST

static Suite *summary_suite(void)
{
        Suite *s = suite_create("summary");
        TCase *tc = tcase_create("summary");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_number);
        tcase_add_test(tc, test_empty_model);
        tcase_add_test(tc, test_dtype_counts_exact);
        tcase_add_test(tc, test_llama_collapse);
        tcase_add_test(tc, test_numeric_order);
        tcase_add_test(tc, test_runs_break);
        tcase_add_test(tc, test_same_structure_is_deep);
        tcase_add_test(tc, test_nested_moe);
        tcase_add_test(tc, test_prefix_tensor_and_low_bytes);
        tcase_add_test(tc, test_components);
        tcase_add_test(tc, test_largest);
        tcase_add_test(tc, test_deep_name_no_recursion);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(summary_suite());
}
