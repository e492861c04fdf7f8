/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stf_header_parse on the input as a whole file (avail = file size).
 *
 * Beyond "no crash, no leak, no undefined behaviour", checked on every input:
 *   - the result is 0 or -EINVAL, and a refusal leaves no header and a
 *     diagnostic that starts with the file name and holds no control byte
 *     (it goes to a terminal or syslog);
 *   - an accepted header keeps every format rule: tensors sorted by offset
 *     tile [8 + N, file size) exactly, sizes match dtype and shape, names are
 *     UTF-8 without NUL, "__metadata__" maps strings to strings;
 *   - the parse reads nothing past the header: given only the first 8 + N
 *     bytes (a heap copy of exactly that size, so ASan sees any read past
 *     it) and the same file size, it gives the same result and message;
 *   - stf_header_check agrees: sound iff the parse succeeds, and its first
 *     problem is the parse's diagnostic, word for word.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "fuzz_helpers.h"

#define FILE_NAME "fuzz.safetensors"

struct collect {
        size_t n;
        char first[STF_DIAG_MAX];
};

static void collect(void *ctx, const struct stf_problem *p)
{
        struct collect *c = ctx;

        FUZZ_ASSERT(p->msg && p->file && !strcmp(p->file, FILE_NAME));
        FUZZ_ASSERT(p->offset >= -1);
        if (c->n++ == 0)
                snprintf(c->first, sizeof(c->first), "%s", p->msg);
}

static void check_sound(const struct stf_header *h, const uint8_t *data, size_t size)
{
        uint64_t pos = h->data_start;
        const char *key;
        json_t *v;

        FUZZ_ASSERT(h->file_size == size);
        FUZZ_ASSERT(h->data_start == 8 + fuzz_le64(data));
        FUZZ_ASSERT(h->data_start - 8 <= STF_HEADER_MAX);
        FUZZ_ASSERT(json_is_object(h->metadata));
        json_object_foreach(h->metadata, key, v)
        {
                FUZZ_ASSERT(json_is_string(v));
        }
        for (size_t i = 0; i < h->ntensors; i++) {
                const struct stf_tensor *t = &h->tensors[i];
                const struct stf_dtype_info *info = stf_dtype_info(t->dtype);
                uint64_t nelem = 1;

                FUZZ_ASSERT(info);
                FUZZ_ASSERT(t->name && strlen(t->name) == t->name_len);
                FUZZ_ASSERT(fuzz_utf8_valid(t->name, t->name_len));
                FUZZ_ASSERT(strcmp(t->name, "__metadata__"));
                FUZZ_ASSERT_MSG(t->begin == pos, "tensor %zu at %llu, expected %llu", i,
                                (unsigned long long)t->begin, (unsigned long long)pos);
                for (uint32_t d = 0; d < t->rank; d++)
                        FUZZ_ASSERT(!__builtin_mul_overflow(nelem, t->shape[d], &nelem));
                FUZZ_ASSERT(nelem == t->nelem);
                FUZZ_ASSERT(t->size <= size - pos);
                FUZZ_ASSERT(t->size * 8 / info->bits == nelem && (t->size * 8) % info->bits == 0);
                FUZZ_ASSERT(t->shard == 0 && t->comp == 0);
                if (i > 0) {
                        const struct stf_tensor *p = &h->tensors[i - 1];

                        FUZZ_ASSERT(p->begin < t->begin ||
                                    (p->begin == t->begin &&
                                     (p->size < t->size ||
                                      (p->size == t->size && strcmp(p->name, t->name) < 0))));
                }
                pos += t->size;
        }
        FUZZ_ASSERT(pos == size);
}

/* The same header twice (from the parse and from the check). */
static void check_same(const struct stf_header *a, const struct stf_header *b)
{
        FUZZ_ASSERT(a->ntensors == b->ntensors && a->data_start == b->data_start);
        FUZZ_ASSERT(json_equal(a->metadata, b->metadata));
        for (size_t i = 0; i < a->ntensors; i++) {
                const struct stf_tensor *x = &a->tensors[i], *y = &b->tensors[i];

                FUZZ_ASSERT(!strcmp(x->name, y->name) && x->begin == y->begin &&
                            x->size == y->size && x->dtype == y->dtype && x->rank == y->rank &&
                            x->nelem == y->nelem);
                FUZZ_ASSERT(!x->rank || !memcmp(x->shape, y->shape, x->rank * sizeof(*x->shape)));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct stf_diag d = {{0}}, d2 = {{0}};
        struct stf_header *h = (void *)1, *h2 = (void *)1;
        struct collect c = {0};
        int ret, ret2;

        ret = stf_header_parse(FILE_NAME, data, size, size, &h, &d);
        FUZZ_ASSERT_MSG(ret == 0 || ret == -EINVAL, "ret %d", ret);
        if (ret == 0) {
                FUZZ_ASSERT(h);
                check_sound(h, data, size);
        } else {
                FUZZ_ASSERT(h == NULL);
                FUZZ_ASSERT_MSG(!strncmp(d.msg, FILE_NAME ": ", strlen(FILE_NAME) + 2), "%s",
                                d.msg);
                FUZZ_ASSERT_MSG(!fuzz_has_control(d.msg), "control byte in '%s'", d.msg);
        }

        /* The header alone, in a buffer of exactly its size. */
        if (size >= 8 && fuzz_le64(data) <= STF_HEADER_MAX && fuzz_le64(data) <= size - 8) {
                size_t hlen = 8 + (size_t)fuzz_le64(data);
                uint8_t *copy = malloc(hlen);

                FUZZ_ASSERT(copy);
                memcpy(copy, data, hlen);
                ret2 = stf_header_parse(FILE_NAME, copy, hlen, size, &h2, &d2);
                FUZZ_ASSERT_MSG(ret2 == ret, "%d vs %d", ret2, ret);
                FUZZ_ASSERT_MSG(!strcmp(d.msg, d2.msg), "'%s' vs '%s'", d.msg, d2.msg);
                if (ret == 0)
                        check_same(h, h2);
                stf_header_free(h2);
                free(copy);
        }

        /* The every-problem mode agrees with the first-problem mode. */
        h2 = (void *)1;
        ret2 = stf_header_check(FILE_NAME, data, size, size, collect, &c, &h2);
        FUZZ_ASSERT_MSG(ret2 == ret, "check %d vs parse %d", ret2, ret);
        if (ret == 0) {
                FUZZ_ASSERT(c.n == 0 && h2);
                check_same(h, h2);
        } else {
                FUZZ_ASSERT(c.n >= 1 && h2 == NULL);
                FUZZ_ASSERT_MSG(!strcmp(c.first, d.msg), "check '%s' vs parse '%s'", c.first,
                                d.msg);
        }
        stf_header_free(h2);
        stf_header_free(h);
        return 0;
}
