/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_DESCRIBE_H
#define STF_DESCRIBE_H

/*
 * The JSON documents under /.stfs: generated text, built on demand.
 *
 * header.json:
 *   {"shards": [{"name", "component", "size", "header_size"}...],
 *    "tensors": [{"name", "path", "component", "dtype", "shape", "shard",
 *                 "offset", "size"}...]}
 *   "path" is the tensor's path in the mount, "offset" the absolute byte
 *   offset of its data in "shard"; tensors in model order.
 *
 * metadata.json, a model with one component:
 *   {"__metadata__": {...}, "index_metadata": {...}}
 *   "__metadata__" is the union of the shards' __metadata__ (the first
 *   shard wins a conflict); "index_metadata" is the index's "metadata" and
 *   only there when the source is an index.
 * With several components: {"components": {NAME: {as above}, ...}}.
 */

#include <stddef.h>

#include "model.h"
#include "tree.h"

/* New NUL-terminated text in *@out (caller frees), its length in *@len.
 * Return 0 or -ENOMEM. Thread-safe for a given model and tree. */
int stf_describe_header(const struct stf_model *m, const struct stf_tree *t, char **out,
                        size_t *len);
int stf_describe_metadata(const struct stf_model *m, char **out, size_t *len);

#endif
