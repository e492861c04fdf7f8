/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "describe.h"
#include "strbuf.h"
#include "text.h"

int stf_describe_header(const struct stf_model *m, const struct stf_tree *t, char **out,
                        size_t *len)
{
        struct stf_strbuf sb = {0};
        char *path;
        size_t pcap = 4096;

        path = malloc(pcap);
        if (!path)
                return -ENOMEM;
        stf_strbuf_puts(&sb, "{\"shards\": [");
        for (uint32_t i = 0; i < m->nshards; i++) {
                const struct stf_shard *s = &m->shards[i];
                const char *comp = "";

                for (uint32_t c = 0; c < m->ncomps; c++)
                        if (i >= m->comps[c].first_shard &&
                            i < m->comps[c].first_shard + m->comps[c].nshards)
                                comp = m->comps[c].name;
                stf_strbuf_puts(&sb, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
                stf_strbuf_json_str(&sb, s->name, strlen(s->name));
                stf_strbuf_puts(&sb, ", \"component\": ");
                stf_strbuf_json_str(&sb, comp, strlen(comp));
                stf_strbuf_printf(&sb, ", \"size\": %" PRIu64 ", \"header_size\": %" PRIu64 "}",
                                  s->size, s->hdr->data_start - 8);
        }
        stf_strbuf_puts(&sb, "\n ],\n \"tensors\": [");
        for (size_t i = 0; i < m->ntensors; i++) {
                const struct stf_tensor *x = &m->tensors[i];
                const char *comp = m->comps[x->comp].name;
                int plen;

                while ((plen = stf_tree_path(t, stf_tree_tensor_ino(t, i), path, pcap)) ==
                       -ERANGE) {
                        char *np = realloc(path, pcap * 2);

                        if (!np) {
                                free(path);
                                stf_strbuf_reset(&sb);
                                return -ENOMEM;
                        }
                        path = np;
                        pcap *= 2;
                }
                stf_strbuf_puts(&sb, i ? ",\n  {\"name\": " : "\n  {\"name\": ");
                stf_strbuf_json_str(&sb, x->name, x->name_len);
                stf_strbuf_puts(&sb, ", \"path\": ");
                stf_strbuf_json_str(&sb, path, plen > 0 ? (size_t)plen : 0);
                stf_strbuf_puts(&sb, ", \"component\": ");
                stf_strbuf_json_str(&sb, comp, strlen(comp));
                stf_strbuf_printf(
                    &sb, ", \"dtype\": \"%s\", \"shape\": ", stf_dtype_info(x->dtype)->name);
                stf_shape_append(&sb, x->shape, x->rank, false);
                stf_strbuf_puts(&sb, ", \"shard\": ");
                stf_strbuf_json_str(&sb, m->shards[x->shard].name,
                                    strlen(m->shards[x->shard].name));
                stf_strbuf_printf(&sb, ", \"offset\": %" PRIu64 ", \"size\": %" PRIu64 "}",
                                  x->begin, x->size);
        }
        stf_strbuf_puts(&sb, "\n ]\n}\n");
        free(path);
        return stf_strbuf_finish(&sb, out, len);
}

static json_t *component_meta(const struct stf_model *m, const struct stf_component *c)
{
        json_t *o = json_object(), *meta = json_object();

        if (!o || !meta || json_object_set_new(o, "__metadata__", meta)) {
                json_decref(o);
                return NULL;
        }
        for (uint32_t s = c->first_shard; s < c->first_shard + c->nshards; s++) {
                const char *key;
                json_t *v;

                json_object_foreach(m->shards[s].hdr->metadata, key, v)
                {
                        if (!json_object_get(meta, key) && json_object_set(meta, key, v)) {
                                json_decref(o);
                                return NULL;
                        }
                }
        }
        if (c->index_meta && json_object_set(o, "index_metadata", c->index_meta)) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int stf_describe_metadata(const struct stf_model *m, char **out, size_t *len)
{
        json_t *doc = NULL, *comps;
        char *text;
        int ret;

        if (m->ncomps == 1) {
                doc = component_meta(m, &m->comps[0]);
        } else {
                doc = json_object();
                comps = json_object();
                if (!doc || !comps || json_object_set_new(doc, "components", comps))
                        goto fail;
                for (uint32_t i = 0; i < m->ncomps; i++) {
                        json_t *c = component_meta(m, &m->comps[i]);

                        if (!c || json_object_set_new(comps, m->comps[i].name, c))
                                goto fail;
                }
        }
        if (!doc)
                return -ENOMEM;
        text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        json_decref(doc);
        if (!text)
                return -ENOMEM;
        /* Metadata is the file's text: C1 and bidi controls as \u escapes. */
        ret = stf_text_json_inert(text, strlen(text), out, len);
        free(text);
        return ret;
fail:
        json_decref(doc);
        return -ENOMEM;
}
