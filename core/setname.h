/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SETNAME_H
#define STF_SETNAME_H

/*
 * What the file names of a model folder say, as the Hugging Face loaders
 * read them, and which sets of one directory are mounted.
 *
 * Names (VARIANT has no '.'; a .safetensors name whose stem has a '.' is
 * read as BASE.VARIANT at its last '.'):
 *   BASE.safetensors                   a set of one file
 *   BASE.VARIANT.safetensors           the same, a variant ("fp16")
 *   BASE.safetensors.index.json        a sharded set
 *   BASE.safetensors.index.VARIANT.json   a sharded variant
 * The shards an index lists are not sets of their own.
 *
 * The whole file of a set is the name a loader opens for it:
 * BASE[.VARIANT].safetensors. Conventional bases are "model"
 * (transformers) and "diffusion_pytorch_model" (diffusers).
 *
 * Pure functions of their arguments; thread-safe.
 */

#include <stdbool.h>
#include <stddef.h>

struct stf_setname {
        const char *file;    /* the name parsed (borrowed) */
        bool is_index;       /* an index file (else a .safetensors file) */
        size_t base_len;     /* BASE: the first base_len bytes of the name */
        const char *variant; /* VARIANT inside the name, or NULL */
        size_t variant_len;
};

/*
 * Parse file name @file (no '/'). Returns true and fills @out for a
 * .safetensors file or an index, false for any other name (a companion).
 */
bool stf_setname_parse(const char *file, struct stf_setname *out);

/* The whole-file name of set file @file (see above): new string, or NULL
 * (no memory, or @file is not a set's file). */
char *stf_setname_whole(const char *file);

/*
 * Which of the @n sets of one directory (@names[i] parsed from their file
 * names) to mount: sets @keep[i].
 *   @all: every set.
 *   @variant (not NULL): the sets of that variant, when the directory has
 *     one; else as without it. *@found is set to true when it has one.
 *   otherwise the sets without a variant, as the loaders pick them; of
 *     those, when one has a conventional base, only the conventional ones
 *     (consolidated.safetensors beside model.safetensors.index.json is
 *     left out). A directory with variants only keeps them all.
 */
void stf_setname_choose(const struct stf_setname *names, size_t n, const char *variant, bool all,
                        bool *keep, bool *found);

#endif
