#include "measure.h"

#include "io.h"
#include "lib.h"
#include "tsc.h"

#define MAX_SAMPLES 8192

/* Written before read, so never cleared: TSC of each interrupt, and its lateness. */
static uint64_t when[MAX_SAMPLES] __attribute__((section(".noinit")));
static int64_t late[MAX_SAMPLES] __attribute__((section(".noinit")));

void stepper_init(struct stepper *s, uint64_t first, uint64_t num, uint64_t den)
{
    s->next = first;
    s->q = num / den;
    s->r = num % den;
    s->den = den;
    s->acc = 0;
}

uint64_t nearest_phase(uint64_t est, uint64_t period, uint64_t near)
{
    if (!period)
        return est;
    while (est > near + period / 2)
        est -= period;
    while (est + period / 2 < near)
        est += period;
    return est;
}

void tstat_begin(struct tstat *t, const char *name, uint64_t nominal_mhz, enum late_mode mode)
{
    memset(t, 0, sizeof(*t));
    t->name = name;
    t->nominal_mhz = nominal_mhz;
    t->mode = mode;
}

void tstat_set_grid(struct tstat *t, uint64_t first, uint64_t num, uint64_t den)
{
    t->grid_first = first;
    t->grid_num = num;
    t->grid_den = den;
}

void tstat_hit(struct tstat *t, uint64_t tsc)
{
    if (t->nsamples < MAX_SAMPLES)
        when[t->nsamples++] = tsc;
}

void tstat_hit_at(struct tstat *t, uint64_t tsc, uint64_t deadline)
{
    if (t->nsamples < MAX_SAMPLES) {
        when[t->nsamples] = tsc;
        late[t->nsamples++] = (int64_t)(tsc - deadline);
    }
}

bool tstat_stale(struct tstat *t, uint64_t tsc, uint64_t due, uint64_t period)
{
    if (t->nsamples || tsc + period / 2 >= due)
        return false;
    t->stale++;
    return true;
}

/* Drops sample i (a stale interrupt) by moving the later ones down. */
static void drop(struct tstat *t, uint32_t i)
{
    for (uint32_t j = i + 1; j < t->nsamples; j++) {
        when[j - 1] = when[j];
        late[j - 1] = late[j];
    }
    t->nsamples--;
}

/*
 * Periodic with a known phase: interrupt i belongs to the slot
 * f = floor((t_i - first + E) / P), i.e. it may be up to E = P/4 early
 * (the anchoring error shows up as small negative lateness) and anything
 * later counts against that slot. But a late interrupt is often followed at
 * once by the next one, on time: the emulated device kept its schedule while
 * the host held the vCPU. So slots are assigned from the last interrupt
 * backwards, each one strictly before the next: the late one keeps its own
 * slot and its full lateness, instead of every later interrupt looking one
 * period early. Slots never used count as skipped periods.
 */
static void assign_grid(struct tstat *t)
{
    uint64_t num = t->grid_num, den = t->grid_den, early = num / den / 4;
    int64_t next_slot = INT64_MAX;
    for (uint32_t i = t->nsamples; i-- > 0;) {
        int64_t slot = -1;
        if (when[i] + early >= t->grid_first)
            slot = (int64_t)muldiv64(when[i] + early - t->grid_first, den, num);
        if (slot >= next_slot)
            slot = next_slot - 1;
        if (slot < 0) { /* before the first due time: left over from before the test */
            t->stale++;
            drop(t, i);
            continue;
        }
        late[i] = (int64_t)(when[i] - t->grid_first - muldiv64((uint64_t)slot, num, den));
        if (next_slot != INT64_MAX)
            t->skipped += (uint32_t)(next_slot - slot - 1);
        next_slot = slot;
    }
}

/*
 * RTC: edges are due at phase + k * P for a phase we never set. Each edge's
 * residue modulo P lies on a circle; most edges are on time and bunch up,
 * late ones trail behind the bunch. The bunch is the fullest bin of a
 * 64-bin histogram of residues plus the occupied bins right before it; its
 * earliest edge is taken as on time, so lateness is relative to the best
 * case the source showed. (Taking the smallest residue fails when an edge
 * is more than half a period late: its residue wraps around to look early.)
 */
#define PHASE_BINS 64

static void fit_phase(struct tstat *t)
{
    if (!t->nsamples || !t->nominal_mhz)
        return;
    uint64_t num = tsc_hz() * 1000, den = t->nominal_mhz; /* P = num / den TSC ticks */
    uint32_t bins[PHASE_BINS] = {0};
    uint64_t t0 = when[0];
    for (uint32_t i = 0; i < t->nsamples; i++) {
        /* Residue in units of 1/den TSC ticks keeps it exact: (rel * den) mod num. */
        uint64_t res = (when[i] - t0) * den % num;
        late[i] = (int64_t)res;
        bins[muldiv64(res, PHASE_BINS, num)]++;
    }
    uint32_t mode = 0;
    for (uint32_t b = 1; b < PHASE_BINS; b++)
        if (bins[b] > bins[mode])
            mode = b;
    uint32_t first = mode, width = 1;
    while (width < PHASE_BINS && bins[(first + PHASE_BINS - 1) % PHASE_BINS]) {
        first = (first + PHASE_BINS - 1) % PHASE_BINS;
        width++;
    }
    /* Earliest residue in the bins first..mode, measured around the circle from bin `first`. */
    uint64_t origin = muldiv64(first, num, PHASE_BINS), best = ~0ull;
    for (uint32_t i = 0; i < t->nsamples; i++) {
        uint64_t res = (uint64_t)late[i];
        uint32_t b = (uint32_t)muldiv64(res, PHASE_BINS, num);
        if ((b + PHASE_BINS - first) % PHASE_BINS >= width)
            continue;
        uint64_t off = res >= origin ? res - origin : res + num - origin;
        if (off < best)
            best = off;
    }
    uint64_t phase = (origin + best) % num;
    for (uint32_t i = 0; i < t->nsamples; i++) {
        uint64_t res = (uint64_t)late[i];
        uint64_t l = res >= phase ? res - phase : res + num - phase;
        late[i] = (int64_t)(l / den);
    }
}

/* k-th smallest (0-based) by quickselect: O(n), and n is a few hundred. Reorders the array. */
static int64_t select_kth(int64_t *a, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t pivot = a[lo + (hi - lo) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                int64_t tmp = a[i];
                a[i++] = a[j];
                a[j--] = tmp;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

bool tstat_report(struct tstat *t, const struct tolerance *tol)
{
    if (t->mode == LATE_GRID)
        assign_grid(t);
    else if (t->mode == LATE_FIT)
        fit_phase(t);
    int32_t n = (int32_t)t->nsamples;
    t->count = t->nsamples;
    uint64_t hz_tenths = 0;
    if (n > 1 && when[n - 1] > when[0])
        hz_tenths = muldiv64((uint64_t)(n - 1), tsc_hz() * 10, when[n - 1] - when[0]);
    int64_t p50 = 0, p99 = 0, gap = 0;
    if (n) {
        p99 = tsc_to_us(select_kth(late, n, (int32_t)((int64_t)n * 99 / 100)));
        p50 = tsc_to_us(select_kth(late, n, n / 2));
    }
    if (n > 1) {
        /*
         * The median gap between interrupts is the timer's own period,
         * whatever the host did: lost interrupts make a few double gaps,
         * jitter spreads the rest evenly around the period.
         */
        for (int32_t i = 1; i < n; i++)
            late[i - 1] = (int64_t)(when[i] - when[i - 1]);
        gap = select_kth(late, n - 1, (n - 1) / 2);
    }
    uint64_t got = hz_tenths * 100, want = t->nominal_mhz; /* both in milli-Hz */
    /* gap / nominal period = gap * want / (tsc_hz * 1000), in permille. */
    uint64_t permille = n > 1 && want ? muldiv64((uint64_t)gap, want, tsc_hz()) : 0;
    kprintf("timer %s hz=%lu.%lu late_p50_us=%ld late_p99_us=%ld count=%u gap_permille=%lu\n", t->name,
            hz_tenths / 10, hz_tenths % 10, p50, p99, t->count, permille);

    bool ok = true;
    if (t->count < tol->min_count) {
        kprintf("testguest: timer %s: only %u interrupts (want >= %u)\n", t->name, t->count, tol->min_count);
        ok = false;
    }
    if (got * 1000 < want * tol->rate_low_permille || got * 1000 > want * tol->rate_high_permille) {
        kprintf("testguest: timer %s: delivered %lu.%lu Hz, outside %u..%u permille of %lu.%03lu Hz\n", t->name,
                hz_tenths / 10, hz_tenths % 10, tol->rate_low_permille, tol->rate_high_permille, want / 1000,
                want % 1000);
        ok = false;
    }
    if (n > 1 && want) {
        if (permille + tol->gap_permille < 1000 || permille > 1000 + tol->gap_permille) {
            kprintf("testguest: timer %s: median gap %ld us is %lu permille of the period (allowed 1000 +- %u)\n",
                    t->name, tsc_to_us(gap), permille, tol->gap_permille);
            ok = false;
        }
    }
    if (p50 > tol->p50_max_us || p50 < tol->p50_min_us) {
        kprintf("testguest: timer %s: median lateness %ld us outside %ld..%ld us\n", t->name, p50, tol->p50_min_us,
                tol->p50_max_us);
        ok = false;
    }
    if (t->stale)
        kprintf("testguest: timer %s: ignored %u interrupt(s) from before the start\n", t->name, t->stale);
    if (t->skipped)
        kprintf("testguest: timer %s: %u periods passed without an interrupt\n", t->name, t->skipped);
    return ok;
}
