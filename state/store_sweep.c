/* state/store_sweep.c - the sweep's marks: models changed since their last snapshot
 * record (written with a flush or change record, listed for the sweep, cleared once
 * Kafka confirms the record). */
#include <string.h>

#include "store_int.h"

int state_store_changed_models(state_store_t *s, const char *after, size_t after_len,
                               size_t max,
                               int (*visit)(void *opaque, const char *model,
                                            size_t model_len),
                               void *opaque, char *errstr, size_t errstr_size)
{
    store_key_t prefix, from;
    store_key_start(&prefix, s, STATE_ITEM_CHANGED);
    store_key_start(&from, s, STATE_ITEM_CHANGED);
    if (after)
        store_key_add(&from, after, after_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek(it, from.p, from.len);
    size_t seen = 0;
    for (; rocksdb_iter_valid(it) && seen < max; rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (after && klen == from.len && !memcmp(k, from.p, from.len))
            continue; /* the one visited last */
        seen++;
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0 ||
            visit(opaque, k + prefix.len, klen - prefix.len))
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    store_key_free(&prefix);
    store_key_free(&from);
    if (err) {
        snprintf(errstr, errstr_size, "reading the changed models: %s", err);
        rocksdb_free(err);
        return -1;
    }
    return 0;
}

void state_store_snapshot_sent(state_store_t *s, const char *model, size_t model_len)
{
    state_model_t *m = store_model_cached(s, model, model_len);
    if (m) { /* its next flush writes the mark again, and so says it changed */
        m->changed_marked = false;
        m->snapshot_sent = true;
    }
}

void state_store_snapshot_published(state_store_t *s, const char *model, size_t model_len)
{
    /* Only a model known unchanged since its record was sent: still cached (a reload
     * forgets), and not flushed since (any flush, even one whose commands all failed,
     * rewrites a client record the snapshot record lacks). */
    state_model_t *m = store_model_cached(s, model, model_len);
    if (!m || !m->snapshot_sent || m->changed_marked)
        return;
    m->snapshot_sent = false;
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_CHANGED);
    store_key_add(&k, model, model_len);
    store_batch_write(s, k.p, k.len, NULL, 0);
    store_key_free(&k);
}
