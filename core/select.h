/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SELECT_H
#define STF_SELECT_H

/*
 * Selections of tensors by name or path patterns (rules in stfs_ioctl.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tree.h"

/* Does @pat match @s? @cross: '*' also crosses '/' (names); '**' always does. */
bool stf_glob(const char *pat, size_t plen, const char *s, size_t slen, bool cross);

/*
 * Tensor indices of @m selected by @text (patterns separated by newlines or
 * spaces; NUL terminated within @cap bytes). *@out (caller frees) sorted by
 * shard then offset. Returns 0, -EINVAL (not terminated, or no pattern fits
 * in 4 KiB), -ENOENT (nothing matched), -ENOMEM.
 */
int stf_select(const struct stf_model *m, const struct stf_tree *t, const char *text, size_t cap,
               uint32_t **out, size_t *n);

#endif
