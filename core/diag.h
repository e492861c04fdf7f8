/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_DIAG_H
#define STF_DIAG_H

/*
 * Diagnostics: the one line a user sees when stfs refuses a file.
 *
 * Every parser entry point takes an optional struct stf_diag *; on failure
 * it holds "FILE: WHERE: RULE", where WHERE is "byte N" (an absolute offset
 * in FILE) or "tensor 'NAME'" and RULE says which rule of the format was
 * broken. The caller prints it as is. Callers own the struct (stack value).
 */

#include <stddef.h>

#define STF_DIAG_MAX 1024

struct stf_diag {
        char msg[STF_DIAG_MAX];
};

/* Format into @d (if not NULL). Long messages are truncated. */
void stf_diag_set(struct stf_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Quote @len bytes of @s for a message: printable ASCII kept, everything else
 * (and quotes, backslashes) as \xHH, at most 80 input bytes then "...".
 * Returns @out, always NUL terminated (@cap >= 8).
 */
const char *stf_diag_quote(const char *s, size_t len, char *out, size_t cap);

#endif
