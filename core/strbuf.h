/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_STRBUF_H
#define STF_STRBUF_H

/*
 * A growable byte buffer for generated text (JSON documents, headers).
 * Errors are sticky: after a failed allocation every append is a no-op and
 * stf_strbuf_finish returns -ENOMEM, so callers check once at the end.
 */

#include <stdbool.h>
#include <stddef.h>

struct stf_strbuf {
        char *buf;
        size_t len, cap;
        bool failed;
};

void stf_strbuf_append(struct stf_strbuf *sb, const char *s, size_t len);
void stf_strbuf_puts(struct stf_strbuf *sb, const char *s);
void stf_strbuf_printf(struct stf_strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* (A JSON string literal: stf_strbuf_json_str in text.h, with the escaping rule.) */

/*
 * Hand the text over: 0 and *@out (NUL terminated, caller frees), *@len;
 * or -ENOMEM (buffer freed). The strbuf is reset either way.
 */
int stf_strbuf_finish(struct stf_strbuf *sb, char **out, size_t *len);

/* Free without handing over. */
void stf_strbuf_reset(struct stf_strbuf *sb);

#endif
