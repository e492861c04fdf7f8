/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SOURCE_H
#define STF_SOURCE_H

/*
 * SOURCE -> sets, before anything is opened.
 *
 * SOURCE is one of
 *   - a .safetensors file: one set, one shard;
 *   - a *.safetensors.index.json: one set, the shards its weight_map names
 *     (plain file names in the index's directory);
 *   - a directory. Its sets are the index files in it, the .safetensors
 *     files in it that no index lists, and the same found one level down in
 *     its sub-directories (a diffusers folder: unet/, vae/, ...). A single
 *     set is mounted at the root; several are each mounted under their own
 *     name: the sub-directory's name, or the file's name without
 *     ".safetensors" / ".safetensors.index.json" ("unet", "vae/diffusion_
 *     pytorch_model" when a sub-directory holds several sets).
 *
 * Problems go to a struct stf_sink (report.h): the first one stops, or in
 * the check mode every one is reported and the search goes on.
 */

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "report.h"

/* A set found, before it is opened. */
struct stf_set {
        char *path; /* index or .safetensors file */
        char *name; /* component name if the model has several, else NULL */
        bool is_index;
        json_t *wm, *names, *meta; /* the parsed index, kept from a directory scan, or NULL */
};

/*
 * The sets of a SOURCE, in a stable order. Start from {0}, with the choice
 * of sets (core/setname.h) in variant and all_sets.
 */
struct stf_sets {
        struct stf_set *v;
        size_t n, cap;
        const char *variant; /* in: the sets of this variant where there are */
        bool all_sets;       /* in: every set of a directory */
        bool variant_found;  /* out: a directory has @variant */
};

/*
 * Find the sets of @source (see above) and add them to @sets. Of the sets of
 * one directory only those stf_setname_choose keeps count: by default the
 * ones without a variant (only the conventional model / diffusion_pytorch_
 * model where there are), with sets->variant that variant's, with
 * sets->all_sets all. A directory with no set, two sets that would mount
 * under the same or nested names, or a variant asked for that no directory
 * has, is a problem. Returns 0, -ENOENT or another -errno of stat
 * (SOURCE), -EINVAL, -ENOMEM (see stf_sink_settle for the check mode).
 */
int stf_source_find(const char *source, struct stf_sets *sets, struct stf_sink *sink);

/* Free the sets; accepts a half-filled list. */
void stf_sets_free(struct stf_sets *sets);

/*
 * The shard files of @set: a .safetensors set is its own file; an index
 * set is its index (loaded now unless the directory scan did) with each
 * weight_map shard name made a path in the index's directory. A listed
 * shard that does not exist is a problem (-ENOENT). In the check mode the
 * paths that can still be checked come back with 0.
 * On 0: *@paths_out gets *@n_out malloc'ed paths (free with
 * stf_paths_free), *@wm_out the weight_map and *@meta_out the index's
 * "metadata", new references or NULL (a .safetensors set, an index that
 * could not be read).
 * Returns 0, -ENOENT, -EINVAL, -ENOMEM or the -errno of reading the index.
 */
int stf_set_shards(const struct stf_set *set, struct stf_sink *sink, char ***paths_out,
                   size_t *n_out, json_t **wm_out, json_t **meta_out);

/* Free @n paths and the array; accepts NULL. */
void stf_paths_free(char **paths, size_t n);

#endif
