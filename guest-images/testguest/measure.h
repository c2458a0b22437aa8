/*
 * Interrupt timing statistics: rate, and lateness = TSC at interrupt entry
 * minus the TSC at which the timer was due.
 */
#ifndef TESTGUEST_MEASURE_H
#define TESTGUEST_MEASURE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Exact sequence of due times first + k * num / den (TSC ticks), kept as
 * quotient + remainder so no period is ever rounded: a 1 ms period at an
 * odd TSC rate would otherwise drift by microseconds over a window.
 */
struct stepper {
    uint64_t next;
    uint64_t q, r, den, acc;
};

void stepper_init(struct stepper *s, uint64_t first, uint64_t num, uint64_t den);
static inline void stepper_advance(struct stepper *s)
{
    s->next += s->q;
    s->acc += s->r;
    if (s->acc >= s->den) {
        s->acc -= s->den;
        s->next++;
    }
}

enum late_mode {
    LATE_GIVEN, /* one-shot: the handler passes the deadline it programmed */
    LATE_GRID,  /* periodic, known phase: due at first + k * num / den */
    LATE_FIT,   /* periodic, phase set by the device (RTC): fitted afterwards */
};

struct tstat {
    const char *name;
    uint64_t nominal_mhz; /* programmed rate in milli-Hz */
    enum late_mode mode;
    uint64_t grid_first, grid_num, grid_den;
    uint32_t nsamples;
    /* Filled in by tstat_report. */
    uint32_t count, skipped, stale;
};

/* One test at a time uses the sample buffers. */
void tstat_begin(struct tstat *t, const char *name, uint64_t nominal_mhz, enum late_mode mode);
void tstat_set_grid(struct tstat *t, uint64_t first, uint64_t num, uint64_t den);
/* Records an interrupt (LATE_GRID, LATE_FIT): a few instructions, the analysis waits for the report. */
void tstat_hit(struct tstat *t, uint64_t tsc);
/* Records an interrupt and its lateness against the deadline the handler programmed (LATE_GIVEN). */
void tstat_hit_at(struct tstat *t, uint64_t tsc, uint64_t deadline);
/*
 * For one-shot handlers, which must decide at once whether to re-arm:
 * true (and counted) for a first interrupt arriving more than half a period
 * before the first deadline. It can only be left over from before the test.
 */
bool tstat_stale(struct tstat *t, uint64_t tsc, uint64_t due, uint64_t period);

/* Of the times est + k * period (any integer k), the one nearest to `near`. */
uint64_t nearest_phase(uint64_t est, uint64_t period, uint64_t near);

struct tolerance {
    uint32_t rate_low_permille;  /* delivered rate >= nominal * this / 1000 */
    uint32_t rate_high_permille; /* delivered rate <= nominal * this / 1000 */
    uint32_t gap_permille;       /* median gap within nominal period * (1000 +- this) / 1000 */
    int64_t p50_max_us;          /* median lateness at most this */
    int64_t p50_min_us;          /* and at least this (negative: early) */
    uint32_t min_count;
};

/*
 * Prints "timer NAME hz=.. late_p50_us=.. late_p99_us=.. count=.." (hz is
 * the delivered rate) and returns whether the run is within tol.
 */
bool tstat_report(struct tstat *t, const struct tolerance *tol);

#endif
