/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Names -> tree. See tree.h for the escaping rule and inode numbering.
 *
 * Each entry becomes a key: its prefix and name with every separator ('/'
 * in the prefix, '.' in the name unless flat) turned into a NUL byte, the
 * prefix and name joined by one. Names cannot hold NUL, so sorting keys
 * bytewise (shorter first) sorts entries by their sequence of parts, and the
 * entries of any directory form one contiguous run of the sorted keys. The
 * tree is then built breadth-first: a directory's run is split into groups
 * by the part at its depth, each group a child. Memory is linear in the
 * total length of the names, whatever their shape (no per-part arrays).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "tree.h"

/*
 * Rule 5: 255 (NAME_MAX) less the 17 bytes of ".part.safetensors", so that
 * the views of a node (NAME.npy, NAME.part.safetensors) are valid names
 * too; the cut leaves room for "%~N" with any N below 2^32.
 */
#define COMPONENT_MAX 238
#define CUT_BYTES 223
#define QMAX 400

struct key {
        char *k;      /* NUL-separated parts */
        size_t len;   /* bytes of k */
        size_t cur;   /* start of the part at the current depth */
        uint32_t idx; /* entry index */
        bool done;    /* no part left: this entry is the directory itself */
        bool file;    /* a FILE entry */
        bool dropped; /* a FILE whose path a tensor has */
};

struct child {
        const char *name; /* arena or static */
        uint32_t name_len;
        uint8_t kind;
        uint32_t index;
        size_t lo, hi; /* key range of a directory */
        bool stfs;     /* the .stfs directory */
};

struct arena_block {
        struct arena_block *next;
        size_t used, cap;
        char data[];
};

struct stf_tree {
        struct stf_node *nodes; /* nodes[ino - 1] */
        uint64_t count;
        uint64_t *tensor_ino;
        size_t ntensors;
        struct arena_block *arena;
};

static const char *const special_names[STF_SPECIAL_COUNT] = {
    [STF_SPECIAL_HEADER_JSON] = "header.json",
    [STF_SPECIAL_METADATA_JSON] = "metadata.json",
    [STF_SPECIAL_MODEL_SAFETENSORS] = "model.safetensors",
    [STF_SPECIAL_CONTROL] = "control",
    [STF_SPECIAL_STATUS] = "status",
};

static char *arena_dup(struct stf_tree *t, const char *s, size_t len)
{
        struct arena_block *b = t->arena;
        char *p;

        if (!b || b->cap - b->used < len + 1) {
                size_t cap = len + 1 > 65536 ? len + 1 : 65536;

                b = malloc(sizeof(*b) + cap);
                if (!b)
                        return NULL;
                b->next = t->arena;
                b->used = 0;
                b->cap = cap;
                t->arena = b;
        }
        p = b->data + b->used;
        memcpy(p, s, len);
        p[len] = '\0';
        b->used += len + 1;
        return p;
}

static bool is_digit(unsigned char c)
{
        return c >= '0' && c <= '9';
}

int stf_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
        size_t i = 0, j = 0;
        int c;

        while (i < alen && j < blen) {
                unsigned char x = (unsigned char)a[i], y = (unsigned char)b[j];

                if (is_digit(x) && is_digit(y)) {
                        size_t i0, j0, ni, nj;

                        while (i < alen && a[i] == '0')
                                i++;
                        while (j < blen && b[j] == '0')
                                j++;
                        i0 = i;
                        j0 = j;
                        while (i < alen && is_digit((unsigned char)a[i]))
                                i++;
                        while (j < blen && is_digit((unsigned char)b[j]))
                                j++;
                        ni = i - i0;
                        nj = j - j0;
                        if (ni != nj)
                                return ni < nj ? -1 : 1;
                        c = memcmp(a + i0, b + j0, ni);
                        if (c)
                                return c < 0 ? -1 : 1;
                        continue;
                }
                if (x != y)
                        return x < y ? -1 : 1;
                i++;
                j++;
        }
        if (i < alen || j < blen)
                return i < alen ? 1 : -1;
        /* Equal as numbers ("01" and "1"): fall back to bytes, total order. */
        c = memcmp(a, b, alen < blen ? alen : blen);
        if (c)
                return c < 0 ? -1 : 1;
        return alen < blen ? -1 : alen > blen;
}

static int cmp_key(const void *a, const void *b)
{
        const struct key *x = a, *y = b;
        int c = memcmp(x->k, y->k, x->len < y->len ? x->len : y->len);

        if (c)
                return c;
        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return 0;
}

static int cmp_child(const void *a, const void *b)
{
        const struct child *x = a, *y = b;

        return stf_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* Rules 1-3 of tree.h: the component for one part. */
static void encode(struct stf_strbuf *sb, const char *p, size_t len)
{
        size_t run = 0;

        sb->len = 0;
        if (len == 0) {
                stf_strbuf_append(sb, "%", 1);
                return;
        }
        if (p[0] == '.') {
                stf_strbuf_append(sb, "%2E", 3);
                run = 1;
        }
        for (size_t i = run; i < len; i++) {
                if (p[i] != '%' && p[i] != '/')
                        continue;
                stf_strbuf_append(sb, p + run, i - run);
                stf_strbuf_append(sb, p[i] == '%' ? "%25" : "%2F", 3);
                run = i + 1;
        }
        stf_strbuf_append(sb, p + run, len - run);
}

/* Rule 5: where to cut a long component (not inside %XX or a UTF-8 char). */
static size_t cut_point(const char *s, size_t len)
{
        size_t cut = CUT_BYTES < len ? CUT_BYTES : len;
        bool moved = true;

        while (moved && cut > 0) {
                moved = false;
                if (cut >= 1 && s[cut - 1] == '%') {
                        cut -= 1;
                        moved = true;
                } else if (cut >= 2 && s[cut - 2] == '%') {
                        cut -= 2;
                        moved = true;
                }
                while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) {
                        cut--;
                        moved = true;
                }
        }
        return cut;
}

struct builder {
        struct stf_tree *t;
        struct key *keys;
        size_t nkeys;
        struct stf_strbuf sb;
        struct child *kids;
        size_t nkids, kcap;
        struct stf_diag *diag;
        size_t nfiles_before; /* FILE index = entry index - this */
};

static int push_child(struct builder *b, struct child c)
{
        if (b->nkids == b->kcap) {
                size_t ncap = b->kcap ? b->kcap * 2 : 64;
                struct child *nk = realloc(b->kids, ncap * sizeof(*nk));

                if (!nk)
                        return -ENOMEM;
                b->kids = nk;
                b->kcap = ncap;
        }
        b->kids[b->nkids++] = c;
        return 0;
}

/* Part at the cursor of @k: [k->cur, end). */
static size_t part_end(const struct key *k)
{
        const char *z = memchr(k->k + k->cur, '\0', k->len - k->cur);

        return z ? (size_t)(z - k->k) : k->len;
}

/* A child whose component is over COMPONENT_MAX bytes, waiting for rule 5. */
struct longname {
        size_t child; /* index in the children array */
        size_t cut;   /* length of the kept prefix */
        char *enc;    /* full encoding (owned) */
};

static int cmp_long(const void *a, const void *b)
{
        const struct longname *x = a, *y = b;
        int c;

        if (x->cut != y->cut)
                return x->cut < y->cut ? -1 : 1;
        c = memcmp(x->enc, y->enc, x->cut);
        if (c)
                return c;
        /* children are made in byte order of their parts: keep that order */
        return x->child < y->child ? -1 : x->child > y->child;
}

/* Rule 5: name each long child PREFIX%~N. */
static int name_long(struct builder *b, struct longname *ls, size_t n)
{
        if (n == 0)
                return 0;
        qsort(ls, n, sizeof(*ls), cmp_long);
        for (size_t i = 0, num = 0; i < n; i++) {
                struct child *c = &b->kids[ls[i].child];
                char tmp[COMPONENT_MAX + 1];
                int len;

                if (i > 0 && ls[i].cut == ls[i - 1].cut &&
                    !memcmp(ls[i].enc, ls[i - 1].enc, ls[i].cut))
                        num++;
                else
                        num = 0;
                len = snprintf(tmp, sizeof(tmp), "%.*s%%~%zu", (int)ls[i].cut, ls[i].enc, num);
                c->name = arena_dup(b->t, tmp, (size_t)len);
                c->name_len = (uint32_t)len;
                if (!c->name)
                        return -ENOMEM;
        }
        return 0;
}

/* The children of a directory whose entries are keys [lo, hi). */
/*
 * In the group [i, j) of keys sharing a part, drop the files that would
 * change a tensor's path or take a directory's name: a file ending here
 * beside others, and every file where a tensor ends here. Returns the keys
 * left and the first of them in *@first.
 */
static size_t drop_files(struct builder *b, size_t i, size_t j, size_t *first)
{
        bool tensor_ends = false;
        size_t live = 0;

        for (size_t m = i; m < j; m++)
                tensor_ends |= !b->keys[m].file && !b->keys[m].dropped &&
                               part_end(&b->keys[m]) == b->keys[m].len;
        for (size_t m = i; m < j && j > i + 1; m++)
                if (b->keys[m].file && (tensor_ends || part_end(&b->keys[m]) == b->keys[m].len))
                        b->keys[m].dropped = true;
        for (size_t m = j; m-- > i;)
                if (!b->keys[m].dropped) {
                        *first = m;
                        live++;
                }
        return live;
}

/* Keys @i..@j share their next component: move each past it. */
static void advance_keys(struct builder *b, size_t i, size_t j)
{
        for (size_t m = i; m < j; m++) {
                size_t e = part_end(&b->keys[m]);

                b->keys[m].done = e == b->keys[m].len;
                b->keys[m].cur = b->keys[m].done ? e : e + 1;
        }
}

/*
 * Note child @child, whose encoded name @enc (@len bytes) is over
 * COMPONENT_MAX, in *@ls (*@n of *@cap), for name_long. 0 or -ENOMEM.
 */
static int push_longname(struct longname **ls, size_t *n, size_t *cap, size_t child,
                         const char *enc, size_t len)
{
        if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 8;
                struct longname *nl = realloc(*ls, ncap * sizeof(*nl));

                if (!nl)
                        return -ENOMEM;
                *ls = nl;
                *cap = ncap;
        }
        (*ls)[*n].child = child;
        (*ls)[*n].enc = strndup(enc, len);
        if (!(*ls)[*n].enc)
                return -ENOMEM;
        (*ls)[*n].cut = cut_point((*ls)[*n].enc, len);
        ++*n;
        return 0;
}

static int make_children(struct builder *b, size_t lo, size_t hi)
{
        struct longname *ls = NULL;
        size_t nls = 0, lscap = 0, i = lo;
        int ret = 0;

        b->nkids = 0;
        while (i < hi && b->keys[i].dropped)
                i++;
        if (i < hi && b->keys[i].done) {
                ret = push_child(b, (struct child){.name = "%t",
                                                   .name_len = 2,
                                                   .kind = STF_NODE_TENSOR,
                                                   .index = b->keys[i].idx});
                if (ret)
                        return ret;
                i++;
        }
        while (i < hi) {
                struct key *k = &b->keys[i];
                size_t end, plen, j = i + 1, live, rep = i;
                struct child c = {0};

                if (k->dropped) {
                        i++;
                        continue;
                }
                end = part_end(k);
                plen = end - k->cur;
                while (j < hi && part_end(&b->keys[j]) - b->keys[j].cur == plen &&
                       !memcmp(b->keys[j].k + b->keys[j].cur, k->k + k->cur, plen))
                        j++;
                live = drop_files(b, i, j, &rep);
                k = &b->keys[rep];
                end = part_end(k);
                encode(&b->sb, k->k + k->cur, plen);
                if (b->sb.failed) {
                        ret = -ENOMEM;
                        goto out;
                }
                if (live == 1 && end == k->len) {
                        c.kind = k->file ? STF_NODE_FILE : STF_NODE_TENSOR;
                        c.index = k->file ? (uint32_t)(k->idx - b->nfiles_before) : k->idx;
                } else {
                        c.kind = STF_NODE_DIR;
                        c.lo = i;
                        c.hi = j;
                }
                advance_keys(b, i, j);
                if (b->sb.len > COMPONENT_MAX) {
                        ret = push_longname(&ls, &nls, &lscap, b->nkids, b->sb.buf, b->sb.len);
                        if (ret)
                                goto out;
                } else {
                        c.name = arena_dup(b->t, b->sb.buf, b->sb.len);
                        c.name_len = (uint32_t)b->sb.len;
                        if (!c.name) {
                                ret = -ENOMEM;
                                goto out;
                        }
                }
                ret = push_child(b, c);
                if (ret)
                        goto out;
                i = j;
        }
        ret = name_long(b, ls, nls);
out:
        for (size_t m = 0; m < nls; m++)
                free(ls[m].enc);
        free(ls);
        return ret;
}

struct qitem {
        uint32_t ino;
        size_t lo, hi;
        bool stfs;
};

static int add_nodes(struct stf_tree *t, uint64_t need, uint64_t *cap)
{
        struct stf_node *nn;
        uint64_t ncap = *cap;

        if (need > UINT32_MAX)
                return -EOVERFLOW;
        if (need <= ncap)
                return 0;
        while (ncap < need)
                ncap = ncap ? ncap * 2 : 1024;
        nn = realloc(t->nodes, ncap * sizeof(*nn));
        if (!nn)
                return -ENOMEM;
        t->nodes = nn;
        *cap = ncap;
        return 0;
}

static int build(struct builder *b, unsigned flags)
{
        struct stf_tree *t = b->t;
        struct qitem *q = NULL;
        size_t qhead = 0, qlen = 0, qcap = 0;
        uint64_t ncap = 0;
        int ret;

        ret = add_nodes(t, 1, &ncap);
        if (ret)
                return ret;
        t->nodes[0] = (struct stf_node){.name = "", .kind = STF_NODE_DIR, .parent = 1};
        t->count = 1;
        q = malloc(sizeof(*q) * 16);
        if (!q)
                return -ENOMEM;
        qcap = 16;
        q[qlen++] = (struct qitem){1, 0, b->nkeys, false};

        while (qhead < qlen) {
                struct qitem it = q[qhead++];
                struct stf_node *dir;

                if (it.stfs) {
                        b->nkids = 0;
                        for (unsigned s = 0; s < STF_SPECIAL_COUNT && !ret; s++)
                                ret = push_child(b, (struct child){.name = special_names[s],
                                                                   .name_len = (uint32_t)strlen(
                                                                       special_names[s]),
                                                                   .kind = STF_NODE_SPECIAL,
                                                                   .index = s});
                } else {
                        ret = make_children(b, it.lo, it.hi);
                        if (!ret && it.ino == STF_ROOT_INO)
                                ret = push_child(b, (struct child){.name = ".stfs",
                                                                   .name_len = 5,
                                                                   .kind = STF_NODE_DIR,
                                                                   .stfs = true});
                }
                if (ret)
                        goto out;
                qsort(b->kids, b->nkids, sizeof(*b->kids), cmp_child);
                ret = add_nodes(t, t->count + b->nkids, &ncap);
                if (ret)
                        goto out;
                dir = &t->nodes[it.ino - 1];
                dir->first_child = (uint32_t)(t->count + 1);
                dir->nchildren = (uint32_t)b->nkids;
                for (size_t i = 0; i < b->nkids; i++) {
                        const struct child *c = &b->kids[i];
                        uint32_t ino = (uint32_t)(++t->count);

                        t->nodes[ino - 1] = (struct stf_node){.name = c->name,
                                                              .name_len = c->name_len,
                                                              .kind = c->kind,
                                                              .parent = it.ino,
                                                              .index = c->index};
                        if (c->kind == STF_NODE_TENSOR)
                                t->tensor_ino[c->index] = ino;
                        if (c->kind != STF_NODE_DIR)
                                continue;
                        if (qlen == qcap) {
                                struct qitem *nq = realloc(q, qcap * 2 * sizeof(*nq));

                                if (!nq) {
                                        ret = -ENOMEM;
                                        goto out;
                                }
                                q = nq;
                                qcap *= 2;
                        }
                        q[qlen++] = (struct qitem){ino, c->lo, c->hi, c->stfs};
                }
        }
        (void)flags;
out:
        free(q);
        return ret;
}

/* Keys of the files after the @n entry keys: '/' separates the parts. */
static int file_keys(struct builder *b, size_t n, const char *const *files, size_t nfiles)
{
        for (size_t i = 0; i < nfiles; i++) {
                size_t len = strlen(files[i]);
                char *k = malloc(len ? len : 1);

                if (!k)
                        return -ENOMEM;
                for (size_t j = 0; j < len; j++)
                        k[j] = files[i][j] == '/' ? '\0' : files[i][j];
                b->keys[n + i] =
                    (struct key){.k = k, .len = len, .idx = (uint32_t)(n + i), .file = true};
        }
        b->nfiles_before = n;
        return 0;
}

static int make_keys(struct builder *b, const struct stf_tree_entry *e, size_t n,
                     const char *const *files, size_t nfiles, unsigned flags)
{
        char q[QMAX];
        int ret;

        b->keys = calloc(n + nfiles ? n + nfiles : 1, sizeof(*b->keys));
        if (!b->keys)
                return -ENOMEM;
        b->nkeys = n + nfiles;
        ret = file_keys(b, n, files, nfiles);
        if (ret)
                return ret;
        for (size_t i = 0; i < n; i++) {
                const char *pre = e[i].prefix ? e[i].prefix : "";
                size_t plen = strlen(pre), len = plen + (plen ? 1 : 0) + e[i].name_len;
                char *k;

                if (memchr(e[i].name, '\0', e[i].name_len)) {
                        stf_diag_set(b->diag, "tensor '%s': name holds a NUL byte",
                                     stf_diag_quote(e[i].name, e[i].name_len, q, sizeof(q)));
                        return -EINVAL;
                }
                k = malloc(len ? len : 1);
                if (!k)
                        return -ENOMEM;
                for (size_t j = 0; j < plen; j++)
                        k[j] = pre[j] == '/' ? '\0' : pre[j];
                if (plen)
                        k[plen] = '\0';
                for (size_t j = 0, o = len - e[i].name_len; j < e[i].name_len; j++)
                        k[o + j] =
                            (!(flags & STF_TREE_FLAT) && e[i].name[j] == '.') ? '\0' : e[i].name[j];
                b->keys[i] = (struct key){.k = k, .len = len, .idx = (uint32_t)i};
        }
        qsort(b->keys, b->nkeys, sizeof(*b->keys), cmp_key);
        for (size_t i = 1; i < b->nkeys; i++) {
                if (!cmp_key(&b->keys[i - 1], &b->keys[i]) &&
                    (b->keys[i - 1].file || b->keys[i].file)) {
                        /* a file at a tensor's path (flat mode): the tensor */
                        b->keys[b->keys[i].file ? i : i - 1].dropped = true;
                        continue;
                }
                if (!cmp_key(&b->keys[i - 1], &b->keys[i])) {
                        const struct stf_tree_entry *d = &e[b->keys[i].idx];

                        stf_diag_set(b->diag, "tensor '%s' appears twice%s%s",
                                     stf_diag_quote(d->name, d->name_len, q, sizeof(q)),
                                     d->prefix && *d->prefix ? " in " : "",
                                     d->prefix ? d->prefix : "");
                        return -EINVAL;
                }
        }
        return 0;
}

int stf_tree_build(const struct stf_tree_entry *entries, size_t n, unsigned flags,
                   struct stf_tree **out, struct stf_diag *diag)
{
        return stf_tree_build_files(entries, n, NULL, 0, flags, out, diag);
}

int stf_tree_build_files(const struct stf_tree_entry *entries, size_t n, const char *const *files,
                         size_t nfiles, unsigned flags, struct stf_tree **out,
                         struct stf_diag *diag)
{
        struct builder b = {.diag = diag};
        struct stf_tree *t;
        int ret;

        *out = NULL;
        if (n + nfiles >= UINT32_MAX)
                return -EOVERFLOW;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        b.t = t;
        t->ntensors = n;
        t->tensor_ino = calloc(n ? n : 1, sizeof(*t->tensor_ino));
        if (!t->tensor_ino) {
                ret = -ENOMEM;
                goto out;
        }
        ret = make_keys(&b, entries, n, files, nfiles, flags);
        if (!ret)
                ret = build(&b, flags);
out:
        for (size_t i = 0; b.keys && i < b.nkeys; i++)
                free(b.keys[i].k);
        free(b.keys);
        free(b.kids);
        stf_strbuf_reset(&b.sb);
        if (ret) {
                if (ret == -ENOMEM)
                        stf_diag_set(diag, "out of memory building the tree");
                if (ret == -EOVERFLOW)
                        stf_diag_set(diag, "more than 2^32 files and directories");
                stf_tree_free(t);
                return ret;
        }
        *out = t;
        return 0;
}

int stf_tree_build_model(const struct stf_model *m, unsigned flags, struct stf_tree **out,
                         struct stf_diag *diag)
{
        struct stf_tree_entry *e = calloc(m->ntensors ? m->ntensors : 1, sizeof(*e));
        const char **files = calloc(m->ncompanions ? m->ncompanions : 1, sizeof(*files));
        int ret = -ENOMEM;

        if (!e || !files)
                goto out_arrays;
        for (size_t i = 0; i < m->ntensors; i++)
                e[i] = (struct stf_tree_entry){m->comps[m->tensors[i].comp].name,
                                               m->tensors[i].name, m->tensors[i].name_len};
        for (size_t i = 0; i < m->ncompanions; i++)
                files[i] = m->companions[i].rel;
        ret = stf_tree_build_files(e, m->ntensors, files, m->ncompanions, flags, out, diag);
out_arrays:
        free(files);
        free(e);
        return ret;
}

void stf_tree_free(struct stf_tree *t)
{
        if (!t)
                return;
        while (t->arena) {
                struct arena_block *next = t->arena->next;

                free(t->arena);
                t->arena = next;
        }
        free(t->nodes);
        free(t->tensor_ino);
        free(t);
}

uint64_t stf_tree_count(const struct stf_tree *t)
{
        return t->count;
}

const struct stf_node *stf_tree_node(const struct stf_tree *t, uint64_t ino)
{
        return ino >= 1 && ino <= t->count ? &t->nodes[ino - 1] : NULL;
}

int stf_tree_lookup(const struct stf_tree *t, uint64_t parent, const char *name, size_t len,
                    uint64_t *ino)
{
        const struct stf_node *d = stf_tree_node(t, parent);
        size_t lo, hi;

        if (!d)
                return -ENOENT;
        if (d->kind != STF_NODE_DIR)
                return -ENOTDIR;
        lo = d->first_child;
        hi = lo + d->nchildren;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct stf_node *c = &t->nodes[mid - 1];
                int r = stf_name_cmp(name, len, c->name, c->name_len);

                if (r == 0) {
                        *ino = mid;
                        return 0;
                }
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return -ENOENT;
}

uint64_t stf_tree_tensor_ino(const struct stf_tree *t, size_t index)
{
        return index < t->ntensors ? t->tensor_ino[index] : 0;
}

int stf_tree_path(const struct stf_tree *t, uint64_t ino, char *buf, size_t cap)
{
        size_t len = 0, pos;
        uint64_t i;

        if (!stf_tree_node(t, ino))
                return -ENOENT;
        for (i = ino; i != STF_ROOT_INO; i = t->nodes[i - 1].parent)
                len += t->nodes[i - 1].name_len + (len ? 1 : 0);
        if (len + 1 > cap || len > INT32_MAX)
                return -ERANGE;
        pos = len;
        buf[len] = '\0';
        for (i = ino; i != STF_ROOT_INO; i = t->nodes[i - 1].parent) {
                const struct stf_node *n = &t->nodes[i - 1];

                if (pos != len)
                        buf[--pos] = '/';
                pos -= n->name_len;
                memcpy(buf + pos, n->name, n->name_len);
        }
        return (int)len;
}
