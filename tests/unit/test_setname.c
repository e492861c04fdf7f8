/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of core/setname: file names of model folders, which sets are mounted. */
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "setname.h"
#include "util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void expect(const char *file, bool is_set, bool is_index, const char *base,
                   const char *variant, const char *whole)
{
        struct stf_setname s;
        char *w;

        ck_assert_msg(stf_setname_parse(file, &s) == is_set, "%s", file);
        w = stf_setname_whole(file);
        if (!is_set) {
                ck_assert_ptr_null(w);
                return;
        }
        ck_assert_msg(s.is_index == is_index, "%s", file);
        ck_assert_uint_eq(s.base_len, strlen(base));
        ck_assert(!memcmp(file, base, s.base_len));
        if (variant) {
                ck_assert_ptr_nonnull(s.variant);
                ck_assert_uint_eq(s.variant_len, strlen(variant));
                ck_assert(!memcmp(s.variant, variant, s.variant_len));
        } else {
                ck_assert_ptr_null(s.variant);
        }
        ck_assert_str_eq(w, whole);
        free(w);
}

START_TEST(test_parse)
{
        expect("model.safetensors", true, false, "model", NULL, "model.safetensors");
        expect("model.fp16.safetensors", true, false, "model", "fp16", "model.fp16.safetensors");
        expect("diffusion_pytorch_model.safetensors", true, false, "diffusion_pytorch_model", NULL,
               "diffusion_pytorch_model.safetensors");
        expect("model.safetensors.index.json", true, true, "model", NULL, "model.safetensors");
        expect("model.safetensors.index.fp16.json", true, true, "model", "fp16",
               "model.fp16.safetensors");
        expect("a.b.c.safetensors", true, false, "a.b", "c", "a.b.c.safetensors");
        expect("consolidated.safetensors", true, false, "consolidated", NULL,
               "consolidated.safetensors");
        expect("config.json", false, false, "", NULL, NULL);
        expect("model.safetensors.index.a.b.json", false, false, "", NULL, NULL);
        expect(".safetensors", false, false, "", NULL, NULL);
        expect(".safetensors.index.json", false, false, "", NULL, NULL);
        expect("model.safetensors.bak", false, false, "", NULL, NULL);
        expect("x.safetensors.index..json", false, false, "", NULL, NULL);
}
END_TEST

/* Parse @files, choose with @variant/@all, compare with @want ("1" kept). */
static bool choose(const char *const *files, size_t n, const char *variant, bool all,
                   const char *want)
{
        struct stf_setname s[8];
        bool keep[8], found = false;

        ck_assert_uint_le(n, 8);
        for (size_t i = 0; i < n; i++)
                ck_assert(stf_setname_parse(files[i], &s[i]));
        stf_setname_choose(s, n, variant, all, keep, &found);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(keep[i] == (want[i] == '1'), "%s: kept %d, want %c", files[i],
                              keep[i], want[i]);
        return found;
}

START_TEST(test_choose)
{
        static const char *const diff[] = {"diffusion_pytorch_model.fp16.safetensors",
                                           "diffusion_pytorch_model.safetensors"};
        static const char *const mistral[] = {"consolidated.safetensors",
                                              "model.safetensors.index.json"};
        static const char *const other[] = {"a.safetensors", "b.safetensors"};
        static const char *const only[] = {"model.bf16.safetensors", "model.fp16.safetensors"};
        static const char *const sharded[] = {"model.safetensors.index.fp16.json",
                                              "model.safetensors.index.json"};

        ck_assert(!choose(diff, N(diff), NULL, false, "01"));
        ck_assert(choose(diff, N(diff), "fp16", false, "10"));
        ck_assert(!choose(diff, N(diff), "bf16", false, "01"));
        ck_assert(!choose(diff, N(diff), NULL, true, "11"));
        ck_assert(!choose(mistral, N(mistral), NULL, false, "01"));
        ck_assert(!choose(mistral, N(mistral), NULL, true, "11"));
        ck_assert(!choose(other, N(other), NULL, false, "11"));
        ck_assert(!choose(only, N(only), NULL, false, "11"));
        ck_assert(choose(only, N(only), "fp16", false, "01"));
        ck_assert(!choose(sharded, N(sharded), NULL, false, "01"));
        ck_assert(choose(sharded, N(sharded), "fp16", false, "10"));
}
END_TEST

static Suite *setname_suite(void)
{
        Suite *s = suite_create("setname");
        TCase *tc = tcase_create("setname");

        tcase_add_test(tc, test_parse);
        tcase_add_test(tc, test_choose);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(setname_suite());
}
