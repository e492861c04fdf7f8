/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_TEXT_H
#define STF_TEXT_H

/*
 * Text that reaches a terminal, a log or a JSON document: one rule for
 * every place stfs and stfsctl print a name, a path or an excerpt of a file.
 * A model file and the names of its directory are untrusted: they must not
 * be able to move the cursor, retitle the terminal or reorder what a user
 * reads.
 *
 * Unsafe, for a terminal:
 *   - C0 controls and DEL (U+0000-U+001F, U+007F);
 *   - C1 controls (U+0080-U+009F, e.g. the 8-bit CSI U+009B), as UTF-8;
 *   - bidirectional controls: U+061C, U+200E, U+200F, U+202A-U+202E
 *     (the overrides among them), U+2066-U+2069;
 *   - every byte that is not part of well-formed UTF-8 (overlong forms,
 *     surrogates, past U+10FFFF, a lone continuation byte such as 0x9B,
 *     which a terminal not in UTF-8 mode takes for CSI).
 * Everything else (printable ASCII, any other well-formed UTF-8) is kept.
 *
 * All functions are pure and thread-safe.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "strbuf.h"

/*
 * Length (1-4) of the well-formed UTF-8 sequence at @s (@len > 0 bytes
 * left), or 0 when the bytes there are not one.
 */
size_t stf_utf8_seq(const char *s, size_t len);

/* Do the @len bytes at @s end with the string @suffix? */
bool stf_ends_with(const char *s, size_t len, const char *suffix);

/* True when @len bytes at @s are well-formed UTF-8. */
bool stf_utf8_valid(const char *s, size_t len);

/*
 * Whether the character at @s (@len > 0 bytes left) is unsafe (see above).
 * *@n gets its length in bytes: of the UTF-8 sequence, or 1 for a byte that
 * starts none.
 */
bool stf_text_unsafe(const char *s, size_t len, size_t *n);

/* Append @len bytes of @s to @sb for a terminal: each unsafe byte as \xHH. */
void stf_text_escape(struct stf_strbuf *sb, const char *s, size_t len);

/*
 * The same into a fixed buffer: @in (NUL terminated) into @out (@cap > 0),
 * always NUL terminated; cut at a character when it does not fit.
 */
void stf_text_escape_buf(const char *in, char *out, size_t cap);

/* Write @len bytes of @s to @f, escaped as stf_text_escape does. */
void stf_text_put(FILE *f, const char *s, size_t len);

/*
 * Append @len bytes of @s as a JSON string literal, always valid UTF-8:
 * '"' and '\\' escaped, the characters called unsafe above for a terminal
 * (C0 and C1 controls, bidi controls) as \uXXXX, and each byte that is not
 * well-formed UTF-8 as U+FFFD (a file name can hold such bytes).
 */
void stf_strbuf_json_str(struct stf_strbuf *sb, const char *s, size_t len);

/*
 * For JSON (stf_strbuf_json_str, stf_text_json_inert): append the escape
 * of the unsafe character of @n bytes at @s (as stf_text_unsafe gave it):
 * \uXXXX, or \ufffd for a byte that is not UTF-8.
 */
void stf_text_json_escape(struct stf_strbuf *sb, const char *s, size_t n);

/*
 * Rewrite a JSON text made by jansson (well-formed UTF-8, C0 controls in
 * strings already escaped, its own newlines kept) so that every other
 * unsafe character (DEL, C1, bidi controls: only in strings) is a \uXXXX
 * escape: a JSON reader gets the same document back, a terminal shows it
 * inert. Returns 0 and *@out (malloc'ed, NUL terminated), *@outlen; or
 * -ENOMEM.
 */
int stf_text_json_inert(const char *json, size_t len, char **out, size_t *outlen);

/*
 * Text read from a user (options of stfsctl, words of control commands):
 * @s (NUL terminated) is a whole decimal number no greater than @max: a
 * digit first (no sign, no space), nothing after it, no overflow. Then
 * *@out gets it and the answer is true; otherwise *@out is left alone.
 */
bool stf_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
