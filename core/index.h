/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_INDEX_H
#define STF_INDEX_H

/*
 * *.safetensors.index.json: its weight_map (tensor name -> shard file) and
 * the contract between an index and its shards, both ways: every listed
 * tensor is in the shard it names, every shard tensor is listed there.
 * Shard names are plain file names (no '/', not "." or ".."): nothing
 * outside the index's directory is ever opened because of an index.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "diag.h"
#include "report.h"
#include "shard.h"

/*
 * Check an index document (not against its shards): what stf_model_open
 * runs on each index, public for tests and fuzzing.
 * @index_file: name for diagnostics. @text/@len: the index JSON.
 * On success *@weight_map_out (if not NULL) gets the weight_map object,
 * *@shard_names_out the sorted distinct shard names (json array) and
 * *@metadata_out the "metadata" member or NULL, all new references.
 * Returns 0 or -EINVAL / -ENOMEM.
 */
int stf_index_parse(const char *index_file, const char *text, size_t len, json_t **weight_map_out,
                    json_t **shard_names_out, json_t **metadata_out, struct stf_diag *diag);

/*
 * Read the index file @path (a regular file of at most STF_HEADER_MAX
 * bytes) and parse it as stf_index_parse, problems to @sink. In the check
 * mode a weight_map entry with a bad value is reported and left out of the
 * shard names, and the outputs are set whenever there is a weight_map
 * object, even with problems (then the return is -EINVAL): the shards it
 * does name can still be checked. In the first problem mode they are set
 * only on success (the caller must pass NULL-initialised pointers).
 * Returns 0, -EINVAL, -ENOMEM or the -errno of open/read.
 */
int stf_index_load(const char *path, json_t **weight_map_out, json_t **shard_names_out,
                   json_t **metadata_out, struct stf_sink *sink);

/* True when @s may name a shard: not empty, no '/', not "." or "..". */
bool stf_index_plain_name(const char *s);

/*
 * Both directions of the index <-> shard contract between the index @index
 * (its weight_map @wm) and the @n open shards @shards it names. Only the check
 * mode has shards without a header (unreadable or malformed), missing
 * shards or bad weight_map values; their problems are reported already and
 * the checks skip them. Returns 0 or -EINVAL (a problem reported).
 */
int stf_index_check(const char *index, json_t *wm, const struct stf_shard *shards, uint32_t n,
                    struct stf_sink *sink);

#endif
