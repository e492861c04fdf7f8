/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_SUMMARY_H
#define STF_SUMMARY_H

/*
 * What is in a model, from its headers alone: counts per dtype, a module
 * tree with sizes (a `du` for parameters), the largest tensors. What
 * `stfsctl inspect` prints.
 *
 * Parameters are elements: the product of a tensor's shape (1 for a
 * scalar), exact for every dtype, the sub-byte ones included (an F4 tensor
 * of shape [2, 8] is 16 parameters in 8 bytes).
 *
 * The module tree. Names split on '.' into parts, like the mount's
 * directories: "model.layers.0.mlp.up_proj.weight" is the node "weight"
 * under "up_proj" under ... under "model". A model with several components
 * (a diffusers folder) has one node per component under the root, named
 * after the component ("unet", "vae"), and the component's tensors below.
 * A node counts every tensor at or below it; a tensor whose name is also a
 * prefix of other names ("a.b" beside "a.b.c") is the node "b" itself.
 * Children are in name order, parts made of digits compared as numbers
 * ("2" before "10").
 *
 * Numbered siblings collapse: a run of children named by consecutive
 * numbers ("0", "1", ... "31", canonical decimals below 10^18) whose
 * subtrees have the same structure (the same names below, each tensor with
 * the same dtype and shape, after their own runs collapsed) becomes one node
 * named "{0..31}" with repeat = 32; its sizes and children are those of one
 * instance. Runs are found bottom up, so "model.layers.{0..3}.mlp.experts.
 * {0..255}" collapses at both levels. A run of one keeps its plain name.
 *
 * A summary is immutable once built and points into the model it was built
 * from (names): free it before closing the model.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "model.h"

struct stf_count {
        uint64_t tensors, params, bytes;
};

struct stf_module {
        const char *name;      /* the part ("layers"), a run ("{0..31}"), a component's
                                  name, or "" for the root; NUL terminated */
        uint32_t name_len;     /* bytes */
        uint32_t depth;        /* 0 for the root */
        uint64_t repeat;       /* 1, or the number of siblings collapsed into this node */
        uint64_t first;        /* repeat > 1: the number of the run's first sibling */
        struct stf_count size; /* of one instance: this node and everything below it */
        size_t tensor;         /* index in the model's tensors of the tensor named by
                                  this node's path, or SIZE_MAX */
        size_t first_child;    /* index in stf_summary.modules; children are contiguous */
        size_t nchildren;
        unsigned char component; /* a component's node (children of the root only) */
};

struct stf_summary {
        struct stf_count total;
        struct stf_count dtypes[STF_DT_COUNT]; /* by enum stf_dtype */
        size_t nmodules;
        struct stf_module *modules; /* [0] is the root; breadth first */
        size_t nlargest;
        size_t *largest; /* tensor indices, by bytes (largest first), then name */
        char *arena;     /* the modules' names (owned) */
};

/*
 * Build the summary of @m, with at most @top largest tensors (0 for none).
 * Reads only the tensor table. Returns 0 and *@out (free with
 * stf_summary_free), or -ENOMEM. Thread-safe for a given model.
 */
int stf_summary_build(const struct stf_model *m, size_t top, struct stf_summary **out);

/* Free a summary; accepts NULL. */
void stf_summary_free(struct stf_summary *s);

/*
 * The number of @s if it is a canonical decimal ("0", "17"; no sign, no
 * leading zero, at most 18 digits): true and *@out, else false. The rule
 * that decides which siblings may collapse; public for tests.
 */
bool stf_summary_number(const char *s, size_t len, uint64_t *out);

#endif
