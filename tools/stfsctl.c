/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stfsctl: drive a stfs mount from the command line. Links core/ only.
 */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *usage;
} cmds[] = {
    {"prefetch", ctl_prefetch,
     "prefetch MNT [SELECTION...] [--to host|cuda:N] [--threads N] [--chunk SIZE] "
     "[--slice DIM:RANK/WORLD] [--wait]"},
    {"status", ctl_status, "status MNT [JOB]"},
    {"cancel", ctl_cancel, "cancel MNT JOB"},
    {"evict", ctl_evict, "evict MNT [SELECTION...] [--to host|cuda:N]"},
};

static void usage(FILE *f)
{
        fprintf(f, "usage: stfsctl COMMAND ARGS...\n\n");
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
                fprintf(f, "  stfsctl %s\n", cmds[i].usage);
        fprintf(f, "\nSELECTION: tensor names or globs (model.layers.1*.mlp.*), or mount paths\n"
                   "(model/layers/3/**); none selects every tensor. Exit status 0 on success.\n");
}

int main(int argc, char **argv)
{
        if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
                printf("stfsctl %s\n", STF_VERSION);
                return 0;
        }
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
                if (!strcmp(argv[1], cmds[i].name))
                        return cmds[i].run(argc - 2, argv + 2);
        fprintf(stderr, "stfsctl: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
