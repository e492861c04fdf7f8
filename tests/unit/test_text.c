/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/text: which characters are unsafe on a terminal, the
 * escaping into a buffer, a strbuf and a FILE, and the JSON forms (string
 * literals of any bytes, jansson output made inert) read back by jansson.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <jansson.h>

#include "strbuf.h"
#include "text.h"
#include "util.h"

/* The escaped form of @s (a NUL terminated test string), by all three writers. */
static char *escaped(const char *s)
{
        struct stf_strbuf sb = {0};
        char buf[256], *out, *mem = NULL;
        size_t len, mlen = 0;
        FILE *f = open_memstream(&mem, &mlen);

        ck_assert_ptr_nonnull(f);
        stf_text_escape(&sb, s, strlen(s));
        ck_assert_int_eq(stf_strbuf_finish(&sb, &out, &len), 0);
        stf_text_escape_buf(s, buf, sizeof(buf));
        ck_assert_str_eq(buf, out);
        stf_text_put(f, s, strlen(s));
        fclose(f);
        ck_assert_str_eq(mem, out);
        free(mem);
        return out;
}

static void expect_escaped(const char *in, const char *want)
{
        char *got = escaped(in);

        ck_assert_msg(!strcmp(got, want), "escape of '%s': got '%s', want '%s'", in, got, want);
        free(got);
}

START_TEST(kept_as_is)
{
        expect_escaped("", "");
        expect_escaped("model.layers.0.weight", "model.layers.0.weight");
        expect_escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xd7\x90", /* é € 😀 alef */
                       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xd7\x90");
        expect_escaped("\xc2\xa0\xc2\xbf", "\xc2\xa0\xc2\xbf"); /* U+00A0, U+00BF: not C1 */
        expect_escaped("\xe2\x80\x8d\xe2\x80\xaf", "\xe2\x80\x8d\xe2\x80\xaf"); /* ZWJ, U+202F */
}
END_TEST

START_TEST(controls)
{
        expect_escaped("a\x1b[2Jb", "a\\x1b[2Jb");
        expect_escaped("\x07\x7f\n", "\\x07\\x7f\\x0a");
        /* C1: the 8-bit CSI U+009B, U+0080, U+009F */
        expect_escaped("x\xc2\x9b[31my", "x\\xc2\\x9b[31my");
        expect_escaped("\xc2\x80\xc2\x9f", "\\xc2\\x80\\xc2\\x9f");
        /* bidi: RLO U+202E, LRE U+202A, RLI U+2067, PDI U+2069, LRM, RLM, ALM */
        expect_escaped("a\xe2\x80\xae"
                       "b",
                       "a\\xe2\\x80\\xaeb");
        expect_escaped("\xe2\x80\xaa\xe2\x81\xa7\xe2\x81\xa9",
                       "\\xe2\\x80\\xaa\\xe2\\x81\\xa7\\xe2\\x81\\xa9");
        expect_escaped("\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c",
                       "\\xe2\\x80\\x8e\\xe2\\x80\\x8f\\xd8\\x9c");
}
END_TEST

START_TEST(invalid_utf8)
{
        expect_escaped("\x9b[2J", "\\x9b[2J"); /* lone CSI byte */
        expect_escaped("\xff\xfe", "\\xff\\xfe");
        expect_escaped("\xc0\xaf", "\\xc0\\xaf");                   /* overlong '/' */
        expect_escaped("\xed\xa0\x80", "\\xed\\xa0\\x80");          /* surrogate */
        expect_escaped("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* > U+10FFFF */
        expect_escaped("\xe2\x82", "\\xe2\\x82");                   /* cut short */
        expect_escaped("\xc3(", "\\xc3(");
        ck_assert(stf_utf8_valid("caf\xc3\xa9", 5));
        ck_assert(!stf_utf8_valid("\xc3(", 2));
        ck_assert(stf_utf8_valid("", 0));
}
END_TEST

START_TEST(buf_cut_at_a_character)
{
        char out[8];

        stf_text_escape_buf("abc\x1b"
                            "def",
                            out, sizeof(out));
        ck_assert_str_eq(out, "abc\\x1b");
        stf_text_escape_buf("abc\x1b"
                            "def",
                            out, 7);
        ck_assert_str_eq(out, "abc"); /* "\x1b" would not fit whole */
        stf_text_escape_buf("ab\xe2\x82\xac"
                            "cdef",
                            out, 6);
        ck_assert_str_eq(out, "ab\xe2\x82\xac");
        stf_text_escape_buf("ab\xe2\x82\xac", out, 5);
        ck_assert_str_eq(out, "ab");
}
END_TEST

/* JSON literal of @len bytes, parsed back by jansson: the string it holds. */
static json_t *json_roundtrip(const char *s, size_t len, char **text)
{
        struct stf_strbuf sb = {0};
        json_error_t err;
        json_t *v;
        size_t tlen;

        stf_strbuf_json_str(&sb, s, len);
        ck_assert_int_eq(stf_strbuf_finish(&sb, text, &tlen), 0);
        v = json_loadb(*text, tlen, JSON_DECODE_ANY, &err);
        ck_assert_msg(v && json_is_string(v), "%s: %s", *text, err.text);
        return v;
}

START_TEST(json_strings)
{
        static const char ctl[] = "a\"b\\c\x01\x7f\xc2\x9b\xe2\x80\xae\xc3\xa9";
        char *text;
        json_t *v = json_roundtrip(ctl, sizeof(ctl) - 1, &text);

        /* Same string back, and nothing unsafe left in the text. */
        ck_assert_mem_eq(json_string_value(v), ctl, sizeof(ctl) - 1);
        ck_assert_str_eq(text, "\"a\\\"b\\\\c\\u0001\\u007f\\u009b\\u202e\xc3\xa9\"");
        json_decref(v);
        free(text);
        /* Bytes that are not UTF-8 (a file name): U+FFFD each. */
        v = json_roundtrip("x\xff\xc3(", 4, &text);
        ck_assert_str_eq(json_string_value(v), "x\xef\xbf\xbd\xef\xbf\xbd(");
        json_decref(v);
        free(text);
}
END_TEST

START_TEST(json_inert)
{
        json_t *doc = json_pack("{s:s, s:s}", "k\xc2\x9b", "v\xe2\x80\xae\xe2\x81\xa6", "plain",
                                "caf\xc3\xa9");
        char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS), *out;
        size_t len;
        json_t *back;

        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(stf_text_json_inert(text, strlen(text), &out, &len), 0);
        ck_assert_str_eq(out,
                         "{\n \"k\\u009b\": \"v\\u202e\\u2066\",\n \"plain\": \"caf\xc3\xa9\"\n}");
        ck_assert_uint_eq(len, strlen(out));
        back = json_loads(out, 0, NULL);
        ck_assert(json_equal(back, doc));
        json_decref(back);
        json_decref(doc);
        free(text);
        free(out);
}
END_TEST

/* Accepted: digits only, up to @max; refused: everything else, *out kept. */
START_TEST(parse_u64)
{
        static const char *const bad[] = {"",
                                          "-1",
                                          "+1",
                                          " 1",
                                          "1 ",
                                          "1x",
                                          "0x10",
                                          "1.0",
                                          "18446744073709551616",
                                          "99999999999999999999999"};
        uint64_t v;

        ck_assert(stf_parse_u64("0", 0, &v));
        ck_assert_uint_eq(v, 0);
        ck_assert(stf_parse_u64("007", 7, &v));
        ck_assert_uint_eq(v, 7);
        ck_assert(stf_parse_u64("18446744073709551615", UINT64_MAX, &v));
        ck_assert_uint_eq(v, UINT64_MAX);
        ck_assert(stf_parse_u64("4294967295", UINT32_MAX, &v));
        ck_assert_uint_eq(v, UINT32_MAX);
        v = 42;
        ck_assert(!stf_parse_u64("4294967296", UINT32_MAX, &v));
        ck_assert(!stf_parse_u64("8", 7, &v));
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                ck_assert_msg(!stf_parse_u64(bad[i], UINT64_MAX, &v), "accepted '%s'", bad[i]);
        ck_assert_uint_eq(v, 42);
}
END_TEST

static Suite *text_suite(void)
{
        Suite *s = suite_create("text");
        TCase *tc = tcase_create("text");

        tcase_add_test(tc, kept_as_is);
        tcase_add_test(tc, controls);
        tcase_add_test(tc, invalid_utf8);
        tcase_add_test(tc, buf_cut_at_a_character);
        tcase_add_test(tc, json_strings);
        tcase_add_test(tc, json_inert);
        tcase_add_test(tc, parse_u64);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(text_suite());
}
