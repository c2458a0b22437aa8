/*
 * test=timers: every timer a PC guest has, driven the way Linux drives it,
 * one at a time for a short window each, reporting rate and lateness.
 *
 * Lateness is measured against due times derived from the device itself:
 * right after programming a periodic timer we read its counter (PIT count,
 * HPET main counter, LAPIC current count) in a narrow TSC bracket, which
 * fixes when it really started, so a host preemption around the
 * programming write does not shift every due time. The RTC's periodic edges
 * follow the chip's own divider chain instead, so for it the phase is fitted
 * afterwards (see measure.c).
 */
#include "acpi.h"
#include "apic.h"
#include "cmdline.h"
#include "hpet.h"
#include "io.h"
#include "ioapic.h"
#include "irq.h"
#include "lib.h"
#include "measure.h"
#include "pit.h"
#include "platform.h"
#include "progress.h"
#include "rtc.h"
#include "scenarios.h"
#include "tsc.h"
#include "wait.h"

#define BACKUP_LATCH 23864  /* PIT at ~50 Hz: wakes the waiter while the LAPIC timer is under test */

/*
 * The tick of the PIT, HPET and LAPIC tests: tick_us=N, default 1000 (1 ms,
 * Linux's HZ=1000 tick). Every check below is relative to it, so a host that
 * wakes timers late (software emulation) asks for a longer tick and the same
 * checks still hold; the strict figure is the 1 ms default.
 */
static uint32_t tick_us;
static uint32_t pit_latch; /* PIT input clocks per tick */
static uint32_t rtc_rate;  /* RTC register A rate: 32768 >> (rate - 1) Hz, the one nearest the tick */

/*
 * Tolerances. An emulated guest on a shared host loses whole periods when
 * the host deschedules the VMM for milliseconds (measured on these hosts:
 * timer latency up to 3.5 ms, and far worse while other jobs build), and
 * every interrupt pays for the emulated instructions in front of its TSC
 * read. So the checks separate the timer from the host:
 *  - the median gap between interrupts is the timer's own period, immune to
 *    lost interrupts: it must be within 3% of the programmed period (the
 *    lab measured 996..1010 permille, once 1021 in a loaded CI run);
 *  - the delivered rate may fall well short (lost interrupts) but never
 *    exceed the programmed rate by more than 2%;
 *  - the median lateness must stay under one period; the small negative
 *    margin covers the error of anchoring due times through an emulated
 *    register read.
 */
static struct tolerance tol = {
    .rate_low_permille = 500,
    .rate_high_permille = 1020,
    .gap_permille = 30,
    .p50_max_us = 1000, /* one tick: set with the tick */
    .p50_min_us = -100,
    .min_count = 20,
};

static struct tstat cur;
static uint32_t window_ms;
static uint32_t failed, missing;

/* One-shot state shared with the interrupt handlers. */
static struct stepper deadline;
static uint32_t hpet_timer, hpet_cmp, hpet_period;
static volatile uint32_t rearm_misses;

static void report_missing(const char *name, const char *why)
{
    kprintf("timer %s missing\n", name);
    kprintf("testguest: timer %s: %s\n", name, why);
    missing++;
}

static void wait_window(uint64_t start, enum wake how)
{
    wait_until(0, 0, start + us_to_tsc((uint64_t)window_ms * 1000), how);
}

/* Ends a window: the source is already stopped and its vector handed to late_irq. */
static void end_window(struct tstat *t)
{
    irq_drain_pending();
    if (!tstat_report(t, &tol))
        failed++;
}

static uint64_t pit_to_tsc(uint64_t ticks) { return ticks * tsc_hz() / PIT_HZ; }

/* HPET ticks (signed) to TSC ticks, through nanoseconds to stay within 64 bits. */
static int64_t hpet_to_tsc(int64_t ticks)
{
    int64_t ns = ticks * (int64_t)hpet_period_fs() / 1000000;
    return ns * (int64_t)(tsc_hz() / 1000) / 1000000;
}

/* ---- PIT channel 0, mode 2 -------------------------------------------- */

static void pit_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    tstat_hit(&cur, tsc);
    lapic_eoi();
}

static void test_pit(void)
{
    if (!plat.have_pit || !plat.have_ioapic) {
        report_missing("pit", plat.have_pit ? "no IOAPIC to route IRQ0" : "no PIT answers at 0x40-0x43");
        return;
    }
    uint32_t gsi = acpi_isa_gsi(PIT_ISA_IRQ);
    uint8_t vec = (uint8_t)(VEC_IOAPIC_BASE + gsi);
    irq_set_handler(vec, pit_irq);
    tstat_begin(&cur, "pit", (uint64_t)PIT_HZ * 1000 / pit_latch, LATE_GRID);
    /*
     * Every test unmasks its pin before starting the timer: an edge that
     * reaches a masked IOAPIC pin is lost (for a one-shot, for good).
     * Interrupts stay off in the CPU until the wait, so nothing is taken
     * before the due times below are set.
     */
    ioapic_route_isa(PIT_ISA_IRQ, plat.bsp_apic_id, &gsi);
    uint64_t a = rdtsc();
    pit_start_periodic(pit_latch);
    uint64_t b = rdtsc();
    /*
     * Mode 2 raises OUT every pit_latch input clocks counted from the load;
     * the count read back says how far into the first period we are.
     */
    uint32_t count;
    uint64_t ts = tsc_bracket(pit_read_count, &count);
    uint64_t into = count <= pit_latch ? (pit_latch - count) % pit_latch : 0;
    uint64_t load = nearest_phase(ts - pit_to_tsc(into), pit_to_tsc(pit_latch), a + (b - a) / 2);
    tstat_set_grid(&cur, load + pit_to_tsc(pit_latch), (uint64_t)pit_latch * tsc_hz(), PIT_HZ);
    wait_window(a, WAKE_WATCHDOG);
    ioapic_mask(gsi);
    pit_stop();
    irq_set_handler(vec, late_irq);
    end_window(&cur);
}

/* ---- RTC periodic interrupt ------------------------------------------- */

static void rtc_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    /* Register C must be read or the RTC raises no further interrupt. */
    if (rtc_ack() & 0x40)
        tstat_hit(&cur, tsc);
    lapic_eoi();
}

static void test_rtc(void)
{
    if (!plat.have_rtc || !plat.have_ioapic) {
        report_missing("rtc", plat.have_rtc ? "no IOAPIC to route IRQ8" : "no RTC answers at 0x70/0x71");
        return;
    }
    uint32_t gsi = acpi_isa_gsi(RTC_ISA_IRQ);
    uint8_t vec = (uint8_t)(VEC_IOAPIC_BASE + gsi);
    irq_set_handler(vec, rtc_irq);
    tstat_begin(&cur, "rtc", (32768u >> (rtc_rate - 1)) * 1000ull, LATE_FIT);
    ioapic_route_isa(RTC_ISA_IRQ, plat.bsp_apic_id, &gsi);
    uint64_t start = rdtsc();
    rtc_periodic_start(rtc_rate);
    wait_window(start, WAKE_WATCHDOG);
    rtc_periodic_stop();
    ioapic_mask(gsi);
    irq_set_handler(vec, late_irq);
    end_window(&cur);
}

/* ---- HPET comparators --------------------------------------------------- */

static void hpet_periodic_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    tstat_hit(&cur, tsc);
    lapic_eoi();
}

static void hpet_oneshot_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    /*
     * The first interrupt may be left over from before the test. The
     * counter, not the TSC, says whether our comparator has matched yet.
     */
    if (!cur.nsamples && (int32_t)(hpet_counter() - hpet_cmp) < 0) {
        cur.stale++;
        lapic_eoi();
        return;
    }
    tstat_hit_at(&cur, tsc, deadline.next);
    /*
     * Next deadline one period after the last one (not after now), as the
     * tick code does in one-shot mode; if that is already behind the
     * counter, skip whole periods, as Linux retries after -ETIME.
     */
    do {
        hpet_cmp += hpet_period;
        stepper_advance(&deadline);
        rearm_misses++;
    } while (!hpet_arm_oneshot(hpet_timer, hpet_cmp));
    rearm_misses--;
    lapic_eoi();
}

static void test_hpet(uint32_t n, bool periodic)
{
    static char names[2][3][16];
    char *name = names[periodic][n];
    memcpy(name, periodic ? "hpetN-periodic" : "hpetN-oneshot", periodic ? 15 : 14);
    name[4] = (char)('0' + n);
    if (!plat.have_hpet || !plat.have_ioapic) {
        report_missing(name, plat.have_hpet ? "no IOAPIC" : "no ACPI HPET table or no HPET at its address");
        return;
    }
    if (n >= hpet_num_timers()) {
        report_missing(name, "the HPET has fewer comparators");
        return;
    }
    if (periodic && !hpet_periodic_capable(n)) {
        report_missing(name, "comparator is not periodic-capable");
        return;
    }
    int gsi = hpet_pick_gsi(n, 0);
    if (gsi < 0 || gsi >= 48) {
        report_missing(name, "no usable IOAPIC pin in the comparator's route capability");
        return;
    }
    uint8_t vec = (uint8_t)(VEC_IOAPIC_BASE + gsi);
    uint32_t period = (uint32_t)(hpet_hz() * tick_us / 1000000);
    /*
     * Period in picoseconds, and in TSC ticks as num / den with den = 1e9
     * and the TSC in kHz: num stays within 64 bits up to the 50 ms tick.
     */
    uint64_t period_ps = (uint64_t)period * hpet_period_fs() / 1000;
    uint64_t period_tsc_num = period_ps * (tsc_hz() / 1000);
    tstat_begin(&cur, name, 1000000000000000ull / period_ps, periodic ? LATE_GRID : LATE_GIVEN);
    ioapic_route((uint32_t)gsi, vec, plat.bsp_apic_id, false, false);
    uint64_t start = rdtsc();
    uint32_t now;
    if (periodic) {
        irq_set_handler(vec, hpet_periodic_irq);
        uint32_t first = hpet_start_periodic(n, (uint32_t)gsi, period);
        uint64_t ts = tsc_bracket(hpet_counter, &now);
        tstat_set_grid(&cur, ts + (uint64_t)hpet_to_tsc((int32_t)(first - now)), period_tsc_num, 1000000000ull);
    } else {
        irq_set_handler(vec, hpet_oneshot_irq);
        hpet_timer = n;
        hpet_period = period;
        rearm_misses = 0;
        hpet_config_oneshot(n, (uint32_t)gsi);
        uint64_t ts = tsc_bracket(hpet_counter, &now);
        stepper_init(&deadline, ts, period_tsc_num, 1000000000ull);
        hpet_cmp = now;
        do {
            hpet_cmp += period;
            stepper_advance(&deadline);
        } while (!hpet_arm_oneshot(n, hpet_cmp));
    }
    wait_window(start, WAKE_WATCHDOG);
    hpet_stop(n);
    ioapic_mask((uint32_t)gsi);
    irq_set_handler(vec, late_irq);
    if (!periodic && rearm_misses)
        kprintf("testguest: timer %s: %u deadlines had passed when re-armed\n", name, rearm_misses);
    end_window(&cur);
}

/* ---- LAPIC timer -------------------------------------------------------- */

static void backup_tick(unsigned v, uint64_t tsc)
{
    (void)v;
    (void)tsc;
    lapic_eoi();
}

/*
 * While the LAPIC timer is under test it cannot also be the watchdog that
 * bounds our HLT, so the PIT ticks slowly in the background instead. Without
 * a PIT, the timer under test is the only thing that wakes us.
 */
static uint32_t backup_start(void)
{
    uint32_t gsi = 0xffffffffu;
    if (!plat.have_pit || !plat.have_ioapic)
        return gsi;
    gsi = acpi_isa_gsi(PIT_ISA_IRQ);
    irq_set_handler(VEC_IOAPIC_BASE + gsi, backup_tick);
    pit_start_periodic(BACKUP_LATCH);
    ioapic_route_isa(PIT_ISA_IRQ, plat.bsp_apic_id, &gsi);
    return gsi;
}

static void backup_stop(uint32_t gsi)
{
    if (gsi == 0xffffffffu)
        return;
    ioapic_mask(gsi);
    pit_stop();
    irq_set_handler(VEC_IOAPIC_BASE + gsi, late_irq);
}

static void lapic_periodic_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    tstat_hit(&cur, tsc);
    lapic_eoi();
}

static void lapic_oneshot_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    if (tstat_stale(&cur, tsc, deadline.next, deadline.q)) {
        lapic_eoi();
        return;
    }
    tstat_hit_at(&cur, tsc, deadline.next);
    stepper_advance(&deadline);
    uint64_t now = rdtsc();
    while (deadline.next <= now + us_to_tsc(5)) {
        stepper_advance(&deadline);
        rearm_misses++;
    }
    uint64_t ticks = tsc_to_lapic_ticks(deadline.next - now);
    lapic_timer_set_initial_count(ticks ? (uint32_t)ticks : 1);
    lapic_eoi();
}

static void lapic_deadline_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    if (tstat_stale(&cur, tsc, deadline.next, deadline.q)) {
        lapic_eoi();
        return;
    }
    tstat_hit_at(&cur, tsc, deadline.next);
    stepper_advance(&deadline);
    uint64_t now = rdtsc();
    while (deadline.next <= now) {
        stepper_advance(&deadline);
        rearm_misses++;
    }
    lapic_timer_set_deadline(deadline.next);
    lapic_eoi();
}

enum lapic_mode { LAPIC_PERIODIC, LAPIC_ONESHOT, LAPIC_TSC_DEADLINE };

static void test_lapic(enum lapic_mode mode)
{
    static const char *const names[] = {"lapic-periodic", "lapic-oneshot", "lapic-tscdeadline"};
    const char *name = names[mode];
    if (mode == LAPIC_TSC_DEADLINE && !plat.have_tsc_deadline) {
        report_missing(name, "CPUID.1:ECX.TSC_Deadline is clear");
        return;
    }
    if (mode != LAPIC_TSC_DEADLINE && !plat.have_lapic_timer) {
        report_missing(name, "could not calibrate the LAPIC timer");
        return;
    }
    uint32_t backup = backup_start();
    tstat_begin(&cur, name, 1000000000ull / tick_us, mode == LAPIC_PERIODIC ? LATE_GRID : LATE_GIVEN);
    rearm_misses = 0;
    uint64_t start = rdtsc();
    if (mode == LAPIC_PERIODIC) {
        uint32_t count = (uint32_t)(lapic_timer_hz() * tick_us / 1000000);
        uint64_t period_tsc = (uint64_t)count * tsc_hz() / lapic_timer_hz();
        irq_set_handler(VEC_LAPIC_TIMER, lapic_periodic_irq);
        lapic_timer_periodic(VEC_LAPIC_TIMER, count);
        uint64_t b = rdtsc();
        /* The current count says how far into its period the timer is. */
        uint32_t ccr;
        uint64_t ts = tsc_bracket(lapic_timer_current_count, &ccr);
        uint64_t into = ccr <= count ? (uint64_t)(count - ccr) * tsc_hz() / lapic_timer_hz() : 0;
        uint64_t load = nearest_phase(ts - into, period_tsc, start + (b - start) / 2);
        tstat_set_grid(&cur, load + period_tsc, (uint64_t)count * tsc_hz(), lapic_timer_hz());
    } else {
        irq_set_handler(VEC_LAPIC_TIMER, mode == LAPIC_ONESHOT ? lapic_oneshot_irq : lapic_deadline_irq);
        stepper_init(&deadline, start, tsc_hz() * tick_us, 1000000);
        stepper_advance(&deadline);
        if (mode == LAPIC_ONESHOT) {
            lapic_timer_oneshot(VEC_LAPIC_TIMER, (uint32_t)tsc_to_lapic_ticks(deadline.next - rdtsc()));
        } else {
            lapic_timer_tsc_deadline_mode(VEC_LAPIC_TIMER);
            lapic_timer_set_deadline(deadline.next);
        }
    }
    wait_window(start, WAKE_EXTERNAL);
    lapic_timer_stop();
    irq_set_handler(VEC_LAPIC_TIMER, late_irq);
    backup_stop(backup);
    if (rearm_misses)
        kprintf("testguest: timer %s: %u deadlines had passed when re-armed\n", name, rearm_misses);
    end_window(&cur);
}

uint32_t scenario_timers(void)
{
    if (!platform_init("timers"))
        return EXIT_FAIL;
    /* 50 ms is the longest tick the PIT's 16-bit count can make. */
    tick_us = guest_tick_us("timers", 50000);
    tol.p50_max_us = tick_us;
    pit_latch = (uint32_t)(((uint64_t)PIT_HZ * tick_us + 500000) / 1000000);
    rtc_rate = 6; /* 1024 Hz, for the 1 ms tick; one step slower per doubling of the tick */
    for (uint32_t t = 1000; t * 3 / 2 < tick_us && rtc_rate < 15; t *= 2)
        rtc_rate++;
    /* Long enough for 100 ticks. The sample buffers hold 8192 interrupts: 8 s at 1 kHz. */
    uint32_t default_ms = tick_us / 10 > 250 ? tick_us / 10 : 250;
    window_ms = (uint32_t)cmdline_u64("ms", default_ms);
    if (window_ms < 10 || window_ms > 8000)
        fail(EXIT_USAGE, "testguest: timers: ms=%u out of range 10..8000\n", window_ms);
    bool allow_missing = cmdline_flag("allow_missing");
    kprintf("testguest: timers: %u ms per timer, tick %u us\n", window_ms, tick_us);

    test_pit();
    test_rtc();
    for (uint32_t n = 0; n < 3; n++) {
        test_hpet(n, true);
        test_hpet(n, false);
    }
    test_lapic(LAPIC_PERIODIC);
    test_lapic(LAPIC_ONESHOT);
    test_lapic(LAPIC_TSC_DEADLINE);

    if (late_irqs)
        kprintf("testguest: timers: %u interrupts arrived after their window closed\n", late_irqs);
    if (spurious_count)
        kprintf("testguest: timers: %u spurious interrupts\n", spurious_count);
    if (failed || (missing && !allow_missing)) {
        kprintf("testguest: timers FAILED failed=%u missing=%u%s\n", failed, missing,
                missing && !allow_missing ? " (allow_missing=1 tolerates missing timers)" : "");
        return EXIT_FAIL;
    }
    kprintf("testguest: timers ok missing=%u\n", missing);
    return EXIT_OK;
}
