/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mount namespace (see ns.h for the inode space). Everything here is a
 * function of the tree, except the view cache (bounded, see ns.h), the
 * shared documents and the document sizes. Views and documents are built
 * outside any lock that a lookup or read of something else waits on, so a
 * slow build (model.safetensors or header.json of a 100k-tensor model)
 * never holds up anything else.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "describe.h"
#include "dtype.h"
#include "format.h"
#include "ns.h"
#include "text.h"

/* A cached view and its place in the LRU list. */
struct cview {
        struct stf_view *v;
        uint64_t slot; /* index in views[], or 2n for model.safetensors */
        size_t bytes;  /* what it holds in memory */
        struct cview *prev, *next;
};

/* A shared document: built on the first get, freed at the last put. */
struct doc {
        pthread_mutex_t lock;
        char *text;
        size_t len;
        unsigned long refs;
};

struct stf_ns {
        const struct stf_model *model;
        const struct stf_tree *tree;
        unsigned flags;
        uint64_t n;            /* tree nodes: inodes 1..n */
        uint64_t stfs_dir;     /* inode of /.stfs (0: none) */
        struct timespec mtime; /* newest shard mtime */
        pthread_mutex_t lock;  /* the view cache: views, lru, bytes, refs */
        struct cview **views;  /* [3n + 1]: at ino - n - 1 (npy, subset,
                                  whole), then model.safetensors */
        struct cview *lru;     /* most recently used first */
        struct cview *lru_tail;
        size_t bytes, budget;
        uint64_t *whole_dir;                 /* [ncomps]: the directory of the component's
                                                whole-set file; 0: none */
        uint64_t doc_len[STF_SPECIAL_COUNT]; /* length + 1; 0 while unknown */
        struct doc docs[2];                  /* header.json, metadata.json */
        struct stf_tree *shards;             /* .stfs/shards: node j is inode 4n + j */
        uint64_t shards_stfs;                /* its own .stfs node, hidden */
        uint64_t *shard_ino;                 /* [nshards]: inode of each shard's file */
};

static bool newer(struct timespec a, struct timespec b)
{
        return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

/*
 * The directory node where component @name is mounted: the root for "",
 * else its '/'-separated parts escaped as core/tree does (rules 1-2); 0
 * when it is not a directory of the tree.
 */
static uint64_t comp_dir(const struct stf_tree *t, const char *name)
{
        uint64_t dir = STF_ROOT_INO;
        char part[3 * 255 + 1];

        while (*name) {
                size_t len = strcspn(name, "/"), k = 0;

                for (size_t i = 0; i < len && k + 3 < sizeof(part); i++) {
                        if (name[i] == '%' || (i == 0 && name[i] == '.')) {
                                memcpy(part + k, name[i] == '%' ? "%25" : "%2E", 3);
                                k += 3;
                        } else {
                                part[k++] = name[i];
                        }
                }
                if (stf_tree_lookup(t, dir, part, k, &dir))
                        return 0;
                name += len + (name[len] == '/');
        }
        return stf_tree_node(t, dir)->kind == STF_NODE_DIR ? dir : 0;
}

/*
 * The tree of .stfs/shards: the shards' paths as core/tree places companion
 * files (same escaping, same order), so a shard's place there is its
 * user.safetensors.shard. That tree has a .stfs of its own, never shown.
 */
static int build_shards(struct stf_ns *ns)
{
        const struct stf_model *m = ns->model;
        const char **rels = calloc(m->nshards ? m->nshards : 1, sizeof(*rels));
        struct stf_diag diag = {{0}};
        int ret = -ENOMEM;

        ns->shard_ino = calloc(m->nshards ? m->nshards : 1, sizeof(*ns->shard_ino));
        if (!rels || !ns->shard_ino)
                goto out_rels;
        for (uint32_t i = 0; i < m->nshards; i++)
                rels[i] = m->shards[i].rel;
        ret = stf_tree_build_files(NULL, 0, rels, m->nshards, 0, &ns->shards, &diag);
        if (ret)
                goto out_rels;
        if (stf_tree_lookup(ns->shards, STF_ROOT_INO, ".stfs", 5, &ns->shards_stfs))
                ns->shards_stfs = 0;
        for (uint64_t j = 1; j <= stf_tree_count(ns->shards); j++) {
                const struct stf_node *c = stf_tree_node(ns->shards, j);

                if (c->kind == STF_NODE_FILE)
                        ns->shard_ino[c->index] = 4 * ns->n + j;
        }
out_rels:
        free(rels);
        return ret;
}

int stf_ns_new(const struct stf_model *m, const struct stf_tree *t, unsigned flags,
               struct stf_ns **out)
{
        struct stf_ns *ns = calloc(1, sizeof(*ns));

        if (!ns)
                return -ENOMEM;
        ns->model = m;
        ns->tree = t;
        ns->flags = flags;
        ns->n = stf_tree_count(t);
        if (stf_tree_lookup(t, STF_ROOT_INO, ".stfs", 5, &ns->stfs_dir))
                ns->stfs_dir = 0;
        for (uint32_t i = 0; i < m->nshards; i++)
                if (newer(m->shards[i].mtime, ns->mtime))
                        ns->mtime = m->shards[i].mtime;
        ns->budget = STF_NS_VIEW_CACHE_DEFAULT;
        pthread_mutex_init(&ns->lock, NULL);
        for (int i = 0; i < 2; i++)
                pthread_mutex_init(&ns->docs[i].lock, NULL);
        ns->views = calloc(3 * ns->n + 1, sizeof(*ns->views));
        ns->whole_dir = calloc(m->ncomps ? m->ncomps : 1, sizeof(*ns->whole_dir));
        if (!ns->views || !ns->whole_dir) {
                stf_ns_free(ns);
                return -ENOMEM;
        }
        for (uint32_t c = 0; c < m->ncomps; c++)
                if (m->comps[c].whole)
                        ns->whole_dir[c] = comp_dir(t, m->comps[c].name);
        if (ns->stfs_dir && build_shards(ns)) {
                stf_ns_free(ns);
                return -ENOMEM;
        }
        *out = ns;
        return 0;
}

void stf_ns_free(struct stf_ns *ns)
{
        if (!ns)
                return;
        while (ns->lru) {
                struct cview *c = ns->lru;

                ns->lru = c->next;
                stf_view_free(c->v);
                free(c);
        }
        free(ns->views);
        free(ns->whole_dir);
        free(ns->shard_ino);
        stf_tree_free(ns->shards);
        pthread_mutex_destroy(&ns->lock);
        for (int i = 0; i < 2; i++) {
                free(ns->docs[i].text);
                pthread_mutex_destroy(&ns->docs[i].lock);
        }
        free(ns);
}
void stf_ns_set_view_cache(struct stf_ns *ns, size_t bytes)
{
        pthread_mutex_lock(&ns->lock);
        ns->budget = bytes;
        pthread_mutex_unlock(&ns->lock);
}

size_t stf_ns_view_cache_bytes(struct stf_ns *ns)
{
        size_t b;

        pthread_mutex_lock(&ns->lock);
        b = ns->bytes;
        pthread_mutex_unlock(&ns->lock);
        return b;
}

/* Does tree node @node (@c) have a view: a tensor its .npy, a directory
 * (but .stfs) its .safetensors? */
static bool has_view(const struct stf_ns *ns, uint64_t node, const struct stf_node *c)
{
        return c->kind == STF_NODE_TENSOR || (c->kind == STF_NODE_DIR && node != ns->stfs_dir);
}

/* The inode of the view of @node (which has one). */
static uint64_t view_ino(const struct stf_ns *ns, uint64_t node, const struct stf_node *c)
{
        return node + (c->kind == STF_NODE_TENSOR ? ns->n : 2 * ns->n);
}

static enum stf_ns_kind special_kind(uint32_t index)
{
        switch (index) {
        case STF_SPECIAL_MODEL_SAFETENSORS:
                return STF_NS_MODEL;
        case STF_SPECIAL_CONTROL:
                return STF_NS_CONTROL;
        case STF_SPECIAL_STATUS:
                return STF_NS_STATUS;
        default:
                return STF_NS_DOC;
        }
}

/* The component whose whole-set file is in directory @dir, or -1. */
static int64_t whole_comp(const struct stf_ns *ns, uint64_t dir)
{
        for (uint32_t c = 0; dir && c < ns->model->ncomps; c++)
                if (ns->whole_dir[c] == dir)
                        return c;
        return -1;
}

/* The node of .stfs/shards that inode @ino is (never its hidden .stfs), or
 * NULL; *@j its number in that tree. */
static const struct stf_node *shard_node(const struct stf_ns *ns, uint64_t ino, uint64_t *j)
{
        const struct stf_node *n;

        if (!ns->shards || ino <= 4 * ns->n)
                return NULL;
        *j = ino - 4 * ns->n;
        n = stf_tree_node(ns->shards, *j);
        if (!n || n->kind == STF_NODE_SPECIAL || *j == ns->shards_stfs)
                return NULL;
        return n;
}

int stf_ns_entry(const struct stf_ns *ns, uint64_t ino, struct stf_ns_entry *e)
{
        const struct stf_node *n;
        uint64_t j;

        if (ino > 4 * ns->n) {
                n = shard_node(ns, ino, &j);
                if (!n)
                        return -ENOENT;
                *e = (struct stf_ns_entry){n->kind == STF_NODE_DIR ? STF_NS_DIR : STF_NS_SHARD, ino,
                                           n->kind == STF_NODE_DIR ? 0 : n->index};
                return 0;
        }
        if (ino > 3 * ns->n && ino <= 4 * ns->n) {
                int64_t c = whole_comp(ns, ino - 3 * ns->n);

                if (c < 0)
                        return -ENOENT;
                *e = (struct stf_ns_entry){STF_NS_WHOLE, ino - 3 * ns->n, (uint32_t)c};
                return 0;
        }
        if (ino > ns->n && ino <= 3 * ns->n) {
                bool npy = ino <= 2 * ns->n;

                e->node = ino - (npy ? ns->n : 2 * ns->n);
                n = stf_tree_node(ns->tree, e->node);
                if (!has_view(ns, e->node, n) || npy != (n->kind == STF_NODE_TENSOR))
                        return -ENOENT;
                e->kind = npy ? STF_NS_NPY : STF_NS_SUBSET;
                e->index = npy ? n->index : 0;
                return 0;
        }
        n = stf_tree_node(ns->tree, ino);
        if (!n)
                return -ENOENT;
        e->node = ino;
        e->index = n->kind == STF_NODE_DIR ? 0 : n->index;
        if (n->kind == STF_NODE_DIR)
                e->kind = STF_NS_DIR;
        else if (n->kind == STF_NODE_TENSOR)
                e->kind = STF_NS_TENSOR;
        else if (n->kind == STF_NODE_FILE)
                e->kind = STF_NS_FILE;
        else
                e->kind = special_kind(n->index);
        if (e->kind == STF_NS_MODEL)
                e->node = STF_ROOT_INO;
        return 0;
}

/*
 * "T.npy" beside tensor T, "D.part.safetensors" beside directory D, and the
 * whole-set file of a component in its directory.
 */
static int lookup_view(const struct stf_ns *ns, uint64_t parent, const char *name, size_t len,
                       uint64_t *ino)
{
        static const char npy_sfx[] = ".npy", st_sfx[] = ".part.safetensors";
        bool npy = len > sizeof(npy_sfx) - 1 && stf_ends_with(name, len, npy_sfx);
        const struct stf_node *c;
        int64_t comp = whole_comp(ns, parent);
        uint64_t base;

        if (comp >= 0 && strlen(ns->model->comps[comp].whole) == len &&
            !memcmp(ns->model->comps[comp].whole, name, len)) {
                *ino = 3 * ns->n + parent;
                return 0;
        }
        if (!npy && !(len > sizeof(st_sfx) - 1 && stf_ends_with(name, len, st_sfx)))
                return -ENOENT;
        len -= npy ? sizeof(npy_sfx) - 1 : sizeof(st_sfx) - 1;
        if (stf_tree_lookup(ns->tree, parent, name, len, &base))
                return -ENOENT;
        c = stf_tree_node(ns->tree, base);
        if (!has_view(ns, base, c) || npy != (c->kind == STF_NODE_TENSOR))
                return -ENOENT;
        *ino = view_ino(ns, base, c);
        return 0;
}

/* @name in directory @parent of .stfs/shards (an inode past 4n). */
static int lookup_shards(const struct stf_ns *ns, uint64_t parent, const char *name, size_t len,
                         uint64_t *ino)
{
        uint64_t j, c;
        const struct stf_node *n = shard_node(ns, parent, &j);
        int ret;

        if (!n)
                return -ENOENT;
        if (n->kind != STF_NODE_DIR)
                return -ENOTDIR;
        ret = stf_tree_lookup(ns->shards, j, name, len, &c);
        if (ret)
                return ret;
        *ino = 4 * ns->n + c;
        return shard_node(ns, *ino, &j) ? 0 : -ENOENT;
}

int stf_ns_lookup(struct stf_ns *ns, uint64_t parent, const char *name, size_t len, uint64_t *ino)
{
        int ret;

        if (parent > 4 * ns->n)
                return lookup_shards(ns, parent, name, len, ino);
        ret = stf_tree_lookup(ns->tree, parent, name, len, ino);
        if (ret == -ENOENT && ns->shards && parent == ns->stfs_dir && len == 6 &&
            !memcmp(name, "shards", 6)) {
                *ino = 4 * ns->n + STF_ROOT_INO;
                return 0;
        }
        if (ret == -ENOENT)
                ret = lookup_view(ns, parent, name, len, ino);
        return ret;
}

/* A model of one file: .stfs/model.safetensors is that file as it is. */
static bool one_file(const struct stf_model *m)
{
        return m->nshards == 1 && m->ncomps == 1;
}

int64_t stf_ns_whole_shard(const struct stf_ns *ns, uint64_t ino)
{
        struct stf_ns_entry e;

        if (stf_ns_entry(ns, ino, &e))
                return -1;
        if (e.kind == STF_NS_SHARD)
                return e.index;
        return e.kind == STF_NS_MODEL && one_file(ns->model) ? 0 : -1;
}

uint64_t stf_ns_shard_ino(const struct stf_ns *ns, uint32_t shard)
{
        return ns->shard_ino && shard < ns->model->nshards ? ns->shard_ino[shard] : 0;
}

uint64_t stf_ns_npy_ino(const struct stf_ns *ns, size_t index)
{
        uint64_t node = stf_tree_tensor_ino(ns->tree, index);

        return node ? node + ns->n : 0;
}

static size_t view_bytes(const struct stf_view *v)
{
        return sizeof(*v) + sizeof(struct cview) + v->n * sizeof(*v->ext) + v->mem_len;
}

/* Drop a reference to cached view @v; returns @v when that was the last
 * (the caller frees it after unlocking), else NULL. Under ns->lock. */
static struct stf_view *unref_locked(struct stf_view *v)
{
        return --v->refs == 0 ? v : NULL;
}

static void lru_unlink(struct stf_ns *ns, struct cview *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                ns->lru = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                ns->lru_tail = c->prev;
        c->prev = c->next = NULL;
}

static void lru_push(struct stf_ns *ns, struct cview *c)
{
        c->next = ns->lru;
        if (ns->lru)
                ns->lru->prev = c;
        ns->lru = c;
        if (!ns->lru_tail)
                ns->lru_tail = c;
}

/*
 * Evict least recently used views until the cache fits its budget, the
 * newest (@keep) aside: one view larger than the whole budget stays, alone.
 * A view in use by a reader is freed by its last stf_ns_view_put. Under
 * ns->lock; what to free (outside it) is chained on *@dead.
 */
static void evict_locked(struct stf_ns *ns, struct cview *keep, struct cview **dead)
{
        while (ns->bytes > ns->budget && ns->lru_tail && ns->lru_tail != keep) {
                struct cview *c = ns->lru_tail;

                lru_unlink(ns, c);
                ns->views[c->slot] = NULL;
                ns->bytes -= c->bytes;
                c->v = unref_locked(c->v); /* NULL while a reader holds it */
                c->next = *dead;
                *dead = c;
        }
}

static void free_dead(struct cview *dead)
{
        while (dead) {
                struct cview *next = dead->next;

                stf_view_free(dead->v);
                free(dead);
                dead = next;
        }
}

static int build_view(struct stf_ns *ns, const struct stf_ns_entry *e, struct stf_view **v)
{
        /* a whole set: its own names (relative to its directory, full in
         * the root), whatever -o fullnames says */
        bool full = e->kind == STF_NS_MODEL ||
                    (e->kind == STF_NS_WHOLE ? e->node == STF_ROOT_INO
                                             : (ns->flags & STF_NS_FULLNAMES) != 0);

        if (e->kind == STF_NS_NPY)
                return stf_view_npy(ns->model, e->index, v);
        return stf_view_subset(ns->model, ns->tree, e->node, full, v);
}

/*
 * The view of slot @slot, from the cache or built (outside the lock, so a
 * slow build never holds up other requests; when two threads race on the
 * same first use, the copy installed first is kept). Returns it with a
 * reference for the caller.
 */
static int cached_view(struct stf_ns *ns, uint64_t slot, const struct stf_ns_entry *e,
                       const struct stf_view **out)
{
        struct cview *c, *dead = NULL;
        struct stf_view *v;
        int ret;

        pthread_mutex_lock(&ns->lock);
        c = ns->views[slot];
        if (c) {
                lru_unlink(ns, c);
                lru_push(ns, c);
                c->v->refs++;
                *out = c->v;
                pthread_mutex_unlock(&ns->lock);
                return 0;
        }
        pthread_mutex_unlock(&ns->lock);
        ret = build_view(ns, e, &v);
        if (ret)
                return ret;
        c = calloc(1, sizeof(*c));
        if (!c) {
                stf_view_free(v);
                return -ENOMEM;
        }
        pthread_mutex_lock(&ns->lock);
        if (ns->views[slot]) { /* another thread was first */
                free(c);
                stf_view_free(v);
                c = ns->views[slot];
                lru_unlink(ns, c);
        } else {
                *c = (struct cview){.v = v, .slot = slot, .bytes = view_bytes(v)};
                v->refs = 1; /* the cache's */
                ns->views[slot] = c;
                ns->bytes += c->bytes;
        }
        lru_push(ns, c);
        c->v->refs++;
        *out = c->v;
        evict_locked(ns, c, &dead);
        pthread_mutex_unlock(&ns->lock);
        free_dead(dead);
        return 0;
}

void stf_ns_view_put(struct stf_ns *ns, const struct stf_view *view)
{
        struct stf_view *v = (struct stf_view *)view, *last;

        if (!v || !v->refs)
                return; /* a view built in the caller's storage */
        pthread_mutex_lock(&ns->lock);
        last = unref_locked(v);
        pthread_mutex_unlock(&ns->lock);
        stf_view_free(last);
}

/* Shard @shard's whole file as one extent of its mapping, in @tmp. */
static int shard_view(const struct stf_ns *ns, uint32_t shard, struct stf_view *tmp,
                      const struct stf_view **out)
{
        const struct stf_shard *s = &ns->model->shards[shard];

        stf_view_init_mem(tmp, s->map, s->size);
        tmp->one.shard = (int32_t)shard;
        *out = tmp;
        return 0;
}

int stf_ns_view(struct stf_ns *ns, uint64_t ino, struct stf_view *tmp, const struct stf_view **out)
{
        struct stf_ns_entry e;
        int ret = stf_ns_entry(ns, ino, &e);

        if (ret)
                return ret;
        switch (e.kind) {
        case STF_NS_DIR:
                return -EISDIR;
        case STF_NS_TENSOR:
                stf_view_init_tensor(tmp, ns->model, e.index);
                *out = tmp;
                return 0;
        case STF_NS_NPY:
        case STF_NS_SUBSET:
        case STF_NS_WHOLE:
                return cached_view(ns, ino - ns->n - 1, &e, out);
        case STF_NS_FILE:
                stf_view_init_mem(tmp, ns->model->companions[e.index].data,
                                  ns->model->companions[e.index].len);
                *out = tmp;
                return 0;
        case STF_NS_MODEL:
                if (one_file(ns->model))
                        return shard_view(ns, 0, tmp, out);
                return cached_view(ns, 3 * ns->n, &e, out);
        case STF_NS_SHARD:
                return shard_view(ns, e.index, tmp, out);
        case STF_NS_DOC:
        case STF_NS_CONTROL:
        case STF_NS_STATUS:
                break;
        }
        /* bytes held by the open file */
        stf_view_init_mem(tmp, "", 0);
        *out = tmp;
        return 0;
}

int stf_ns_doc(const struct stf_ns *ns, unsigned special, char **text, size_t *len)
{
        if (special == STF_SPECIAL_HEADER_JSON)
                return stf_describe_header(ns->model, ns->tree, text, len);
        if (special == STF_SPECIAL_METADATA_JSON)
                return stf_describe_metadata(ns->model, text, len);
        return -EINVAL;
}

static struct doc *doc_of(struct stf_ns *ns, unsigned special)
{
        if (special == STF_SPECIAL_HEADER_JSON)
                return &ns->docs[0];
        if (special == STF_SPECIAL_METADATA_JSON)
                return &ns->docs[1];
        return NULL;
}

/*
 * Built under the document's own lock: concurrent first opens wait for one
 * copy rather than each building their own (60 opens of a 100k-tensor
 * header.json were 60 copies, +930 MB).
 */
int stf_ns_doc_get(struct stf_ns *ns, unsigned special, const char **text, size_t *len)
{
        struct doc *d = doc_of(ns, special);
        int ret = 0;

        if (!d)
                return -EINVAL;
        pthread_mutex_lock(&d->lock);
        if (!d->text)
                ret = stf_ns_doc(ns, special, &d->text, &d->len);
        if (!ret) {
                d->refs++;
                *text = d->text;
                *len = d->len;
                __atomic_store_n(&ns->doc_len[special], (uint64_t)d->len + 1, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&d->lock);
        return ret;
}

void stf_ns_doc_put(struct stf_ns *ns, unsigned special)
{
        struct doc *d = doc_of(ns, special);
        char *text = NULL;

        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        if (d->refs && --d->refs == 0) {
                text = d->text;
                d->text = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        free(text);
}

/*
 * The size of a document: it is generated once to learn its size and
 * dropped unless a file holds it open (header.json of a 100k-tensor model
 * is ~25 MB that stat should not keep alive).
 */
static int doc_size(struct stf_ns *ns, unsigned special, uint64_t *size)
{
        uint64_t known = __atomic_load_n(&ns->doc_len[special], __ATOMIC_RELAXED);
        const char *text;
        size_t len;
        int ret;

        if (!known) {
                ret = stf_ns_doc_get(ns, special, &text, &len);
                if (ret)
                        return ret;
                stf_ns_doc_put(ns, special);
                known = (uint64_t)len + 1;
        }
        *size = known - 1;
        return 0;
}

int stf_ns_attr(struct stf_ns *ns, uint64_t ino, struct stf_ns_attr *a)
{
        const struct stf_view *v;
        struct stf_ns_entry e;
        struct stf_view tmp;
        int ret = stf_ns_entry(ns, ino, &e);

        if (ret)
                return ret;
        memset(a, 0, sizeof(*a));
        a->kind = e.kind;
        a->mtime = ns->mtime;
        if (e.kind == STF_NS_DIR) {
                a->mode = S_IFDIR | 0555;
                a->nlink = 2;
                return 0;
        }
        a->mode = S_IFREG | (e.kind == STF_NS_CONTROL ? 0600 : 0444); /* control: the
                                                                         mounting user */
        a->nlink = 1;
        if (e.kind == STF_NS_DOC)
                return doc_size(ns, e.index, &a->size);
        ret = stf_ns_view(ns, ino, &tmp, &v);
        if (ret)
                return ret;
        a->size = v->size;
        stf_ns_view_put(ns, v);
        if (e.kind == STF_NS_TENSOR || e.kind == STF_NS_NPY) {
                const struct stf_tensor *t = &ns->model->tensors[e.index];

                a->mtime = ns->model->shards[t->shard].mtime;
        }
        if (e.kind == STF_NS_FILE)
                a->mtime = ns->model->companions[e.index].mtime;
        if (e.kind == STF_NS_SHARD)
                a->mtime = ns->model->shards[e.index].mtime;
        return 0;
}

/* Is child @c listed without listviews? model.safetensors is the whole
 * model again (see ns.h). */
static bool listed(const struct stf_ns *ns, const struct stf_node *c)
{
        return (ns->flags & STF_NS_LISTVIEWS) || c->kind != STF_NODE_SPECIAL ||
               c->index != STF_SPECIAL_MODEL_SAFETENSORS;
}

/* The listing of a directory of .stfs/shards (node @j of that tree):
 * ".", "..", then its children but the hidden .stfs. */
static int readdir_shards(const struct stf_ns *ns, uint64_t dir, uint64_t j, uint64_t off,
                          struct stf_ns_dirent *d)
{
        const struct stf_node *n = stf_tree_node(ns->shards, j);
        uint64_t k;

        for (uint64_t i = off; i < 2 + (uint64_t)n->nchildren; i++) {
                d->next = i + 1;
                if (i < 2) {
                        d->ino = i == 0              ? dir
                                 : j == STF_ROOT_INO ? ns->stfs_dir
                                                     : 4 * ns->n + n->parent;
                        d->name = i == 0 ? "." : "..";
                        d->name_len = i + 1;
                        return 0;
                }
                d->ino = 4 * ns->n + n->first_child + (i - 2);
                if (!shard_node(ns, d->ino, &k))
                        continue;
                d->name = stf_tree_node(ns->shards, k)->name;
                d->name_len = stf_tree_node(ns->shards, k)->name_len;
                return 0;
        }
        return 1;
}

int stf_ns_readdir(const struct stf_ns *ns, uint64_t dir, uint64_t off, struct stf_ns_dirent *d)
{
        const struct stf_node *n = stf_tree_node(ns->tree, dir), *c;
        uint64_t nch, end, j;
        struct stf_ns_entry e;

        if (stf_ns_entry(ns, dir, &e))
                return -ENOENT;
        if (e.kind != STF_NS_DIR)
                return -ENOTDIR;
        if (shard_node(ns, dir, &j))
                return readdir_shards(ns, dir, j, off, d);
        nch = n->nchildren;
        end = 2 + (ns->flags & STF_NS_LISTVIEWS ? 2 * nch + 1 : nch);
        for (uint64_t i = off; i < end; i++) {
                d->next = i + 1;
                if (i < 2) {
                        d->ino = i == 0 ? dir : n->parent;
                        d->name = i == 0 ? "." : "..";
                        d->name_len = i + 1;
                        return 0;
                }
                if (i < 2 + nch) {
                        d->ino = n->first_child + (i - 2);
                        c = stf_tree_node(ns->tree, d->ino);
                        if (!listed(ns, c))
                                continue;
                        d->name = c->name;
                        d->name_len = c->name_len;
                        return 0;
                }
                if (i == 2 + 2 * nch) { /* -o listviews: the whole-set file */
                        int64_t comp = whole_comp(ns, dir);

                        if (comp < 0)
                                continue;
                        d->ino = 3 * ns->n + dir;
                        d->name = ns->model->comps[comp].whole;
                        d->name_len = strlen(d->name);
                        return 0;
                }
                /* -o listviews: the views of the children, after them */
                d->ino = n->first_child + (i - 2 - nch);
                c = stf_tree_node(ns->tree, d->ino);
                if (!has_view(ns, d->ino, c) || c->name_len > 255)
                        continue; /* (tree components are 255 bytes at most) */
                d->name_len =
                    (size_t)snprintf(d->buf, sizeof(d->buf), "%s%s", c->name,
                                     c->kind == STF_NODE_TENSOR ? ".npy" : ".part.safetensors");
                d->name = d->buf;
                d->ino = view_ino(ns, d->ino, c);
                return 0;
        }
        if (dir == ns->stfs_dir && ns->shards && (ns->flags & STF_NS_LISTVIEWS) && off <= end) {
                /* with listviews .stfs lists its shards directory last */
                d->ino = 4 * ns->n + STF_ROOT_INO;
                d->next = end + 1;
                d->name = "shards";
                d->name_len = 6;
                return 0;
        }
        return 1;
}

#define XATTR_PREFIX "user.safetensors."

static const char tensor_xattrs[] =
    XATTR_PREFIX "name\0" XATTR_PREFIX "dtype\0" XATTR_PREFIX "shape\0" XATTR_PREFIX
                 "shard\0" XATTR_PREFIX "offset";
static const char view_xattrs[] = "user.stfs.view\0user.stfs.of";

static bool is_view(enum stf_ns_kind k)
{
        return k == STF_NS_NPY || k == STF_NS_SUBSET || k == STF_NS_MODEL || k == STF_NS_WHOLE;
}

void stf_ns_xattr_list(const struct stf_ns_entry *e, const char **list, size_t *len)
{
        *list = "";
        *len = 0;
        if (e->kind == STF_NS_TENSOR) {
                *list = tensor_xattrs;
                *len = sizeof(tensor_xattrs);
        } else if (is_view(e->kind)) {
                *list = view_xattrs;
                *len = sizeof(view_xattrs);
        }
}

size_t stf_ns_xattr_cap(const struct stf_ns *ns, const struct stf_ns_entry *e)
{
        /* shapes: 21 bytes a dimension at most */
        if (e->kind == STF_NS_TENSOR)
                return 256 + (size_t)ns->model->tensors[e->index].rank * 22;
        return 4096;
}

static int tensor_xattr(const struct stf_ns *ns, const struct stf_tensor *t, const char *name,
                        char *buf, size_t cap, const char **val)
{
        int n;

        if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)))
                return -ENODATA;
        name += strlen(XATTR_PREFIX);
        if (!strcmp(name, "name")) {
                *val = t->name;
                return (int)t->name_len;
        }
        if (!strcmp(name, "shard")) {
                *val = ns->model->shards[t->shard].rel;
                return (int)strlen(*val);
        }
        if (!strcmp(name, "dtype"))
                n = snprintf(buf, cap, "%s", stf_dtype_info(t->dtype)->name);
        else if (!strcmp(name, "shape"))
                n = (int)stf_shape_format(buf, cap, t->shape, t->rank, true);
        else if (!strcmp(name, "offset"))
                n = snprintf(buf, cap, "%" PRIu64, t->begin);
        else
                return -ENODATA;
        return n >= 0 && (size_t)n >= cap ? -E2BIG : n;
}

int stf_ns_xattr(const struct stf_ns *ns, const struct stf_ns_entry *e, const char *name, char *buf,
                 size_t cap, const char **val)
{
        int n;

        *val = buf;
        if (e->kind == STF_NS_TENSOR)
                return tensor_xattr(ns, &ns->model->tensors[e->index], name, buf, cap, val);
        if (!is_view(e->kind))
                return -ENODATA;
        if (!strcmp(name, "user.stfs.view"))
                n = snprintf(buf, cap, "%s", e->kind == STF_NS_NPY ? "npy" : "safetensors");
        else if (!strcmp(name, "user.stfs.of"))
                n = stf_tree_path(ns->tree, e->node, buf, cap);
        else
                return -ENODATA;
        if (n == -ERANGE || (n >= 0 && (size_t)n >= cap))
                return -E2BIG;
        return n;
}
