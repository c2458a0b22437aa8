/*
 * test=fastest seconds=N (default 10): every device timer at the fastest
 * rate a guest can program, all at once, for N seconds: the PIT in mode 2
 * with count 2, the RTC's periodic interrupt at 8192 Hz (rate 3), each
 * periodic HPET comparator with a period of one counter tick, and the LAPIC
 * timer periodic with an initial count of 1. The guest only counts and
 * acknowledges. What it prints is the rate each timer was actually
 * delivered at, i.e. the host's floor for it; what the host measures
 * meanwhile is what such a guest costs it (tools/bench/timer-floor).
 *
 * Passes when every timer it started fired and the run lasted its time:
 * the point is that the VMM stays up and responsive, not a rate.
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

#define MAX_COMPARATORS 3

/* Interrupts taken, by vector: the handlers only count and acknowledge. */
static volatile uint32_t irqs[256];
static uint8_t pit_vector, rtc_vector, hpet_vector[MAX_COMPARATORS];

static void count(unsigned v, uint64_t tsc)
{
    (void)tsc;
    irqs[v & 0xff]++;
    lapic_eoi();
}

static void count_rtc(unsigned v, uint64_t tsc)
{
    rtc_ack();
    count(v, tsc);
}

static uint64_t per_second(uint32_t count, uint64_t seconds) { return seconds ? count / seconds : 0; }

uint32_t scenario_fastest(void)
{
    if (!platform_init("fastest"))
        return EXIT_FAIL;
    uint64_t seconds = cmdline_u64("seconds", 10);
    if (seconds < 1 || seconds > 3600)
        fail(EXIT_USAGE, "testguest: fastest: seconds=%lu out of range 1..3600\n", seconds);

    uint32_t used_gsis = 0, pit_gsi = 0, rtc_gsi = 0;
    if (plat.have_pit) {
        pit_gsi = acpi_isa_gsi(PIT_ISA_IRQ);
        pit_vector = (uint8_t)(VEC_IOAPIC_BASE + pit_gsi);
        irq_set_handler(pit_vector, count);
        ioapic_route(pit_gsi, pit_vector, plat.bsp_apic_id, false, false);
        used_gsis |= 1u << pit_gsi;
    }
    if (plat.have_rtc) {
        rtc_vector = (uint8_t)(VEC_IOAPIC_BASE + acpi_isa_gsi(RTC_ISA_IRQ));
        irq_set_handler(rtc_vector, count_rtc);
        ioapic_route_isa(RTC_ISA_IRQ, plat.bsp_apic_id, &rtc_gsi);
        used_gsis |= 1u << rtc_gsi;
    }
    uint32_t ncmp = plat.have_hpet ? hpet_num_timers() : 0;
    if (ncmp > MAX_COMPARATORS)
        ncmp = MAX_COMPARATORS;
    uint32_t hpet_gsi[MAX_COMPARATORS] = {0};
    bool hpet_on[MAX_COMPARATORS] = {false};
    for (uint32_t n = 0; n < ncmp; n++) {
        if (!hpet_periodic_capable(n))
            continue;
        int g = hpet_pick_gsi(n, used_gsis);
        if (g < 0 || g >= 32)
            continue;
        hpet_gsi[n] = (uint32_t)g;
        used_gsis |= 1u << g;
        hpet_vector[n] = (uint8_t)(VEC_IOAPIC_BASE + g);
        irq_set_handler(hpet_vector[n], count);
        ioapic_route(hpet_gsi[n], hpet_vector[n], plat.bsp_apic_id, false, false);
        hpet_on[n] = true;
    }
    irq_set_handler(VEC_LAPIC_TIMER, count);

    uint64_t start = rdtsc();
    if (plat.have_pit)
        pit_start_periodic(2);
    if (plat.have_rtc)
        rtc_periodic_start(3);
    for (uint32_t n = 0; n < ncmp; n++)
        if (hpet_on[n])
            hpet_start_periodic(n, hpet_gsi[n], 1);
    if (plat.have_lapic_timer)
        lapic_timer_periodic(VEC_LAPIC_TIMER, 1);
    wait_until(0, 0, start + us_to_tsc(seconds * 1000000), WAKE_EXTERNAL);
    uint64_t elapsed_us = (uint64_t)tsc_to_us((int64_t)(rdtsc() - start));

    lapic_timer_stop();
    if (plat.have_pit) {
        ioapic_mask(pit_gsi);
        pit_stop();
    }
    if (plat.have_rtc) {
        rtc_periodic_stop();
        ioapic_mask(rtc_gsi);
    }
    for (uint32_t n = 0; n < ncmp; n++) {
        if (hpet_on[n]) {
            ioapic_mask(hpet_gsi[n]);
            hpet_stop(n);
        }
    }
    irq_set_handler(VEC_LAPIC_TIMER, late_irq);
    irq_drain_pending();

    kprintf("testguest: fastest: per second: pit=%lu rtc=%lu hpet0=%lu hpet1=%lu hpet2=%lu lapic=%lu\n",
            per_second(irqs[pit_vector], seconds), per_second(irqs[rtc_vector], seconds),
            per_second(irqs[hpet_vector[0]], seconds), per_second(irqs[hpet_vector[1]], seconds),
            per_second(irqs[hpet_vector[2]], seconds), per_second(irqs[VEC_LAPIC_TIMER], seconds));
    bool ok = elapsed_us >= seconds * 1000000 && (!plat.have_pit || irqs[pit_vector]) &&
              (!plat.have_rtc || irqs[rtc_vector]) && (!plat.have_lapic_timer || irqs[VEC_LAPIC_TIMER]);
    for (uint32_t n = 0; n < ncmp; n++)
        ok = ok && (!hpet_on[n] || irqs[hpet_vector[n]]);
    if (!ok) {
        kprintf("testguest: fastest FAILED: a timer never fired, or the run ended early\n");
        return EXIT_FAIL;
    }
    kprintf("testguest: fastest ok seconds=%lu\n", seconds);
    return EXIT_OK;
}
