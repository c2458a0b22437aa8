/* Bring-up shared by the timer scenarios: ACPI, TSC, LAPIC, IOAPIC, which timers exist. */
#ifndef TESTGUEST_PLATFORM_H
#define TESTGUEST_PLATFORM_H

#include <stdbool.h>
#include <stdint.h>

struct platform {
    uint32_t bsp_apic_id;
    bool have_ioapic;
    bool have_pit;
    bool have_rtc;
    bool have_hpet;
    bool have_tsc_deadline;
    bool have_lapic_timer; /* calibrated */
};
extern struct platform plat;

/* Returns false (after printing why) when the guest cannot time anything. */
bool platform_init(const char *scenario);

/*
 * Handler for a vector whose test window has closed: an interrupt may
 * already sit in the LAPIC's IRR (we run with interrupts off between
 * windows), so it is counted in late_irqs and acknowledged, not treated as
 * unexpected.
 */
void late_irq(unsigned vector, uint64_t tsc);
extern volatile uint32_t late_irqs;

/*
 * A GSI for HPET comparator n from its route capability, avoiding the pins in
 * `avoid` (bit mask). Prefers GSIs >= 16, which no ISA device owns.
 * Returns -1 when none is left.
 */
int hpet_pick_gsi(uint32_t n, uint32_t avoid);

#endif
