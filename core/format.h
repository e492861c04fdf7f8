/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_FORMAT_H
#define STF_FORMAT_H

/*
 * The safetensors header: strict parse and validation of one file.
 *
 * Layout: 8-byte little-endian header size N, N bytes of UTF-8 JSON, then
 * the data buffer. Every rule of the design notes' "Format rules" is
 * enforced here; nothing of the file is read or allocated before N has been
 * checked against STF_HEADER_MAX and the file size.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "diag.h"
#include "dtype.h"
#include "report.h"

#define STF_HEADER_MAX 100000000ULL

/* One tensor as described by a header. A small value; read its fields. */
struct stf_tensor {
        const char *name;      /* NUL terminated UTF-8, owned by the header */
        uint32_t name_len;     /* bytes, without the NUL */
        uint32_t rank;         /* 0 for a scalar */
        const uint64_t *shape; /* @rank dims, owned by the header */
        uint64_t nelem;        /* product of shape (1 for a scalar) */
        uint64_t begin;        /* absolute offset of the data in the file */
        uint64_t size;         /* bytes of data; may be 0 */
        uint8_t dtype;         /* enum stf_dtype */
        uint32_t shard;        /* index of the shard in its model (0 here) */
        uint32_t comp;         /* component of the model (0 here) */
};

/*
 * A shape as a JSON array, the one formatter of shapes: "[2, 3]", or
 * "[2,3]" when @compact (headers and xattrs). Like snprintf: writes at most
 * @cap bytes with the NUL (nothing when @cap is 0) and returns the length
 * of the whole text.
 */
size_t stf_shape_format(char *buf, size_t cap, const uint64_t *shape, uint32_t rank, bool compact);

/* The same appended to @sb (struct stf_strbuf, strbuf.h). */
struct stf_strbuf;
void stf_shape_append(struct stf_strbuf *sb, const uint64_t *shape, uint32_t rank, bool compact);

struct stf_header {
        uint64_t file_size;
        uint64_t data_start;        /* 8 + N */
        size_t ntensors;            /* sorted by begin, then size, then name */
        struct stf_tensor *tensors; /* owned */
        json_t *metadata;           /* "__metadata__" object (owned ref); never NULL */
        char *names;                /* arena of the names (owned) */
        uint64_t *shapes;           /* arena of the shapes (owned) */
};

/*
 * Parse and validate the header of a safetensors file.
 *
 * @file:  name used in diagnostics (not opened).
 * @buf:   the first @avail bytes of the file (a mapping of it, usually).
 * @avail: bytes readable at @buf; may be less than @file_size, but must
 *         cover the header (otherwise -EINVAL, "file truncated").
 * @file_size: size of the whole file; the data buffer ends there.
 * @out:   on success, a new header (free with stf_header_free).
 * @diag:  optional; set on failure.
 *
 * Returns 0, -EINVAL for a malformed file (diag says why), -ENOMEM.
 * Thread-safe (no shared state).
 */
int stf_header_parse(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                     struct stf_header **out, struct stf_diag *diag);

/*
 * Check a header against every rule and report every problem, not only the
 * first: what `stfsctl verify` runs. Parameters as for stf_header_parse.
 *
 * @report is called once per problem (see report.h), with the message
 * stf_header_parse would leave in its diag for that problem:
 *   - a problem with the 8-byte size, the JSON text or its top level ends
 *     the check (nothing after it can be read);
 *   - every non-string "__metadata__" value is one problem;
 *   - every broken tensor entry is one problem: the first rule it breaks
 *     (the later rules of an entry depend on the earlier ones). An entry
 *     whose "data_offsets" can still be read (two integers, begin <= end,
 *     inside the data buffer) keeps its place in the tiling check, so it
 *     does not also show up as a hole;
 *   - every hole and every overlap is one problem, and trailing bytes one.
 * Problems come in that order; entries in file order, the tiling in offset
 * order.
 * @out:  optional; when the header is sound, the parsed header as
 *        stf_header_parse gives it (free with stf_header_free), else NULL.
 *
 * Returns 0 (sound), -EINVAL (at least one problem reported), -ENOMEM.
 * Thread-safe (no shared state; @report is called on the calling thread).
 */
int stf_header_check(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                     stf_report_fn report, void *ctx, struct stf_header **out);

/*
 * The parse both of the above run, reporting through @sink: stf_header_parse
 * is this with a first-problem sink, stf_header_check with an every-problem
 * one. For core modules that check many files into one sink (model.c).
 * Returns as stf_header_check; *@out is set only when the header is sound.
 */
int stf_header_validate(const char *file, const uint8_t *buf, uint64_t avail, uint64_t file_size,
                        struct stf_sink *sink, struct stf_header **out);

/*
 * json_loadb for the parsers (format.c, model.c) that tells a malformed
 * text from a failed allocation. jansson (2.14) reports most allocation
 * failures while parsing as syntax errors ("invalid token", or no text at
 * all), and when its lexer cannot grow its token buffer it drops the byte
 * and goes on (akheron/jansson#362): a tensor name can lose a character and
 * still parse. So jansson's allocator is wrapped, once, chaining the one in
 * place (json_get_alloc_funcs), to note a failed allocation on the calling
 * thread; a parse that saw one is -ENOMEM, whatever jansson returned. A
 * program that calls json_set_alloc_funcs after the first parse replaces
 * the wrapper and gets jansson's own behaviour back.
 * Returns 0 and *@out (a new reference), -EINVAL (@err says why), -ENOMEM.
 */
int stf_json_load(const char *text, size_t len, size_t flags, json_t **out, json_error_t *err);

/* Free a header; accepts NULL. */
void stf_header_free(struct stf_header *h);

#endif
