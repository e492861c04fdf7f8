/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFSCTL_H
#define STFSCTL_H

#include <stddef.h>
#include <stdint.h>

/*
 * The stfsctl commands: one function per command, returning the process
 * exit status.
 */

/*
 * The exit status of every subcommand (stfsctl(1), README): 0 success;
 * CTL_EXIT_FAILED when what was asked failed: the model has problems or
 * cannot be opened, verify --scan found NaN or Inf, there is no control
 * file or the mount refused the request, a job failed or was cancelled;
 * CTL_EXIT_USAGE for bad arguments or a failure of stfsctl itself (out of
 * memory, writing its output).
 */
#define CTL_EXIT_FAILED 1
#define CTL_EXIT_USAGE 2

/*
 * inspect and verify (ctl_model.c): argv[0] is the command's name, for
 * getopt.
 */
int ctl_inspect(int argc, char **argv);
int ctl_verify(int argc, char **argv);

/* The job commands (ctl_jobs.c): the arguments after the command's name. */
int ctl_prefetch(int argc, char **argv);
int ctl_status(int argc, char **argv);
int ctl_cancel(int argc, char **argv);
int ctl_evict(int argc, char **argv);

/*
 * A byte count for people, the one formatter of stfsctl (ctl_model.c):
 * three significant digits and a binary unit ("512 B", "1.17 MiB").
 */
const char *ctl_human_bytes(uint64_t v, char *buf, size_t cap);

#endif
