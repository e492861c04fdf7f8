/* SPDX-License-Identifier: Apache-2.0 */
#ifndef STF_COMPANION_H
#define STF_COMPANION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * A companion file: a small regular file beside the weights (config.json,
 * tokenizer files, README.md, ...), read whole at open. Not a .safetensors
 * file or an index, not hidden (leading '.'), at most STF_COMPANION_MAX
 * bytes; at most STF_COMPANIONS_TOTAL bytes and STF_COMPANIONS_COUNT files
 * in all (the rest are left out, in name order). Found in SOURCE and its
 * sub-directories one level down (a file SOURCE: in its directory).
 */
#define STF_COMPANION_MAX (64u << 20)
#define STF_COMPANIONS_TOTAL (256u << 20)
#define STF_COMPANIONS_COUNT 4096u

struct stf_companion {
        char *rel;     /* "config.json", "unet/config.json": relative to root */
        uint8_t *data; /* its bytes */
        size_t len;
        struct timespec mtime;
};

/*
 * Read the companion files under @root into *@v (grown with realloc, sorted
 * by rel) and *@n: its files, and with @root_is_dir those of its
 * sub-directories one level down. Files that cannot be read, or are over
 * the bounds, are left out. Symbolic links are followed (a hub cache links
 * into blobs/). Returns 0 or -ENOMEM; what was read stays in *@v either
 * way (the model frees it: stf_model_close).
 */
int stf_companions_load(const char *root, bool root_is_dir, struct stf_companion **v, uint32_t *n);

#endif
