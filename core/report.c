/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "text.h"

bool stf_sink_forward(struct stf_sink *s, const struct stf_problem *p)
{
        s->count++;
        if (s->report) {
                s->report(s->ctx, p);
                return false;
        }
        if (s->diag && s->diag->msg != p->msg)
                snprintf(s->diag->msg, sizeof(s->diag->msg), "%s", p->msg);
        return true;
}

bool stf_sink_report(struct stf_sink *s, const char *file, const char *tensor, int64_t offset,
                     const char *fmt, ...)
{
        struct stf_diag raw, d;
        struct stf_problem p = {file, tensor, offset, d.msg};
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(raw.msg, sizeof(raw.msg), fmt, ap);
        va_end(ap);
        /*
         * Names are quoted where they are formatted (stf_diag_quote), but a
         * message also holds text the parser does not write itself: jansson's
         * error echoes the bytes near the error ("near '\x1b'"), file names
         * come from directories. stfs prints the message on a terminal or to
         * syslog, so a hostile file must not put a control there.
         */
        stf_text_escape_buf(raw.msg, d.msg, sizeof(d.msg));
        return stf_sink_forward(s, &p);
}

int stf_sink_settle(const struct stf_sink *s, size_t count0, int ret)
{
        return ret && ret != -ENOMEM && stf_sink_all(s) && s->count != count0 ? 0 : ret;
}

struct stf_held_problem {
        struct stf_problem p;
        char *text; /* file, tensor and message, one allocation */
};

static void hold(void *ctx, const struct stf_problem *p)
{
        struct stf_held *h = ctx;
        size_t fl = strlen(p->file) + 1, tl = p->tensor ? strlen(p->tensor) + 1 : 0;
        size_t ml = strlen(p->msg) + 1;
        struct stf_held_problem *hp;
        char *text;

        if (h->n == h->cap) {
                size_t ncap = h->cap ? h->cap * 2 : 8;
                struct stf_held_problem *nv = realloc(h->v, ncap * sizeof(*nv));

                if (!nv) {
                        h->failed = true;
                        return;
                }
                h->v = nv;
                h->cap = ncap;
        }
        text = malloc(fl + tl + ml);
        if (!text) {
                h->failed = true;
                return;
        }
        hp = &h->v[h->n++];
        hp->text = text;
        hp->p.file = memcpy(text, p->file, fl);
        hp->p.tensor = p->tensor ? memcpy(text + fl, p->tensor, tl) : NULL;
        hp->p.msg = memcpy(text + fl + tl, p->msg, ml);
        hp->p.offset = p->offset;
}

void stf_held_init(struct stf_held *h, const struct stf_sink *to)
{
        memset(h, 0, sizeof(*h));
        if (stf_sink_all(to))
                h->sink = (struct stf_sink){.report = hold, .ctx = h};
        else
                h->sink = (struct stf_sink){.diag = &h->diag};
}

int stf_held_flush(struct stf_held *h, struct stf_sink *to)
{
        if (!stf_sink_all(&h->sink)) {
                if (h->sink.count && to->diag)
                        *to->diag = h->diag;
                to->count += h->sink.count;
                return 0;
        }
        for (size_t k = 0; k < h->n; k++)
                stf_sink_forward(to, &h->v[k].p);
        return h->failed ? -ENOMEM : 0;
}

void stf_held_free(struct stf_held *h)
{
        for (size_t i = 0; i < h->n; i++)
                free(h->v[i].text);
        free(h->v);
        h->v = NULL;
        h->n = h->cap = 0;
}
