/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "setname.h"
#include "text.h"

#define ST ".safetensors"
#define IDX ".safetensors.index."
#define JSON ".json"

static bool conventional(const char *file, size_t len)
{
        return (len == 5 && !memcmp(file, "model", 5)) ||
               (len == 23 && !memcmp(file, "diffusion_pytorch_model", 23));
}

static const char *last_of(const char *s, size_t len, const char *needle)
{
        const char *found = NULL, *p = s;

        while ((p = strstr(p, needle)) && p < s + len) {
                found = p;
                p++;
        }
        return found;
}

bool stf_setname_parse(const char *file, struct stf_setname *out)
{
        size_t len = strlen(file);
        const char *p, *dot;

        *out = (struct stf_setname){.file = file};
        if (stf_ends_with(file, len, IDX "json")) {
                out->is_index = true;
                out->base_len = len - strlen(IDX "json");
                return out->base_len > 0;
        }
        if (stf_ends_with(file, len, JSON) && (p = last_of(file, len, IDX)) && p > file) {
                const char *v = p + strlen(IDX), *end = file + len - strlen(JSON);

                if (end <= v || memchr(v, '.', (size_t)(end - v)))
                        return false;
                out->is_index = true;
                out->base_len = (size_t)(p - file);
                out->variant = v;
                out->variant_len = (size_t)(end - v);
                return true;
        }
        if (!stf_ends_with(file, len, ST) || len == strlen(ST))
                return false;
        len -= strlen(ST);
        dot = memrchr(file, '.', len);
        out->base_len = len;
        if (dot && dot > file && dot + 1 < file + len) {
                out->base_len = (size_t)(dot - file);
                out->variant = dot + 1;
                out->variant_len = (size_t)(file + len - dot - 1);
        }
        return true;
}

char *stf_setname_whole(const char *file)
{
        struct stf_setname s;
        char *out;

        if (!stf_setname_parse(file, &s))
                return NULL;
        if (!s.is_index)
                return strdup(file);
        if (asprintf(&out, "%.*s%s%.*s" ST, (int)s.base_len, file, s.variant ? "." : "",
                     (int)s.variant_len, s.variant ? s.variant : "") < 0)
                return NULL;
        return out;
}

static bool is_variant(const struct stf_setname *s, const char *variant)
{
        return s->variant && strlen(variant) == s->variant_len &&
               !memcmp(s->variant, variant, s->variant_len);
}

void stf_setname_choose(const struct stf_setname *names, size_t n, const char *variant, bool all,
                        bool *keep, bool *found)
{
        bool plain = false, conv = false, var = false;

        for (size_t i = 0; i < n; i++) {
                var |= variant && is_variant(&names[i], variant);
                plain |= !names[i].variant;
                conv |= !names[i].variant && conventional(names[i].file, names[i].base_len);
        }
        if (var && found)
                *found = true;
        for (size_t i = 0; i < n; i++) {
                const struct stf_setname *s = &names[i];

                if (all)
                        keep[i] = true;
                else if (var)
                        keep[i] = is_variant(s, variant);
                else if (!plain)
                        keep[i] = true;
                else
                        keep[i] = !s->variant && (!conv || conventional(s->file, s->base_len));
        }
}
