/* codec/hash.c - the per-process seeded hash of hash tables keyed by client bytes. */
#include "hash.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static uint64_t seed;

/* Runs before main() (and before any thread): the seed never changes afterwards, so
 * reading it needs no synchronisation. */
__attribute__((constructor)) static void seed_init(void)
{
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
        return;
    /* No entropy yet (early boot) or no getrandom(2): what a client cannot know
     * either, the clock, the pid and where the loader put us. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mix[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid(),
                       (uint64_t)(uintptr_t)&seed};
    seed = XXH3_64bits(mix, sizeof(mix));
}

uint32_t codec_hash(const void *key, size_t len)
{
    return (uint32_t)XXH3_64bits_withSeed(key, len, seed);
}
