/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "report.h"

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
        struct stf_diag d;
        struct stf_problem p = {file, tensor, offset, d.msg};
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(d.msg, sizeof(d.msg), fmt, ap);
        va_end(ap);
        return stf_sink_forward(s, &p);
}
