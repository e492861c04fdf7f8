/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Residency bookkeeping. Resident sets are updated by each job's on_end
 * callback, which runs before the job's final state can be read: a client
 * that saw "done" and asks again finds the tensors resident. A CUDA tensor
 * points at the finished job whose allocation holds it; a later job that
 * holds it too takes it over, and the older job's memory is given back
 * once none of its tensors points at it (or at the end).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "residency.h"
#include "select.h"
#include "strbuf.h"
#include "text.h"

/*
 * A finished CUDA job and which tensors of its plan it still holds. Several
 * jobs may hold the same tensor (a slice of it, another device, or two jobs
 * at once): each keeps its own record, so evict can reach every allocation.
 */
struct holder {
        struct holder *next;
        struct stf_job *job;
        int32_t device;
        size_t nheld;   /* its memory is freed when this reaches 0 */
        uint8_t held[]; /* per plan index */
};

/*
 * One job of the table. Its struct (thread, plan, backend state) is kept
 * while it runs, while a caller waits for it and while it holds device
 * memory; after that it is reaped (reap(): thread joined, job freed) and
 * only a record stays: its final progress and its selection.
 */
struct entry {
        uint64_t id;
        struct stf_job *job;          /* NULL: a record */
        unsigned waiters;             /* in stf_residency_wait: not reaped */
        uint64_t pinned;              /* staging a CUDA job may pin */
        struct stf_job_progress last; /* a record's */
        char *selection;              /* a record's */
};

struct stf_residency {
        const struct stf_model *model;
        const struct stf_tree *tree;
        const struct stf_backend *host;
        void *host_ctx;
        pthread_mutex_t lock; /* the table and the resident sets */
        struct entry **ents;  /* by id, ascending */
        size_t nents, cap;
        uint64_t last_id;
        uint8_t *on_host;               /* per tensor: all its bytes in the page cache */
        struct holder *holders;         /* finished CUDA jobs, newest first */
        uint64_t counters[STF_COUNT_N]; /* atomic */
        struct refusal {
                uint64_t requester, seq; /* seq 0: empty */
                uint32_t request;
                int err;
                char msg[STF_JOB_MESSAGE_MAX];
        } refusals[STF_REFUSALS_MAX]; /* under lock */
        uint64_t refusal_seq;
        /* the CUDA backend's options for each staging (its ctx, read at begin) */
        struct stf_cuda_opts cuda_opts[STF_STAGING_AUTO + 1];
};

int stf_residency_new(const struct stf_model *model, const struct stf_tree *tree,
                      const struct stf_backend *host, void *host_ctx, struct stf_residency **out)
{
        struct stf_residency *r = calloc(1, sizeof(*r));

        *out = NULL;
        if (!r)
                return -ENOMEM;
        r->model = model;
        r->tree = tree;
        r->host = host;
        r->host_ctx = host_ctx;
        for (uint32_t i = 0; i <= STF_STAGING_AUTO; i++)
                r->cuda_opts[i].staging = i;
        pthread_mutex_init(&r->lock, NULL);
        r->on_host = calloc(model->ntensors + 1, sizeof(*r->on_host));
        if (!r->on_host) {
                stf_residency_free(r);
                return -ENOMEM;
        }
        *out = r;
        return 0;
}

void stf_residency_set_watch(struct stf_residency *r, struct stf_watch *w)
{
        pthread_mutex_lock(&r->lock);
        for (uint32_t i = 0; i <= STF_STAGING_AUTO; i++)
                r->cuda_opts[i].watch = w;
        pthread_mutex_unlock(&r->lock);
}

void stf_residency_free(struct stf_residency *r)
{
        if (!r)
                return;
        for (size_t i = 0; i < r->nents; i++)
                if (r->ents[i]->job)
                        stf_job_cancel(r->ents[i]->job);
        for (size_t i = 0; i < r->nents; i++) {
                stf_job_free(r->ents[i]->job); /* waits, gives device memory back */
                free(r->ents[i]->selection);
                free(r->ents[i]);
        }
        free(r->ents);
        free(r->on_host);
        while (r->holders) {
                struct holder *h = r->holders;

                r->holders = h->next;
                free(h);
        }
        pthread_mutex_destroy(&r->lock);
        free(r);
}

/*
 * Position of tensor @t in @p, or SIZE_MAX. A plan's tensors are in layout
 * order (shard, offset): a binary search, then the run of tensors at that
 * offset (zero-size ones share it with the next).
 */
static size_t plan_index(const struct stf_model *m, const struct stf_plan *p, uint32_t t)
{
        const struct stf_tensor *ts = m->tensors, *want = &ts[t];
        size_t lo = 0, hi = p->ntensors;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct stf_tensor *x = &ts[p->tensors[mid]];

                if (x->shard < want->shard || (x->shard == want->shard && x->begin < want->begin))
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (; lo < p->ntensors; lo++) {
                const struct stf_tensor *x = &ts[p->tensors[lo]];

                if (x->shard != want->shard || x->begin != want->begin)
                        break;
                if (p->tensors[lo] == t)
                        return lo;
        }
        return SIZE_MAX;
}

/*
 * The newest job holding @t on @device (< 0: any), whole when @whole, and
 * @t's index in its plan (*@idx); NULL when none. Under lock.
 */
static struct holder *holder_of(const struct stf_residency *r, uint32_t t, int32_t device,
                                bool whole, size_t *idx)
{
        for (struct holder *h = r->holders; h; h = h->next) {
                const struct stf_plan *p = stf_job_info(h->job)->plan;
                size_t i;

                if (!h->nheld || (device >= 0 && h->device != device))
                        continue;
                i = plan_index(r->model, p, t);
                if (i == SIZE_MAX || !h->held[i] ||
                    (whole && p->tensor_size[i] != r->model->tensors[t].size))
                        continue;
                if (idx)
                        *idx = i;
                return h;
        }
        return NULL;
}

/* Does a job hold @t on @device, whole? Under lock. */
static bool cuda_holds(const struct stf_residency *r, uint32_t t, int32_t device)
{
        return holder_of(r, t, device, true, NULL) != NULL;
}

/*
 * Keep a finished CUDA job's record (under lock, on the job's thread). A
 * job without tensors holds nothing. Without memory for the record the
 * job's device memory stays until unmount (its thread cannot release it).
 */
static void hold(struct stf_residency *r, struct stf_job *job)
{
        const struct stf_job_info *info = stf_job_info(job);
        size_t n = info->plan->ntensors;
        struct holder *h = n ? calloc(1, sizeof(*h) + n) : NULL;

        if (!h)
                return;
        h->job = job;
        h->device = info->device;
        h->nheld = n;
        memset(h->held, 1, n);
        h->next = r->holders;
        r->holders = h;
}

/* A job's on_end: remember where its tensors now are. */
static void record(void *arg, struct stf_job *job, int status)
{
        struct stf_residency *r = arg;
        const struct stf_job_info *info = stf_job_info(job);
        const struct stf_plan *p = info->plan;

        if (status)
                return;
        pthread_mutex_lock(&r->lock);
        if (info->target == STF_TARGET_HOST) {
                /* a slice pushed part of the file only: not resident */
                for (size_t i = 0; i < p->ntensors; i++)
                        r->on_host[p->tensors[i]] |=
                            p->tensor_size[i] == r->model->tensors[p->tensors[i]].size;
        } else {
                hold(r, job);
        }
        pthread_mutex_unlock(&r->lock);
}

/* Keep in @sel what is not resident whole at the target; returns the count. */
static size_t skip_resident(struct stf_residency *r, const struct stf_prefetch_args *a,
                            uint32_t *sel, size_t n)
{
        size_t k = 0;

        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < n; i++) {
                bool have = a->target == STF_TARGET_HOST
                                ? r->on_host[sel[i]]
                                : a->slice.dim < 0 && cuda_holds(r, sel[i], a->device);
                if (!have)
                        sel[k++] = sel[i];
        }
        pthread_mutex_unlock(&r->lock);
        return k;
}

/* Select and check a request; *@sel (caller frees) is what to move. */
static int select_request(struct stf_residency *r, const struct stf_prefetch_args *a,
                          uint32_t **sel, size_t *n, char *msg, size_t cap)
{
        struct stf_plan *plan = NULL;
        int ret;

        if (a->target > STF_TARGET_CUDA || a->threads > STF_THREADS_MAX || a->slice.dim < -1 ||
            (a->target == STF_TARGET_CUDA && a->device < 0) || a->staging > STF_STAGING_AUTO ||
            (a->target == STF_TARGET_HOST && a->staging)) {
                snprintf(msg, cap, "malformed prefetch request");
                return -EINVAL;
        }
        ret = stf_select(r->model, r->tree, a->selection, a->selection_cap, sel, n);
        if (ret) {
                snprintf(msg, cap, "%s",
                         ret == -ENOENT ? "the selection matches no tensor"
                                        : "malformed selection");
                return ret;
        }
        /*
         * A slice that does not fit a selected tensor is malformed whether
         * or not that tensor is resident: check the whole selection first.
         */
        if (a->slice.dim >= 0) {
                ret = stf_plan_build(r->model, *sel, *n, &a->slice, UINT64_MAX, &plan, msg, cap);
                stf_plan_free(plan);
                if (ret) {
                        free(*sel);
                        *sel = NULL;
                        return ret;
                }
        }
        *n = skip_resident(r, a, *sel, *n);
        return 0;
}

/* Does a holder keep @job (its device memory)? Under lock. */
static bool held(const struct stf_residency *r, const struct stf_job *job)
{
        for (const struct holder *h = r->holders; h; h = h->next)
                if (h->job == job)
                        return true;
        return false;
}

/* Turn @e into a record if its job is over and nothing needs the job. */
static void to_record(struct stf_residency *r, struct entry *e)
{
        char *sel;

        if (!e->job || e->waiters || !stf_job_finished(e->job) || held(r, e->job))
                return;
        sel = strdup(stf_job_selection(e->job));
        if (!sel)
                return; /* kept as a job; tried again at the next reap */
        stf_job_progress(e->job, &e->last);
        e->selection = sel;
        stf_job_free(e->job); /* ended: joins its thread, nothing to wait for */
        e->job = NULL;
}

/*
 * Reap every job that is over, then forget the oldest records past
 * STF_JOBS_KEPT. Under lock.
 */
static void reap(struct stf_residency *r)
{
        size_t records = 0, k = 0;

        for (size_t i = 0; i < r->nents; i++) {
                to_record(r, r->ents[i]);
                records += !r->ents[i]->job;
        }
        for (size_t i = 0; i < r->nents; i++) {
                struct entry *e = r->ents[i];

                if (!e->job && records > STF_JOBS_KEPT) {
                        free(e->selection);
                        free(e);
                        records--;
                        continue;
                }
                r->ents[k++] = e;
        }
        r->nents = k;
}

/*
 * Is there room for one more job of @threads workers (and a slot for it
 * in the table)? 0, -EBUSY past a bound, -ENOMEM; @msg says why. Under
 * lock, after reap().
 */
static int room(struct stf_residency *r, unsigned threads, uint64_t pinned, char *msg, size_t cap)
{
        size_t live = 0, workers = threads < STF_THREADS_MAX ? threads : STF_THREADS_MAX;
        uint64_t pinning = 0;

        for (size_t i = 0; i < r->nents; i++) {
                struct stf_job *job = r->ents[i]->job;

                /* a job given up on after a cancel is not live, but its
                 * threads and its staging are there until they come back */
                if (job && !stf_job_ended(job))
                        live++;
                if (job && !stf_job_finished(job)) {
                        workers += stf_job_info(job)->threads;
                        pinning += r->ents[i]->pinned;
                }
        }
        if (live >= STF_JOBS_LIVE_MAX) {
                snprintf(msg, cap,
                         "too many prefetch jobs running (%d at most): wait for one to end or "
                         "cancel one",
                         STF_JOBS_LIVE_MAX);
                return -EBUSY;
        }
        if (workers > STF_JOBS_WORKERS_MAX) {
                snprintf(msg, cap,
                         "too many prefetch worker threads (%d in all jobs at most): ask for "
                         "fewer threads or wait for a job to end",
                         STF_JOBS_WORKERS_MAX);
                return -EBUSY;
        }
        if (pinned > STF_PINNED_MAX - pinning) {
                snprintf(msg, cap,
                         "running CUDA jobs pin %" PRIu64
                         " MiB of staging; this one would pin %" PRIu64
                         " MiB more, past the bound of %llu MiB: wait for one to end",
                         pinning >> 20, pinned >> 20, STF_PINNED_MAX >> 20);
                return -EBUSY;
        }
        if (r->nents == r->cap) {
                size_t ncap = r->cap ? r->cap * 2 : 16;
                struct entry **ne = realloc(r->ents, ncap * sizeof(*ne));

                if (!ne) {
                        snprintf(msg, cap, "out of memory");
                        return -ENOMEM;
                }
                r->ents = ne;
                r->cap = ncap;
        }
        return 0;
}

/* Start @plan (owned) as the next job of the table; it may pin @pinned bytes. */
static int start(struct stf_residency *r, const struct stf_prefetch_args *a, struct stf_plan *plan,
                 uint64_t pinned, uint64_t *id, char *msg, size_t cap)
{
        bool host = a->target == STF_TARGET_HOST;
        struct stf_job_params params = {
            .target = a->target,
            .device = a->device,
            .threads = a->threads,
            .selection = a->selection,
            .on_end = record,
            .on_end_arg = r,
        };
        struct entry *e;
        int ret;

        pthread_mutex_lock(&r->lock);
        reap(r);
        ret = room(r, a->threads ? a->threads : STF_THREADS_DEFAULT, pinned, msg, cap);
        e = ret ? NULL : calloc(1, sizeof(*e));
        if (!e) {
                pthread_mutex_unlock(&r->lock);
                stf_plan_free(plan);
                return ret ? ret : -ENOMEM;
        }
        params.id = r->last_id + 1;
        ret =
            stf_job_start(r->model, plan, host ? r->host : &stf_cuda_backend,
                          host ? r->host_ctx : (void *)&r->cuda_opts[a->staging], &params, &e->job);
        if (ret) {
                pthread_mutex_unlock(&r->lock);
                free(e);
                snprintf(msg, cap, "cannot start the job");
                return ret;
        }
        e->id = *id = ++r->last_id;
        e->pinned = pinned;
        r->ents[r->nents++] = e;
        pthread_mutex_unlock(&r->lock);
        return 0;
}

/*
 * The chunk size of a request for the @n tensors at @sel (see
 * stf_residency_prefetch). Whole pages for every target: the host target
 * pushes whole pages (so no byte twice), and a CUDA chunk of a few bytes
 * costs a plan entry and a copy each.
 */
static uint64_t chunk_size(const struct stf_model *m, uint64_t chunk, const uint32_t *sel, size_t n)
{
        uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), bytes = 0, least;

        for (size_t i = 0; i < n; i++)
                bytes += m->tensors[sel[i]].size;
        least = bytes / STF_PLAN_CHUNKS_MAX + 1;
        chunk = chunk ? chunk : STF_CHUNK_DEFAULT;
        chunk = chunk < least ? least : chunk > STF_CHUNK_MAX ? STF_CHUNK_MAX : chunk;
        return (chunk + page - 1) / page * page;
}

int stf_residency_prefetch(struct stf_residency *r, const struct stf_prefetch_args *a, uint64_t *id,
                           char *msg, size_t cap)
{
        unsigned threads = a->threads ? a->threads : STF_THREADS_DEFAULT;
        struct stf_plan *plan = NULL;
        uint64_t chunk, pinned = 0;
        uint32_t *sel = NULL;
        size_t n = 0;
        int ret;

        ret = select_request(r, a, &sel, &n, msg, cap);
        if (ret)
                return ret;
        chunk = chunk_size(r->model, a->chunk, sel, n);
        if (a->target == STF_TARGET_CUDA)
                pinned = STF_CUDA_RING * threads * chunk;
        if (pinned > STF_PINNED_MAX) {
                free(sel);
                snprintf(msg, cap,
                         "%u threads of %" PRIu64 "-byte chunks would pin %" PRIu64
                         " MiB of staging (%d x threads x chunk), more than %llu MiB: ask for "
                         "smaller chunks or fewer threads",
                         threads, chunk, pinned >> 20, STF_CUDA_RING, STF_PINNED_MAX >> 20);
                return -EINVAL;
        }
        ret = stf_plan_build(r->model, sel, n, &a->slice, chunk, &plan, msg, cap);
        free(sel);
        if (ret)
                return ret;
        return start(r, a, plan, pinned, id, msg, cap);
}

/* Remove @h from the holders and free it. Under lock. */
static void unhold(struct stf_residency *r, struct holder *h)
{
        struct holder **p = &r->holders;

        while (*p != h)
                p = &(*p)->next;
        *p = h->next;
        free(h);
}

/*
 * Forget @t on @device in every job that holds it there; a job's memory is
 * freed once it holds nothing. Was it held? Under lock.
 */
static bool evict_cuda(struct stf_residency *r, uint32_t t, int32_t device)
{
        bool found = false;
        struct holder *h;
        size_t i;

        while ((h = holder_of(r, t, device, false, &i))) {
                h->held[i] = 0;
                found = true;
                if (--h->nheld == 0) {
                        stf_job_release(h->job);
                        unhold(r, h); /* the job can be reaped now */
                }
        }
        return found;
}

int stf_residency_evict(struct stf_residency *r, uint32_t target, int32_t device,
                        const char *selection, size_t selection_cap,
                        void (*drop)(void *arg, uint32_t tensor), void *arg, uint64_t *count,
                        char *msg, size_t cap)
{
        uint32_t *sel = NULL;
        size_t n = 0;
        int ret;

        if (target > STF_TARGET_CUDA) {
                snprintf(msg, cap, "malformed evict request");
                return -EINVAL;
        }
        ret = stf_select(r->model, r->tree, selection, selection_cap, &sel, &n);
        if (ret) {
                snprintf(msg, cap, "%s",
                         ret == -ENOENT ? "the selection matches no tensor"
                                        : "malformed selection");
                return ret;
        }
        *count = 0;
        for (size_t i = 0; i < n; i++) {
                uint32_t t = sel[i];

                if (target == STF_TARGET_HOST && drop)
                        drop(arg, t);
                pthread_mutex_lock(&r->lock);
                if (target == STF_TARGET_HOST) {
                        *count += r->on_host[t];
                        r->on_host[t] = 0;
                } else {
                        *count += evict_cuda(r, t, device);
                }
                pthread_mutex_unlock(&r->lock);
        }
        free(sel);
        return 0;
}

/* The entry of job @id, or NULL (never started, or forgotten). Under lock. */
static struct entry *find(const struct stf_residency *r, uint64_t id)
{
        size_t lo = 0, hi = r->nents;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (r->ents[mid]->id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < r->nents && r->ents[lo]->id == id ? r->ents[lo] : NULL;
}

/* Fill @p from @e: its job, or its record. Under lock. */
static void entry_progress(const struct entry *e, struct stf_job_progress *p)
{
        if (e->job)
                stf_job_progress(e->job, p);
        else
                *p = e->last;
}

int stf_residency_progress(struct stf_residency *r, uint64_t id, struct stf_job_progress *p)
{
        struct entry *e;

        pthread_mutex_lock(&r->lock);
        e = find(r, id);
        if (e)
                entry_progress(e, p);
        pthread_mutex_unlock(&r->lock);
        return e ? 0 : -ENOENT;
}

int stf_residency_cancel(struct stf_residency *r, uint64_t id)
{
        struct entry *e;

        pthread_mutex_lock(&r->lock);
        e = find(r, id);
        if (e && e->job)
                stf_job_cancel(e->job);
        pthread_mutex_unlock(&r->lock);
        return e ? 0 : -ENOENT;
}

/* The entry stays while it has waiters: its job is neither reaped nor forgotten. */
int stf_residency_wait(struct stf_residency *r, uint64_t id)
{
        struct entry *e;

        pthread_mutex_lock(&r->lock);
        e = find(r, id);
        if (e && e->job) {
                e->waiters++;
                pthread_mutex_unlock(&r->lock);
                stf_job_wait(e->job); /* its on_end takes the lock */
                pthread_mutex_lock(&r->lock);
                e->waiters--;
        }
        pthread_mutex_unlock(&r->lock);
        return e ? 0 : -ENOENT;
}

bool stf_residency_cancel_all(struct stf_residency *r)
{
        bool running = false;

        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < r->nents; i++) {
                struct stf_job *job = r->ents[i]->job;

                if (!job)
                        continue;
                stf_job_cancel(job);
                running = running || !stf_job_finished(job);
        }
        pthread_mutex_unlock(&r->lock);
        return running;
}

bool stf_residency_on_host(struct stf_residency *r, uint32_t t)
{
        bool on;

        pthread_mutex_lock(&r->lock);
        on = t < r->model->ntensors && r->on_host[t];
        pthread_mutex_unlock(&r->lock);
        return on;
}

bool stf_residency_on_cuda(struct stf_residency *r, uint32_t t, int32_t device)
{
        bool on;

        pthread_mutex_lock(&r->lock);
        on = t < r->model->ntensors && cuda_holds(r, t, device);
        pthread_mutex_unlock(&r->lock);
        return on;
}

int stf_residency_cuda_xattr(struct stf_residency *r, uint32_t t, char *buf, size_t cap)
{
        struct stf_job *job;
        struct holder *h;
        size_t i = 0;
        char hex[129];
        uint64_t dptr;
        int ret = -ENODATA;

        pthread_mutex_lock(&r->lock);
        h = t < r->model->ntensors ? holder_of(r, t, -1, false, &i) : NULL;
        job = h ? h->job : NULL;
        if (job && !stf_cuda_job_handle(job, hex, &dptr)) {
                const struct stf_job_info *info = stf_job_info(job);

                ret = snprintf(
                    buf, cap,
                    "device=%d handle=%s offset=%" PRIu64 " size=%" PRIu64 " dptr=0x%" PRIx64,
                    info->device, hex, info->plan->tensor_dst[i], info->plan->tensor_size[i], dptr);
        }
        pthread_mutex_unlock(&r->lock);
        return ret;
}

void stf_residency_refused(struct stf_residency *r, uint64_t requester, uint32_t request, int err,
                           const char *msg)
{
        struct refusal *f;

        pthread_mutex_lock(&r->lock);
        /* this requester's slot if it has one, else the oldest */
        f = &r->refusals[0];
        for (size_t i = 0; i < STF_REFUSALS_MAX; i++) {
                struct refusal *x = &r->refusals[i];

                if (x->seq && x->requester == requester) {
                        f = x;
                        break;
                }
                if (x->seq < f->seq)
                        f = x;
        }
        f->requester = requester;
        f->seq = ++r->refusal_seq;
        f->request = request;
        f->err = err;
        snprintf(f->msg, sizeof(f->msg), "%s", msg && *msg ? msg : strerror(-err));
        pthread_mutex_unlock(&r->lock);
}

int stf_residency_reason(struct stf_residency *r, uint64_t requester, uint32_t *request, int *err,
                         char *msg, size_t cap)
{
        int ret = -ENOENT;

        pthread_mutex_lock(&r->lock);
        for (size_t i = 0; i < STF_REFUSALS_MAX; i++) {
                const struct refusal *x = &r->refusals[i];

                if (x->seq && x->requester == requester) {
                        *request = x->request;
                        *err = x->err;
                        snprintf(msg, cap, "%s", x->msg);
                        ret = 0;
                        break;
                }
        }
        pthread_mutex_unlock(&r->lock);
        return ret;
}

void stf_residency_count(struct stf_residency *r, enum stf_counter c, uint64_t n)
{
        __atomic_add_fetch(&r->counters[c], n, __ATOMIC_RELAXED);
}

/* One job of the status document. Under lock. */
static void job_json(struct stf_strbuf *sb, const struct entry *e, bool first)
{
        const char *sel = e->job ? stf_job_selection(e->job) : e->selection;
        struct stf_job_progress p;
        char target[32];
        double secs;

        entry_progress(e, &p);
        secs = (double)p.elapsed_ns / 1e9;
        stf_strbuf_printf(sb, "%s\n  {\"id\": %" PRIu64 ", \"selection\": ", first ? "" : ",",
                          p.id);
        stf_strbuf_json_str(sb, sel, strlen(sel));
        stf_target_format(target, sizeof(target), p.target, p.device);
        stf_strbuf_printf(sb, ", \"target\": \"%s\"", target);
        stf_strbuf_printf(sb,
                          ", \"state\": \"%s\", \"tensors\": %u, \"bytes_done\": %" PRIu64
                          ", \"bytes_total\": %" PRIu64
                          ", \"seconds\": %.6f, \"throughput_bps\": %.0f, \"error\": ",
                          stf_job_state_name(p.state), p.tensors, p.bytes_done, p.bytes_total, secs,
                          secs > 0 ? (double)p.bytes_done / secs : 0.0);
        if (p.state == STF_JOB_FAILED)
                stf_strbuf_json_str(sb, p.message, strlen(p.message));
        else
                stf_strbuf_puts(sb, "null");
        stf_strbuf_puts(sb, "}");
}

char *stf_residency_status_json(struct stf_residency *r, const char *more, size_t *len)
{
        struct stf_strbuf sb = {0};
        char *out = NULL;

        stf_strbuf_puts(&sb, "{\"jobs\": [");
        pthread_mutex_lock(&r->lock);
        reap(r);
        for (size_t i = 0; i < r->nents; i++)
                job_json(&sb, r->ents[i], i == 0);
        pthread_mutex_unlock(&r->lock);
        stf_strbuf_printf(&sb,
                          "\n ],\n \"counters\": {\"read_requests\": %" PRIu64
                          ", \"read_bytes\": %" PRIu64 ", \"pushed_bytes\": %" PRIu64
                          ", \"pushed_chunks\": %" PRIu64 ", \"async_reads\": %" PRIu64
                          ", \"read_timeouts\": %" PRIu64 "}",
                          __atomic_load_n(&r->counters[STF_COUNT_READ_REQUESTS], __ATOMIC_RELAXED),
                          __atomic_load_n(&r->counters[STF_COUNT_READ_BYTES], __ATOMIC_RELAXED),
                          __atomic_load_n(&r->counters[STF_COUNT_PUSHED_BYTES], __ATOMIC_RELAXED),
                          __atomic_load_n(&r->counters[STF_COUNT_PUSHED_CHUNKS], __ATOMIC_RELAXED),
                          __atomic_load_n(&r->counters[STF_COUNT_ASYNC_READS], __ATOMIC_RELAXED),
                          __atomic_load_n(&r->counters[STF_COUNT_READ_TIMEOUTS], __ATOMIC_RELAXED));
        if (more) {
                stf_strbuf_puts(&sb, ",\n ");
                stf_strbuf_puts(&sb, more);
        }
        stf_strbuf_puts(&sb, "\n}\n");
        if (stf_strbuf_finish(&sb, &out, len))
                return NULL;
        return out;
}
