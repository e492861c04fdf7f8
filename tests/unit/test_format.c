/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/format (and the diag helpers it reports through).
 *
 * Files are built in memory: 8-byte little-endian header size, JSON, then a
 * data buffer filled with a known pattern. Each rule of the design notes'
 * "Format rules" has its own reject case; every reject checks -EINVAL, that
 * no header is handed out, and that the diagnostic has the documented form
 * "FILE: WHERE: RULE" (diag.h) with the right WHERE and a fragment of the
 * rule.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "bytes.h"
#include "format.h"
#include "util.h"

#define FN "dir/m.safetensors"

/* A tensor entry of a header, as JSON text. */
#define T(n, dt, shp, b, e)                                                                        \
        "\"" n "\":{\"dtype\":\"" dt "\",\"shape\":" shp ",\"data_offsets\":[" #b "," #e "]}"

static struct stf_header *accept_buf(const uint8_t *buf, uint64_t avail, uint64_t fsize)
{
        struct stf_header *h = NULL;
        struct stf_diag d = {{0}};
        int ret = stf_header_parse(FN, buf, avail, fsize, &h, &d);

        ck_assert_msg(ret == 0, "rejected (%d): %s", ret, d.msg);
        ck_assert_ptr_nonnull(h);
        ck_assert_uint_eq(h->file_size, fsize);
        ck_assert_ptr_nonnull(h->metadata);
        ck_assert(json_is_object(h->metadata));
        for (size_t i = 0; i < h->ntensors; i++) {
                const struct stf_tensor *t = &h->tensors[i];

                ck_assert_uint_ge(t->begin, h->data_start);
                ck_assert_uint_le(t->begin + t->size, fsize);
                ck_assert_uint_eq(t->name_len, strlen(t->name));
                ck_assert_uint_eq(t->shard, 0);
                ck_assert_uint_eq(t->comp, 0);
                ck_assert_uint_lt(t->dtype, STF_DT_COUNT);
                if (i > 0)
                        ck_assert_uint_ge(t->begin, h->tensors[i - 1].begin);
        }
        return h;
}

/*
 * Parse @json followed by @dlen pattern bytes; must succeed. The buffer is
 * freed before returning, so nothing in the header may point into it.
 */
static struct stf_header *accept_json(const char *json, size_t jlen, size_t dlen)
{
        size_t len;
        uint8_t *buf = ut_st_bytes(json, jlen, dlen, 1, &len);
        struct stf_header *h = accept_buf(buf, len, len);

        ck_assert_uint_eq(h->data_start, 8 + jlen);
        memset(buf, 0xEE, len);
        free(buf);
        return h;
}

static struct stf_header *accept(const char *json, size_t dlen)
{
        return accept_json(json, strlen(json), dlen);
}

static const struct stf_tensor *find(const struct stf_header *h, const char *name)
{
        for (size_t i = 0; i < h->ntensors; i++)
                if (!strcmp(h->tensors[i].name, name))
                        return &h->tensors[i];
        ck_abort_msg("tensor '%s' not in header", name);
        return NULL;
}

static void check_diag_form(const char *msg)
{
        const char *rest = msg + strlen(FN ": ");

        ck_assert_msg(!strncmp(msg, FN ": ", strlen(FN ": ")),
                      "diag \"%s\" does not start with "
                      "the file name",
                      msg);
        ck_assert_msg(!strncmp(rest, "byte ", 5) || !strncmp(rest, "tensor '", 8),
                      "diag \"%s\" is not FILE: WHERE: RULE (WHERE = byte N or tensor 'NAME')",
                      msg);
}

/*
 * Parse must fail with -EINVAL; the diag has the form of diag.h, contains
 * @where (if not NULL) and @rule (if not NULL).
 */
static void reject_buf(const uint8_t *buf, uint64_t avail, uint64_t fsize, const char *where,
                       const char *rule, const char *what)
{
        struct stf_header *h = (struct stf_header *)(uintptr_t)1;
        struct stf_diag d;
        int ret;

        memset(&d, 0, sizeof(d));
        ret = stf_header_parse(FN, buf, avail, fsize, &h, &d);
        ck_assert_msg(ret == -EINVAL, "%s: got %d, want -EINVAL (diag \"%s\")", what, ret, d.msg);
        ck_assert_msg(h == NULL, "%s: *out not NULL on failure", what);
        ck_assert_msg(d.msg[0], "%s: no diagnostic", what);
        check_diag_form(d.msg);
        if (where)
                ut_assert_has(d.msg, where);
        if (rule)
                ut_assert_has(d.msg, rule);
        /* Without a diag it fails the same way. */
        h = (struct stf_header *)(uintptr_t)1;
        ck_assert_int_eq(stf_header_parse(FN, buf, avail, fsize, &h, NULL), -EINVAL);
        ck_assert_ptr_null(h);
}

static void reject_json(const char *json, size_t jlen, size_t dlen, const char *where,
                        const char *rule)
{
        size_t len;
        uint8_t *buf = ut_st_bytes(json, jlen, dlen, 3, &len);

        reject_buf(buf, len, len, where, rule, json);
        free(buf);
}

static void reject(const char *json, size_t dlen, const char *where, const char *rule)
{
        reject_json(json, strlen(json), dlen, where, rule);
}

/* "byte N" where N = data start of a header @json + @off. */
static const char *byte_at(const char *json, uint64_t off)
{
        static char s[64];

        snprintf(s, sizeof(s), "byte %" PRIu64 ":", (uint64_t)(8 + strlen(json)) + off);
        return s;
}

/* The N of a "byte N:" in @msg, or -1. */
static long long diag_byte(const char *msg)
{
        const char *p = strstr(msg, ": byte ");

        return p ? strtoll(p + 7, NULL, 10) : -1;
}

/* ---- accept ---------------------------------------------------------- */

START_TEST(test_one_tensor)
{
        const char *json = "{" T("w", "F32", "[2,3]", 0, 24) "}";
        struct stf_header *h = accept(json, 24);
        const struct stf_tensor *t = &h->tensors[0];

        ck_assert_uint_eq(h->ntensors, 1);
        ck_assert_uint_eq(h->data_start, 8 + strlen(json));
        ck_assert_uint_eq(h->file_size, 8 + strlen(json) + 24);
        ck_assert_str_eq(t->name, "w");
        ck_assert_uint_eq(t->name_len, 1);
        ck_assert_uint_eq(t->dtype, STF_DT_F32);
        ck_assert_uint_eq(t->rank, 2);
        ck_assert_uint_eq(t->shape[0], 2);
        ck_assert_uint_eq(t->shape[1], 3);
        ck_assert_uint_eq(t->nelem, 6);
        ck_assert_uint_eq(t->begin, 8 + strlen(json));
        ck_assert_uint_eq(t->size, 24);
        ck_assert_uint_eq(json_object_size(h->metadata), 0);
        stf_header_free(h);
}
END_TEST

START_TEST(test_many_sorted_by_begin)
{
        const char *json = "{" T("alpha", "BF16", "[4]", 4, 12) "," T(
            "mid", "I8", "[1,2]", 12, 14) "," T("zeta", "U32", "[1]", 0, 4) "}";
        struct stf_header *h = accept(json, 14);
        uint64_t ds = 8 + strlen(json);

        ck_assert_uint_eq(h->ntensors, 3);
        ck_assert_str_eq(h->tensors[0].name, "zeta");
        ck_assert_str_eq(h->tensors[1].name, "alpha");
        ck_assert_str_eq(h->tensors[2].name, "mid");
        ck_assert_uint_eq(h->tensors[0].begin, ds + 0);
        ck_assert_uint_eq(h->tensors[1].begin, ds + 4);
        ck_assert_uint_eq(h->tensors[2].begin, ds + 12);
        ck_assert_uint_eq(h->tensors[0].size, 4);
        ck_assert_uint_eq(h->tensors[1].size, 8);
        ck_assert_uint_eq(h->tensors[2].size, 2);
        ck_assert_uint_eq(h->tensors[1].dtype, STF_DT_BF16);
        ck_assert_uint_eq(h->tensors[1].nelem, 4);
        ck_assert_uint_eq(h->tensors[2].rank, 2);
        ck_assert_uint_eq(h->tensors[2].shape[0], 1);
        ck_assert_uint_eq(h->tensors[2].shape[1], 2);
        stf_header_free(h);
}
END_TEST

/* 200 tensors in reverse order in the JSON come back in data order. */
START_TEST(test_many_reverse)
{
        char *json = malloc(200 * 100 + 8), *p = json;
        struct stf_header *h;
        uint64_t ds, off[200], o = 0;

        /* Tensor i holds i % 5 elements of 2 bytes; written last to first. */
        for (int i = 0; i < 200; i++) {
                off[i] = o;
                o += (uint64_t)(i % 5) * 2;
        }
        p += sprintf(p, "{");
        for (int i = 199; i >= 0; i--)
                p += sprintf(p,
                             "%s\"t%d\":{\"dtype\":\"I16\",\"shape\":[%d],"
                             "\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
                             i == 199 ? "" : ",", i, i % 5, off[i], off[i] + (uint64_t)(i % 5) * 2);
        sprintf(p, "}");
        h = accept(json, (size_t)o);
        ds = 8 + strlen(json);
        ck_assert_uint_eq(h->ntensors, 200);
        for (size_t i = 1; i < 200; i++)
                ck_assert_uint_eq(h->tensors[i].begin,
                                  h->tensors[i - 1].begin + h->tensors[i - 1].size);
        for (int i = 0; i < 200; i++) {
                char name[16];

                snprintf(name, sizeof(name), "t%d", i);
                ck_assert_uint_eq(find(h, name)->begin, ds + off[i]);
                ck_assert_uint_eq(find(h, name)->size, (uint64_t)(i % 5) * 2);
        }
        free(json);
        stf_header_free(h);
}
END_TEST

START_TEST(test_scalar)
{
        const char *json = "{" T("s", "F64", "[]", 0, 8) "," T("b", "BOOL", "[]", 8, 9) "}";
        struct stf_header *h = accept(json, 9);
        const struct stf_tensor *s = find(h, "s"), *b = find(h, "b");

        ck_assert_uint_eq(s->rank, 0);
        ck_assert_uint_eq(s->nelem, 1);
        ck_assert_uint_eq(s->size, 8);
        ck_assert_uint_eq(b->rank, 0);
        ck_assert_uint_eq(b->nelem, 1);
        ck_assert_uint_eq(b->size, 1);
        ck_assert_uint_eq(b->dtype, STF_DT_BOOL);
        stf_header_free(h);
}
END_TEST

/* Zero-size tensors first, between others and last, sharing neighbours' offsets. */
START_TEST(test_zero_size)
{
        const char *json = "{" T("z0", "F32", "[0]", 0, 0) "," T("a", "F32", "[2]", 0, 8) "," T(
            "z1", "I8", "[3,0]", 8, 8) "," T("b", "U8", "[1]", 8, 9) "," T("z2", "F16",
                                                                           "[0,"
                                                                           "5]",
                                                                           9, 9) "}";
        struct stf_header *h = accept(json, 9);
        uint64_t ds = 8 + strlen(json);
        const struct stf_tensor *z1 = find(h, "z1");

        ck_assert_uint_eq(h->ntensors, 5);
        ck_assert_uint_eq(find(h, "z0")->begin, ds);
        ck_assert_uint_eq(find(h, "z0")->size, 0);
        ck_assert_uint_eq(find(h, "z0")->nelem, 0);
        ck_assert_uint_eq(find(h, "a")->begin, ds);
        ck_assert_uint_eq(z1->begin, ds + 8);
        ck_assert_uint_eq(z1->size, 0);
        ck_assert_uint_eq(z1->nelem, 0);
        ck_assert_uint_eq(z1->rank, 2);
        ck_assert_uint_eq(z1->shape[0], 3);
        ck_assert_uint_eq(z1->shape[1], 0);
        ck_assert_uint_eq(find(h, "b")->begin, ds + 8);
        ck_assert_uint_eq(find(h, "z2")->begin, ds + 9);
        ck_assert_uint_eq(find(h, "z2")->size, 0);
        stf_header_free(h);
}
END_TEST

/*
 * format.h: tensors are "sorted by begin, then name". A zero-size tensor
 * and a sized one at the same offset must therefore come by name.
 */
START_TEST(test_sort_ties_by_name)
{
        const char *json = "{" T("a", "U8", "[2]", 0, 2) "," T("zz", "U8", "[0]", 2, 2) "," T(
            "bb", "U8", "[1]", 2, 3) "}";
        struct stf_header *h = accept(json, 3);

        ck_assert_uint_eq(h->ntensors, 3);
        ck_assert_str_eq(h->tensors[0].name, "a");
        /* zero-size first at a shared offset: the order the tiling check walks */
        ck_assert_msg(!strcmp(h->tensors[1].name, "zz") && !strcmp(h->tensors[2].name, "bb"),
                      "ties at offset 2 come as '%s', '%s'; format.h says by begin, then size, "
                      "then name ('zz', 'bb')",
                      h->tensors[1].name, h->tensors[2].name);
        stf_header_free(h);
}
END_TEST

START_TEST(test_only_zero_size_no_data)
{
        const char *json = "{" T("e", "F32", "[0]", 0, 0) "," T("f", "U8", "[3,0,2]", 0, 0) "," T(
            "g", "F4", "[1000000000000,0]", 0, 0) "}";
        struct stf_header *h = accept(json, 0);

        ck_assert_uint_eq(h->ntensors, 3);
        for (size_t i = 0; i < 3; i++) {
                ck_assert_uint_eq(h->tensors[i].size, 0);
                ck_assert_uint_eq(h->tensors[i].nelem, 0);
                ck_assert_uint_eq(h->tensors[i].begin, h->data_start);
        }
        ck_assert_uint_eq(find(h, "f")->rank, 3);
        ck_assert_uint_eq(find(h, "g")->shape[0], 1000000000000ULL);
        stf_header_free(h);
}
END_TEST

/* One tensor of 8 elements of each dtype (loop over the 22). */
START_TEST(test_each_dtype)
{
        const struct stf_dtype_info *info = stf_dtype_info((unsigned)_i);
        uint64_t bytes = info->bits; /* 8 elements */
        char json[256];
        struct stf_header *h;

        snprintf(json, sizeof(json),
                 "{\"x\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[0,%" PRIu64 "]}}",
                 info->name, bytes);
        h = accept(json, bytes);
        ck_assert_uint_eq(h->tensors[0].dtype, (unsigned)_i);
        ck_assert_uint_eq(h->tensors[0].size, bytes);
        ck_assert_uint_eq(h->tensors[0].nelem, 8);
        stf_header_free(h);
}
END_TEST

/* Every dtype in one file, laid out back to back. */
START_TEST(test_all_dtypes_one_file)
{
        char json[8192], *p = json;
        uint64_t off = 0;
        struct stf_header *h;

        p += sprintf(p, "{");
        for (unsigned i = 0; i < STF_DT_COUNT; i++) {
                const struct stf_dtype_info *info = stf_dtype_info(i);
                uint64_t n = 4 * (i + 1), b = n * info->bits / 8;

                p += sprintf(p,
                             "%s\"t.%s\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64
                             "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
                             i ? "," : "", info->name, info->name, n, off, off + b);
                off += b;
        }
        sprintf(p, "}");
        h = accept(json, off);
        ck_assert_uint_eq(h->ntensors, STF_DT_COUNT);
        for (unsigned i = 0; i < STF_DT_COUNT; i++) {
                char name[32];
                const struct stf_tensor *t;

                snprintf(name, sizeof(name), "t.%s", stf_dtype_info(i)->name);
                t = find(h, name);
                ck_assert_uint_eq(t->dtype, i);
                ck_assert_uint_eq(t->nelem, 4 * (i + 1));
        }
        stf_header_free(h);
}
END_TEST

START_TEST(test_subbyte_sizes)
{
        const char *json = "{" T("a", "F4", "[2,3]", 0, 3) "," T("b", "F4", "[1,2]", 3, 4) "," T(
            "c", "F6_E2M3", "[4]", 4, 7) "," T("d", "F6_E3M2", "[2,2,2]", 7,
                                               13) "," T("e", "F4", "[0]", 13, 13) "}";
        struct stf_header *h = accept(json, 13);

        ck_assert_uint_eq(find(h, "a")->size, 3);
        ck_assert_uint_eq(find(h, "a")->nelem, 6);
        ck_assert_uint_eq(find(h, "b")->size, 1);
        ck_assert_uint_eq(find(h, "c")->size, 3);
        ck_assert_uint_eq(find(h, "d")->size, 6);
        ck_assert_uint_eq(find(h, "d")->nelem, 8);
        ck_assert_uint_eq(find(h, "e")->size, 0);
        stf_header_free(h);
}
END_TEST

START_TEST(test_metadata)
{
        const char *json = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\xc3\xbcn\xc3\xaf\","
                           "\"empty\":\"\"}," T("w", "U8", "[2]", 0, 2) "}";
        struct stf_header *h = accept(json, 2);

        ck_assert_uint_eq(h->ntensors, 1);
        ck_assert_str_eq(h->tensors[0].name, "w");
        ck_assert_uint_eq(json_object_size(h->metadata), 3);
        ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "format")), "pt");
        ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "note")),
                         "\xc3\xbcn\xc3\xaf");
        ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "empty")), "");
        stf_header_free(h);
}
END_TEST

START_TEST(test_metadata_last_and_empty)
{
        const char *json = "{" T("w", "U8", "[2]", 0, 2) ",\"__metadata__\":{}}";
        struct stf_header *h = accept(json, 2);

        ck_assert_uint_eq(h->ntensors, 1);
        ck_assert_uint_eq(json_object_size(h->metadata), 0);
        stf_header_free(h);
}
END_TEST

/* The metadata outlives the parse: the header holds its own reference. */
START_TEST(test_metadata_owned)
{
        const char *json = "{\"__metadata__\":{\"k\":\"v\"}}";
        struct stf_header *h = accept(json, 0);
        json_t *m = json_incref(h->metadata);

        stf_header_free(h);
        ck_assert_str_eq(json_string_value(json_object_get(m, "k")), "v");
        json_decref(m);
}
END_TEST

START_TEST(test_whitespace_around)
{
        const char *json = " \t\r\n{ \"w\" :\n{ \"dtype\" : \"I32\" , \"shape\" : [ 1 ] , "
                           "\"data_offsets\" : [ 0 , 4 ] }\n}\r\n\t ";
        struct stf_header *h = accept(json, 4);

        ck_assert_uint_eq(h->ntensors, 1);
        ck_assert_uint_eq(h->tensors[0].begin, 8 + strlen(json));
        stf_header_free(h);
}
END_TEST

/* Writers pad the header with spaces to align the data. */
START_TEST(test_space_padding)
{
        const char *json = "{" T("w", "F32", "[1]", 0, 4) "}       ";
        struct stf_header *h = accept(json, 4);

        ck_assert_uint_eq(h->data_start, 8 + strlen(json));
        ck_assert_uint_eq(h->tensors[0].begin, 8 + strlen(json));
        stf_header_free(h);
}
END_TEST

START_TEST(test_empty_header)
{
        struct stf_header *h = accept("{}", 0);

        ck_assert_uint_eq(h->ntensors, 0);
        ck_assert_uint_eq(h->file_size, 10);
        ck_assert_uint_eq(h->data_start, 10);
        ck_assert_uint_eq(json_object_size(h->metadata), 0);
        stf_header_free(h);
        h = accept("{}      ", 0);
        ck_assert_uint_eq(h->ntensors, 0);
        ck_assert_uint_eq(h->data_start, 16);
        stf_header_free(h);
        h = accept("{\"__metadata__\":{\"a\":\"b\"}}", 0);
        ck_assert_uint_eq(h->ntensors, 0);
        stf_header_free(h);
}
END_TEST

START_TEST(test_unicode_names)
{
        /* 模型.层.0, é, an emoji, a\"b\\c escaped, é written as an escape */
        const char *json =
            "{" T("\xe6\xa8\xa1\xe5\x9e\x8b.\xe5\xb1\x82.0", "U8", "[1]", 0,
                  1) "," T("\xc3\xa9", "U8", "[1]", 1,
                           2) "," T("\xf0\x9f\x98\x80", "U8", "[1]", 2,
                                    3) "," T("a\\\"b\\\\c", "U8", "[1]", 3,
                                             4) "," T("x\\u00e9", "U8", "[1]", 4,
                                                      5) "," T("", "U8", "[1]", 5, 6) "}";
        struct stf_header *h = accept(json, 6);

        ck_assert_uint_eq(h->ntensors, 6);
        ck_assert_str_eq(h->tensors[0].name, "\xe6\xa8\xa1\xe5\x9e\x8b.\xe5\xb1\x82.0");
        ck_assert_uint_eq(h->tensors[0].name_len, 12);
        ck_assert_str_eq(h->tensors[1].name, "\xc3\xa9");
        ck_assert_uint_eq(h->tensors[1].name_len, 2);
        ck_assert_str_eq(h->tensors[2].name, "\xf0\x9f\x98\x80");
        ck_assert_uint_eq(h->tensors[2].name_len, 4);
        ck_assert_str_eq(h->tensors[3].name, "a\"b\\c");
        ck_assert_str_eq(h->tensors[4].name, "x\xc3\xa9");
        ck_assert_str_eq(h->tensors[5].name, "");
        ck_assert_uint_eq(h->tensors[5].name_len, 0);
        stf_header_free(h);
}
END_TEST

/* @avail need only cover the header; the data is not read. */
START_TEST(test_avail_covers_header_only)
{
        const char *json = "{" T("w", "F32", "[4]", 0, 16) "}";
        size_t len;
        uint8_t *buf = ut_st_bytes(json, strlen(json), 16, 0, &len);
        struct stf_header *h = accept_buf(buf, 8 + strlen(json), len);

        ck_assert_uint_eq(h->tensors[0].size, 16);
        stf_header_free(h);
        free(buf);
}
END_TEST

/* A header of exactly the limit is not rejected for its size. */
START_TEST(test_header_limit_inclusive)
{
        uint8_t buf[16] = {0};
        struct stf_diag d = {{0}};
        struct stf_header *h;

        stf_put_le64(buf, STF_HEADER_MAX);
        memcpy(buf + 8, "{}      ", 8);
        /* Claims a 100,000,000-byte header in a file big enough for it. */
        ck_assert_int_eq(stf_header_parse(FN, buf, sizeof(buf), 8 + STF_HEADER_MAX, &h, &d),
                         -EINVAL);
        ut_assert_has(d.msg, "truncated");
        ck_assert_ptr_null(strstr(d.msg, "limit"));
}
END_TEST

START_TEST(test_free_null)
{
        stf_header_free(NULL);
}
END_TEST

/* ---- reject: the size field ------------------------------------------ */

START_TEST(test_reject_short_file)
{
        uint8_t buf[8] = {2, 0, 0, 0, 0, 0, 0, 0};

        for (uint64_t n = 0; n < 8; n++)
                reject_buf(buf, n, n, "byte 0:", "too short", "short file");
        /* A big file of which fewer than 8 bytes are readable. */
        reject_buf(buf, 4, 1000, "byte 0:", NULL, "avail < 8");
}
END_TEST

START_TEST(test_reject_header_over_limit)
{
        static const uint64_t ns[] = {STF_HEADER_MAX + 1,    1000000000ULL, 1ULL << 40,
                                      0xFFFFFFFFFFFFFFF8ULL, UINT64_MAX,    1ULL << 63};

        for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
                size_t len;
                uint8_t *buf = ut_st_raw(ns[i], "{}", 2, 0, 0, &len);
                char num[40];

                /* The limit is checked before the file size (file big enough). */
                reject_buf(buf, len, 0xFFFFFFFFFFFFFFFFULL, "byte 0:", "exceeds the limit",
                           "over limit, big file");
                reject_buf(buf, len, len, "byte 0:", "exceeds the limit", "over limit");
                snprintf(num, sizeof(num), "%" PRIu64, ns[i]);
                {
                        struct stf_diag d = {{0}};
                        struct stf_header *h;

                        stf_header_parse(FN, buf, len, len, &h, &d);
                        ut_assert_has(d.msg, num);
                }
                free(buf);
        }
}
END_TEST

START_TEST(test_reject_header_past_eof)
{
        size_t len;
        uint8_t *buf = ut_st_raw(100, "{}", 2, 48, 0, &len); /* 58-byte file */

        reject_buf(buf, len, len, "byte 0:", "past the end of the file", "n past eof");
        free(buf);
        /* One byte too many. */
        buf = ut_st_raw(11, "{}         ", 10, 0, 0, &len);
        reject_buf(buf, len, len, "byte 0:", "past the end of the file", "n = size - 7");
        free(buf);
}
END_TEST

START_TEST(test_reject_truncated_avail)
{
        const char *json = "{" T("w", "F32", "[1]", 0, 4) "}";
        size_t len;
        uint8_t *buf = ut_st_bytes(json, strlen(json), 4, 0, &len);
        char where[32];

        snprintf(where, sizeof(where), "byte %zu:", 8 + strlen(json) - 1);
        reject_buf(buf, 8 + strlen(json) - 1, len, where, "truncated", "avail inside header");
        free(buf);
}
END_TEST

/* ---- reject: JSON ---------------------------------------------------- */

START_TEST(test_reject_invalid_json)
{
        static const char *const bad[] = {
            "",
            "{",
            "}",
            "{\"a\":}",
            "{\"a\":1,}",
            "nul",
            "{'a':1}",
            "{\"a\" 1}",
            "{\"w\":{}} x",
            "{}{}",
            "{\"a\":[}",
            "\"",
            "{\"a\":01}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":tru}",
            "\xef\xbb\xbf{}",
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct stf_diag d = {{0}};
                struct stf_header *h;
                size_t len;
                uint8_t *buf = ut_st_bytes(bad[i], strlen(bad[i]), 0, 0, &len);
                long long at;

                reject_buf(buf, len, len, NULL, "not valid JSON", bad[i]);
                stf_header_parse(FN, buf, len, len, &h, &d);
                at = diag_byte(d.msg);
                ck_assert_msg(at >= 8 && at <= (long long)len,
                              "'%s': byte %lld outside header (%s)", bad[i], at, d.msg);
                free(buf);
        }
}
END_TEST

START_TEST(test_reject_not_object)
{
        static const char *const arrays[] = {"[]", "[{" T("w", "U8", "[1]", 0, 1) "}]", "[\"a\"]"};
        static const char *const scalars[] = {"\"str\"", "1", "null", "true", " 0 "};

        for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
                reject(arrays[i], 0, "byte 8:", "not a JSON object");
        /* JSON texts that are not an object or array fail in the JSON parser. */
        for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++)
                reject(scalars[i], 0, NULL, "not valid JSON");
}
END_TEST

START_TEST(test_reject_nul_padding)
{
        static const char json[] = "{}\0\0\0\0\0\0";
        static const char json2[] = "{" T("w", "U8", "[2]", 0, 2) "}\0\0\0";
        struct stf_diag d = {{0}};
        struct stf_header *h;
        size_t len;
        uint8_t *buf;

        reject_json(json, sizeof(json) - 1, 0, NULL, "not valid JSON");
        reject_json(json2, sizeof(json2) - 1, 2, NULL, "not valid JSON");
        /* The position points at the first NUL. */
        buf = ut_st_bytes(json, sizeof(json) - 1, 0, 0, &len);
        stf_header_parse(FN, buf, len, len, &h, &d);
        ck_assert_msg(diag_byte(d.msg) >= 10 && diag_byte(d.msg) <= 11, "NUL at byte 10: %s",
                      d.msg);
        free(buf);
        /* A NUL before the JSON too. */
        reject_json("\0{}", 3, 0, NULL, "not valid JSON");
}
END_TEST

START_TEST(test_reject_invalid_utf8_name)
{
        static const char *const names[] = {
            "\xff",
            "a\xfe",
            "\xc0\xaf",         /* overlong '/' */
            "\xed\xa0\x80",     /* UTF-16 surrogate */
            "\xe2\x82",         /* truncated sequence */
            "\x80",             /* lone continuation */
            "\xf4\x90\x80\x80", /* past U+10FFFF */
            "\\ud800",          /* lone surrogate escape */
        };

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                char json[256];

                snprintf(json, sizeof(json),
                         "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],"
                         "\"data_offsets\":[0,1]}}",
                         names[i]);
                reject(json, 1, NULL, "not valid JSON");
        }
        /* Invalid UTF-8 in a metadata value is just as invalid. */
        reject("{\"__metadata__\":{\"k\":\"\xff\"}}", 0, NULL, "not valid JSON");
}
END_TEST

START_TEST(test_reject_nul_in_name)
{
        reject("{" T("a\\u0000b", "U8", "[1]", 0, 1) "}", 1, NULL, "not valid JSON");
        reject("{" T("\\u0000", "U8", "[1]", 0, 1) "}", 1, NULL, "not valid JSON");
        reject("{\"__metadata__\":{\"k\\u0000\":\"v\"}}", 0, NULL, "not valid JSON");
}
END_TEST

START_TEST(test_reject_duplicate_keys)
{
        reject("{" T("w", "U8", "[1]", 0, 1) "," T("w", "U8", "[1]", 1, 2) "}", 2, NULL,
               "duplicate");
        /* The same name spelled two ways is the same key. */
        reject("{" T("\xc3\xa9", "U8", "[1]", 0, 1) "," T("\\u00e9", "U8", "[1]", 1, 2) "}", 2,
               NULL, "duplicate");
        reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, NULL, "duplicate");
        reject("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, NULL, "duplicate");
        reject("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
               1, NULL, "duplicate");
}
END_TEST

/* ---- reject: __metadata__ -------------------------------------------- */

START_TEST(test_reject_metadata_not_object)
{
        static const char *const bad[] = {"\"x\"", "[]", "1", "null", "[\"a\",\"b\"]", "true"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[128];

                snprintf(json, sizeof(json), "{\"__metadata__\":%s}", bad[i]);
                reject(json, 0, "__metadata__", "not an object");
        }
}
END_TEST

START_TEST(test_reject_metadata_value)
{
        static const char *const bad[] = {"1", "null", "{\"a\":\"b\"}", "[\"x\"]", "true", "1.5"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[128];

                snprintf(json, sizeof(json), "{\"__metadata__\":{\"ok\":\"v\",\"key\":%s}}",
                         bad[i]);
                reject(json, 0, "'key'", "not a string");
        }
}
END_TEST

/* ---- reject: one tensor entry ---------------------------------------- */

START_TEST(test_reject_entry_not_object)
{
        static const char *const bad[] = {"[]", "\"F32\"", "1", "null", "[\"F32\",[1],[0,4]]"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[128];

                snprintf(json, sizeof(json), "{\"w\":%s}", bad[i]);
                reject(json, 0, "tensor 'w'", "not an object");
        }
}
END_TEST

START_TEST(test_reject_missing_fields)
{
        reject("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'w'", "\"dtype\"");
        reject("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor 'w'", "\"shape\"");
        reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'w'", "\"data_offsets\"");
        reject("{\"w\":{}}", 0, "tensor 'w'", "\"dtype\"");
        reject("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w'",
               "\"dtype\"");
        reject("{\"w\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w'",
               "\"dtype\"");
        /* An error in a second tensor names that tensor. */
        reject("{" T("a", "U8", "[1]", 0, 1) ",\"b\":{\"dtype\":\"U8\",\"shape\":[1]}}", 2,
               "tensor 'b'", "\"data_offsets\"");
}
END_TEST

START_TEST(test_reject_unknown_dtype)
{
        reject("{" T("w", "F33", "[1]", 0, 4) "}", 4, "tensor 'w'", "unknown dtype 'F33'");
        reject("{" T("w", "f32", "[1]", 0, 4) "}", 4, "tensor 'w'", "unknown dtype 'f32'");
        reject("{" T("w", "bf16", "[1]", 0, 2) "}", 2, "tensor 'w'", "unknown dtype");
        reject("{" T("w", "", "[1]", 0, 1) "}", 1, "tensor 'w'", "unknown dtype");
        reject("{" T("w", "F8_E4M3FN", "[1]", 0, 1) "}", 1, "tensor 'w'", "unknown dtype");
}
END_TEST

START_TEST(test_reject_shape_not_array)
{
        static const char *const bad[] = {"3", "\"[2]\"", "{}", "null", "{\"0\":2}"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[160];

                snprintf(json, sizeof(json),
                         "{\"w\":{\"dtype\":\"U8\",\"shape\":%s,\"data_offsets\":[0,2]}}", bad[i]);
                reject(json, 2, "tensor 'w'", "\"shape\" is missing or not an array");
        }
}
END_TEST

START_TEST(test_reject_shape_bad_dim)
{
        static const struct {
                const char *shape, *frag;
        } bad[] = {
            {"[-1]", "dimension 0"},      {"[2,-3]", "dimension 1"}, {"[\"2\"]", "dimension 0"},
            {"[null]", "dimension 0"},    {"[[2]]", "dimension 0"},  {"[true]", "dimension 0"},
            {"[2.0]", "dimension 0"},     {"[2.5]", "dimension 0"},  {"[1e3]", "dimension 0"},
            {"[1,1,0.0]", "dimension 2"}, {"[-0.0]", "dimension 0"},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[160];

                snprintf(json, sizeof(json),
                         "{\"w\":{\"dtype\":\"U8\",\"shape\":%s,\"data_offsets\":[0,2]}}",
                         bad[i].shape);
                reject(json, 2, "tensor 'w'", bad[i].frag);
                reject(json, 2, NULL, "not a non-negative integer");
        }
}
END_TEST

START_TEST(test_reject_data_offsets_shape)
{
        static const char *const bad[] = {
            "[0]",     "[0,4,8]", "[]",     "\"0,4\"", "{\"0\":4}", "[\"0\",4]", "[0,\"4\"]",
            "[0.0,4]", "[0,4.0]", "[-1,3]", "[0,-4]",  "null",      "[[0],[4]]", "4"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[160];

                snprintf(json, sizeof(json),
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":%s}}", bad[i]);
                reject(json, 4, "tensor 'w'", "\"data_offsets\"");
        }
}
END_TEST

START_TEST(test_reject_begin_after_end)
{
        reject("{" T("w", "F32", "[1]", 8, 4) "}", 8, "tensor 'w'", "begin 8 > end 4");
        reject("{" T("w", "U8", "[0]", 1, 0) "}", 1, "tensor 'w'", "begin 1 > end 0");
}
END_TEST

START_TEST(test_reject_size_mismatch)
{
        reject("{" T("w", "F32", "[2]", 0, 4) "}", 4, "tensor 'w'", "needs 8 bytes");
        reject("{" T("w", "F32", "[2]", 0, 12) "}", 12, "tensor 'w'", "needs 8 bytes");
        reject("{" T("w", "BF16", "[]", 0, 1) "}", 1, "tensor 'w'", "needs 2 bytes");
        reject("{" T("w", "U8", "[0]", 0, 1) "}", 1, "tensor 'w'", "needs 0 bytes");
        reject("{" T("w", "C64", "[3]", 0, 16) "}", 16, "tensor 'w'", "needs 24 bytes");
        reject("{" T("w", "F4", "[4]", 0, 4) "}", 4, "tensor 'w'", "needs 2 bytes");
}
END_TEST

START_TEST(test_reject_not_whole_bytes)
{
        reject("{" T("w", "F4", "[3]", 0, 2) "}", 2, "tensor 'w'", "not a whole number of bytes");
        reject("{" T("w", "F4", "[]", 0, 1) "}", 1, "tensor 'w'", "not a whole number of bytes");
        reject("{" T("w", "F4", "[1,3,5]", 0, 8) "}", 8, "tensor 'w'",
               "not a whole number of bytes");
        reject("{" T("w", "F6_E2M3", "[2]", 0, 2) "}", 2, "tensor 'w'",
               "not a whole number of bytes");
        reject("{" T("w", "F6_E3M2", "[6]", 0, 5) "}", 5, "tensor 'w'",
               "not a whole number of bytes");
        reject("{" T("w", "F6_E2M3", "[1,3]", 0, 3) "}", 3, "tensor 'w'",
               "not a whole number of bytes");
        reject("{" T("w", "F6_E3M2", "[5]", 0, 4) "}", 4, "tensor 'w'",
               "not a whole number of bytes");
}
END_TEST

START_TEST(test_reject_shape_overflow)
{
        reject("{" T("w", "U8", "[4294967296,4294967296,16]", 0, 0) "}", 0, "tensor 'w'",
               "overflows");
        reject("{" T("w", "U8", "[4294967296,4294967296]", 0, 0) "}", 0, "tensor 'w'", "overflows");
        reject("{" T("w", "U8",
                     "[3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,"
                     "3,3,3,3,3,3,3,3,3,3,3,3]",
                     0, 0) "}",
               0, "tensor 'w'", "overflows");
        /* The element count fits, the bit count does not. */
        reject("{" T("w", "U64", "[2305843009213693952]", 0, 0) "}", 0, "tensor 'w'", "overflows");
        reject("{" T("w", "F32", "[4611686018427387904]", 0, 0) "}", 0, "tensor 'w'", "overflows");
        reject("{" T("w", "F4", "[9223372036854775807,3]", 0, 0) "}", 0, "tensor 'w'", "overflows");
        /* Past what a JSON integer holds: rejected by the JSON layer. */
        reject("{" T("w", "U8", "[18446744073709551616]", 0, 0) "}", 0, NULL, NULL);
}
END_TEST

START_TEST(test_reject_past_data)
{
        reject("{" T("w", "F32", "[2]", 0, 8) "}", 4, "tensor 'w'", "past the end of the data");
        reject("{" T("a", "U8", "[4]", 0, 4) "," T("w", "F32", "[2]", 4, 12) "}", 8, "tensor 'w'",
               "past the end of the data");
        reject("{" T("w", "U8", "[8]", 1099511627776, 1099511627784) "}", 8, "tensor 'w'",
               "past the end of the data");
        reject("{" T("w", "U8", "[7]", 9223372036854775800, 9223372036854775807) "}", 7,
               "tensor 'w'", "past the end of the data");
        /* A zero-size tensor past the end is still past the end. */
        reject("{" T("a", "U8", "[4]", 0, 4) "," T("z", "U8", "[0]", 5, 5) "}", 4, "tensor 'z'",
               "past the end of the data");
}
END_TEST

START_TEST(test_reject_hole)
{
        const char *j1 = "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}";
        const char *j2 = "{" T("a", "F32", "[1]", 4, 8) "}";
        const char *j3 = "{" T("a", "U8", "[1]", 0, 1) "," T("z", "U8", "[0]", 3,
                                                             3) "," T("b", "U8", "[1]", 3, 4) "}";
        const char *j4 = "{" T("a", "F32", "[1]", 0, 4) "," T("b", "U8", "[0]", 5, 5) "}";

        reject(j1, 12, byte_at(j1, 4), "hole");
        reject(j1, 12, "'b'", "hole of 4 bytes");
        reject(j2, 8, byte_at(j2, 0), "hole");
        reject(j2, 8, "'a'", "hole of 4 bytes");
        reject(j3, 4, byte_at(j3, 1), "hole of 2 bytes");
        /* One byte is a hole too. */
        reject(j4, 5, byte_at(j4, 4), "hole of 1 bytes");
}
END_TEST

START_TEST(test_reject_overlap)
{
        const char *j1 = "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}";
        const char *j2 = "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 0, 8) "}";
        const char *j3 = "{" T("a", "F32", "[2]", 0, 8) "," T("z", "F32", "[0]", 4, 4) "}";

        reject(j1, 12, byte_at(j1, 4), "overlaps");
        reject(j1, 12, "tensor 'b' overlaps tensor 'a'", NULL);
        reject(j2, 8, byte_at(j2, 0), "overlaps");
        /* A zero-size tensor inside another one's bytes. */
        reject(j3, 8, byte_at(j3, 4), "overlaps");
        reject(j3, 8, "'z'", "overlaps");
}
END_TEST

START_TEST(test_reject_trailing)
{
        const char *j1 = "{" T("a", "F32", "[1]", 0, 4) "}";
        const char *j2 = "{" T("e", "U8", "[0]", 0, 0) "}";

        reject(j1, 6, byte_at(j1, 4), "2 trailing bytes");
        reject("{}", 3, "byte 10:", "3 trailing bytes");
        reject(j2, 1, byte_at(j2, 0), "1 trailing bytes");
}
END_TEST

START_TEST(test_reject_unknown_key)
{
        reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":1}}", 1,
               "tensor 'w'", "unknown key 'extra'");
        reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offset\":[0,1]}}", 1, "tensor 'w'",
               "unknown key 'data_offset'");
        reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"Dtype\":\"U8\"}}",
               1, "tensor 'w'", "unknown key 'Dtype'");
        reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"__metadata__\":"
               "{}}}",
               1, "tensor 'w'", "unknown key");
}
END_TEST

/* Names in messages are quoted: non-ASCII and quotes as \xHH, long ones cut. */
START_TEST(test_reject_quoted_names)
{
        char json[1024], longname[301];
        struct stf_diag d = {{0}};
        struct stf_header *h;
        size_t len;
        uint8_t *buf;

        reject("{" T("\xc3\xa9", "X", "[1]", 0, 1) "}", 1, "tensor '\\xc3\\xa9'", "unknown dtype");
        reject("{" T("a'b", "X", "[1]", 0, 1) "}", 1, "tensor 'a\\x27b'", "unknown dtype");
        reject("{" T("a\\nb", "X", "[1]", 0, 1) "}", 1, "tensor 'a\\x0ab'", "unknown dtype");
        memset(longname, 'n', 300);
        longname[300] = '\0';
        snprintf(json, sizeof(json),
                 "{\"%s\":{\"dtype\":\"X\",\"shape\":[1],\"data_offsets\":[0,1]}}", longname);
        buf = ut_st_bytes(json, strlen(json), 1, 0, &len);
        ck_assert_int_eq(stf_header_parse(FN, buf, len, len, &h, &d), -EINVAL);
        ut_assert_has(d.msg, "...");
        ut_assert_has(d.msg, "unknown dtype");
        ck_assert_ptr_null(strstr(d.msg, longname));
        check_diag_form(d.msg);
        free(buf);
}
END_TEST

/* ---- check mode: every problem --------------------------------------- */

struct plist {
        size_t n;
        struct {
                char *file, *tensor, *msg;
                int64_t offset;
        } v[64];
};

static void collect(void *ctx, const struct stf_problem *p)
{
        struct plist *l = ctx;

        ck_assert_uint_lt(l->n, 64);
        ck_assert_ptr_nonnull(p->file);
        ck_assert_ptr_nonnull(p->msg);
        l->v[l->n].file = strdup(p->file);
        l->v[l->n].tensor = p->tensor ? strdup(p->tensor) : NULL;
        l->v[l->n].msg = strdup(p->msg);
        l->v[l->n].offset = p->offset;
        l->n++;
}

static void plist_free(struct plist *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].file);
                free(l->v[i].tensor);
                free(l->v[i].msg);
        }
        l->n = 0;
}

/* Run stf_header_check on @json + @dlen data bytes into @l; returns its result. */
static int check_json(const char *json, size_t dlen, struct plist *l, struct stf_header **out)
{
        size_t len;
        uint8_t *buf = ut_st_bytes(json, strlen(json), dlen, 5, &len);
        int ret = stf_header_check(FN, buf, len, len, collect, l, out);

        free(buf);
        return ret;
}

static void expect_problem(const struct plist *l, size_t i, const char *tensor, int64_t offset,
                           const char *frag)
{
        ck_assert_msg(i < l->n, "problem %zu of %zu", i, l->n);
        ck_assert_str_eq(l->v[i].file, FN);
        if (tensor)
                ck_assert_msg(l->v[i].tensor && !strcmp(l->v[i].tensor, tensor),
                              "problem %zu (%s): tensor %s, want %s", i, l->v[i].msg,
                              l->v[i].tensor ? l->v[i].tensor : "NULL", tensor);
        else
                ck_assert_msg(!l->v[i].tensor, "problem %zu (%s): tensor %s, want NULL", i,
                              l->v[i].msg, l->v[i].tensor);
        ck_assert_msg(l->v[i].offset == offset, "problem %zu (%s): offset %lld, want %lld", i,
                      l->v[i].msg, (long long)l->v[i].offset, (long long)offset);
        ut_assert_has(l->v[i].msg, frag);
        check_diag_form(l->v[i].msg);
}

START_TEST(test_check_sound)
{
        const char *json = "{" T("a", "F32", "[2]", 0, 8) "," T("b", "U8", "[3]", 8, 11) "}";
        struct plist l = {0};
        struct stf_header *h = (struct stf_header *)(uintptr_t)1;

        ck_assert_int_eq(check_json(json, 11, &l, &h), 0);
        ck_assert_uint_eq(l.n, 0);
        ck_assert_ptr_nonnull(h);
        ck_assert_uint_eq(h->ntensors, 2);
        ck_assert_str_eq(h->tensors[1].name, "b");
        ck_assert_uint_eq(h->tensors[1].begin, 8 + strlen(json) + 8);
        stf_header_free(h);
        ck_assert_int_eq(check_json(json, 11, &l, NULL), 0);
        ck_assert_uint_eq(l.n, 0);
}
END_TEST

/* Every problem, in the documented order, each with its file, tensor and offset. */
START_TEST(test_check_every_problem)
{
        const char *json =
            "{\"__metadata__\":{\"k\":1,\"ok\":\"v\",\"j\":2}," T("a", "X", "[1]", 0, 4) "," T(
                "b", "F32", "[1]", 8, 12) ",\"c\":{\"dtype\":\"F32\",\"shape\":[1]}}";
        int64_t ds = 8 + (int64_t)strlen(json);
        struct plist l = {0};
        struct stf_header *h = (struct stf_header *)(uintptr_t)1;
        struct stf_diag d = {{0}};
        size_t len;
        uint8_t *buf;

        ck_assert_int_eq(check_json(json, 16, &l, &h), -EINVAL);
        ck_assert_ptr_null(h);
        ck_assert_msg(l.n == 6, "%zu problems, want 6 (first: %s)", l.n, l.n ? l.v[0].msg : "");
        /* __metadata__ first. Its message form is checked by test_reject_metadata_*. */
        ut_assert_has(l.v[0].msg, "'k'");
        ck_assert_ptr_null(l.v[0].tensor);
        ck_assert_int_eq(l.v[0].offset, -1);
        ut_assert_has(l.v[1].msg, "'j'");
        expect_problem(&l, 2, "a", ds + 0, "unknown dtype 'X'");
        expect_problem(&l, 3, "c", -1, "\"data_offsets\"");
        expect_problem(&l, 4, "b", ds + 4, "hole of 4 bytes");
        expect_problem(&l, 5, NULL, ds + 12, "4 trailing bytes");
        /* The first problem reads as stf_header_parse reports it. */
        buf = ut_st_bytes(json, strlen(json), 16, 5, &len);
        ck_assert_int_eq(stf_header_parse(FN, buf, len, len, &h, &d), -EINVAL);
        ck_assert_str_eq(d.msg, l.v[0].msg);
        free(buf);
        plist_free(&l);
}
END_TEST

/* The same message as the first-problem mode, case by case. */
START_TEST(test_check_messages_match_parse)
{
        static const char *const cases[] = {
            "{" T("w", "F33", "[1]", 0, 4) "}",
            "{" T("w", "F32", "[2]", 0, 4) "}",
            "{" T("w", "F4", "[3]", 0, 2) "}",
            "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}",
            "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}",
            "{" T("w", "U8", "[4294967296,4294967296,16]", 0, 0) "}",
        };
        static const size_t dlen[] = {4, 4, 2, 1, 12, 0};

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct plist l = {0};
                struct stf_diag d = {{0}};
                struct stf_header *h;
                size_t len;
                uint8_t *buf = ut_st_bytes(cases[i], strlen(cases[i]), dlen[i], 5, &len);

                ck_assert_int_eq(stf_header_check(FN, buf, len, len, collect, &l, NULL), -EINVAL);
                ck_assert_int_eq(stf_header_parse(FN, buf, len, len, &h, &d), -EINVAL);
                ck_assert_uint_ge(l.n, 1);
                ck_assert_str_eq(l.v[0].msg, d.msg);
                free(buf);
                plist_free(&l);
        }
}
END_TEST

START_TEST(test_check_fatal_ends)
{
        struct plist l = {0};
        size_t len;
        uint8_t *buf;

        ck_assert_int_eq(check_json("{\"a\":", 0, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        ck_assert_int_ge(l.v[0].offset, 8);
        ut_assert_has(l.v[0].msg, "not valid JSON");
        plist_free(&l);
        ck_assert_int_eq(check_json("[1,2]", 5, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, NULL, 8, "not a JSON object");
        plist_free(&l);
        buf = ut_st_raw(UINT64_MAX, "{}", 2, 0, 0, &len);
        ck_assert_int_eq(stf_header_check(FN, buf, len, len, collect, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, NULL, 0, "exceeds the limit");
        plist_free(&l);
        free(buf);
        ck_assert_int_eq(stf_header_check(FN, (const uint8_t *)"abc", 3, 3, collect, &l, NULL),
                         -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, NULL, 0, "too short");
        plist_free(&l);
}
END_TEST

/* After an overlap the check goes on from the furthest end seen. */
START_TEST(test_check_overlaps)
{
        const char *json = "{" T("a", "U8", "[16]", 0, 16) "," T("b", "U8", "[4]", 4, 8) "," T(
            "c", "U8", "[4]", 8, 12) "," T("d", "U8", "[4]", 16, 20) "}";
        int64_t ds = 8 + (int64_t)strlen(json);
        struct plist l = {0};

        ck_assert_int_eq(check_json(json, 20, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 2);
        expect_problem(&l, 0, "b", ds + 4, "tensor 'b' overlaps tensor 'a'");
        expect_problem(&l, 1, "c", ds + 8, "tensor 'c' overlaps tensor 'a'");
        plist_free(&l);
}
END_TEST

/* A broken entry whose offsets are readable keeps its place: no hole reported. */
START_TEST(test_check_broken_entry_keeps_place)
{
        const char *json = "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[2]", 4, 8) "," T(
            "c", "F32", "[1]", 8, 12) "}";
        struct plist l = {0};

        ck_assert_int_eq(check_json(json, 12, &l, NULL), -EINVAL);
        ck_assert_uint_eq(l.n, 1);
        expect_problem(&l, 0, "b", 8 + (int64_t)strlen(json) + 4, "needs 8 bytes");
        plist_free(&l);
}
END_TEST

/* ---- diag ------------------------------------------------------------ */

START_TEST(test_diag_quote)
{
        char out[512], in[200];

        ck_assert_str_eq(stf_diag_quote("abc", 3, out, sizeof(out)), "abc");
        ck_assert_str_eq(stf_diag_quote("", 0, out, sizeof(out)), "");
        ck_assert_str_eq(stf_diag_quote("a'b\\c", 5, out, sizeof(out)), "a\\x27b\\x5cc");
        ck_assert_str_eq(stf_diag_quote("\n\x01\x7f\xff", 4, out, sizeof(out)),
                         "\\x0a\\x01\\x7f\\xff");
        ck_assert_str_eq(stf_diag_quote("a\0b", 3, out, sizeof(out)), "a\\x00b");
        memset(in, 'x', sizeof(in));
        stf_diag_quote(in, 80, out, sizeof(out));
        ck_assert_uint_eq(strlen(out), 80);
        stf_diag_quote(in, 81, out, sizeof(out));
        ck_assert_uint_eq(strlen(out), 83);
        ck_assert_str_eq(out + 80, "...");
}
END_TEST

/* diag.h: "quotes" are written \xHH, double quotes as well as single. */
START_TEST(test_diag_quote_double_quote)
{
        char out[64];

        ck_assert_str_eq(stf_diag_quote("a\"b", 3, out, sizeof(out)), "a\\x22b");
}
END_TEST

/* Whatever the input and capacity, the output fits and is terminated. */
START_TEST(test_diag_quote_fits)
{
        char in[120], out[64];
        unsigned seed = 12345;

        for (int round = 0; round < 2000; round++) {
                size_t len = (size_t)(round % 120), cap = 8 + (size_t)(round % 56);

                for (size_t i = 0; i < len; i++) {
                        seed = seed * 1103515245u + 12345u;
                        in[i] = (char)(seed >> 16);
                }
                memset(out, 'Z', sizeof(out));
                ck_assert_ptr_eq(stf_diag_quote(in, len, out, cap), out);
                ck_assert_uint_lt(strlen(out), cap);
                for (size_t i = cap; i < sizeof(out); i++)
                        ck_assert_int_eq(out[i], 'Z');
        }
}
END_TEST

START_TEST(test_diag_set)
{
        struct stf_diag d;
        char big[3000];

        stf_diag_set(NULL, "%s", "nothing");
        stf_diag_set(&d, "%s: byte %d: %s", "f", 8, "rule");
        ck_assert_str_eq(d.msg, "f: byte 8: rule");
        memset(big, 'q', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        stf_diag_set(&d, "%s", big);
        ck_assert_uint_eq(strlen(d.msg), STF_DIAG_MAX - 1);
}
END_TEST

static Suite *format_suite(void)
{
        Suite *s = suite_create("format");
        TCase *tc = tcase_create("accept");

        tcase_add_test(tc, test_one_tensor);
        tcase_add_test(tc, test_many_sorted_by_begin);
        tcase_add_test(tc, test_many_reverse);
        tcase_add_test(tc, test_scalar);
        tcase_add_test(tc, test_zero_size);
        tcase_add_test(tc, test_sort_ties_by_name);
        tcase_add_test(tc, test_only_zero_size_no_data);
        tcase_add_loop_test(tc, test_each_dtype, 0, STF_DT_COUNT);
        tcase_add_test(tc, test_all_dtypes_one_file);
        tcase_add_test(tc, test_subbyte_sizes);
        tcase_add_test(tc, test_metadata);
        tcase_add_test(tc, test_metadata_last_and_empty);
        tcase_add_test(tc, test_metadata_owned);
        tcase_add_test(tc, test_whitespace_around);
        tcase_add_test(tc, test_space_padding);
        tcase_add_test(tc, test_empty_header);
        tcase_add_test(tc, test_unicode_names);
        tcase_add_test(tc, test_avail_covers_header_only);
        tcase_add_test(tc, test_header_limit_inclusive);
        tcase_add_test(tc, test_free_null);
        suite_add_tcase(s, tc);

        tc = tcase_create("reject");
        tcase_add_test(tc, test_reject_short_file);
        tcase_add_test(tc, test_reject_header_over_limit);
        tcase_add_test(tc, test_reject_header_past_eof);
        tcase_add_test(tc, test_reject_truncated_avail);
        tcase_add_test(tc, test_reject_invalid_json);
        tcase_add_test(tc, test_reject_not_object);
        tcase_add_test(tc, test_reject_nul_padding);
        tcase_add_test(tc, test_reject_invalid_utf8_name);
        tcase_add_test(tc, test_reject_nul_in_name);
        tcase_add_test(tc, test_reject_duplicate_keys);
        tcase_add_test(tc, test_reject_metadata_not_object);
        tcase_add_test(tc, test_reject_metadata_value);
        tcase_add_test(tc, test_reject_entry_not_object);
        tcase_add_test(tc, test_reject_missing_fields);
        tcase_add_test(tc, test_reject_unknown_dtype);
        tcase_add_test(tc, test_reject_shape_not_array);
        tcase_add_test(tc, test_reject_shape_bad_dim);
        tcase_add_test(tc, test_reject_data_offsets_shape);
        tcase_add_test(tc, test_reject_begin_after_end);
        tcase_add_test(tc, test_reject_size_mismatch);
        tcase_add_test(tc, test_reject_not_whole_bytes);
        tcase_add_test(tc, test_reject_shape_overflow);
        tcase_add_test(tc, test_reject_past_data);
        tcase_add_test(tc, test_reject_hole);
        tcase_add_test(tc, test_reject_overlap);
        tcase_add_test(tc, test_reject_trailing);
        tcase_add_test(tc, test_reject_unknown_key);
        tcase_add_test(tc, test_reject_quoted_names);
        suite_add_tcase(s, tc);

        tc = tcase_create("check");
        tcase_add_test(tc, test_check_sound);
        tcase_add_test(tc, test_check_every_problem);
        tcase_add_test(tc, test_check_messages_match_parse);
        tcase_add_test(tc, test_check_fatal_ends);
        tcase_add_test(tc, test_check_overlaps);
        tcase_add_test(tc, test_check_broken_entry_keeps_place);
        suite_add_tcase(s, tc);

        tc = tcase_create("diag");
        tcase_add_test(tc, test_diag_quote);
        tcase_add_test(tc, test_diag_quote_double_quote);
        tcase_add_test(tc, test_diag_quote_fits);
        tcase_add_test(tc, test_diag_set);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(format_suite());
}
