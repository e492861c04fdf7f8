/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stfsctl: the command table. Look into and vet a safetensors model without
 * mounting it (inspect, verify: ctl_model.c), and drive a mount through its
 * control file (prefetch, status, cancel, evict: ctl_jobs.c). It links
 * core/ only, never fs/. Exit statuses: tools/ctl.h.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "shard.h"

struct command {
        const char *name;
        int (*run)(int argc, char **argv);
        bool named; /* run gets the command's name as argv[0] */
        const char *summary;
};

static const struct command commands[] = {
    {"inspect", ctl_inspect, true,
     "what is in a model: counts, dtypes, module tree, largest tensors"},
    {"verify", ctl_verify, true,
     "check every format rule; --scan reads every byte for NaN/Inf/zeros"},
    {"prefetch", ctl_prefetch, false, "load tensors of a mount into the page cache or onto a GPU"},
    {"status", ctl_status, false, "the jobs of a mount, or one job"},
    {"cancel", ctl_cancel, false, "cancel a prefetch job"},
    {"evict", ctl_evict, false, "drop prefetched tensors from the page cache or a GPU"},
};

static void usage(FILE *f)
{
        fprintf(f, "usage: stfsctl COMMAND [ARGS]\n\n"
                   "commands (SOURCE: a model as for stfs; MNT: a mount point):\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\n"
                   "  stfsctl inspect SOURCE [--depth N] [--top N] [--json]\n"
                   "  stfsctl verify SOURCE [--scan] [--threads N] [--json]\n"
                   "  stfsctl prefetch MNT [SELECTION...] [--to host|cuda:N] [--threads N]\n"
                   "                  [--chunk SIZE] [--slice DIM:RANK/WORLD]\n"
                   "                  [--staging ring|direct|auto] [--wait]\n"
                   "  stfsctl status MNT [JOB]\n"
                   "  stfsctl cancel MNT JOB\n"
                   "  stfsctl evict MNT [SELECTION...] [--to host|cuda:N]\n"
                   "\n"
                   "SELECTION: tensor names or globs (model.layers.1*.mlp.*), or mount paths\n"
                   "(model/layers/3/**); none selects every tensor.\n"
                   "\n"
                   "options:\n"
                   "  -h, --help     this text (inspect and verify: COMMAND --help)\n"
                   "  -V, --version  the version\n"
                   "\n"
                   "Exit status: 0 success, 1 failure (a model with problems, a refused request,\n"
                   "a failed job), 2 usage or an error of stfsctl itself.\n"
                   "See stfsctl(1).\n");
}

int main(int argc, char **argv)
{
        if (argc < 2) {
                usage(stderr);
                return CTL_EXIT_USAGE;
        }
        if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
                printf("stfsctl %s\n", STF_VERSION);
                return 0;
        }
        /* inspect and verify keep one descriptor per shard open */
        stf_shard_raise_fd_limit();
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
                if (strcmp(argv[1], commands[i].name))
                        continue;
                /* inspect and verify parse with getopt: argv[0] is their name. */
                if (commands[i].named)
                        return commands[i].run(argc - 1, argv + 1);
                return commands[i].run(argc - 2, argv + 2);
        }
        fprintf(stderr, "stfsctl: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return CTL_EXIT_USAGE;
}
