/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_NS_H
#define STF_NS_H

/*
 * The mount namespace: every inode of a mount, what it is, how it is looked
 * up and listed, and its attributes. The FUSE layer translates requests into
 * these calls and fills kernel structs from the values they return; every
 * decision about the namespace is made here.
 *
 * Inode space (N = stf_tree_count of the tree):
 *   1 .. N       the tree (directories, tensors, the .stfs files), as
 *                numbered by core/tree;
 *   N+1 .. 2N    N+i is "T.npy", the .npy view of tensor node i;
 *   2N+1 .. 3N   2N+i is "D.part.safetensors", the subset view of directory
 *                node i (every directory but .stfs);
 *   3N+1 .. 4N   3N+i is the whole set of the component mounted at directory
 *                node i, under the name a loader opens for it (its
 *                stf_component.whole: "model.safetensors" in the root,
 *                "unet/diffusion_pytorch_model.safetensors"): tensors under
 *                their names in the set's own files.
 *   4N+1 ..      .stfs/shards and what is under it: 4N+j is node j of a
 *                second tree built from the shards' paths relative to SOURCE
 *                (stf_shard.rel, the user.safetensors.shard xattr) as
 *                core/tree builds companion files: escaped by the same rule,
 *                a sub-directory per '/', 4N+1 the directory itself. Each
 *                file there is a shard file as it is (STF_NS_SHARD: the same
 *                bytes, size and mtime).
 * Numbers of nodes that have no view (N+i for a directory) are unused. The
 * numbering is a pure function of the tree: the same model always gets the
 * same inodes, and a view's inode gives its node without a table.
 *
 * Whole source files: a file under .stfs/shards, and .stfs/model.safetensors
 * of a model that is one file (one shard, one component: the file itself,
 * not a rebuilt header), are byte for byte one shard file from offset 0 to
 * its end (stf_ns_whole_shard). The FUSE layer may let the kernel serve them
 * from the shard directly (passthrough).
 *
 * Views are found by suffix: a lookup of "X.npy" or "X.part.safetensors"
 * that the tree does not hold (real names win) finds the view of X. The
 * suffix of a subtree is not ".safetensors" alone: MNT/model.safetensors
 * must never be the part of a model under model/ (transformers opens that
 * name and initialises what it lacks at random). The whole-set files are
 * found by their name in their directory. Views are listed only with
 * STF_NS_LISTVIEWS, after the real entries; so are the whole-set files,
 * .stfs/model.safetensors and .stfs/shards (the whole model again: listed,
 * du would count it and cp -r copy it twice; the listing of .stfs/shards
 * itself shows its files).
 *
 * Companion files (FILE nodes of the tree) are real entries: listed, their
 * bytes the ones read at mount.
 *
 * Memory a reader can make the namespace hold is bounded:
 *  - Views (.npy, D.part.safetensors, the whole-set files, model.safetensors)
 *    are built on first use and kept in a cache of at most stf_ns_set_view_cache bytes (default
 *    STF_NS_VIEW_CACHE_DEFAULT), least recently used evicted first and
 *    rebuilt when asked again; one view larger than the whole budget is
 *    kept alone. A view is built without a lock (two threads racing on the
 *    same first use both build; one copy is kept), so a slow build never
 *    holds up another request. A caller holds a view from stf_ns_view to
 *    stf_ns_view_put; an evicted view is freed by its last put. Held at
 *    once: the budget (or the largest view), plus the views requests in
 *    flight hold or build (at most one each).
 *  - header.json and metadata.json are one shared copy each while any
 *    open file holds them (stf_ns_doc_get/put), and none when none does:
 *    their sizes are learnt by generating the text once and dropping it.
 *
 * Thread safety: every function may be called from many threads at once.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "model.h"
#include "tree.h"
#include "view.h"

#define STF_NS_LISTVIEWS 0x1u /* list T.npy, D.safetensors, .stfs/model.safetensors */
#define STF_NS_FULLNAMES 0x2u /* D.safetensors keeps full tensor names */

/* The default budget of the view cache (stf_ns_set_view_cache). */
#define STF_NS_VIEW_CACHE_DEFAULT ((size_t)64 << 20)

/* The longest name a listing gives: a component and ".part.safetensors". */
#define STF_NS_NAME_MAX (255 + 17)

enum stf_ns_kind {
        STF_NS_DIR,     /* a directory of the tree (the root and .stfs too) */
        STF_NS_TENSOR,  /* a tensor's bytes */
        STF_NS_NPY,     /* T.npy */
        STF_NS_SUBSET,  /* D.part.safetensors */
        STF_NS_WHOLE,   /* a component's whole set under its conventional name */
        STF_NS_FILE,    /* a companion file */
        STF_NS_MODEL,   /* .stfs/model.safetensors (the subset view of the root) */
        STF_NS_DOC,     /* .stfs/header.json, .stfs/metadata.json */
        STF_NS_CONTROL, /* .stfs/control */
        STF_NS_STATUS,  /* .stfs/status */
        STF_NS_SHARD,   /* .stfs/shards/REL: a shard file as it is */
};

/* What an inode is: a small value, filled by stf_ns_entry. */
struct stf_ns_entry {
        enum stf_ns_kind kind;
        uint64_t node;  /* the tree node it derives from: itself, the tensor
                           of a .npy, the directory of a subset view, the
                           root for model.safetensors */
        uint32_t index; /* tensor index (TENSOR, NPY), enum stf_special
                           (MODEL, DOC, CONTROL, STATUS), component
                           (WHOLE), companion (FILE), shard (SHARD); 0
                           otherwise */
};

/* The attributes policy decides; the caller adds owner and block size. */
struct stf_ns_attr {
        enum stf_ns_kind kind;
        uint32_t mode; /* S_IFDIR | 0555, S_IFREG | 0444, control S_IFREG | 0600 */
        uint32_t nlink;
        uint64_t size;         /* bytes; 0 for directories and live files */
        struct timespec mtime; /* a tensor's (and its .npy's) shard, a
                                  companion's own, else the newest shard's */
};

/* One entry of a listing. */
struct stf_ns_dirent {
        uint64_t ino;
        uint64_t next; /* the offset of the entry after this one */
        const char *name;
        size_t name_len;
        char buf[STF_NS_NAME_MAX + 1]; /* holds the names of views */
};

struct stf_ns;

/*
 * A namespace over @m and @t, which the caller keeps alive (and unchanged)
 * until stf_ns_free. @flags: STF_NS_LISTVIEWS, STF_NS_FULLNAMES.
 * Returns 0 or -ENOMEM.
 */
int stf_ns_new(const struct stf_model *m, const struct stf_tree *t, unsigned flags,
               struct stf_ns **out);

/* Free the namespace and every view it built; accepts NULL. */
void stf_ns_free(struct stf_ns *ns);

/* Set the byte budget of the view cache (see the file-top note); takes
 * effect from the next view built. */
void stf_ns_set_view_cache(struct stf_ns *ns, size_t bytes);

/* Bytes the view cache holds now (views, their extents and headers). */
size_t stf_ns_view_cache_bytes(struct stf_ns *ns);

/* What @ino is. Returns 0, or -ENOENT for a number that is no inode. */
int stf_ns_entry(const struct stf_ns *ns, uint64_t ino, struct stf_ns_entry *e);

/*
 * Find @name (@len bytes) in directory @parent: a tree name, else a view by
 * suffix. Returns 0 and *@ino, -ENOENT, or -ENOTDIR when @parent is not a
 * directory.
 */
int stf_ns_lookup(struct stf_ns *ns, uint64_t parent, const char *name, size_t len, uint64_t *ino);

/*
 * The shard whose whole file is the content of @ino (see the file-top note:
 * a file under .stfs/shards, .stfs/model.safetensors of a one-file model),
 * or -1 for any other inode.
 */
int64_t stf_ns_whole_shard(const struct stf_ns *ns, uint64_t ino);

/* Inode of shard @shard's file under .stfs/shards; 0 when out of range. */
uint64_t stf_ns_shard_ino(const struct stf_ns *ns, uint32_t shard);

/* Inode of the .npy view of tensor @index; 0 when out of range. */
uint64_t stf_ns_npy_ino(const struct stf_ns *ns, size_t index);

/*
 * The attributes of @ino. Building them may build its view (the size of a
 * .npy or subset view) or generate a document once (header.json).
 * Returns 0, -ENOENT, -ENOMEM, or the error of building the view.
 */
int stf_ns_attr(struct stf_ns *ns, uint64_t ino, struct stf_ns_attr *a);

/*
 * The content of file @ino as a view. Raw tensors are built in @tmp (no
 * allocation on the read path); other views come from the cache with a
 * reference the caller drops with stf_ns_view_put (a no-op for @tmp).
 * Documents and live files (header.json, metadata.json, control, status)
 * are empty here: their bytes belong to an open file.
 * Returns 0, -ENOENT, -EISDIR, or the error of building the view.
 */
int stf_ns_view(struct stf_ns *ns, uint64_t ino, struct stf_view *tmp, const struct stf_view **out);

/* Drop the reference of stf_ns_view to @v; accepts NULL and views built in
 * the caller's storage. */
void stf_ns_view_put(struct stf_ns *ns, const struct stf_view *v);

/*
 * The text of document @special (STF_SPECIAL_HEADER_JSON or
 * STF_SPECIAL_METADATA_JSON), new (caller frees), its length in *@len.
 * Returns 0, -EINVAL for another file, -ENOMEM.
 */
int stf_ns_doc(const struct stf_ns *ns, unsigned special, char **text, size_t *len);

/*
 * The shared text of document @special, built on the first get and freed
 * at the last put: *@text stays valid until the caller's stf_ns_doc_put.
 * Returns 0, -EINVAL for another file, -ENOMEM.
 */
int stf_ns_doc_get(struct stf_ns *ns, unsigned special, const char **text, size_t *len);
void stf_ns_doc_put(struct stf_ns *ns, unsigned special);

/*
 * The entry at offset @off of the listing of directory @dir. Offsets are
 * stable: 0 is ".", 1 "..", then the children, then (with listviews) their
 * views, and in .stfs the directory shards last (listviews); entries not
 * shown are skipped. Resume with @off = d->next.
 * Returns 0 and *@d (whose name may point into @d), 1 past the end,
 * -ENOENT, -ENOTDIR.
 */
int stf_ns_readdir(const struct stf_ns *ns, uint64_t dir, uint64_t off, struct stf_ns_dirent *d);

/*
 * Extended attributes. A tensor (not its .npy) has user.safetensors.name,
 * .dtype, .shape (a JSON array), .shard (the shard's path relative to
 * SOURCE: stf_shard.rel) and .offset (absolute offset of its data in the
 * shard); a view (.npy, D.part.safetensors, a whole-set file,
 * .stfs/model.safetensors) has user.stfs.view ("npy" or "safetensors") and
 * user.stfs.of (the path of its tensor or directory, "" for the root);
 * nothing else has any.
 */

/* The names @e has: NUL-terminated names laid end to end, @*len bytes in
 * all (0: none). Static storage. */
void stf_ns_xattr_list(const struct stf_ns_entry *e, const char **list, size_t *len);

/* A buffer of this many bytes holds any value of @e's xattrs that
 * stf_ns_xattr can give (a path is limited to 4 KiB). */
size_t stf_ns_xattr_cap(const struct stf_ns *ns, const struct stf_ns_entry *e);

/*
 * The value of xattr @name of @e: in @buf (@cap bytes, not NUL-terminated
 * when full) or borrowed from the model (*@val points to it either way).
 * Returns its length, -ENODATA (no such xattr), or -E2BIG (longer than
 * @cap).
 */
int stf_ns_xattr(const struct stf_ns *ns, const struct stf_ns_entry *e, const char *name, char *buf,
                 size_t cap, const char **val);

#endif
