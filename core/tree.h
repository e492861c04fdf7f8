/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_TREE_H
#define STF_TREE_H

/*
 * The directory tree of a mount: tensor names -> paths, inode numbers.
 *
 * Names split on '.' into directories (or, with STF_TREE_FLAT, each name is
 * one file in the root). Each part becomes one path component by this rule
 * (documented in the README; it is deterministic and collision-free):
 *
 *   1. '%' is written "%25" and '/' is written "%2F";
 *   2. a leading '.' of a component is written "%2E" (only possible in flat
 *      mode or for component names: split parts never hold a '.');
 *   3. an empty part ("a..b", a leading or trailing '.') is the component "%";
 *   4. a tensor whose name is also a prefix of other names ("a.b" beside
 *      "a.b.c") is the file "%t" inside its directory ("a/b/%t");
 *   5. a component longer than 238 bytes after 1-2 is cut to its first 223
 *      bytes (at a character boundary, never inside "%XX") followed by "%~N",
 *      N numbering (from 0, in byte order of the full parts) the parts of
 *      that directory that share the cut prefix. 238 is NAME_MAX (255) less
 *      ".part.safetensors": every view name (NAME.npy, NAME.part.safetensors)
 *      fits.
 *
 * After rules 1-2 every '%' is followed by "25", "2F" or "2E", so the tokens
 * of rules 3-5 can never be produced by a name. Multi-component models put
 * each component's tensors under the component's name (rule 1-2 applied to
 * each '/'-separated part of it).
 *
 * Inode numbers: the root is 1; nodes are numbered breadth-first, each
 * directory's children in listing order, so the children of a directory are
 * a contiguous range and the same model always gets the same numbers.
 * Listing order is by name, digit runs compared as numbers ("2" < "10").
 *
 * The root also holds the hidden directory ".stfs" with the special files
 * of enum stf_special.
 *
 * A built tree is immutable and safe to read from many threads.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "model.h"

#define STF_TREE_FLAT 0x1u

#define STF_ROOT_INO 1

enum stf_node_kind {
        STF_NODE_DIR,
        STF_NODE_TENSOR,
        STF_NODE_SPECIAL,
        STF_NODE_FILE, /* a companion file (stf_model.companions) */
};

enum stf_special {
        STF_SPECIAL_HEADER_JSON,
        STF_SPECIAL_METADATA_JSON,
        STF_SPECIAL_MODEL_SAFETENSORS,
        STF_SPECIAL_CONTROL,
        STF_SPECIAL_STATUS,
        STF_SPECIAL_COUNT
};

struct stf_node {
        const char *name; /* component, NUL terminated; "" for the root */
        uint32_t name_len;
        uint8_t kind;         /* enum stf_node_kind */
        uint32_t parent;      /* inode of the parent (root: itself) */
        uint32_t first_child; /* inode of the first child (dirs) */
        uint32_t nchildren;   /* dirs */
        uint32_t index;       /* tensor index (TENSOR), enum stf_special, or
                                 companion index (FILE) */
};

/* One name to place in the tree. */
struct stf_tree_entry {
        const char *prefix; /* component name ('/'-separated parts) or NULL/"" */
        const char *name;
        size_t name_len;
};

struct stf_tree;

/*
 * Build the tree of @n entries; entry i becomes TENSOR node with index i.
 * @flags: 0 or STF_TREE_FLAT. Returns 0, -EINVAL when two entries have the
 * same prefix and name (diag names them), -EOVERFLOW past 2^32 nodes,
 * -ENOMEM.
 */
int stf_tree_build(const struct stf_tree_entry *entries, size_t n, unsigned flags,
                   struct stf_tree **out, struct stf_diag *diag);

/*
 * stf_tree_build, and @nfiles FILE nodes: @files[i] is a '/'-separated path
 * (not split on '.', escaped by rules 1-2 and 5 like any part), FILE node
 * index i. A file is left out where it would take a tensor's path, make a
 * tensor's path change, or take the name of a directory (tensors win).
 */
int stf_tree_build_files(const struct stf_tree_entry *entries, size_t n, const char *const *files,
                         size_t nfiles, unsigned flags, struct stf_tree **out,
                         struct stf_diag *diag);

/* The same for every tensor of @m (index = index in m->tensors), and every
 * companion file (FILE nodes, index in m->companions). */
int stf_tree_build_model(const struct stf_model *m, unsigned flags, struct stf_tree **out,
                         struct stf_diag *diag);

void stf_tree_free(struct stf_tree *t);

/* Number of nodes; inodes are 1..count. */
uint64_t stf_tree_count(const struct stf_tree *t);

/* The node of @ino, or NULL when out of range. */
const struct stf_node *stf_tree_node(const struct stf_tree *t, uint64_t ino);

/*
 * Find @name (@len bytes) in directory @parent. Returns 0 and *@ino,
 * -ENOENT, or -ENOTDIR when @parent is not a directory.
 */
int stf_tree_lookup(const struct stf_tree *t, uint64_t parent, const char *name, size_t len,
                    uint64_t *ino);

/* Inode of tensor @index (as given to the builder). 0 when out of range. */
uint64_t stf_tree_tensor_ino(const struct stf_tree *t, size_t index);

/*
 * Write the path of @ino relative to the root ("model/layers/0/weight") into
 * @buf. Returns the length, or -ERANGE when @cap is too small, -ENOENT.
 */
int stf_tree_path(const struct stf_tree *t, uint64_t ino, char *buf, size_t cap);

/* Compare names for listing order: digit runs as numbers, then bytes. */
int stf_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

#endif
