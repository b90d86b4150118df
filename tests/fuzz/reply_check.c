/* tests/fuzz/reply_check.c - the property every fuzz target checks of every reply:
 * it is msgpack this project can read back, a map with a string "type". */
#include "reply_check.h"

#include <stdio.h>
#include <stdlib.h>

#include "codec/msgpack.h"

void fuzz_check_reply(const processor_output_t *out)
{
    codec_value_t *v = NULL;
    char errstr[512];
    codec_err_t err =
        codec_msgpack_decode(out->reply.data, out->reply.size, &codec_limits_trusted, &v,
                             errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "fuzz: reply (%zu bytes) is not valid msgpack: %s: %s\n",
                out->reply.size, codec_err_name(err), errstr);
        abort();
    }
    const codec_value_t *type =
        v->type == CODEC_VALUE_MAP ? codec_map_get(v, "type", 4) : NULL;
    if (!type || type->type != CODEC_VALUE_STR) {
        fprintf(stderr, "fuzz: reply is not a map with a string \"type\"\n");
        abort();
    }
    codec_value_destroy(v);
}
