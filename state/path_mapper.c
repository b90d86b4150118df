/* state/path_mapper.c - Flushout's PathMapper: paths renamed by ID collisions. */
#include "path_mapper.h"

#include <stdlib.h>

#include "codec/alloc.h"
#include "codec/request.h"

void state_path_mapper_init(state_path_mapper_t *pm)
{
    pm->mappings = codec_value_map(0);
}

void state_path_mapper_clear(state_path_mapper_t *pm)
{
    codec_value_destroy(pm->mappings);
    pm->mappings = NULL;
}

codec_value_t *state_path_mapper_get(state_path_mapper_t *pm, const codec_value_t *path)
{
    uint32_t n = path ? path->u.array.len : 0;
    if (pm->mappings->u.map.count == 0 || n == 0)
        return NULL;

    char *joined;
    size_t len = codec_path_join(path, n, &joined);
    codec_value_t *mapped = NULL;
    /* Prefixes from the longest down: the prefix of k elements ends before the
     * k-th separator of the joined string. */
    size_t prefix_len = len;
    for (uint32_t k = n; k > 0; k--) {
        const codec_value_t *section = codec_map_get(pm->mappings, joined, prefix_len);
        if (section) {
            mapped = codec_value_copy(section);
            for (uint32_t i = k; i < n; i++)
                codec_array_push(mapped, codec_value_copy(path->u.array.items[i]));
            codec_map_set(pm->mappings, joined, len, codec_value_copy(mapped));
            break;
        }
        if (k > 1)
            prefix_len -= path->u.array.items[k - 1]->u.str.len + 1;
    }
    free(joined);
    return mapped;
}

void state_path_mapper_put(state_path_mapper_t *pm, const codec_value_t *path,
                           codec_value_t *mapped_path)
{
    char *joined;
    size_t len = codec_path_join(path, path->u.array.len, &joined);
    codec_map_set(pm->mappings, joined, len, mapped_path);
    free(joined);
}
