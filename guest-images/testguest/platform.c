#include "platform.h"

#include "acpi.h"
#include "apic.h"
#include "cmdline.h"
#include "hpet.h"
#include "io.h"
#include "ioapic.h"
#include "lib.h"
#include "pit.h"
#include "rtc.h"
#include "scenarios.h"
#include "tsc.h"
#include "wait.h"

struct platform plat;
volatile uint32_t late_irqs;

void late_irq(unsigned vector, uint64_t tsc)
{
    (void)vector;
    (void)tsc;
    late_irqs++;
    lapic_eoi();
}

bool platform_init(const char *scenario)
{
    if (!acpi_init(boot_info.rsdp_paddr))
        kprintf("testguest: %s: no ACPI tables found\n", scenario);
    lapic_init(true);
    plat.bsp_apic_id = lapic_id();
    /*
     * The firmware may have left the 8259s unmasked with LINT0 in
     * virtual-wire mode; lapic_init masked LINT0, and masking the PICs
     * themselves is what Linux does once it switches to the IOAPIC.
     */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    plat.have_ioapic = acpi.have_madt && ioapic_init();
    plat.have_pit = pit_present();
    plat.have_rtc = rtc_present();
    if (!tsc_init(cmdline_get("tsc"))) {
        kprintf("testguest: %s: cannot determine the TSC frequency (tried cpuid 0x15, 0x40000010, kvmclock, PIT)\n",
                scenario);
        return false;
    }
    plat.have_tsc_deadline = lapic_has_tsc_deadline();
    plat.have_lapic_timer = lapic_timer_calibrate();
    if (!wait_init())
        kprintf("testguest: %s: no LAPIC wake-up timer, waits will spin\n", scenario);
    plat.have_hpet = hpet_init();
    kprintf("testguest: %s: tsc %lu kHz via %s%s, lapic timer %lu Hz via %s, tsc-deadline %s\n", scenario,
            tsc_hz() / 1000, tsc_method(), tsc_invariant() ? " (invariant)" : "", lapic_timer_hz(),
            lapic_timer_hz_source(), plat.have_tsc_deadline ? "yes" : "no");
    kprintf("testguest: %s: ioapic %s, pit %s, rtc %s, hpet ", scenario, plat.have_ioapic ? "yes" : "no",
            plat.have_pit ? "yes" : "no", plat.have_rtc ? "yes" : "no");
    if (plat.have_hpet)
        kprintf("yes (%u comparators, %lu Hz)\n", hpet_num_timers(), hpet_hz());
    else
        kprintf("no\n");
    return true;
}

int hpet_pick_gsi(uint32_t n, uint32_t avoid)
{
    uint32_t cap = hpet_route_cap(n) & ~avoid;
    for (int g = 31; g >= 16; g--)
        if (cap & (1u << g))
            return g;
    for (int g = 0; g < 16; g++)
        if (cap & (1u << g))
            return g;
    return -1;
}
