/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STFSCTL_H
#define STFSCTL_H

/*
 * stfsctl subcommands that drive a mount through its control file
 * (ioctls of stfs_ioctl.h). Each takes the arguments after its name and
 * returns the process exit status: 0 success, 1 failure, 2 usage.
 */

int ctl_prefetch(int argc, char **argv);
int ctl_status(int argc, char **argv);
int ctl_cancel(int argc, char **argv);
int ctl_evict(int argc, char **argv);

#endif
