/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_DOCS_H
#define STFS_DOCS_H

/*
 * Live documents: the files of /.stfs whose bytes belong to an open file,
 * not to a view. header.json and metadata.json are generated at open (fixed
 * content, page-cached like any file); status is a snapshot taken at open
 * (page-cached, dropped at each open, so that mmap works), and control
 * holds the reply to the last text command written through this open file
 * (direct I/O). Reads copy under the file's lock: a write on
 * another thread may replace the text, and RELEASE may free it as soon as
 * the reply is out.
 *
 * Every function may be called from many threads at once.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ns.h"

struct stfs;
struct stfs_docs; /* the open documents of a mount */
struct stfs_doc;  /* one open document */

/* 0 or -ENOMEM. */
int stfs_docs_new(struct stfs_docs **out);
/* Free, with every document the kernel never released; accepts NULL. */
void stfs_docs_free(struct stfs_docs *docs);

/*
 * Open document @e (kind STF_NS_DOC, STF_NS_STATUS or STF_NS_CONTROL) with
 * open(2) @flags. *@live: its content changes (status, control); else it
 * is fixed. Returns 0, -EROFS (opened for writing, control
 * aside), -ENOMEM, or the error of generating it.
 */
int stfs_doc_open(struct stfs *fs, const struct stf_ns_entry *e, int flags, struct stfs_doc **out,
                  bool *live);
void stfs_doc_close(struct stfs *fs, struct stfs_doc *d);

/*
 * The size of live document @kind (STF_NS_STATUS, STF_NS_CONTROL) in
 * *@size: that of open file @d's text when the kernel names one (a read
 * past the size it knows asks with the open file), else for status that of
 * a snapshot taken now, so a stat and the open after it agree unless a job
 * or a read changed the status in between; control 0 (no reply yet).
 * 0 or -ENOMEM.
 */
int stfs_doc_size(struct stfs *fs, enum stf_ns_kind kind, struct stfs_doc *d, uint64_t *size);

/*
 * A copy of up to @size bytes of @d at @off in *@buf (caller frees), their
 * number in *@n (0 past the end; then *@buf is NULL). 0 or -ENOMEM.
 */
int stfs_doc_read(struct stfs_doc *d, size_t size, off_t off, char **buf, size_t *n);

/*
 * The text of /.stfs/status now: the jobs and counters (core/residency),
 * then the shards that are not as mounted (core/watch). New text (caller
 * frees) of *@len bytes; NULL on ENOMEM.
 */
char *stfs_status_text(struct stfs *fs, size_t *len);

/* Replace the text of @d with @text (NUL-terminated; taken over). */
void stfs_doc_set(struct stfs_doc *d, char *text);

#endif
