/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/scan: which encodings are NaN and Inf for every
 * floating dtype (every code of the 8- and 16-bit types is classified and
 * counted), zeros, and the threaded scan of a model written to a
 * temporary file (pieces split and grouped, any thread count, progress).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "model.h"
#include "scan.h"
#include "util.h"

static void count(unsigned dt, const void *p, size_t len, uint64_t nan, uint64_t inf, bool nz)
{
        uint64_t n = 0, f = 0;
        bool z = false;

        stf_scan_buffer(dt, p, len, &n, &f, &z);
        ck_assert_msg(n == nan && f == inf && z == nz,
                      "%s: nan %" PRIu64 " inf %" PRIu64 " nonzero %d, want %" PRIu64 " %" PRIu64
                      " %d",
                      stf_dtype_info(dt)->name, n, f, z, nan, inf, nz);
}

START_TEST(test_applies)
{
        static const unsigned yes[] = {
            STF_DT_F16,     STF_DT_BF16,    STF_DT_F32,         STF_DT_F64,         STF_DT_C64,
            STF_DT_F8_E5M2, STF_DT_F8_E4M3, STF_DT_F8_E4M3FNUZ, STF_DT_F8_E5M2FNUZ, STF_DT_F8_E8M0};
        unsigned n = 0;

        for (unsigned dt = 0; dt < STF_DT_COUNT; dt++)
                n += stf_scan_applies(dt);
        ck_assert_uint_eq(n, sizeof(yes) / sizeof(yes[0]));
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
                ck_assert(stf_scan_applies(yes[i]));
        ck_assert(!stf_scan_applies(STF_DT_F4));
        ck_assert(!stf_scan_applies(STF_DT_F6_E2M3));
        ck_assert(!stf_scan_applies(STF_DT_F6_E3M2));
        ck_assert(!stf_scan_applies(STF_DT_BOOL));
        ck_assert(!stf_scan_applies(STF_DT_I64));
        ck_assert(!stf_scan_applies(STF_DT_COUNT));
}
END_TEST

START_TEST(test_f32_f64)
{
        /* Little-endian bytes of: +Inf -Inf qNaN sNaN -NaN max 0 -0 1 */
        static const uint8_t f32[] = {0x00, 0x00, 0x80, 0x7f, 0x00, 0x00, 0x80, 0xff, 0x00,
                                      0x00, 0xc0, 0x7f, 0x01, 0x00, 0x80, 0x7f, 0x00, 0x00,
                                      0xc0, 0xff, 0xff, 0xff, 0x7f, 0x7f, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x3f};
        static const uint8_t f64[] = {
            0,    0,    0,    0,    0,    0,    0xf0, 0x7f, /* +Inf */
            0,    0,    0,    0,    0,    0,    0xf0, 0xff, /* -Inf */
            1,    0,    0,    0,    0,    0,    0xf0, 0x7f, /* sNaN */
            0,    0,    0,    0,    0,    0,    0xf8, 0xff, /* -qNaN */
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xef, 0x7f, /* max */
            0,    0,    0,    0,    0,    0,    0xf0, 0x3f, /* 1 */
        };
        static const uint8_t zeros[64];

        count(STF_DT_F32, f32, sizeof(f32), 3, 2, true);
        count(STF_DT_F64, f64, sizeof(f64), 2, 2, true);
        count(STF_DT_F32, zeros, sizeof(zeros), 0, 0, false);
        count(STF_DT_F32, zeros, 0, 0, 0, false);
}
END_TEST

START_TEST(test_c64)
{
        float v[] = {1,
                     2,
                     __builtin_inff(),
                     0,
                     0,
                     __builtin_nanf(""),
                     __builtin_inff(),
                     __builtin_nanf(""),
                     -__builtin_inff(),
                     -__builtin_inff(),
                     0,
                     0};

        /* (1,2) (inf,0) (0,nan) (inf,nan) (-inf,-inf) (0,0): as NumPy's isnan/isinf */
        count(STF_DT_C64, v, sizeof(v), 2, 3, true);
}
END_TEST

/* Every code of a 16-bit type, little-endian. */
static void all16(unsigned dt, uint64_t nan, uint64_t inf)
{
        uint8_t *b = malloc(65536 * 2);

        for (unsigned i = 0; i < 65536; i++) {
                b[2 * i] = (uint8_t)i;
                b[2 * i + 1] = (uint8_t)(i >> 8);
        }
        count(dt, b, 65536 * 2, nan, inf, true);
        free(b);
}

START_TEST(test_16bit_every_code)
{
        uint8_t f16[] = {0x00, 0x7c, 0x00, 0xfc, 0x00, 0x7e, 0x01, 0x7c, 0xff, 0x7b};
        uint8_t bf16[] = {0x80, 0x7f, 0x80, 0xff, 0xc0, 0x7f, 0x81, 0x7f, 0x7f, 0x7f};

        /* +Inf -Inf NaN NaN max */
        count(STF_DT_F16, f16, sizeof(f16), 2, 2, true);
        count(STF_DT_BF16, bf16, sizeof(bf16), 2, 2, true);
        /* exponent all ones: 2 infinities, 2 x (2^mantissa_bits - 1) NaNs */
        all16(STF_DT_F16, 2 * 1023, 2);
        all16(STF_DT_BF16, 2 * 127, 2);
        all16(STF_DT_I16, 0, 0);
        all16(STF_DT_U16, 0, 0);
}
END_TEST

START_TEST(test_8bit_every_code)
{
        uint8_t b[256];

        for (unsigned i = 0; i < 256; i++)
                b[i] = (uint8_t)i;
        /* E5M2: 0x7c/0xfc Inf; 0x7d-0x7f, 0xfd-0xff NaN */
        count(STF_DT_F8_E5M2, b, 256, 6, 2, true);
        /* E4M3FN: 0x7f, 0xff NaN; no Inf */
        count(STF_DT_F8_E4M3, b, 256, 2, 0, true);
        /* FNUZ: 0x80 only */
        count(STF_DT_F8_E4M3FNUZ, b, 256, 1, 0, true);
        count(STF_DT_F8_E5M2FNUZ, b, 256, 1, 0, true);
        /* E8M0: 0xff only */
        count(STF_DT_F8_E8M0, b, 256, 1, 0, true);
        /* Not applicable: nothing counted whatever the bits. */
        count(STF_DT_F4, b, 256, 0, 0, true);
        count(STF_DT_F6_E2M3, b, 255, 0, 0, true);
        count(STF_DT_F6_E3M2, b, 255, 0, 0, true);
        count(STF_DT_U8, b, 256, 0, 0, true);
        count(STF_DT_BOOL, b, 2, 0, 0, true);
        count(STF_DT_I8, b, 1, 0, 0, false);

        b[0] = 0x7c;
        count(STF_DT_F8_E5M2, b, 1, 0, 1, true);
        b[0] = 0x7e;
        count(STF_DT_F8_E4M3, b, 1, 0, 0, true); /* 448, the largest finite */
        b[0] = 0x80;
        count(STF_DT_F8_E4M3, b, 1, 0, 0, true); /* -0 */
        b[0] = 0x00;
        count(STF_DT_F8_E8M0, b, 1, 0, 0, false); /* 2^-127, all bytes zero */
}
END_TEST

START_TEST(test_nonzero_anywhere)
{
        uint8_t b[67] = {0};

        for (size_t i = 0; i < sizeof(b); i++) {
                bool nz = false;
                uint64_t n = 0, f = 0;

                b[i] = 0x10;
                stf_scan_buffer(STF_DT_U8, b, sizeof(b), &n, &f, &nz);
                ck_assert(nz);
                b[i] = 0;
        }
}
END_TEST

/* A model file written to a temporary directory. */
struct tmpmodel {
        char dir[64], path[128];
};

typedef void (*fill_fn)(size_t ti, uint8_t *p, size_t len);

static void fill_each(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        (*(fill_fn *)arg)(i, p, len);
}

/*
 * Write a file with tensors "t0".."t{n-1}": dtype @dts[i], @sizes[i] bytes
 * (a 1-D shape of elements), data from @fill.
 */
static void write_model(struct tmpmodel *tm, size_t n, const char *const *dts, const size_t *elems,
                        const unsigned *bits, fill_fn fill)
{
        struct stw_tensor t[8];
        char names[8][8];

        ck_assert_uint_le(n, 8);
        strcpy(tm->dir, "/tmp/stfs-test-scan-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tm->dir));
        snprintf(tm->path, sizeof(tm->path), "%s/m.safetensors", tm->dir);
        for (size_t i = 0; i < n; i++) {
                snprintf(names[i], sizeof(names[i]), "t%zu", i);
                t[i] = (struct stw_tensor){names[i], dts[i], 1, {elems[i]}, bits[i]};
        }
        ut_write_st(tm->path, &(struct stw_file){
                                  .t = t, .n = n, .pad = true, .fill = fill_each, .arg = &fill});
}

static void remove_model(struct tmpmodel *tm)
{
        unlink(tm->path);
        rmdir(tm->dir);
}

#define NT 7
static const char *const dts[NT] = {"F32", "BF16", "F8_E5M2", "U8", "F32", "F4", "F64"};
static const unsigned bits[NT] = {32, 16, 8, 8, 32, 4, 64};
static const size_t elems[NT] = {100000, 3, 4096, 10, 0, 16, 5};

/* Known contents: NaN/Inf planted at known places, t3 all zero. */
static void fill_known(size_t ti, uint8_t *p, size_t len)
{
        switch (ti) {
        case 0: /* F32: 1.0 everywhere, NaN at 7 and 99999, -Inf at 50000 */
                for (size_t i = 0; i < len; i += 4)
                        memcpy(p + i, "\x00\x00\x80\x3f", 4);
                memcpy(p + 4 * 7, "\x00\x00\xc0\x7f", 4);
                memcpy(p + 4 * 99999, "\x01\x00\x80\xff", 4);
                memcpy(p + 4 * 50000, "\x00\x00\x80\xff", 4);
                break;
        case 1: /* BF16: +Inf, 1.0, NaN */
                memcpy(p, "\x80\x7f\x80\x3f\xc1\xff", 6);
                break;
        case 2: /* E5M2: Inf at 4095, NaN at 0 and 2048 */
                memset(p, 0x3c, len);
                p[4095] = 0xfc;
                p[0] = 0x7f;
                p[2048] = 0xfe;
                break;
        case 3: /* U8: zeros */
                break;
        case 5: /* F4: nonzero */
                memset(p, 0xff, len);
                break;
        case 6: /* F64: zeros then -0.0: not all zero bytes */
                p[len - 1] = 0x80;
                break;
        default:
                break;
        }
}

static void check_known(const struct stf_model *m, const struct stf_scan_stat *st)
{
        static const uint64_t nan[NT] = {2, 1, 2, 0, 0, 0, 0}, inf[NT] = {1, 1, 1, 0, 0, 0, 0};
        static const bool zero[NT] = {false, false, false, true, false, false, false};

        ck_assert_uint_eq(m->ntensors, NT);
        for (size_t i = 0; i < NT; i++) {
                size_t k = (size_t)atoi(m->tensors[i].name + 1);

                ck_assert_msg(st[i].nan == nan[k] && st[i].inf == inf[k] &&
                                  st[i].all_zero == zero[k],
                              "t%zu: nan %" PRIu64 " inf %" PRIu64 " zero %d", k, st[i].nan,
                              st[i].inf, st[i].all_zero);
        }
}

struct prog {
        uint64_t last_done, total, calls;
        bool backwards;
};

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
        struct prog *p = ctx;

        if (done < p->last_done)
                p->backwards = true;
        p->last_done = done;
        p->total = total;
        p->calls++;
}

START_TEST(test_model_scan)
{
        static const size_t chunks[] = {0, 8, 64, 1000, 4096};
        static const unsigned threads[] = {1, 2, 3, 8};
        struct tmpmodel tm;
        struct stf_model *m;
        struct stf_diag d;
        struct stf_scan_stat st[NT];

        write_model(&tm, NT, dts, elems, bits, fill_known);
        ck_assert_msg(stf_model_open(tm.path, &m, &d) == 0, "%s", d.msg);
        /* Defaults. */
        memset(st, 0xaa, sizeof(st));
        ck_assert_int_eq(stf_scan_model(m, NULL, st), 0);
        check_known(m, st);
        /* Pieces of every size (whole elements), any number of threads. */
        for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
                for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
                        struct stf_scan_opts o = {.threads = threads[t], .chunk = chunks[c]};

                        memset(st, 0xaa, sizeof(st));
                        ck_assert_int_eq(stf_scan_model(m, &o, st), 0);
                        check_known(m, st);
                }
        }
        stf_model_close(m);
        remove_model(&tm);
}
END_TEST

START_TEST(test_progress)
{
        struct tmpmodel tm;
        struct stf_model *m;
        struct stf_diag d;
        struct stf_scan_stat st[NT];
        struct prog p = {0};
        struct stf_scan_opts o = {.threads = 2, .chunk = 8, .progress = on_progress, .ctx = &p};

        write_model(&tm, NT, dts, elems, bits, fill_known);
        ck_assert_msg(stf_model_open(tm.path, &m, &d) == 0, "%s", d.msg);
        ck_assert_int_eq(stf_scan_model(m, &o, st), 0);
        check_known(m, st);
        ck_assert_uint_ge(p.calls, 1);
        ck_assert(!p.backwards);
        ck_assert_uint_eq(p.total, m->total_bytes);
        ck_assert_uint_eq(p.last_done, m->total_bytes);
        stf_model_close(m);
        remove_model(&tm);
}
END_TEST

static void fill_none(size_t ti, uint8_t *p, size_t len)
{
}

START_TEST(test_empty_and_zero_model)
{
        static const char *const d1[] = {"F32", "F16"};
        static const unsigned b1[] = {32, 16};
        static const size_t e1[] = {0, 0};
        struct tmpmodel tm;
        struct stf_model *m;
        struct stf_diag d;
        struct stf_scan_stat st[2];
        struct prog p = {0};
        struct stf_scan_opts o = {.progress = on_progress, .ctx = &p};

        /* Only empty tensors: nothing to read, nothing all zero. */
        write_model(&tm, 2, d1, e1, b1, fill_none);
        ck_assert_msg(stf_model_open(tm.path, &m, &d) == 0, "%s", d.msg);
        ck_assert_int_eq(stf_scan_model(m, &o, st), 0);
        for (int i = 0; i < 2; i++)
                ck_assert(st[i].nan == 0 && st[i].inf == 0 && !st[i].all_zero);
        ck_assert_uint_eq(p.total, 0);
        stf_model_close(m);
        remove_model(&tm);
}
END_TEST

static Suite *scan_suite(void)
{
        Suite *s = suite_create("scan");
        TCase *tc = tcase_create("scan");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_applies);
        tcase_add_test(tc, test_f32_f64);
        tcase_add_test(tc, test_c64);
        tcase_add_test(tc, test_16bit_every_code);
        tcase_add_test(tc, test_8bit_every_code);
        tcase_add_test(tc, test_nonzero_anywhere);
        tcase_add_test(tc, test_model_scan);
        tcase_add_test(tc, test_progress);
        tcase_add_test(tc, test_empty_and_zero_model);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(scan_suite());
}
