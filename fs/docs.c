/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Live documents (see docs.h). Open documents are linked in a list so that
 * the ones the kernel never released (a connection aborted at exit) are
 * freed with the mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "docs.h"
#include "stfs.h"

struct stfs_doc {
        pthread_mutex_t lock; /* a write replaces text while reads copy it */
        char *text;
        size_t len;
        struct stf_ns *ns; /* text is the namespace's shared copy of */
        unsigned shared;   /* document shared - 1 (stf_ns_doc_get); 0: ours */
        struct stfs_doc *prev, *next;
};

struct stfs_docs {
        pthread_mutex_t lock; /* guards the list */
        struct stfs_doc *open;
};

int stfs_docs_new(struct stfs_docs **out)
{
        struct stfs_docs *docs = calloc(1, sizeof(*docs));

        if (!docs)
                return -ENOMEM;
        pthread_mutex_init(&docs->lock, NULL);
        *out = docs;
        return 0;
}

static void unlink_doc(struct stfs_docs *docs, struct stfs_doc *d)
{
        pthread_mutex_lock(&docs->lock);
        if (d->prev)
                d->prev->next = d->next;
        else
                docs->open = d->next;
        if (d->next)
                d->next->prev = d->prev;
        pthread_mutex_unlock(&docs->lock);
}

static void free_doc(struct stfs_doc *d)
{
        pthread_mutex_destroy(&d->lock);
        if (d->shared)
                stf_ns_doc_put(d->ns, d->shared - 1);
        else
                free(d->text);
        free(d);
}

void stfs_docs_free(struct stfs_docs *docs)
{
        if (!docs)
                return;
        while (docs->open) {
                struct stfs_doc *d = docs->open;

                unlink_doc(docs, d);
                free_doc(d);
        }
        pthread_mutex_destroy(&docs->lock);
        free(docs);
}

char *stfs_status_text(struct stfs *fs, size_t *len)
{
        struct stf_strbuf sb = {0};
        char *shards, *out;

        stf_watch_status_json(fs->watch, &sb);
        if (stf_strbuf_finish(&sb, &shards, NULL))
                return NULL;
        out = stf_residency_status_json(fs->res, shards, len);
        free(shards);
        return out;
}

/* The text of @e at open: a snapshot, a document, or none yet (control). */
static int gen(struct stfs *fs, const struct stf_ns_entry *e, struct stfs_doc *d)
{
        if (e->kind == STF_NS_STATUS) {
                d->text = stfs_status_text(fs, &d->len);
                return d->text ? 0 : -ENOMEM;
        }
        if (e->kind == STF_NS_DOC) {
                /* fixed content: one shared copy while any file holds it */
                const char *text;
                int ret = stf_ns_doc_get(fs->ns, e->index, &text, &d->len);

                if (ret)
                        return ret;
                d->text = (char *)text;
                d->ns = fs->ns;
                d->shared = e->index + 1;
        }
        return 0;
}

int stfs_doc_open(struct stfs *fs, const struct stf_ns_entry *e, int flags, struct stfs_doc **out,
                  bool *live)
{
        struct stfs_docs *docs = fs->docs;
        struct stfs_doc *d;
        int ret;

        if ((flags & O_ACCMODE) != O_RDONLY && e->kind != STF_NS_CONTROL)
                return -EROFS;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        ret = gen(fs, e, d);
        if (ret) {
                free(d);
                return ret;
        }
        pthread_mutex_init(&d->lock, NULL);
        pthread_mutex_lock(&docs->lock);
        d->next = docs->open;
        if (d->next)
                d->next->prev = d;
        docs->open = d;
        pthread_mutex_unlock(&docs->lock);
        *live = e->kind != STF_NS_DOC;
        *out = d;
        return 0;
}

int stfs_doc_size(struct stfs *fs, enum stf_ns_kind kind, struct stfs_doc *d, uint64_t *size)
{
        char *text;
        size_t len = 0;

        if (d) {
                pthread_mutex_lock(&d->lock);
                *size = d->len;
                pthread_mutex_unlock(&d->lock);
                return 0;
        }
        *size = 0;
        if (kind != STF_NS_STATUS)
                return 0;
        text = stfs_status_text(fs, &len);
        if (!text)
                return -ENOMEM;
        free(text);
        *size = len;
        return 0;
}

void stfs_doc_close(struct stfs *fs, struct stfs_doc *d)
{
        unlink_doc(fs->docs, d);
        free_doc(d);
}

int stfs_doc_read(struct stfs_doc *d, size_t size, off_t off, char **buf, size_t *n)
{
        *buf = NULL;
        *n = 0;
        pthread_mutex_lock(&d->lock);
        if (d->text && off >= 0 && (uint64_t)off < d->len) {
                *n = d->len - (size_t)off < size ? d->len - (size_t)off : size;
                *buf = malloc(*n);
                if (*buf)
                        memcpy(*buf, d->text + off, *n);
        }
        pthread_mutex_unlock(&d->lock);
        return *n && !*buf ? -ENOMEM : 0;
}

void stfs_doc_set(struct stfs_doc *d, char *text)
{
        pthread_mutex_lock(&d->lock);
        free(d->text);
        d->text = text;
        d->len = strlen(text);
        pthread_mutex_unlock(&d->lock);
}
