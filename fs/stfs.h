/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFS_FS_H
#define STFS_FS_H

/*
 * The FUSE layer: thin glue between the kernel and core/. Core returns
 * 0/-errno; the sign is flipped here, at the edge, and nowhere else.
 *
 * struct stfs is one mount: the objects of the modules that serve it (each
 * keeps its own state behind its pointer) and the few settings fs/ reads.
 * It is the session's userdata; main.c builds and frees it.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "cache.h"
#include "log.h"
#include "model.h"
#include "ns.h"
#include "residency.h"
#include "tree.h"
#include "view.h"
#include "watch.h"

struct stfs {
        struct stf_model *model;
        struct stf_tree *tree;
        struct stf_ns *ns;       /* every inode: what it is, lookups, listings */
        struct stf_watch *watch; /* shard sizes now: reads of lost bytes get EIO */
        struct stf_cache *cache; /* drops the source's copy of served pages */
        uid_t uid;
        gid_t gid;
        double timeout; /* entry/attr timeout, seconds */
        bool debug;
        bool no_opendir;              /* kernel needs no OPENDIR (set in init) */
        bool large_folios;            /* every shard mapped for large folios (set at load) */
        _Atomic uintptr_t last_piece; /* end of the last large piece read (ops.c) */
        _Atomic unsigned piece_run;   /* large pieces in a row near the last (ops.c) */
        unsigned readahead_kb;        /* 0: kernel default */

        struct stfs_docs *docs;   /* open live documents of /.stfs (docs.c) */
        struct stfs_pt *pt;       /* passthrough of whole files (passthrough.c) */
        struct stfs_reads *reads; /* data reads off the FUSE workers (reads.c);
                                     NULL: zero-copy replies on the worker */

        /* control plane (control.c) */
        struct fuse_session *se;
        const char *mountpoint;
        struct stf_residency *res; /* jobs, resident tensors, counters */
};

#endif
