/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ioctls of /.stfs/control (stfs_ioctl.h): each request is checked for
 * size, translated by core/wire into core's values and handed to the
 * residency. Every reply is one fuse_reply_* call. A request refused with
 * an errno leaves its reason with the residency under the calling thread's
 * id, for STFS_IOC_REASON.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "control.h"
#include "residency.h"
#include "stfs_ioctl.h"
#include "wire.h"

/* Reply @err (a positive errno) and keep @msg as the reason. */
static void refuse(fuse_req_t req, struct stfs *fs, unsigned cmd, int err, const char *msg)
{
        stf_residency_refused(fs->res, (uint64_t)fuse_req_ctx(req)->pid, _IOC_NR(cmd), -err, msg);
        if (fs->debug)
                stfs_log(LOG_ERR, "control request %u refused: %s", _IOC_NR(cmd), msg);
        fuse_reply_err(req, err);
}

static void do_prefetch(fuse_req_t req, struct stfs *fs, const void *in)
{
        struct stfs_prefetch_req rq;
        struct stf_prefetch_args a;
        char msg[STFS_MESSAGE_MAX] = "";
        int ret;

        memcpy(&rq, in, sizeof(rq));
        ret = stf_wire_prefetch_args(&rq, &a, msg, sizeof(msg));
        if (!ret)
                ret = stf_residency_prefetch(fs->res, &a, &rq.job, msg, sizeof(msg));
        if (ret)
                refuse(req, fs, STFS_IOC_PREFETCH, -ret, msg);
        else
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
}

static void do_status(fuse_req_t req, struct stfs *fs, const void *in)
{
        struct stfs_status_req rq;
        struct stf_job_progress p;

        memcpy(&rq, in, sizeof(rq));
        if (rq.version != STFS_IOC_VERSION)
                refuse(req, fs, STFS_IOC_STATUS, EINVAL, "malformed status request");
        else if (stf_residency_progress(fs->res, rq.job, &p))
                refuse(req, fs, STFS_IOC_STATUS, ENOENT, "no such job");
        else {
                stf_wire_status(&p, &rq);
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
        }
}

static void do_cancel(fuse_req_t req, struct stfs *fs, const void *in)
{
        struct stfs_cancel_req rq;

        memcpy(&rq, in, sizeof(rq));
        if (rq.version != STFS_IOC_VERSION)
                refuse(req, fs, STFS_IOC_CANCEL, EINVAL, "malformed cancel request");
        else if (stf_residency_cancel(fs->res, rq.job))
                refuse(req, fs, STFS_IOC_CANCEL, ENOENT, "no such job");
        else
                fuse_reply_ioctl(req, 0, NULL, 0);
}

static void do_evict(fuse_req_t req, struct stfs *fs, const void *in)
{
        struct stfs_evict_req rq;
        char msg[STFS_MESSAGE_MAX] = "";
        int ret = -EINVAL;

        memcpy(&rq, in, sizeof(rq));
        if (rq.version != STFS_IOC_VERSION)
                snprintf(msg, sizeof(msg), "malformed evict request");
        else
                ret = stf_residency_evict(fs->res, rq.target, rq.device, rq.selection,
                                          sizeof(rq.selection), stfs_control_drop_host, fs,
                                          &rq.count, msg, sizeof(msg));
        if (ret)
                refuse(req, fs, STFS_IOC_EVICT, -ret, msg);
        else
                fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
}

static void do_reason(fuse_req_t req, struct stfs *fs, const void *in)
{
        struct stfs_reason_req rq;
        int err = 0;

        memcpy(&rq, in, sizeof(rq));
        if (rq.version != STFS_IOC_VERSION) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (stf_residency_reason(fs->res, (uint64_t)fuse_req_ctx(req)->pid, &rq.request, &err,
                                 rq.message, sizeof(rq.message))) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        rq.error = -err;
        rq.pad = 0;
        fuse_reply_ioctl(req, 0, &rq, sizeof(rq));
}

/* Our requests: the number, the handler, and the sizes it reads and writes. */
static const struct request {
        unsigned cmd;
        void (*run)(fuse_req_t req, struct stfs *fs, const void *in);
        size_t in, out;
} requests[] = {
    {STFS_IOC_PREFETCH, do_prefetch, sizeof(struct stfs_prefetch_req),
     sizeof(struct stfs_prefetch_req)},
    {STFS_IOC_STATUS, do_status, sizeof(struct stfs_status_req), sizeof(struct stfs_status_req)},
    {STFS_IOC_CANCEL, do_cancel, sizeof(struct stfs_cancel_req), 0},
    {STFS_IOC_EVICT, do_evict, sizeof(struct stfs_evict_req), sizeof(struct stfs_evict_req)},
    {STFS_IOC_REASON, do_reason, sizeof(struct stfs_reason_req), sizeof(struct stfs_reason_req)},
};

void stfs_control_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                        struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                        size_t in_bufsz, size_t out_bufsz)
{
        struct stfs *fs = fuse_req_userdata(req);
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        size_t nreq = sizeof(requests) / sizeof(requests[0]);
        struct stf_ns_entry e;

        if (stf_ns_entry(fs->ns, ino, &e) || e.kind != STF_NS_CONTROL) {
                fuse_reply_err(req, ENOTTY);
                return;
        }
        if (ctx->uid != fs->uid && ctx->uid != 0) {
                fuse_reply_err(req, EACCES);
                return;
        }
        if (flags & FUSE_IOCTL_COMPAT) {
                fuse_reply_err(req, ENOSYS);
                return;
        }
        for (size_t i = 0; i < nreq; i++) {
                const struct request *r = &requests[i];

                if (cmd != r->cmd)
                        continue;
                if (in_bufsz != r->in || (r->out && out_bufsz != r->out))
                        refuse(req, fs, cmd, EINVAL, "request of the wrong size");
                else
                        r->run(req, fs, in_buf);
                return;
        }
        /*
         * One of our requests, but with another struct size or direction
         * in the number (a client built against another layout): that is
         * a malformed request, not an unknown one.
         */
        if (_IOC_TYPE(cmd) == STFS_IOC_MAGIC && _IOC_NR(cmd) >= 1 && _IOC_NR(cmd) <= nreq)
                refuse(req, fs, cmd, EINVAL,
                       "request of another size or direction (another stfs_ioctl.h?)");
        else
                fuse_reply_err(req, ENOTTY);
}
