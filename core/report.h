/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_REPORT_H
#define STF_REPORT_H

/*
 * Problems found in a model, and where they go.
 *
 * The parsers run in one of two modes over the same code. Opening a model
 * (stf_header_parse, stf_model_open) stops at the first problem and leaves
 * it in a struct stf_diag: a mount refuses the model with that one line.
 * Checking a model (stf_header_check, stf_model_check) goes on past each
 * problem it can go on past and hands every one to a callback: a user
 * vetting a download sees all of them. Each rule reports through a struct
 * stf_sink, which either stops the parse or counts the problem and lets the
 * parse go on, so the two modes never disagree on a rule or a message.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"

/* One problem. Every pointer is borrowed for the duration of the callback. */
struct stf_problem {
        const char *file;   /* the file it is in, as opened (or the SOURCE) */
        const char *tensor; /* the tensor it is about (NUL terminated), or NULL */
        int64_t offset;     /* absolute byte offset in @file it is about, or -1 */
        const char *msg;    /* "FILE: WHERE: RULE", the line a diag would hold */
};

/* Called once per problem, in the order the checks find them. */
typedef void (*stf_report_fn)(void *ctx, const struct stf_problem *p);

/*
 * Where the problems of a parse go. A stack value: set either @diag (first
 * problem mode; @diag may be NULL to just stop) or @report (every problem
 * mode), and start @count at 0.
 */
struct stf_sink {
        struct stf_diag *diag;
        stf_report_fn report;
        void *ctx;
        size_t count; /* problems so far */
};

/* True when @s takes every problem (the check mode). */
static inline bool stf_sink_all(const struct stf_sink *s)
{
        return s->report != NULL;
}

/*
 * Report one problem: format the message (what text.h calls unsafe written
 * as \xHH: jansson's error text echoes bytes of a hostile file, and file
 * names come from directories), count it, then set
 * the diag (first problem mode) or call the callback. Returns true when the
 * caller must stop (first problem mode), false when it should go on.
 */
bool stf_sink_report(struct stf_sink *s, const char *file, const char *tensor, int64_t offset,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Hand an already formatted problem to @s (to forward a collected one). */
bool stf_sink_forward(struct stf_sink *s, const struct stf_problem *p);

/*
 * What a step that failed returns to its caller, given @s had @count0
 * problems before it: in the check mode a failure that was reported is a
 * finding, not an error (0: go on with the next file or set); anything else,
 * and -ENOMEM always, is returned as is.
 */
int stf_sink_settle(const struct stf_sink *s, size_t count0, int ret);

/*
 * A sink that holds problems for later: work done on another thread (one
 * shard each) reports into its own held sink, and the caller hands them on
 * in an order of its choosing, so the output does not depend on which
 * thread ran first. It takes the mode of the sink it will be flushed to:
 * the first problem (and stop) or a copy of every problem.
 */
struct stf_held_problem;

struct stf_held {
        struct stf_sink sink; /* report into this one */
        struct stf_diag diag; /* first problem mode */
        struct stf_held_problem *v;
        size_t n, cap;
        bool failed; /* out of memory: a problem was lost */
};

/* Set @h up to collect in the mode of @to (which it will be flushed to).
 * @h points into itself: do not move it until stf_held_free. */
void stf_held_init(struct stf_held *h, const struct stf_sink *to);

/*
 * Hand what @h holds on to @to, in the order it came, as if reported there.
 * Returns 0, or -ENOMEM when a problem was lost.
 */
int stf_held_flush(struct stf_held *h, struct stf_sink *to);

/* Free what @h holds; @h may be zeroed and never initialised. */
void stf_held_free(struct stf_held *h);

#endif
