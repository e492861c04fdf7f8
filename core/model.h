/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_MODEL_H
#define STF_MODEL_H

/*
 * A model: SOURCE resolved to shards (open, mapped read-only) and one table
 * of every tensor.
 *
 * SOURCE: a .safetensors file, a *.safetensors.index.json or a directory;
 * see source.h for how it becomes sets (components).
 *
 * The model never changes once open. All functions are thread-safe for
 * concurrent readers.
 */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "companion.h"
#include "diag.h"
#include "format.h"
#include "report.h"
#include "shard.h"

struct stf_component {
        char *name;         /* "" when the model has a single component */
        char *source;       /* the index or .safetensors file it came from */
        char *whole;        /* the name a loader opens for the whole set,
                               BASE[.VARIANT].safetensors (core/setname.h);
                               NULL for a file of another name */
        json_t *index_meta; /* the index's "metadata" (owned ref) or NULL */
        uint32_t first_shard, nshards;
        uint32_t first_tensor, ntensors; /* range in stf_model.tensors */
};

struct stf_model {
        char *root; /* SOURCE, or its directory when SOURCE is a file: what
                       stf_shard.rel and companions are relative to */
        uint32_t ncompanions;
        struct stf_companion *companions; /* by rel (bytewise) */
        uint32_t nshards;
        struct stf_shard *shards;
        uint32_t ncomps;
        struct stf_component *comps;
        size_t ntensors;
        struct stf_tensor *tensors; /* by component, then by name (bytewise) */
        uint64_t total_bytes;       /* sum of tensor sizes */
};

/* Choices of stf_model_open_opts; zero for the defaults. */
struct stf_model_opts {
        const char *variant; /* mount the sets of this variant where a
                                directory has them (core/setname.h) */
        bool all_sets;       /* every set of a directory, each under its name */
        bool companions;     /* read the companion files */
};

/*
 * Open @source (see above). On failure nothing stays open and @diag names
 * the file and the problem.
 * Returns 0, -ENOENT (no such source, or a missing shard), -EINVAL
 * (malformed file or index, or no safetensors in a directory), -ENOMEM,
 * or another -errno from open/mmap.
 */
int stf_model_open(const char *source, struct stf_model **out, struct stf_diag *diag);

/*
 * stf_model_open with choices (@o may be NULL): which sets of a directory
 * (see stf_source_find), and the companion files. Also returns -EINVAL when
 * o->variant is set, SOURCE is a directory and no directory has it.
 */
int stf_model_open_opts(const char *source, const struct stf_model_opts *o, struct stf_model **out,
                        struct stf_diag *diag);

/*
 * Check @source for every problem, not only the first: what `stfsctl
 * verify` runs. Every set of a directory is checked (all_sets). The same
 * code and the same messages as stf_model_open (see report.h), but each
 * problem goes to @report and the check goes on:
 *   - every problem of every shard's header (stf_header_check);
 *   - every weight_map value that is not a plain file name, and every shard
 *     an index lists that does not exist;
 *   - every shard tensor the index does not list (or lists under another
 *     shard), and every listed tensor missing from its shard;
 *   - a file that cannot be opened, read or mapped, and directory problems
 *     (no set found, two sets under one name).
 * A file with a problem is left out of the checks that need it (a shard
 * whose header is malformed is not cross-checked against its index), so one
 * problem is reported once. Problems come in set order, and within a set in
 * shard order, whichever thread found them; @report runs on the calling
 * thread.
 * @out: optional; when the model is sound, the open model as stf_model_open
 *       gives it (close with stf_model_close), else NULL.
 * Returns 0 (sound), -EINVAL (at least one problem reported), -ENOMEM.
 */
int stf_model_check(const char *source, stf_report_fn report, void *ctx, struct stf_model **out);

/*
 * Sort @n tensors into the order of stf_model.tensors: by component, then
 * by name (bytewise, a prefix first). For models built by hand in tests
 * and fuzzers, so they need not write the order again.
 */
void stf_model_sort_table(struct stf_tensor *v, size_t n);

/*
 * Sort @n tensor indices of @m into layout order: shard, then offset, then
 * size (a zero-size tensor before the one starting at the same offset).
 */
void stf_model_sort_layout(const struct stf_model *m, uint32_t *idx, size_t n);

/* Close everything; accepts NULL and half-built models. */
void stf_model_close(struct stf_model *m);

#endif
