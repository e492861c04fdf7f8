/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The regression driver: runs saved inputs through one fuzz target's
 * LLVMFuzzerTestOneInput without libFuzzer, built with the project's own
 * compiler (zstd's tests/fuzz/regression_driver.c does the same).
 *
 *   replay_TARGET PATH...
 *
 * A PATH is a file or a directory; a directory's regular files are run in
 * name order (names starting with '.' skipped: .gitkeep, editor files).
 * Every input is read into a buffer of exactly its size, so a sanitized
 * build sees any read past it. A target abort()s on a broken invariant,
 * which fails the test; after each input the name is printed, so the log
 * says which one. Exit status 0 when at least one input ran, 1 otherwise
 * (a missing corpus must not pass silently).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_helpers.h"

/* Targets that need no set-up leave it out. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int read_file(const char *path, uint8_t **out, size_t *len)
{
        struct stat st;
        uint8_t *buf;
        size_t got = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0 || fstat(fd, &st)) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        buf = malloc(st.st_size ? (size_t)st.st_size : 1);
        if (!buf) {
                close(fd);
                return -1;
        }
        while (got < (size_t)st.st_size) {
                ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

                if (r <= 0) {
                        fprintf(stderr, "replay: %s: read failed\n", path);
                        free(buf);
                        close(fd);
                        return -1;
                }
                got += (size_t)r;
        }
        close(fd);
        *out = buf;
        *len = got;
        return 0;
}

static int run_file(const char *path)
{
        uint8_t *buf;
        size_t len;

        if (read_file(path, &buf, &len))
                return -1;
        fprintf(stderr, "%s (%zu bytes)\n", path, len);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        return 0;
}

static int skip_hidden(const struct dirent *de)
{
        return de->d_name[0] != '.';
}

static int run_dir(const char *dir, size_t *count)
{
        struct dirent **ents;
        int n = scandir(dir, &ents, skip_hidden, alphasort), ret = 0;

        if (n < 0) {
                fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                char *p;
                struct stat st;

                if (!ret && asprintf(&p, "%s/%s", dir, ents[i]->d_name) >= 0) {
                        if (!stat(p, &st) && S_ISREG(st.st_mode)) {
                                ret = run_file(p);
                                *count += !ret;
                        }
                        free(p);
                }
                free(ents[i]);
        }
        free(ents);
        return ret;
}

int main(int argc, char **argv)
{
        size_t count = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
                return 2;
        }
        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                struct stat st;

                if (stat(argv[i], &st)) {
                        fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
                        return 1;
                }
                if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i]))
                        return 1;
                count += !S_ISDIR(st.st_mode);
        }
        printf("%s: %zu inputs replayed\n", argv[0], count);
        return count ? 0 : 1;
}
