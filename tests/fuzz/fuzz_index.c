/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stf_index_parse on the input as the text of a model.safetensors.index.json
 * (not NUL terminated: ASan sees a read past it).
 *
 * Checked on every input: the result is 0 or -EINVAL; a refusal leaves the
 * outputs untouched and a diagnostic starting with the file name, without
 * a control byte; an
 * accepted index has a non-empty "weight_map" object of strings that are
 * plain file names (never "", ".", ".." or anything with a '/': nothing
 * outside the index's directory can be named), and the shard names are
 * those values, each once, sorted bytewise.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_helpers.h"
#include "index.h"
#include "model.h"

#define FILE_NAME "fuzz.safetensors.index.json"

static bool plain(const char *s)
{
        return *s && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        json_t *wm = NULL, *names = NULL, *meta = NULL, *v;
        struct stf_diag d = {{0}};
        const char *key;
        int ret, ret2;

        ret = stf_index_parse(FILE_NAME, (const char *)data, size, &wm, &names, &meta, &d);
        FUZZ_ASSERT_MSG(ret == 0 || ret == -EINVAL, "ret %d", ret);
        if (ret) {
                FUZZ_ASSERT(!wm && !names && !meta);
                FUZZ_ASSERT_MSG(!strncmp(d.msg, FILE_NAME ": ", strlen(FILE_NAME) + 2), "%s",
                                d.msg);
                FUZZ_ASSERT_MSG(!fuzz_has_control(d.msg), "control byte in '%s'", d.msg);
        } else {
                json_t *set = json_object(), *used = json_object();

                FUZZ_ASSERT(set && used);
                FUZZ_ASSERT(json_is_object(wm) && json_object_size(wm) > 0);
                FUZZ_ASSERT(json_is_array(names) && json_array_size(names) > 0);
                for (size_t i = 0; i < json_array_size(names); i++) {
                        const char *s = json_string_value(json_array_get(names, i));

                        FUZZ_ASSERT(s && plain(s));
                        if (i > 0)
                                FUZZ_ASSERT(
                                    strcmp(json_string_value(json_array_get(names, i - 1)), s) < 0);
                        FUZZ_ASSERT(!json_object_set_new(set, s, json_true()));
                }
                json_object_foreach(wm, key, v)
                {
                        FUZZ_ASSERT(json_is_string(v));
                        FUZZ_ASSERT(strlen(json_string_value(v)) == json_string_length(v));
                        FUZZ_ASSERT_MSG(plain(json_string_value(v)), "'%s'", json_string_value(v));
                        FUZZ_ASSERT(json_object_get(set, json_string_value(v)));
                        FUZZ_ASSERT(!json_object_set_new(used, json_string_value(v), json_true()));
                }
                /* Every shard name is used by some tensor. */
                FUZZ_ASSERT(json_object_size(used) == json_array_size(names));
                json_decref(set);
                json_decref(used);
        }
        json_decref(wm);
        json_decref(names);
        json_decref(meta);

        /* The outputs are optional. */
        ret2 = stf_index_parse(FILE_NAME, (const char *)data, size, NULL, NULL, NULL, NULL);
        FUZZ_ASSERT(ret2 == ret);
        return 0;
}
