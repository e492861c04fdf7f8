/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Text commands written to /.stfs/control (where the mount is writable):
 * one command per line, one reply line each (status without a job: the
 * status document), "error: STRERROR: REASON" when refused.
 *
 *   prefetch [host|cuda:N] [threads=N] [chunk=BYTES] [slice=D:R/W]
 *            [staging=ring|direct|auto] PATTERN...
 *   evict [host|cuda:N] PATTERN...
 *   cancel JOB
 *   status [JOB]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "docs.h"
#include "residency.h"
#include "stfs_ioctl.h"
#include "strbuf.h"
#include "target.h"
#include "text.h"

/* The words after a command, parsed. */
struct request {
        struct stf_prefetch_args a;
        char selection[STFS_SELECTION_MAX]; /* patterns, one per line */
};

/* "ring", "direct" or "auto" (enum stf_staging). */
static bool parse_staging(const char *s, uint32_t *staging)
{
        static const char *const names[] = {"ring", "direct", "auto"};

        for (uint32_t i = 0; i < 3; i++) {
                if (!strcmp(s, names[i])) {
                        *staging = i;
                        return true;
                }
        }
        return false;
}

static int bad_option(const char *tok, char *msg, size_t cap)
{
        snprintf(msg, cap, "bad option '%.60s'", tok);
        return -EINVAL;
}

/* One option word of prefetch or evict: 0, or -EINVAL with @msg. */
static int parse_option(const char *tok, struct stf_prefetch_args *a, char *msg, size_t cap)
{
        uint64_t v = 0;
        int end = 0;

        if (!strncmp(tok, "cuda:", 5)) /* a mistyped target must not become a host job */
                return bad_option(tok, msg, cap);
        if (!strncmp(tok, "threads=", 8)) {
                if (!stf_parse_u64(tok + 8, UINT32_MAX, &v))
                        return bad_option(tok, msg, cap);
                a->threads = (uint32_t)v;
                return 0;
        }
        if (!strncmp(tok, "chunk=", 6))
                return stf_parse_u64(tok + 6, UINT64_MAX, &a->chunk) ? 0
                                                                     : bad_option(tok, msg, cap);
        if (!strncmp(tok, "staging=", 8))
                return parse_staging(tok + 8, &a->staging) ? 0 : bad_option(tok, msg, cap);
        /* slice= */
        if (sscanf(tok + 6, "%d:%u/%u%n", &a->slice.dim, &a->slice.rank, &a->slice.world, &end) !=
                3 ||
            tok[6 + end] || strchr(tok + 6, '-') || strchr(tok + 6, '+'))
                return bad_option(tok, msg, cap);
        return 0;
}

/* The words after prefetch or evict into @rq: 0, or -EINVAL with @msg. */
static int parse_request(char **save, struct request *rq, char *msg, size_t cap)
{
        size_t used = 0;
        char *tok;
        int ret = 0;

        rq->a = (struct stf_prefetch_args){.slice = {.dim = -1},
                                           .selection = rq->selection,
                                           .selection_cap = sizeof(rq->selection)};
        memset(rq->selection, 0, sizeof(rq->selection));
        while ((tok = strtok_r(NULL, " \t", save))) {
                size_t tl = strlen(tok);

                if (stf_target_parse(tok, &rq->a.target, &rq->a.device))
                        continue;
                if (!strncmp(tok, "cuda:", 5) || !strncmp(tok, "threads=", 8) ||
                    !strncmp(tok, "chunk=", 6) || !strncmp(tok, "staging=", 8) ||
                    !strncmp(tok, "slice=", 6)) {
                        int err = parse_option(tok, &rq->a, msg, cap);

                        ret = ret ? ret : err;
                } else if (used + tl + 2 < sizeof(rq->selection)) {
                        memcpy(rq->selection + used, tok, tl);
                        used += tl;
                        rq->selection[used++] = '\n';
                } else {
                        ret = -EINVAL;
                        snprintf(msg, cap, "selection too long");
                }
        }
        return ret;
}

static int cmd_prefetch(struct stfs *fs, char **save, struct stf_strbuf *sb, char *msg, size_t cap)
{
        struct request *rq = malloc(sizeof(*rq));
        uint64_t id;
        int ret;

        if (!rq)
                return -ENOMEM;
        ret = parse_request(save, rq, msg, cap);
        if (!ret)
                ret = stf_residency_prefetch(fs->res, &rq->a, &id, msg, cap);
        if (!ret)
                stf_strbuf_printf(sb, "job %" PRIu64 "\n", id);
        free(rq);
        return ret;
}

static int cmd_evict(struct stfs *fs, char **save, struct stf_strbuf *sb, char *msg, size_t cap)
{
        struct request *rq = malloc(sizeof(*rq));
        uint64_t count = 0;
        int ret;

        if (!rq)
                return -ENOMEM;
        ret = parse_request(save, rq, msg, cap);
        if (!ret)
                ret = stf_residency_evict(fs->res, rq->a.target, rq->a.device, rq->selection,
                                          sizeof(rq->selection), stfs_control_drop_host, fs, &count,
                                          msg, cap);
        if (!ret)
                stf_strbuf_printf(sb, "evicted %" PRIu64 "\n", count);
        free(rq);
        return ret;
}

/* The job named by the next word, as an id (0: none given). */
static uint64_t job_word(char **save)
{
        char *tok = strtok_r(NULL, " \t", save);

        return tok ? strtoull(tok, NULL, 10) : 0;
}

static int cmd_cancel(struct stfs *fs, char **save, struct stf_strbuf *sb, char *msg, size_t cap)
{
        if (stf_residency_cancel(fs->res, job_word(save))) {
                snprintf(msg, cap, "no such job");
                return -ENOENT;
        }
        stf_strbuf_puts(sb, "ok\n");
        return 0;
}

static int cmd_status(struct stfs *fs, char **save, struct stf_strbuf *sb, char *msg, size_t cap)
{
        char *tok = strtok_r(NULL, " \t", save);
        struct stf_job_progress p;

        if (!tok) {
                size_t len;
                char *js = stfs_status_text(fs, &len);

                if (!js)
                        return -ENOMEM;
                stf_strbuf_append(sb, js, len);
                free(js);
                return 0;
        }
        if (stf_residency_progress(fs->res, strtoull(tok, NULL, 10), &p)) {
                snprintf(msg, cap, "no such job");
                return -ENOENT;
        }
        stf_strbuf_printf(sb, "job %" PRIu64 " %s %" PRIu64 "/%" PRIu64 " %s\n", p.id,
                          stf_job_state_name(p.state), p.bytes_done, p.bytes_total, p.message);
        return 0;
}

static const struct command {
        const char *name;
        int (*run)(struct stfs *fs, char **save, struct stf_strbuf *sb, char *msg, size_t cap);
} commands[] = {
    {"prefetch", cmd_prefetch},
    {"evict", cmd_evict},
    {"cancel", cmd_cancel},
    {"status", cmd_status},
};

/* One text command; appends its reply line to @sb. */
static void text_command(struct stfs *fs, char *line, struct stf_strbuf *sb)
{
        char *save = NULL, *cmd = strtok_r(line, " \t", &save);
        char msg[STFS_MESSAGE_MAX] = "";
        int ret = -EINVAL;

        if (!cmd)
                return;
        snprintf(msg, sizeof(msg), "unknown command '%.40s'", cmd);
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
                if (!strcmp(cmd, commands[i].name)) {
                        msg[0] = '\0';
                        ret = commands[i].run(fs, &save, sb, msg, sizeof(msg));
                        break;
                }
        }
        if (ret)
                stf_strbuf_printf(sb, "error: %s: %s\n", strerror(-ret), msg[0] ? msg : cmd);
}

char *stfs_control_text(struct stfs *fs, uid_t uid, const char *text, size_t len)
{
        struct stf_strbuf sb = {0};
        char *copy, *line, *save = NULL, *out = NULL;

        if (uid != fs->uid && uid != 0)
                return strdup("error: Permission denied\n");
        copy = strndup(text, len);
        if (!copy)
                return NULL;
        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                text_command(fs, line, &sb);
        free(copy);
        if (stf_strbuf_finish(&sb, &out, NULL))
                return NULL;
        return out;
}
