/* processor/run_failpoint.c - failpoints for the crash and fault tests (never set in
 * production).
 *
 * FLUSHOUT_FAILPOINT=after-commit:N or catch-up:N makes the process die as kill -9
 * would (_exit, nothing flushed) at the N-th such moment: right after a step's store
 * commit and before its records are produced, or after the N-th change record applied
 * while catching up. catch-up-slow:MS makes each change record applied take MS;
 * step-output-bytes:N lowers STEP_MAX_OUTPUT_BYTES to N (a step of one record each);
 * revoke-wait:MS lowers how long a revoke waits for its partitions' records
 * (FLUSH_TIMEOUT_MS). The crash and fault tests use them to hit those windows on
 * purpose. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "run_int.h"

static failpoint_t failpoint_kind;
static failpoint_t slowed_site; /* the failpoint() site that sleeps, or NONE */
static atomic_long failpoint_countdown;
static size_t step_output_bytes; /* step-output-bytes:N, or 0 */
static long revoke_wait_ms;      /* revoke-wait:MS, or -1 */

void failpoint_init(void)
{
    const char *fp = getenv("FLUSHOUT_FAILPOINT");
    long n;
    failpoint_kind = slowed_site = FAILPOINT_NONE;
    step_output_bytes = 0;
    revoke_wait_ms = -1;
    if (!fp)
        return;
    if (sscanf(fp, "step-output-bytes:%ld", &n) == 1 && n > 0) {
        failpoint_kind = FAILPOINT_STEP_OUTPUT_BYTES;
        step_output_bytes = (size_t)n;
        LOG_WARN("failpoint %s armed: steps end after %ld bytes of outputs", fp, n);
        return;
    }
    if (sscanf(fp, "revoke-wait:%ld", &n) == 1 && n >= 0) {
        failpoint_kind = FAILPOINT_REVOKE_WAIT;
        revoke_wait_ms = n;
        LOG_WARN("failpoint %s armed: a revoke waits %ld ms for its records", fp, n);
        return;
    }
    if (sscanf(fp, "after-commit:%ld", &n) == 1)
        failpoint_kind = FAILPOINT_AFTER_COMMIT;
    else if (sscanf(fp, "catch-up-slow:%ld", &n) == 1) {
        failpoint_kind = FAILPOINT_CATCH_UP_SLOW;
        slowed_site = FAILPOINT_CATCH_UP;
    } else if (sscanf(fp, "assign-slow:%ld", &n) == 1)
        failpoint_kind = slowed_site = FAILPOINT_ASSIGN_SLOW;
    else if (sscanf(fp, "catch-up:%ld", &n) == 1)
        failpoint_kind = FAILPOINT_CATCH_UP;
    else
        return;
    atomic_store(&failpoint_countdown, n);
    LOG_WARN("failpoint %s armed: this process will %s on purpose", fp,
             slowed_site != FAILPOINT_NONE ? "slow down" : "die");
}

void failpoint(failpoint_t kind)
{
    if (kind == slowed_site) {
        usleep((useconds_t)atomic_load(&failpoint_countdown) * 1000);
        return;
    }
    if (failpoint_kind == kind && atomic_fetch_sub(&failpoint_countdown, 1) == 1) {
        LOG_WARN("failpoint reached: dying now");
        _exit(137);
    }
}

size_t failpoint_step_output_bytes(size_t normal)
{
    return step_output_bytes ? step_output_bytes : normal;
}

long failpoint_revoke_wait_ms(long normal)
{
    return revoke_wait_ms >= 0 ? revoke_wait_ms : normal;
}
