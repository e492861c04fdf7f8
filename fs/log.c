/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <fuse_log.h>

#include "log.h"
#include "text.h"

static bool use_syslog;

void stfs_log_to_syslog(void)
{
        openlog("stfs", LOG_PID, LOG_DAEMON);
        use_syslog = true;
}

void stfs_log(int prio, const char *fmt, ...)
{
        char raw[1024], line[1024];
        va_list ap;

        /* Paths and names come from the source: escaped for the terminal. */
        va_start(ap, fmt);
        vsnprintf(raw, sizeof(raw), fmt, ap);
        va_end(ap);
        stf_text_escape_buf(raw, line, sizeof(line));
        if (use_syslog)
                syslog(prio, "%s", line);
        else
                fprintf(stderr, "stfs: %s\n", line);
}

static void fuse_log_to_us(enum fuse_log_level level, const char *fmt, va_list ap)
{
        if (use_syslog)
                vsyslog((int)level, fmt, ap);
        else
                vfprintf(stderr, fmt, ap);
}

void stfs_log_init(void)
{
        fuse_set_log_func(fuse_log_to_us);
}

void stfs_log_shard(const struct stf_shard *s, enum stf_watch_event ev, int err)
{
        const char *why = err ? strerror(err) : "";

        switch (ev) {
        case STF_WATCH_SHORT:
                stfs_log(LOG_ERR,
                         "%s: the file was truncated while mounted (%" PRIu64
                         " bytes at mount); reads of the lost range get EIO",
                         s->path, s->size);
                break;
        case STF_WATCH_WRITTEN:
                stfs_log(LOG_ERR,
                         "%s: the file was written to while mounted; every read of its "
                         "tensors gets EIO from now on (remount to serve the new bytes)",
                         s->path);
                break;
        case STF_WATCH_CHANGED:
                stfs_log(LOG_ERR,
                         "%s: the file changed on the source while mounted (size, mtime or "
                         "header differ%s%s); every read of its tensors gets EIO from now on "
                         "(remount to serve the new bytes)",
                         s->path, err ? "; seen after a read failed: " : "", why);
                break;
        case STF_WATCH_REOPENED:
                stfs_log(LOG_WARNING,
                         "%s: a read failed (%s); reopened the file (the same: size, mtime and "
                         "header unchanged) and retried",
                         s->path, why);
                break;
        case STF_WATCH_UNREACHABLE:
                stfs_log(LOG_ERR,
                         "%s: a read failed and reopening the file failed too (%s); its reads "
                         "get EIO until it can be reopened",
                         s->path, why);
                break;
        }
}
