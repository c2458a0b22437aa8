/*
 * test=retimer: the guest side of the re-arm race. Two timers run at once
 * and each one's interrupt handler re-programs the other (and the LAPIC
 * handler also re-arms itself), so guest writes keep landing at every phase
 * relative to the timer's own expiry, including the instant it fires. What
 * must hold: interrupts keep coming, never faster than programmed, never
 * stalling.
 *
 * Phases: PIT + LAPIC, then HPET comparator n + LAPIC for each comparator.
 * They cannot all run at once on a PC: the PIT and, on QEMU's i440FX, every
 * HPET comparator share IOAPIC pin 2. Without PIT and HPET (microvm) the
 * LAPIC timer runs alone and only re-arms itself.
 */
#include "acpi.h"
#include "apic.h"
#include "cmdline.h"
#include "hpet.h"
#include "io.h"
#include "ioapic.h"
#include "irq.h"
#include "lib.h"
#include "pit.h"
#include "platform.h"
#include "progress.h"
#include "rtc.h"
#include "scenarios.h"
#include "tsc.h"
#include "wait.h"

/*
 * LAPIC period one tick (tick_us=N, default 1000), the other timer 1.25
 * ticks: each restart of one comes less often than the other's period, so
 * both keep firing, and the incommensurate periods sweep the re-arm across
 * every phase. Every bound below is relative to the tick, so a host that
 * wakes timers late (software emulation) asks for a longer one.
 */
static uint32_t lapic_us, other_us;
static uint32_t pit_latch_other; /* 1491 for the 1 ms tick */
#define BACKUP_RTC_RATE 11 /* 32 Hz: bounds the HLT if both timers died */

struct rstat {
    uint32_t count, early;
    uint64_t first, last, max_gap, min_gap;
};

static struct rstat rl, rx;
static uint64_t lapic_period_tsc, other_period_tsc;
static uint32_t lapic_count;
static uint32_t lapic_n;
enum partner { PARTNER_PIT, PARTNER_HPET, PARTNER_NONE };
static enum partner partner;
static uint32_t hpet_n;
static uint32_t hpet_period;
static uint32_t rearms;

static void rhit(struct rstat *r, uint64_t tsc, uint64_t period)
{
    if (r->count) {
        uint64_t gap = tsc - r->last;
        if (gap > r->max_gap)
            r->max_gap = gap;
        if (!r->min_gap || gap < r->min_gap)
            r->min_gap = gap;
        /*
         * A re-arm only ever pushes the next expiry later, so a gap under
         * half a period is delivery jitter or an expiry that was already
         * pending when the re-arm landed: a few are normal, many are not.
         */
        if (gap < period / 2)
            r->early++;
    } else {
        r->first = tsc;
    }
    r->last = tsc;
    r->count++;
}

static void rearm_other(void)
{
    if (partner == PARTNER_PIT)
        pit_start_periodic(pit_latch_other); /* control word + count: a restart, as Linux's set_periodic */
    else if (partner == PARTNER_HPET)
        hpet_rearm_periodic(hpet_n, hpet_period);
    else
        return;
    rearms++;
}

static void lapic_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    rhit(&rl, tsc, lapic_period_tsc);
    lapic_n++;
    if (lapic_n % 2 == 0)
        rearm_other();
    if (lapic_n % 3 == 0) {
        /* Re-arm the periodic LAPIC timer from its own handler: the host is re-arming it right now too. */
        lapic_timer_set_initial_count(lapic_count);
        rearms++;
    }
    lapic_eoi();
}

static void other_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    rhit(&rx, tsc, other_period_tsc);
    lapic_timer_set_initial_count(lapic_count);
    rearms++;
    lapic_eoi();
}

static void backup_tick(unsigned v, uint64_t tsc)
{
    (void)v;
    (void)tsc;
    rtc_ack();
    lapic_eoi();
}

static bool check(const char *phase, const char *name, const struct rstat *r, uint64_t nominal_hz, uint64_t ms)
{
    uint64_t hz = r->count > 1 && r->last > r->first ? (uint64_t)(r->count - 1) * tsc_hz() / (r->last - r->first) : 0;
    int64_t max_gap_us = tsc_to_us((int64_t)r->max_gap), min_gap_us = tsc_to_us((int64_t)r->min_gap);
    kprintf("testguest: retimer %s: %s irqs=%u hz=%lu min_gap_us=%ld max_gap_us=%ld early=%u\n", phase, name,
            r->count, hz, min_gap_us, max_gap_us, r->early);
    /*
     * Bounds: at least a quarter of the nominal rate (restarts and a noisy
     * host lose periods), at most 10% above it (a re-arm never makes a
     * timer due sooner), no silence longer than 200 ticks of 1 ms (a lost
     * re-arm leaves the timer silent for good; a busy host stalls for tens
     * of ms), and a few gaps under half a period: two, or 10% of them.
     * A phase counts fewer than 20 interrupts when the tick is long (a slow
     * host), and there one host stall can give two short gaps: QEMU, on
     * the same guest in the same nested lab, shows them too.
     */
    bool ok = r->count >= ms * nominal_hz / 4000 && hz * 10 <= nominal_hz * 11 &&
              max_gap_us <= 200 * (int64_t)lapic_us && (r->early <= 2 || r->early * 10 <= r->count);
    if (!ok)
        kprintf("testguest: retimer %s: %s out of bounds (nominal %lu Hz)\n", phase, name, nominal_hz);
    return ok;
}

static bool run_phase(const char *phase, enum partner p, uint32_t n, uint64_t ms)
{
    memset(&rl, 0, sizeof(rl));
    memset(&rx, 0, sizeof(rx));
    partner = p;
    hpet_n = n;
    lapic_n = 0;
    lapic_count = (uint32_t)(lapic_timer_hz() * lapic_us / 1000000);
    lapic_period_tsc = us_to_tsc(lapic_us);
    other_period_tsc = us_to_tsc(other_us);
    uint32_t gsi = 0;
    if (p == PARTNER_PIT) {
        gsi = acpi_isa_gsi(PIT_ISA_IRQ);
    } else if (p == PARTNER_HPET) {
        uint32_t rtc_gsi;
        rtc_gsi = acpi_isa_gsi(RTC_ISA_IRQ);
        int g = hpet_pick_gsi(n, 1u << rtc_gsi);
        if (g < 0 || g >= 48) {
            kprintf("testguest: retimer %s: no usable IOAPIC pin for the comparator\n", phase);
            return false;
        }
        gsi = (uint32_t)g;
        hpet_period = (uint32_t)(hpet_hz() * other_us / 1000000);
    }
    uint8_t vec = (uint8_t)(VEC_IOAPIC_BASE + gsi);
    if (p != PARTNER_NONE) {
        irq_set_handler(vec, other_irq);
        /* Interrupts are off in the CPU until the wait; unmask before starting so no edge is dropped. */
        ioapic_route(gsi, vec, plat.bsp_apic_id, false, false);
    }
    irq_set_handler(VEC_LAPIC_TIMER, lapic_irq);
    uint64_t start = rdtsc();
    if (p == PARTNER_PIT)
        pit_start_periodic(pit_latch_other);
    else if (p == PARTNER_HPET)
        hpet_start_periodic(n, gsi, hpet_period);
    lapic_timer_periodic(VEC_LAPIC_TIMER, lapic_count);
    wait_until(0, 0, start + us_to_tsc(ms * 1000), WAKE_EXTERNAL);
    lapic_timer_stop();
    irq_set_handler(VEC_LAPIC_TIMER, late_irq);
    if (p != PARTNER_NONE) {
        ioapic_mask(gsi);
        if (p == PARTNER_PIT)
            pit_stop();
        else
            hpet_stop(n);
        irq_set_handler(vec, late_irq);
    }
    irq_drain_pending();
    bool ok = check(phase, "lapic", &rl, 1000000 / lapic_us, ms);
    if (p != PARTNER_NONE)
        ok = check(phase, p == PARTNER_PIT ? "pit" : "hpet", &rx, 1000000 / other_us, ms) && ok;
    return ok;
}

uint32_t scenario_retimer(void)
{
    if (!platform_init("retimer"))
        return EXIT_FAIL;
    uint64_t seconds = cmdline_u64("seconds", 3);
    if (seconds < 1 || seconds > 3600)
        fail(EXIT_USAGE, "testguest: retimer: seconds=%lu out of range 1..3600\n", seconds);
    if (!plat.have_lapic_timer)
        fail(EXIT_FAIL, "testguest: retimer FAILED: could not calibrate the LAPIC timer\n");
    /* 40 ms: the PIT's 16-bit count must hold 1.25 ticks. */
    lapic_us = guest_tick_us("retimer", 40000);
    other_us = lapic_us + lapic_us / 4;
    pit_latch_other = (uint32_t)(((uint64_t)PIT_HZ * other_us + 500000u) / 1000000u);
    uint32_t ncmp = plat.have_hpet ? hpet_num_timers() : 0;
    if (ncmp > 3)
        ncmp = 3;
    uint32_t phases = plat.have_pit ? 1 : 0;
    for (uint32_t n = 0; n < ncmp; n++)
        phases += hpet_periodic_capable(n);
    bool alone = !phases;
    if (alone) {
        /* microvm and the like: no PIT, no HPET. The LAPIC timer still re-arms itself while it fires. */
        kprintf("testguest: retimer: no PIT and no periodic HPET comparator, the LAPIC timer runs alone\n");
        phases = 1;
    }
    uint64_t ms = seconds * 1000 / phases;

    /* A slow RTC tick bounds every HLT in case both timers under test stop. */
    uint32_t rtc_gsi = 0;
    if (plat.have_rtc) {
        rtc_gsi = acpi_isa_gsi(RTC_ISA_IRQ);
        irq_set_handler(VEC_IOAPIC_BASE + rtc_gsi, backup_tick);
        ioapic_route_isa(RTC_ISA_IRQ, plat.bsp_apic_id, &rtc_gsi);
        rtc_periodic_start(BACKUP_RTC_RATE);
    }

    bool ok = true;
    uint32_t total_lapic = 0, total_other = 0;
    if (alone) {
        ok = run_phase("lapic", PARTNER_NONE, 0, ms);
        total_lapic += rl.count;
    }
    if (plat.have_pit) {
        ok = run_phase("pit+lapic", PARTNER_PIT, 0, ms) && ok;
        total_lapic += rl.count;
        total_other += rx.count;
    }
    static char names[3][16];
    for (uint32_t n = 0; n < ncmp; n++) {
        if (!hpet_periodic_capable(n))
            continue;
        memcpy(names[n], "hpetN+lapic", 12);
        names[n][4] = (char)('0' + n);
        ok = run_phase(names[n], PARTNER_HPET, n, ms) && ok;
        total_lapic += rl.count;
        total_other += rx.count;
    }
    if (plat.have_rtc) {
        rtc_periodic_stop();
        ioapic_mask(rtc_gsi);
        irq_set_handler(VEC_IOAPIC_BASE + rtc_gsi, late_irq);
    }
    if (!ok) {
        kprintf("testguest: retimer FAILED seconds=%lu\n", seconds);
        return EXIT_FAIL;
    }
    kprintf("testguest: retimer ok seconds=%lu phases=%u lapic_irqs=%u other_irqs=%u rearms=%u\n", seconds, phases,
            total_lapic, total_other, rearms);
    return EXIT_OK;
}
