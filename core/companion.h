/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_COMPANION_H
#define STF_COMPANION_H

#include <stdbool.h>

#include "model.h"

/*
 * Read the companion files of @m (struct stf_companion in model.h) from
 * m->root: its files, and with @root_is_dir those of its sub-directories
 * one level down. Files that cannot be read, or are over the bounds, are
 * left out. Symbolic links are followed (a hub cache links into blobs/).
 * Returns 0 or -ENOMEM.
 */
int stf_companions_load(struct stf_model *m, bool root_is_dir);

#endif
