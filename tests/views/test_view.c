/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of core/view: the extent mapping of the read path
 * (stf_view_iov), .npy headers (stf_npy_header, stf_view_npy) and the
 * synthesized safetensors files (stf_view_subset).
 *
 * The expectations are written here again on purpose, not taken from
 * core/: the NumPy descr of every dtype, the stand-in shapes of packed
 * sub-byte types, the .npy 1.0/2.0 layout, and the relative names of a
 * subset file. Generated safetensors headers are parsed back with our own
 * strict parser (core/format), which must accept them.
 *
 * The models are written by write_st() into a temporary directory, so the
 * data layout (shard and offset order differing from name order) is chosen
 * by the test.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "dtype.h"
#include "format.h"
#include "model.h"
#include "tree.h"
#include "util.h"
#include "view.h"

/* ------------------------------------------------------------ helpers */

/*
 * An assertion for hot loops: Check records the location of every passed
 * ck_assert (a write per call), which makes loops over thousands of
 * dimensions take seconds, and minutes under valgrind.
 */
#define REQUIRE(cond, ...)                                                                         \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        ck_abort_msg(__VA_ARGS__);                                                 \
        } while (0)

#define MAXIOV 64

/*
 * Map [@off, @off + @len) with at most @max iovecs, check the invariants of
 * every answer (count, no empty iovec, bytes = their sum, every iovec inside
 * one extent) and copy what they cover to @out. Returns the count.
 */
static size_t gather(const struct stf_view *v, uint64_t off, size_t len, size_t max, uint8_t *out,
                     size_t *bytes)
{
        struct iovec iov[MAXIOV];
        size_t n, sum = 0;

        ck_assert_uint_le(max, MAXIOV);
        *bytes = 12345;
        n = stf_view_iov(v, off, len, iov, max, bytes);
        REQUIRE(n <= max, "%zu iovecs, at most %zu asked", n, max);
        for (size_t i = 0; i < n; i++) {
                const uint8_t *p = iov[i].iov_base;
                bool inside = false;

                REQUIRE(iov[i].iov_len > 0, "empty iovec %zu", i);
                for (size_t k = 0; k < v->n && !inside; k++)
                        inside = p >= v->ext[k].ptr &&
                                 p + iov[i].iov_len <= v->ext[k].ptr + v->ext[k].len;
                REQUIRE(inside, "iovec %zu of read (%" PRIu64 ", %zu) is not in one extent", i, off,
                        len);
                if (out)
                        memcpy(out + sum, p, iov[i].iov_len);
                sum += iov[i].iov_len;
        }
        REQUIRE(sum == *bytes, "iovecs cover %zu bytes, *bytes says %zu", sum, *bytes);
        return n;
}

/* The whole of @v, read with @max iovecs per call; caller frees. */
static uint8_t *read_all(const struct stf_view *v, size_t max)
{
        uint8_t *buf = malloc(v->size ? v->size : 1);
        size_t got;

        ck_assert_ptr_nonnull(buf);
        for (uint64_t off = 0; off < v->size; off += got) {
                gather(v, off, (size_t)(v->size - off), max, buf + off, &got);
                ck_assert_uint_gt(got, 0);
        }
        gather(v, v->size, 1, max, NULL, &got);
        ck_assert_uint_eq(got, 0);
        return buf;
}

/* A view built by hand: extents of @lens laid end to end, over memory with
 * gaps between them (so an iovec crossing an extent edge would be caught). */
struct handview {
        struct stf_view v;
        struct stf_extent ext[16];
        uint8_t mem[1024];
        uint8_t flat[1024]; /* the file's bytes, end to end */
};

static uint8_t pattern(uint64_t off)
{
        return (uint8_t)(off * 131 + 17); /* distinct for 256 offsets */
}

static void hand_build(struct handview *h, const uint64_t *lens, size_t n)
{
        uint64_t off = 0;
        size_t src = 0;

        memset(h, 0, sizeof(*h));
        for (size_t i = 0; i < n; i++) {
                h->ext[i] = (struct stf_extent){off, lens[i], h->mem + src, (int32_t)i - 1};
                for (uint64_t j = 0; j < lens[i]; j++) {
                        h->mem[src + j] = pattern(off + j);
                        h->flat[off + j] = pattern(off + j);
                }
                src += lens[i] + 5;
                off += lens[i];
        }
        ck_assert_uint_lt(off, 256);
        h->v.size = off;
        h->v.n = n;
        h->v.ext = h->ext;
}

/* Extents of @v that [@off, @off + @len) touches. */
static size_t touched(const struct stf_view *v, uint64_t off, uint64_t len)
{
        size_t k = 0;

        for (size_t i = 0; i < v->n && len; i++)
                k += v->ext[i].off < off + len && off < v->ext[i].off + v->ext[i].len;
        return k;
}

/* ------------------------------------------------------ stf_view_iov */

static const uint64_t lens6[] = {10, 1, 7, 64, 3, 1};

START_TEST(test_iov_exhaustive)
{
        struct handview h;
        uint8_t out[256];

        hand_build(&h, lens6, 6);
        ck_assert_uint_eq(h.v.size, 86);
        for (uint64_t off = 0; off <= h.v.size + 2; off++) {
                for (size_t len = 0; len <= h.v.size + 2; len++) {
                        uint64_t want = off >= h.v.size        ? 0
                                        : len < h.v.size - off ? len
                                                               : h.v.size - off;
                        size_t got, n;

                        n = gather(&h.v, off, len, MAXIOV, out, &got);
                        REQUIRE(got == want, "(%" PRIu64 ", %zu): %zu bytes", off, len, got);
                        REQUIRE(n == touched(&h.v, off, want), "(%" PRIu64 ", %zu): %zu iovecs",
                                off, len, n);
                        REQUIRE(!memcmp(out, h.flat + (off < h.v.size ? off : 0), got),
                                "(%" PRIu64 ", %zu): bytes differ", off, len);
                }
        }
}
END_TEST

START_TEST(test_iov_edges)
{
        struct handview h;
        struct iovec iov[8];
        size_t got, n;

        hand_build(&h, lens6, 6);
        /* exactly one extent, from its first to its last byte */
        for (size_t k = 0; k < 6; k++) {
                n = stf_view_iov(&h.v, h.ext[k].off, h.ext[k].len, iov, 8, &got);
                ck_assert_uint_eq(n, 1);
                ck_assert_uint_eq(got, h.ext[k].len);
                ck_assert_ptr_eq(iov[0].iov_base, h.ext[k].ptr);
        }
        /* starting at an edge, ending one past the next edge */
        n = stf_view_iov(&h.v, 10, 2, iov, 8, &got);
        ck_assert_uint_eq(n, 2);
        ck_assert_ptr_eq(iov[0].iov_base, h.ext[1].ptr);
        ck_assert_ptr_eq(iov[1].iov_base, h.ext[2].ptr);
        ck_assert_uint_eq(iov[1].iov_len, 1);
        /* ending exactly at an edge */
        n = stf_view_iov(&h.v, 5, 13, iov, 8, &got);
        ck_assert_uint_eq(n, 3);
        ck_assert_uint_eq(got, 13);
        ck_assert_ptr_eq(iov[0].iov_base, h.ext[0].ptr + 5);
        ck_assert_uint_eq(iov[2].iov_len, 7);
        /* straddling one edge by one byte each side */
        n = stf_view_iov(&h.v, 17, 2, iov, 8, &got);
        ck_assert_uint_eq(n, 2);
        ck_assert_ptr_eq(iov[0].iov_base, h.ext[2].ptr + 6);
        ck_assert_ptr_eq(iov[1].iov_base, h.ext[3].ptr);
        /* the last byte */
        n = stf_view_iov(&h.v, 85, 100, iov, 8, &got);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(got, 1);
        ck_assert_ptr_eq(iov[0].iov_base, h.ext[5].ptr);
}
END_TEST

START_TEST(test_iov_past_end)
{
        struct handview h;
        struct iovec iov[4];
        const uint64_t offs[] = {86, 87, 4096, UINT64_MAX};
        size_t got;

        hand_build(&h, lens6, 6);
        for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
                got = 99;
                ck_assert_uint_eq(stf_view_iov(&h.v, offs[i], 10, iov, 4, &got), 0);
                ck_assert_uint_eq(got, 0);
        }
        /* a length past the end is cut at the end */
        ck_assert_uint_eq(stf_view_iov(&h.v, 80, SIZE_MAX, iov, 4, &got), 3);
        ck_assert_uint_eq(got, 6);
        /* nothing asked, nothing given */
        got = 99;
        ck_assert_uint_eq(stf_view_iov(&h.v, 0, 0, iov, 4, &got), 0);
        ck_assert_uint_eq(got, 0);
}
END_TEST

START_TEST(test_iov_max)
{
        struct handview h;
        uint8_t *all;
        size_t got, n;

        hand_build(&h, lens6, 6);
        /* no room: nothing covered */
        got = 99;
        ck_assert_uint_eq(stf_view_iov(&h.v, 0, 86, NULL, 0, &got), 0);
        ck_assert_uint_eq(got, 0);
        /* *bytes tells how far the iovecs went */
        for (size_t max = 1; max <= 6; max++) {
                uint64_t want = 0;

                for (size_t k = 0; k < max; k++)
                        want += lens6[k];
                n = gather(&h.v, 0, 86, max, NULL, &got);
                ck_assert_uint_eq(n, max);
                ck_assert_uint_eq(got, want);
        }
        /* from inside an extent: its rest */
        n = gather(&h.v, 5, 86, 1, NULL, &got);
        ck_assert_uint_eq(n, 1);
        ck_assert_uint_eq(got, 5);
        n = gather(&h.v, 12, 86, 2, NULL, &got);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_eq(got, 6 + 64);
        /* calling again from off + *bytes gives the whole file */
        for (size_t max = 1; max <= 7; max++) {
                all = read_all(&h.v, max);
                ck_assert_mem_eq(all, h.flat, h.v.size);
                free(all);
        }
}
END_TEST

START_TEST(test_iov_empty)
{
        struct stf_view v;
        struct handview h;
        struct iovec iov[2];
        static const uint8_t text[] = "hello";
        size_t got = 99;

        stf_view_init_mem(&v, NULL, 0);
        ck_assert_uint_eq(v.size, 0);
        ck_assert_uint_eq(v.n, 0);
        ck_assert_uint_eq(stf_view_iov(&v, 0, 10, iov, 2, &got), 0);
        ck_assert_uint_eq(got, 0);

        hand_build(&h, lens6, 0);
        got = 99;
        ck_assert_uint_eq(stf_view_iov(&h.v, 0, 10, iov, 2, &got), 0);
        ck_assert_uint_eq(got, 0);

        stf_view_init_mem(&v, text, 5);
        ck_assert_uint_eq(v.n, 1);
        ck_assert_uint_eq(v.size, 5);
        ck_assert_int_eq(v.ext[0].shard, -1);
        ck_assert_uint_eq(stf_view_iov(&v, 1, 3, iov, 2, &got), 1);
        ck_assert_uint_eq(got, 3);
        ck_assert_ptr_eq(iov[0].iov_base, text + 1);
        stf_view_free(NULL);
}
END_TEST

/* ---------------------------------------------------- stf_npy_header */

/* What the .npy view promises for each dtype, written again here. */
static const struct {
        const char *name, *descr;
        unsigned bits;
} npy_want[STF_DT_COUNT] = {
    {"BOOL", "|b1", 8},        {"U8", "|u1", 8},          {"I8", "|i1", 8},
    {"F8_E5M2", "|u1", 8},     {"F8_E4M3", "|u1", 8},     {"F8_E8M0", "|u1", 8},
    {"F8_E4M3FNUZ", "|u1", 8}, {"F8_E5M2FNUZ", "|u1", 8}, {"I16", "<i2", 16},
    {"U16", "<u2", 16},        {"F16", "<f2", 16},        {"BF16", "<u2", 16},
    {"I32", "<i4", 32},        {"U32", "<u4", 32},        {"F32", "<f4", 32},
    {"F64", "<f8", 64},        {"I64", "<i8", 64},        {"U64", "<u8", 64},
    {"C64", "<c8", 64},        {"F4", "|u1", 4},          {"F6_E2M3", "|u1", 6},
    {"F6_E3M2", "|u1", 6},
};

/* The shape a .npy view shows: packed sub-byte types in bytes. */
static uint32_t npy_shape(unsigned dt, const uint64_t *shape, uint32_t rank, uint64_t *out)
{
        unsigned bits = npy_want[dt].bits;
        uint64_t n = 1;

        if (bits % 8 == 0 || rank == 0) {
                memcpy(out, shape, rank * sizeof(*shape));
                return rank;
        }
        if (shape[rank - 1] * bits % 8 == 0) {
                memcpy(out, shape, rank * sizeof(*shape));
                out[rank - 1] = shape[rank - 1] * bits / 8;
                return rank;
        }
        for (uint32_t d = 0; d < rank; d++)
                n *= shape[d];
        out[0] = n * bits / 8;
        return 1;
}

struct npy_parsed {
        int version;
        char descr[16];
        uint32_t rank;
        uint64_t *shape; /* malloc'd */
        size_t dict_len; /* the dict text without padding */
};

static uint64_t le(const char *p, int n)
{
        uint64_t v = 0;

        for (int i = n - 1; i >= 0; i--)
                v = v << 8 | (uint8_t)p[i];
        return v;
}

/*
 * Parse a .npy header strictly: magic, version, length field, 64-byte
 * alignment, the dict exactly as NumPy writes it, the shape tuple in Python
 * syntax ("()", "(3,)", "(3, 4)"), space padding and the final newline.
 */
static void npy_parse(const char *buf, long total, struct npy_parsed *p)
{
        static const char head[] = "{'descr': '";
        static const char mid[] = "', 'fortran_order': False, 'shape': (";
        const char *s, *end, *q;
        size_t pre;

        memset(p, 0, sizeof(*p));
        ck_assert_int_gt(total, 0);
        ck_assert_int_eq(total % 64, 0);
        ck_assert_mem_eq(buf, "\x93NUMPY", 6);
        p->version = (uint8_t)buf[6];
        ck_assert_msg(p->version == 1 || p->version == 2, "version %d", p->version);
        ck_assert_int_eq(buf[7], 0);
        pre = p->version == 1 ? 10 : 12;
        ck_assert_uint_eq(le(buf + 8, p->version == 1 ? 2 : 4), (uint64_t)total - pre);
        ck_assert_int_eq(buf[total - 1], '\n');
        s = buf + pre;
        end = buf + total - 1;
        while (end > s && end[-1] == ' ')
                end--;
        p->dict_len = (size_t)(end - s);
        ck_assert_mem_eq(s, head, strlen(head));
        s += strlen(head);
        q = memchr(s, '\'', (size_t)(end - s));
        ck_assert_ptr_nonnull(q);
        ck_assert_uint_lt((size_t)(q - s), sizeof(p->descr));
        memcpy(p->descr, s, (size_t)(q - s));
        s = q;
        ck_assert_mem_eq(s, mid, strlen(mid));
        s += strlen(mid);
        p->shape = malloc(((size_t)(end - s) / 2 + 1) * sizeof(*p->shape));
        ck_assert_ptr_nonnull(p->shape);
        while (*s != ')') {
                uint64_t d = 0;

                REQUIRE(*s >= '0' && *s <= '9', "shape: digit expected at '%.20s'", s);
                REQUIRE(*s != '0' || s[1] < '0' || s[1] > '9', "shape: leading zero");
                for (; *s >= '0' && *s <= '9'; s++)
                        d = d * 10 + (uint64_t)(*s - '0');
                p->shape[p->rank++] = d;
                if (*s == ',' && s[1] == ')') {
                        ck_assert_msg(p->rank == 1, "shape: trailing comma after %u dims", p->rank);
                        s++;
                } else if (*s == ',') {
                        REQUIRE(s[1] == ' ', "shape: ', ' expected");
                        s += 2;
                } else {
                        REQUIRE(*s == ')', "shape: ')' expected at '%.20s'", s);
                        REQUIRE(p->rank >= 2, "shape: one dimension needs '(N,)'");
                }
        }
        s++;
        ck_assert_msg(end - s == 3 && !memcmp(s, ", }", 3), "dict ends in '%.*s'", (int)(end - s),
                      s);
}

static bool has_text(const char *buf, long total, const char *text)
{
        return memmem(buf, (size_t)total, text, strlen(text)) != NULL;
}

/* The header of @dt/@shape in a new buffer (*@total bytes). */
static char *header_of(unsigned dt, const uint64_t *shape, uint32_t rank, long *total)
{
        size_t cap = 256 + (size_t)rank * 24;
        char *buf = malloc(cap);

        ck_assert_ptr_nonnull(buf);
        *total = stf_npy_header(dt, shape, rank, buf, cap);
        ck_assert_msg(*total > 0, "stf_npy_header(%s, rank %u): %ld", npy_want[dt].name, rank,
                      *total);
        return buf;
}

static void check_npy(unsigned dt, const uint64_t *shape, uint32_t rank)
{
        uint64_t want[16];
        uint32_t wrank = npy_shape(dt, shape, rank, want);
        struct npy_parsed p;
        long total;
        char *buf = header_of(dt, shape, rank, &total);

        npy_parse(buf, total, &p);
        ck_assert_int_eq(p.version, 1);
        ck_assert_str_eq(p.descr, npy_want[dt].descr);
        ck_assert_msg(p.rank == wrank, "%s rank %u: shape has %u dims, expected %u",
                      npy_want[dt].name, rank, p.rank, wrank);
        for (uint32_t d = 0; d < wrank; d++)
                ck_assert_uint_eq(p.shape[d], want[d]);
        /* minimal padding: fewer than 64 bytes of spaces */
        ck_assert_int_lt(total - 10 - (long)p.dict_len - 1, 64);
        free(p.shape);
        free(buf);
}

START_TEST(test_npy_every_dtype_rank)
{
        uint64_t shape[8];

        for (unsigned dt = 0; dt < STF_DT_COUNT; dt++) {
                unsigned bits = npy_want[dt].bits;

                ck_assert_str_eq(stf_dtype_info(dt)->name, npy_want[dt].name);
                ck_assert_uint_eq(stf_dtype_info(dt)->bits, bits);
                for (uint32_t rank = 0; rank <= 8; rank++) {
                        /* a 4- or 6-bit scalar is not whole bytes: no such tensor */
                        if (rank == 0 && bits % 8)
                                continue;
                        for (uint32_t d = 0; d < rank; d++)
                                shape[d] = d + 2;
                        if (bits % 8 && rank)
                                shape[rank - 1] = 8; /* last dimension whole bytes */
                        check_npy(dt, shape, rank);
                        /* a zero dimension */
                        if (rank) {
                                shape[0] = 0;
                                check_npy(dt, shape, rank);
                        }
                }
        }
}
END_TEST

START_TEST(test_npy_shape_syntax)
{
        static const uint64_t s34[] = {3, 4}, s3[] = {3}, big[] = {UINT64_MAX, 1, 0};
        long total;
        char *buf;

        buf = header_of(STF_DT_F32, NULL, 0, &total);
        ck_assert(has_text(buf, total, "'shape': (), }"));
        free(buf);
        buf = header_of(STF_DT_F32, s3, 1, &total);
        ck_assert(has_text(buf, total, "'shape': (3,), }"));
        free(buf);
        buf = header_of(STF_DT_F32, s34, 2, &total);
        ck_assert(has_text(buf, total, "'shape': (3, 4), }"));
        ck_assert_int_eq(total, 128); /* 10 + 59 + 1 bytes, rounded up */
        free(buf);
        buf = header_of(STF_DT_U8, big, 3, &total);
        ck_assert(has_text(buf, total, "'shape': (18446744073709551615, 1, 0), }"));
        free(buf);
}
END_TEST

/* Packed sub-byte types whose last dimension is not whole bytes: flat. */
START_TEST(test_npy_subbyte_flat)
{
        uint64_t shape[8];
        static const uint64_t f4_0x7[] = {0, 7}, f4_3x2x3[] = {3, 2, 3}, f6_4x3[] = {4, 3};
        long total;
        char *buf;

        check_npy(STF_DT_F4, f4_0x7, 2);
        check_npy(STF_DT_F4, f4_3x2x3, 3);
        check_npy(STF_DT_F6_E2M3, f6_4x3, 2);
        check_npy(STF_DT_F6_E3M2, f6_4x3, 2);
        for (uint32_t rank = 2; rank <= 8; rank++) {
                for (uint32_t d = 0; d < rank; d++)
                        shape[d] = 4;
                shape[rank - 1] = 3;
                for (unsigned dt = STF_DT_F4; dt <= STF_DT_F6_E3M2; dt++)
                        check_npy(dt, shape, rank);
        }
        /* exact text: NumPy rejects "(0)" (an int, not a tuple) */
        buf = header_of(STF_DT_F4, f4_0x7, 2, &total);
        ck_assert(has_text(buf, total, "'shape': (0,), }"));
        free(buf);
        buf = header_of(STF_DT_F6_E2M3, f6_4x3, 2, &total);
        ck_assert(has_text(buf, total, "'shape': (9,), }"));
        free(buf);
}
END_TEST

START_TEST(test_npy_v2)
{
        const uint32_t rank = 5000;
        uint64_t *shape = malloc(rank * sizeof(*shape));
        struct npy_parsed p;
        long total;
        char *buf;

        ck_assert_ptr_nonnull(shape);
        for (uint32_t d = 0; d < rank; d++)
                shape[d] = UINT64_MAX;
        buf = header_of(STF_DT_F32, shape, rank, &total);
        npy_parse(buf, total, &p);
        ck_assert_int_eq(p.version, 2);
        ck_assert_int_gt(total, 65535 + 12);
        ck_assert_uint_eq(p.rank, rank);
        for (uint32_t d = 0; d < rank; d++)
                REQUIRE(p.shape[d] == UINT64_MAX, "dimension %u is %" PRIu64, d, p.shape[d]);
        ck_assert_int_lt(total - 12 - (long)p.dict_len - 1, 64);
        free(p.shape);
        free(buf);
        free(shape);
}
END_TEST

/*
 * Around the 1.0/2.0 boundary: 1.0 while its 16-bit length field can hold
 * the padded header, 2.0 after; the length field always right.
 */
START_TEST(test_npy_v1_v2_boundary)
{
        const uint32_t lo = 21780, hi = 21860; /* dicts of 65393..65633 bytes */
        uint64_t *shape = malloc(hi * sizeof(*shape));
        int seen[3] = {0};

        ck_assert_ptr_nonnull(shape);
        for (uint32_t d = 0; d < hi; d++)
                shape[d] = 1;
        for (uint32_t rank = lo; rank <= hi; rank++) {
                struct npy_parsed p;
                long total;
                char *buf = header_of(STF_DT_F32, shape, rank, &total);
                size_t v1_total;

                npy_parse(buf, total, &p);
                ck_assert_uint_eq(p.rank, rank);
                v1_total = (10 + p.dict_len + 1 + 63) / 64 * 64;
                /* the smallest version that can hold it */
                ck_assert_msg(p.version == (v1_total - 10 <= 65535 ? 1 : 2),
                              "rank %u: dict %zu bytes, version %d", rank, p.dict_len, p.version);
                seen[p.version]++;
                free(p.shape);
                free(buf);
        }
        ck_assert_int_gt(seen[1], 0);
        ck_assert_int_gt(seen[2], 0);
        free(shape);
}
END_TEST

START_TEST(test_npy_errors)
{
        static const uint64_t s34[] = {3, 4};
        char buf[256];
        long total;

        total = stf_npy_header(STF_DT_F32, s34, 2, buf, sizeof(buf));
        ck_assert_int_eq(total, 128);
        ck_assert_int_eq(stf_npy_header(STF_DT_F32, s34, 2, buf, (size_t)total), total);
        ck_assert_int_eq(stf_npy_header(STF_DT_F32, s34, 2, buf, (size_t)total - 1), -ERANGE);
        ck_assert_int_eq(stf_npy_header(STF_DT_F32, s34, 2, buf, 64), -ERANGE);
        ck_assert_int_eq(stf_npy_header(STF_DT_F32, s34, 2, NULL, 0), -ERANGE);
        ck_assert_int_eq(stf_npy_header(STF_DT_COUNT, s34, 2, buf, sizeof(buf)), -EINVAL);
}
END_TEST

/* ------------------------------------------------- models on disk */

struct tspec {
        const char *name; /* tensor name (no '"' or '\\' besides escaped ones) */
        const char *dtype;
        uint32_t rank;
        uint64_t shape[4];
};

static unsigned spec_bits(const struct tspec *t)
{
        enum stf_dtype dt;

        ck_assert_int_eq(stf_dtype_lookup(t->dtype, strlen(t->dtype), &dt), 0);
        return npy_want[dt].bits;
}

static uint64_t spec_size(const struct tspec *t)
{
        uint64_t n = 1;

        for (uint32_t d = 0; d < t->rank; d++)
                n *= t->shape[d];
        ck_assert_uint_eq(n * spec_bits(t) % 8, 0);
        return n * spec_bits(t) / 8;
}

static uint8_t data_byte(const char *name, uint64_t j)
{
        uint32_t h = 2166136261u;

        for (const char *s = name; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return (uint8_t)((h >> (j % 4 * 8)) ^ (j * 29));
}

static void fill_by_name(void *arg, size_t i, uint64_t at, uint8_t *p, size_t len)
{
        const struct tspec *t = arg;

        for (size_t j = 0; j < len; j++)
                p[j] = data_byte(t[i].name, j);
}

/*
 * Write a safetensors file @dir/@file: header entries in the order of @t,
 * data in the order @order (indices into @t), @meta a JSON object text or
 * NULL.
 */
static void write_st(const char *dir, const char *file, const struct tspec *t, size_t n,
                     const size_t *order, const char *meta)
{
        struct stw_tensor st[32];
        char path[4096];

        ck_assert_uint_le(n, 32);
        for (size_t i = 0; i < n; i++) {
                st[i] = (struct stw_tensor){.name = t[i].name,
                                            .dtype = t[i].dtype,
                                            .rank = t[i].rank,
                                            .bits = spec_bits(&t[i])};
                memcpy(st[i].shape, t[i].shape, sizeof(t[i].shape));
                ck_assert_uint_eq(stw_size(&st[i]), spec_size(&t[i]));
        }
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        ut_write_st(path, &(struct stw_file){.t = st,
                                             .n = n,
                                             .meta = meta,
                                             .order = order,
                                             .pad = true,
                                             .fill = fill_by_name,
                                             .arg = (void *)t});
}

/*
 * One directory per test case (made and removed in the runner's process,
 * so a failed test, whose forked child exits at once, leaves nothing
 * behind), and in it a fresh directory per test.
 */
static char basedir[] = "/tmp/stf-test-view-XXXXXX";
static char tmpdir[sizeof(basedir) + 16];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path);
}

static void base_setup(void)
{
        strcpy(basedir + strlen(basedir) - 6, "XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(basedir));
}

static void base_teardown(void)
{
        nftw(basedir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void tmp_setup(void)
{
        snprintf(tmpdir, sizeof(tmpdir), "%s/XXXXXX", basedir);
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmp_teardown(void)
{
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static char *subdir(const char *rel)
{
        static char path[4096];

        snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
        ck_assert_int_eq(mkdir(path, 0755), 0);
        return path;
}

struct opened {
        struct stf_model *m;
        struct stf_tree *t;
};

static void open_model(const char *rel, struct opened *o)
{
        char path[4096];
        struct stf_diag diag = {{0}};
        int ret;

        snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
        ret = stf_model_open(path, &o->m, &diag);
        ck_assert_msg(ret == 0, "stf_model_open(%s): %d %s", path, ret, diag.msg);
        ret = stf_tree_build_model(o->m, 0, &o->t, &diag);
        ck_assert_msg(ret == 0, "stf_tree_build_model: %d %s", ret, diag.msg);
}

static void close_model(struct opened *o)
{
        stf_tree_free(o->t);
        stf_model_close(o->m);
}

/* Inode of the '/'-separated @path ("" for the root). */
static uint64_t ino_of(const struct stf_tree *t, const char *path)
{
        uint64_t ino = STF_ROOT_INO;

        while (*path) {
                const char *e = strchr(path, '/');
                size_t len = e ? (size_t)(e - path) : strlen(path);

                ck_assert_msg(stf_tree_lookup(t, ino, path, len, &ino) == 0, "no '%.*s' in tree",
                              (int)len, path);
                path += len + (e ? 1 : 0);
        }
        return ino;
}

/* Index in m->tensors of the tensor @comp/@name. */
static size_t tensor_index(const struct stf_model *m, const char *comp, const char *name)
{
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *x = &m->tensors[i];

                if (!strcmp(x->name, name) && !strcmp(m->comps[x->comp].name, comp))
                        return i;
        }
        ck_abort_msg("no tensor %s/%s", comp, name);
        return 0;
}

/* One tensor expected in a subset file, in file order. */
struct want {
        const char *name;       /* in the subset file */
        const char *comp, *src; /* the source tensor */
};

/*
 * Build the subset view of @dir, check it against @w (file order), parse
 * it back with stf_header_parse and compare names, dtypes, shapes, offsets,
 * bytes and __metadata__ (@meta, JSON text).
 */
static void check_subset(struct opened *o, const char *dir, bool full, const struct want *w,
                         size_t n, const char *meta)
{
        const struct stf_model *m = o->m;
        struct stf_view *v = NULL;
        struct stf_header *h = NULL;
        struct stf_diag diag = {{0}};
        json_t *want_meta;
        uint64_t hlen, off = 0;
        size_t next = 1;
        uint8_t *buf;
        int ret;

        ret = stf_view_subset(m, o->t, ino_of(o->t, dir), full, &v);
        ck_assert_msg(ret == 0, "stf_view_subset(%s): %d", dir, ret);
        buf = read_all(v, MAXIOV);
        hlen = le((const char *)buf, 8);
        ck_assert_uint_eq(hlen % 8, 0);
        ck_assert_uint_le(8 + hlen, v->size);
        ret = stf_header_parse("subset", buf, v->size, v->size, &h, &diag);
        ck_assert_msg(ret == 0, "subset of '%s' rejected by our parser: %s\nheader: %.*s", dir,
                      diag.msg, (int)hlen, buf + 8);
        ck_assert_uint_eq(h->data_start, 8 + hlen);
        ck_assert_uint_eq(h->ntensors, n);
        /* the header extent, then one extent per non-empty tensor */
        ck_assert_uint_eq(v->ext[0].off, 0);
        ck_assert_uint_eq(v->ext[0].len, 8 + hlen);
        ck_assert_int_eq(v->ext[0].shard, -1);
        for (size_t i = 0; i < n; i++) {
                const struct stf_tensor *s = &m->tensors[tensor_index(m, w[i].comp, w[i].src)];
                const struct stf_tensor *x = NULL;

                for (size_t k = 0; k < h->ntensors && !x; k++)
                        if (!strcmp(h->tensors[k].name, w[i].name))
                                x = &h->tensors[k];
                ck_assert_msg(x != NULL, "'%s' not in the subset of '%s': %.*s", w[i].name, dir,
                              (int)hlen, buf + 8);
                ck_assert_uint_eq(x->dtype, s->dtype);
                ck_assert_uint_eq(x->rank, s->rank);
                for (uint32_t d = 0; d < s->rank; d++)
                        ck_assert_uint_eq(x->shape[d], s->shape[d]);
                /* shard-then-offset order: offsets follow @w */
                ck_assert_msg(x->begin == 8 + hlen + off, "'%s' at %" PRIu64 ", expected %" PRIu64,
                              w[i].name, x->begin - 8 - hlen, off);
                ck_assert_uint_eq(x->size, s->size);
                ck_assert_mem_eq(buf + x->begin, m->shards[s->shard].map + s->begin, s->size);
                if (s->size) {
                        const struct stf_extent *e = &v->ext[next++];

                        ck_assert_uint_eq(e->off, x->begin);
                        ck_assert_uint_eq(e->len, s->size);
                        ck_assert_ptr_eq(e->ptr, m->shards[s->shard].map + s->begin);
                        ck_assert_int_eq(e->shard, (int32_t)s->shard);
                }
                off += s->size;
        }
        ck_assert_uint_eq(v->n, next); /* zero-size tensors have no extent */
        ck_assert_uint_eq(v->size, 8 + hlen + off);
        want_meta = json_loads(meta, 0, NULL);
        ck_assert_ptr_nonnull(want_meta);
        ck_assert_msg(json_equal(h->metadata, want_meta), "__metadata__ of '%s': %.*s", dir,
                      (int)hlen, buf + 8);
        json_decref(want_meta);
        stf_header_free(h);
        free(buf);
        stf_view_free(v);
}

/*
 * A sharded set whose data order differs from its name order; a zero-size
 * tensor; packed F4/F6 tensors; a name that needs JSON escaping.
 */
static const struct tspec shard1[] = {
    {"a.x.b", "F32", 1, {3}},
    {"a.x.w", "BF16", 2, {2, 3}},
    {"a.y.w", "F4", 2, {2, 8}},
};
static const size_t order1[] = {2, 1, 0};
static const struct tspec shard2[] = {
    {"a.e", "F6_E2M3", 2, {4, 4}}, {"a.z", "F32", 1, {0}},       {"b.w", "F16", 1, {5}},
    {"c", "U8", 1, {7}},           {"q\"uo\\te", "I64", 1, {2}},
};
static const size_t order2[] = {3, 1, 2, 0, 4};
static const char meta1[] = "{\"format\":\"pt\",\"k1\":\"v1\",\"both\":\"one\"}";
static const char meta2[] = "{\"format\":\"pt\",\"k2\":\"v2\",\"both\":\"two\"}";
static const char meta12[] = "{\"format\":\"pt\",\"k1\":\"v1\",\"both\":\"one\",\"k2\":\"v2\"}";

static void make_sharded(struct opened *o)
{
        const char *dir = subdir("sharded");
        const char *map[16];
        char path[4096];

        write_st(dir, "model-00001-of-00002.safetensors", shard1, 3, order1, meta1);
        write_st(dir, "model-00002-of-00002.safetensors", shard2, 5, order2, meta2);
        for (size_t i = 0; i < 8; i++) {
                map[2 * i] = i < 3 ? shard1[i].name : shard2[i - 3].name;
                map[2 * i + 1] =
                    i < 3 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
        }
        snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
        ck_assert_int_eq(stw_write_index(path, map, 8, "{\"total_size\":77}"), 0);
        open_model("sharded", o);
        ck_assert_uint_eq(o->m->nshards, 2);
        ck_assert_uint_eq(o->m->ncomps, 1);
}

START_TEST(test_subset_sharded)
{
        struct opened o;
        static const struct want a[] = {
            {"x.b", "", "a.x.b"}, {"z", "", "a.z"}, {"x.w", "", "a.x.w"},
            {"y.w", "", "a.y.w"}, {"e", "", "a.e"},
        };
        static const struct want a_full[] = {
            {"a.x.b", "", "a.x.b"}, {"a.z", "", "a.z"}, {"a.x.w", "", "a.x.w"},
            {"a.y.w", "", "a.y.w"}, {"a.e", "", "a.e"},
        };
        static const struct want ax[] = {{"b", "", "a.x.b"}, {"w", "", "a.x.w"}};
        static const struct want root[] = {
            {"q\"uo\\te", "", "q\"uo\\te"},
            {"a.x.b", "", "a.x.b"},
            {"a.z", "", "a.z"},
            {"a.x.w", "", "a.x.w"},
            {"b.w", "", "b.w"},
            {"a.y.w", "", "a.y.w"},
            {"c", "", "c"},
            {"a.e", "", "a.e"},
        };
        static const struct want b[] = {{"w", "", "b.w"}};

        make_sharded(&o);
        check_subset(&o, "a", false, a, 5, meta12);
        check_subset(&o, "a", true, a_full, 5, meta12);
        check_subset(&o, "a/x", false, ax, 2, meta12);
        check_subset(&o, "", false, root, 8, meta12);
        check_subset(&o, "", true, root, 8, meta12);
        check_subset(&o, "b", false, b, 1, meta12);
        close_model(&o);
}
END_TEST

/* Reads across the edges of a subset file and of a .npy file. */
START_TEST(test_subset_npy_straddle)
{
        struct opened o;
        struct stf_view *v;
        struct iovec iov[4];
        const struct stf_tensor *yw, *xw, *xb, *e;
        uint64_t hlen;
        size_t got;

        make_sharded(&o);
        yw = &o.m->tensors[tensor_index(o.m, "", "a.y.w")];
        xw = &o.m->tensors[tensor_index(o.m, "", "a.x.w")];
        xb = &o.m->tensors[tensor_index(o.m, "", "a.x.b")];
        e = &o.m->tensors[tensor_index(o.m, "", "a.e")];
        ck_assert_int_eq(stf_view_subset(o.m, o.t, ino_of(o.t, "a"), false, &v), 0);
        hlen = 8 + le((const char *)v->mem, 8);
        /* file order: x.b (F32), a.z (F32, empty), x.w (BF16), y.w (F4), e (F6) */
        /* header and data */
        ck_assert_uint_eq(stf_view_iov(v, hlen - 2, 4, iov, 4, &got), 2);
        ck_assert_uint_eq(got, 4);
        ck_assert_ptr_eq(iov[0].iov_base, v->mem + hlen - 2);
        ck_assert_ptr_eq(iov[1].iov_base, o.m->shards[xb->shard].map + xb->begin);
        /* two tensors (the zero-size a.z between them has no extent) */
        ck_assert_uint_eq(stf_view_iov(v, hlen + xb->size - 1, 2, iov, 4, &got), 2);
        ck_assert_ptr_eq(iov[0].iov_base, o.m->shards[xb->shard].map + xb->begin + xb->size - 1);
        ck_assert_ptr_eq(iov[1].iov_base, o.m->shards[xw->shard].map + xw->begin);
        /* two shards */
        ck_assert_uint_ne(yw->shard, e->shard);
        ck_assert_uint_eq(
            stf_view_iov(v, hlen + xb->size + xw->size + yw->size - 3, 6, iov, 4, &got), 2);
        ck_assert_uint_eq(got, 6);
        ck_assert_ptr_eq(iov[0].iov_base, o.m->shards[yw->shard].map + yw->begin + yw->size - 3);
        ck_assert_ptr_eq(iov[1].iov_base, o.m->shards[e->shard].map + e->begin);
        ck_assert_uint_eq(iov[1].iov_len, 3);
        /* header, three tensors and into the fourth: four iovecs */
        ck_assert_uint_eq(stf_view_iov(v, 0, (size_t)v->size, iov, 4, &got), 4);
        ck_assert_uint_eq(got, hlen + xb->size + xw->size + yw->size);
        stf_view_free(v);

        /* .npy: header then data */
        ck_assert_int_eq(stf_view_npy(o.m, (size_t)(xw - o.m->tensors), &v), 0);
        ck_assert_uint_eq(v->n, 2);
        hlen = v->ext[0].len;
        ck_assert_uint_eq(hlen % 64, 0);
        ck_assert_uint_eq(stf_view_iov(v, hlen - 1, 2, iov, 4, &got), 2);
        ck_assert_ptr_eq(iov[0].iov_base, v->mem + hlen - 1);
        ck_assert_ptr_eq(iov[1].iov_base, o.m->shards[xw->shard].map + xw->begin);
        ck_assert_uint_eq(stf_view_iov(v, hlen, 100, iov, 4, &got), 1);
        ck_assert_uint_eq(got, xw->size);
        stf_view_free(v);
        close_model(&o);
}
END_TEST

START_TEST(test_npy_views_of_model)
{
        struct opened o;

        make_sharded(&o);
        for (size_t i = 0; i < o.m->ntensors; i++) {
                const struct stf_tensor *x = &o.m->tensors[i];
                struct stf_view *v = NULL, raw;
                struct npy_parsed p;
                uint64_t want[8];
                uint32_t wrank = npy_shape(x->dtype, x->shape, x->rank, want);
                uint8_t *buf;

                ck_assert_int_eq(stf_view_npy(o.m, i, &v), 0);
                ck_assert_uint_eq(v->n, x->size ? 2 : 1);
                ck_assert_uint_eq(v->size, v->ext[0].len + x->size);
                /* kept until unmount: the header, not a worst-case buffer */
                ck_assert_uint_eq(v->mem_len, v->ext[0].len);
                ck_assert_uint_lt(malloc_usable_size(v->mem), v->mem_len + 32);
                buf = read_all(v, 1);
                npy_parse((const char *)buf, (long)v->ext[0].len, &p);
                ck_assert_str_eq(p.descr, npy_want[x->dtype].descr);
                ck_assert_uint_eq(p.rank, wrank);
                for (uint32_t d = 0; d < wrank; d++)
                        ck_assert_uint_eq(p.shape[d], want[d]);
                ck_assert_mem_eq(buf + v->ext[0].len, o.m->shards[x->shard].map + x->begin,
                                 x->size);
                if (x->size) {
                        ck_assert_ptr_eq(v->ext[1].ptr, o.m->shards[x->shard].map + x->begin);
                        ck_assert_int_eq(v->ext[1].shard, (int32_t)x->shard);
                }
                /* the raw tensor: one extent, none when empty */
                stf_view_init_tensor(&raw, o.m, i);
                ck_assert_uint_eq(raw.size, x->size);
                ck_assert_uint_eq(raw.n, x->size ? 1 : 0);
                if (x->size) {
                        ck_assert_ptr_eq(raw.ext[0].ptr, o.m->shards[x->shard].map + x->begin);
                        ck_assert_int_eq(raw.ext[0].shard, (int32_t)x->shard);
                }
                free(p.shape);
                free(buf);
                stf_view_free(v);
        }
        close_model(&o);
}
END_TEST

START_TEST(test_subset_errors_and_empty)
{
        struct opened o;
        struct stf_view *v = (void *)0x1;
        struct stf_header *h = NULL;
        struct stf_diag diag = {{0}};
        uint8_t *buf;

        make_sharded(&o);
        ck_assert_int_eq(stf_view_subset(o.m, o.t, ino_of(o.t, "a/x/w"), false, &v), -ENOTDIR);
        ck_assert_int_eq(stf_view_subset(o.m, o.t, 0, false, &v), -ENOTDIR);
        ck_assert_int_eq(stf_view_subset(o.m, o.t, stf_tree_count(o.t) + 1, false, &v), -ENOTDIR);
        ck_assert_int_eq(
            stf_view_subset(o.m, o.t, ino_of(o.t, ".stfs/model.safetensors"), false, &v), -ENOTDIR);
        ck_assert_ptr_eq(v, (void *)0x1);
        /* a directory without tensors: a valid file of no tensor */
        ck_assert_int_eq(stf_view_subset(o.m, o.t, ino_of(o.t, ".stfs"), false, &v), 0);
        ck_assert_uint_eq(v->n, 1);
        buf = read_all(v, 2);
        ck_assert_int_eq(stf_header_parse("empty", buf, v->size, v->size, &h, &diag), 0);
        ck_assert_uint_eq(h->ntensors, 0);
        ck_assert_uint_eq(h->data_start, v->size);
        stf_header_free(h);
        free(buf);
        stf_view_free(v);
        close_model(&o);
}
END_TEST

/*
 * Several components: "p" (p/model.safetensors), "q/one" and "q/two" (a
 * sub-directory holding two sets). Names are relative to the directory,
 * component parts below it included; __metadata__ is that of the
 * components whose tensors the file holds.
 */
START_TEST(test_subset_components)
{
        static const struct tspec p[] = {{"s.t", "U8", 1, {3}}, {"w", "F32", 1, {2}}};
        static const struct tspec one[] = {{"w", "BF16", 1, {4}}};
        static const struct tspec two[] = {{"v.u", "I16", 2, {2, 2}}};
        static const size_t o01[] = {1, 0}, o0[] = {0};
        static const struct want root[] = {
            {"p.w", "p", "w"},
            {"q.one.w", "q/one", "w"},
            {"q.two.v.u", "q/two", "v.u"},
            {"p.s.t", "p", "s.t"},
        };
        static const struct want q[] = {
            {"one.w", "q/one", "w"},
            {"two.v.u", "q/two", "v.u"},
        };
        static const struct want qtwo[] = {{"v.u", "q/two", "v.u"}};
        static const struct want qtwov[] = {{"u", "q/two", "v.u"}};
        static const struct want qtwov_full[] = {{"q.two.v.u", "q/two", "v.u"}};
        static const struct want ps[] = {{"t", "p", "s.t"}};
        struct opened o;

        subdir("multi");
        write_st(subdir("multi/p"), "model.safetensors", p, 2, o01, "{\"c\":\"p\"}");
        write_st(subdir("multi/q"), "one.safetensors", one, 1, o0, "{\"c\":\"one\",\"x\":\"1\"}");
        write_st(tmpdir, "multi/q/two.safetensors", two, 1, o0, "{\"c\":\"two\"}");
        open_model("multi", &o);
        ck_assert_uint_eq(o.m->ncomps, 3);
        check_subset(&o, "", false, root, 4, "{\"c\":\"p\",\"x\":\"1\"}");
        check_subset(&o, "", true, root, 4, "{\"c\":\"p\",\"x\":\"1\"}");
        check_subset(&o, "q", false, q, 2, "{\"c\":\"one\",\"x\":\"1\"}");
        check_subset(&o, "q/two", false, qtwo, 1, "{\"c\":\"two\"}");
        check_subset(&o, "q/two/v", false, qtwov, 1, "{\"c\":\"two\"}");
        check_subset(&o, "q/two/v", true, qtwov_full, 1, "{\"c\":\"two\"}");
        check_subset(&o, "p/s", false, ps, 1, "{\"c\":\"p\"}");
        close_model(&o);
}
END_TEST

/*
 * "a.b" is also a prefix ("a/b/%t") and "a.b." ends in an empty part
 * ("a/b/%"): relative to a/b both names would be "". A file with a
 * duplicate name is not a valid safetensors file; the view falls back to
 * full names.
 */
START_TEST(test_subset_relative_clash)
{
        static const struct tspec t[] = {
            {"a.b", "F32", 1, {1}}, {"a.b.", "F32", 1, {2}}, {"a.b.c", "F32", 1, {3}}};
        static const size_t o012[] = {0, 1, 2};
        static const struct want ab[] = {
            {"a.b", "", "a.b"}, {"a.b.", "", "a.b."}, {"a.b.c", "", "a.b.c"}};
        static const struct want a[] = {{"b", "", "a.b"}, {"b.", "", "a.b."}, {"b.c", "", "a.b.c"}};
        struct opened o;

        write_st(subdir("clash"), "model.safetensors", t, 3, o012, NULL);
        open_model("clash", &o);
        ino_of(o.t, "a/b/%t");
        ino_of(o.t, "a/b/%");
        check_subset(&o, "a", false, a, 3, "{}");
        check_subset(&o, "a/b", false, ab, 3, "{}");
        close_model(&o);
}
END_TEST

/*
 * Full names of two components that coincide ("p" holding "x.w", "p.x"
 * holding "w": both "p.x.w") cannot make a valid file: an error, not a
 * file with a duplicate name.
 */
START_TEST(test_subset_full_name_clash)
{
        static const struct tspec p[] = {{"x.w", "F32", 1, {1}}};
        static const struct tspec px[] = {{"w", "F32", 1, {2}}};
        static const size_t o0[] = {0};
        struct opened o;
        struct stf_view *v = NULL;

        char path[4096];
        struct stf_diag diag = {{0}};

        write_st(subdir("fclash"), "p.safetensors", p, 1, o0, NULL);
        write_st(tmpdir, "fclash/p.x.safetensors", px, 1, o0, NULL);
        /* "p.x" reads as variant x of "p": every set, to have both */
        snprintf(path, sizeof(path), "%s/fclash", tmpdir);
        ck_assert_int_eq(
            stf_model_open_opts(path, &(struct stf_model_opts){.all_sets = true}, &o.m, &diag), 0);
        ck_assert_int_eq(stf_tree_build_model(o.m, 0, &o.t, &diag), 0);
        ck_assert_uint_eq(o.m->ncomps, 2);
        ck_assert_int_eq(stf_view_subset(o.m, o.t, STF_ROOT_INO, true, &v), -EINVAL);
        ck_assert_ptr_null(v);
        /* each component alone is fine */
        ck_assert_int_eq(stf_view_subset(o.m, o.t, ino_of(o.t, "p.x"), false, &v), 0);
        stf_view_free(v);
        close_model(&o);
}
END_TEST

/* The copying read of the gather path: same bytes as the iovecs. */
START_TEST(test_view_pread)
{
        struct opened o;
        struct stf_view *v;
        uint8_t *all, *buf;

        make_sharded(&o);
        ck_assert_int_eq(stf_view_subset(o.m, o.t, STF_ROOT_INO, false, &v), 0);
        all = read_all(v, MAXIOV);
        buf = malloc(v->size + 1);
        ck_assert_ptr_nonnull(buf);
        for (uint64_t off = 0; off < v->size; off++) {
                static const size_t lens[] = {0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, SIZE_MAX};

                for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
                        size_t len = lens[k] == SIZE_MAX ? (size_t)(v->size - off) : lens[k];
                        int ret;

                        if (len > v->size - off)
                                continue;
                        memset(buf, 0xa5, len + 1);
                        ret = stf_view_pread(v, o.m, off, len, buf);
                        REQUIRE(ret == 0, "pread(%" PRIu64 ", %zu): %d", off, len, ret);
                        REQUIRE(!memcmp(buf, all + off, len), "pread(%" PRIu64 ", %zu) differs",
                                off, len);
                        REQUIRE(buf[len] == 0xa5, "pread(%" PRIu64 ", %zu) wrote past", off, len);
                }
        }
        ck_assert_int_eq(stf_view_pread(v, o.m, v->size, 1, buf), -EINVAL);
        ck_assert_int_eq(stf_view_pread(v, o.m, v->size - 1, 2, buf), -EINVAL);
        ck_assert_int_eq(stf_view_pread(v, o.m, UINT64_MAX, 1, buf), -EINVAL);
        free(buf);
        free(all);
        stf_view_free(v);
        close_model(&o);
}
END_TEST

/* A shard truncated while open: -EIO for what is gone, never SIGBUS. */
START_TEST(test_view_pread_truncated)
{
        struct opened o;
        struct stf_view *v;
        const struct stf_tensor *e;
        char path[4096];
        uint8_t buf[256];
        uint64_t hl;

        make_sharded(&o);
        e = &o.m->tensors[tensor_index(o.m, "", "a.e")];
        ck_assert_int_eq(stf_view_npy(o.m, (size_t)(e - o.m->tensors), &v), 0);
        hl = v->ext[0].len;
        ck_assert_uint_le(v->size, sizeof(buf));
        snprintf(path, sizeof(path), "%s/sharded/%s", tmpdir, o.m->shards[e->shard].name);
        ck_assert_int_eq(truncate(path, (off_t)e->begin + 1), 0);
        ck_assert_int_eq(stf_view_pread(v, o.m, 0, (size_t)hl, buf), 0);
        ck_assert_int_eq(stf_view_pread(v, o.m, hl - 1, 2, buf), 0);
        ck_assert_uint_eq(buf[1], data_byte("a.e", 0));
        ck_assert_int_eq(stf_view_pread(v, o.m, hl, 2, buf), -EIO);
        ck_assert_int_eq(stf_view_pread(v, o.m, 0, (size_t)v->size, buf), -EIO);
        stf_view_free(v);
        close_model(&o);
}
END_TEST

static Suite *view_suite(void)
{
        Suite *s = suite_create("view");
        TCase *tc = tcase_create("iov");

        tcase_add_test(tc, test_iov_exhaustive);
        tcase_add_test(tc, test_iov_edges);
        tcase_add_test(tc, test_iov_past_end);
        tcase_add_test(tc, test_iov_max);
        tcase_add_test(tc, test_iov_empty);
        suite_add_tcase(s, tc);

        tc = tcase_create("npy");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_npy_every_dtype_rank);
        tcase_add_test(tc, test_npy_shape_syntax);
        tcase_add_test(tc, test_npy_subbyte_flat);
        tcase_add_test(tc, test_npy_v2);
        tcase_add_test(tc, test_npy_v1_v2_boundary);
        tcase_add_test(tc, test_npy_errors);
        suite_add_tcase(s, tc);

        tc = tcase_create("model");
        tcase_set_timeout(tc, 60);
        tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
        tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
        tcase_add_test(tc, test_subset_sharded);
        tcase_add_test(tc, test_subset_npy_straddle);
        tcase_add_test(tc, test_npy_views_of_model);
        tcase_add_test(tc, test_subset_errors_and_empty);
        tcase_add_test(tc, test_subset_components);
        tcase_add_test(tc, test_subset_relative_clash);
        tcase_add_test(tc, test_subset_full_name_clash);
        tcase_add_test(tc, test_view_pread);
        tcase_add_test(tc, test_view_pread_truncated);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return ut_run(view_suite());
}
