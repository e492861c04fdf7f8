/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Companion files: what a loader reads beside the weights (config.json,
 * tokenizer files, ...). They are read whole at mount, so the mount serves
 * them from memory like the generated headers, and a companion changed
 * later does not change under a reader. The bounds keep a folder of other
 * big files (pytorch_model.bin, *.gguf) from costing memory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "companion.h"
#include "setname.h"

struct loader {
        const char *root;
        struct stf_companion **v;
        uint32_t *n;
        uint32_t cap;
        uint64_t total;
};

static int cmp_name(const struct dirent **a, const struct dirent **b)
{
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int not_hidden(const struct dirent *d)
{
        return d->d_name[0] != '.';
}

/* Read @path (a regular file of @st) whole into *@out; 0 or -errno. */
static int slurp(const char *path, const struct stat *st, uint8_t **out)
{
        size_t got = 0, len = (size_t)st->st_size;
        uint8_t *buf = malloc(len ? len : 1);
        int fd;

        if (!buf)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                goto out_buf;
        while (got < len) {
                ssize_t r = read(fd, buf + got, len - got);

                if (r <= 0)
                        break;
                got += (size_t)r;
        }
        close(fd);
        if (got == len) {
                *out = buf;
                return 0;
        }
out_buf:
        free(buf);
        return -EIO;
}

/* Add @rel (under the root) if it is a companion; 0 or -ENOMEM. */
static int consider(struct loader *l, const char *rel)
{
        struct stf_companion *c;
        struct stat st;
        const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
        struct stf_setname sn;
        uint8_t *data = NULL;
        char *path;
        int ret;

        if (stf_setname_parse(base, &sn) || *l->n >= STF_COMPANIONS_COUNT)
                return 0;
        if (asprintf(&path, "%s/%s", l->root, rel) < 0)
                return -ENOMEM;
        if (stat(path, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > STF_COMPANION_MAX ||
            l->total + (uint64_t)st.st_size > STF_COMPANIONS_TOTAL) {
                free(path);
                return 0;
        }
        ret = slurp(path, &st, &data);
        free(path);
        if (ret)
                return ret == -ENOMEM ? ret : 0;
        if (*l->n == l->cap) {
                uint32_t ncap = l->cap ? 2 * l->cap : 16;
                struct stf_companion *nv = realloc(*l->v, ncap * sizeof(*nv));

                if (!nv) {
                        free(data);
                        return -ENOMEM;
                }
                *l->v = nv;
                l->cap = ncap;
        }
        c = &(*l->v)[*l->n];
        c->rel = strdup(rel);
        if (!c->rel) {
                free(data);
                return -ENOMEM;
        }
        c->data = data;
        c->len = (size_t)st.st_size;
        c->mtime = st.st_mtim;
        ++*l->n;
        l->total += (uint64_t)st.st_size;
        return 0;
}

/* The companions of directory @sub of the root ("" for the root itself). */
static int scan(struct loader *l, const char *sub, bool descend)
{
        struct dirent **ents = NULL;
        char *dir;
        int n, ret = 0;

        if (asprintf(&dir, "%s%s%s", l->root, *sub ? "/" : "", sub) < 0)
                return -ENOMEM;
        n = scandir(dir, &ents, not_hidden, cmp_name);
        free(dir);
        if (n < 0)
                return errno == ENOMEM ? -ENOMEM : 0;
        /* files first, then the sub-directories: rel order is name order */
        for (int i = 0; i < n && !ret; i++) {
                char *rel;

                if (asprintf(&rel, "%s%s%s", sub, *sub ? "/" : "", ents[i]->d_name) < 0) {
                        ret = -ENOMEM;
                        break;
                }
                ret = consider(l, rel);
                free(rel);
        }
        for (int i = 0; i < n && !ret && descend; i++) {
                struct stat st;
                char *path;

                if (asprintf(&path, "%s/%s", l->root, ents[i]->d_name) < 0) {
                        ret = -ENOMEM;
                        break;
                }
                if (!stat(path, &st) && S_ISDIR(st.st_mode))
                        ret = scan(l, ents[i]->d_name, false);
                free(path);
        }
        for (int i = 0; i < n; i++)
                free(ents[i]);
        free(ents);
        return ret;
}

static int cmp_rel(const void *a, const void *b)
{
        return strcmp(((const struct stf_companion *)a)->rel,
                      ((const struct stf_companion *)b)->rel);
}

int stf_companions_load(const char *root, bool root_is_dir, struct stf_companion **v, uint32_t *n)
{
        struct loader l = {.root = root, .v = v, .n = n, .cap = *n};
        int ret = scan(&l, "", root_is_dir);

        if (*n)
                qsort(*v, *n, sizeof(**v), cmp_rel);
        return ret;
}
