#include "apic.h"

#include "io.h"
#include "irq.h"
#include "lib.h"
#include "tsc.h"

#define MSR_APIC_BASE 0x1b
#define MSR_TSC_DEADLINE 0x6e0
#define APIC_BASE_ENABLE (1u << 11)

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_ESR 0x280
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define LAPIC_TMICT 0x380
#define LAPIC_TMCCT 0x390
#define LAPIC_TDCR 0x3e0

#define SVR_ENABLE 0x100
#define LVT_MASKED 0x10000
#define LVT_NMI 0x400
#define LVT_TIMER_PERIODIC 0x20000
#define LVT_TIMER_TSC_DEADLINE 0x40000
#define TDCR_DIV16 0x3

static uintptr_t base = LAPIC_DEFAULT_BASE;
static uint64_t timer_hz;
static uint64_t tsc_to_ticks_mult; /* LAPIC ticks per TSC tick, 32.32 fixed point */
static const char *timer_hz_source = "uncalibrated";

static inline uint32_t rd(uint32_t reg) { return mmio_read32(base + reg); }
static inline void wr(uint32_t reg, uint32_t v) { mmio_write32(base + reg, v); }

void lapic_init(bool bsp)
{
    uint64_t msr = rdmsr(MSR_APIC_BASE);
    if (!(msr & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, msr | APIC_BASE_ENABLE);
    base = (uintptr_t)(msr & 0xfffff000u);
    wr(LAPIC_TPR, 0);
    wr(LAPIC_SVR, SVR_ENABLE | VEC_SPURIOUS);
    /*
     * No 8259 in virtual-wire mode: every interrupt we want comes through the
     * IOAPIC, so LINT0 (ExtINT) stays masked. LINT1 is the NMI line on the
     * BSP only, as Linux wires it.
     */
    wr(LAPIC_LVT_LINT0, LVT_MASKED);
    wr(LAPIC_LVT_LINT1, bsp ? LVT_NMI : LVT_MASKED);
    wr(LAPIC_LVT_ERROR, LVT_MASKED);
    wr(LAPIC_LVT_TIMER, LVT_MASKED);
    /* ESR is a write-then-read register: a write latches the error bits. */
    wr(LAPIC_ESR, 0);
    wr(LAPIC_ESR, 0);
}

/* Virtual-wire mode (MP spec 3.6.2.2): LINT0 takes the 8259's INTR as ExtINT. */
void lapic_virtual_wire(void) { wr(LAPIC_LVT_LINT0, 0x700); }

uint32_t lapic_id(void) { return rd(LAPIC_ID) >> 24; }

void lapic_eoi(void) { wr(LAPIC_EOI, 0); }

bool lapic_send_ipi(uint32_t dest_apic_id, uint32_t icr_low)
{
    /* Destination first: the write to the low word is what sends. */
    wr(LAPIC_ICR_HI, dest_apic_id << 24);
    wr(LAPIC_ICR_LO, icr_low);
    /* Virtual LAPICs deliver synchronously; a real one clears BUSY within microseconds. */
    for (unsigned i = 0; i < 1000; i++)
        if (!(rd(LAPIC_ICR_LO) & ICR_BUSY))
            return true;
    return false;
}

bool lapic_has_tsc_deadline(void) { return (cpuid(1, 0).ecx >> 24) & 1; }

static void set_timer_hz(uint64_t hz, const char *source)
{
    timer_hz = hz;
    timer_hz_source = source;
    tsc_to_ticks_mult = tsc_hz() ? (hz << 32) / tsc_hz() : 0;
}

bool lapic_timer_calibrate(void)
{
    if (timer_hz)
        return true;
    if (!tsc_hz())
        return false;
    /*
     * Leaf 0x40000010 (VMware/KVM timing leaf, when the hypervisor offers
     * it) gives the bus clock in kHz; the timer counts it through the
     * divider. Otherwise measure against the TSC, as Linux measures against
     * its global clock event, over 10 ms: a short spin, but the only timer
     * we could wait on is the one being measured.
     */
    uint32_t hv_bus_khz = tsc_hypervisor_apic_bus_khz();
    if (hv_bus_khz) {
        set_timer_hz((uint64_t)hv_bus_khz * 1000 / 16, "cpuid-0x40000010");
        return true;
    }
    wr(LAPIC_TDCR, TDCR_DIV16);
    wr(LAPIC_LVT_TIMER, LVT_MASKED | VEC_LAPIC_TIMER);
    wr(LAPIC_TMICT, 0xffffffffu);
    uint32_t c0, c1;
    uint64_t t0 = tsc_bracket(lapic_timer_current_count, &c0);
    uint64_t until = t0 + tsc_hz() / 100;
    while (rdtsc() < until)
        cpu_relax();
    uint64_t t1 = tsc_bracket(lapic_timer_current_count, &c1);
    wr(LAPIC_TMICT, 0);
    if (c1 >= c0 || t1 <= t0)
        return false;
    set_timer_hz((uint64_t)(c0 - c1) * tsc_hz() / (t1 - t0), "measured-vs-tsc");
    return true;
}

uint64_t lapic_timer_hz(void) { return timer_hz; }
const char *lapic_timer_hz_source(void) { return timer_hz_source; }

uint64_t tsc_to_lapic_ticks(uint64_t tsc_delta)
{
    return (uint64_t)(((unsigned __int128)tsc_delta * tsc_to_ticks_mult) >> 32);
}

void lapic_timer_periodic(uint8_t vector, uint32_t count)
{
    wr(LAPIC_TDCR, TDCR_DIV16);
    wr(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | vector);
    wr(LAPIC_TMICT, count);
}

void lapic_timer_oneshot(uint8_t vector, uint32_t count)
{
    wr(LAPIC_TDCR, TDCR_DIV16);
    wr(LAPIC_LVT_TIMER, vector);
    wr(LAPIC_TMICT, count);
}

void lapic_timer_set_initial_count(uint32_t count) { wr(LAPIC_TMICT, count); }

void lapic_timer_tsc_deadline_mode(uint8_t vector)
{
    wr(LAPIC_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | vector);
    /*
     * The SDM asks for the LVT write to be ordered before the first
     * IA32_TSC_DEADLINE write (WRMSR does not wait for an MMIO write to
     * complete); Linux uses MFENCE, and so do we.
     */
    __asm__ volatile("mfence" ::: "memory");
}

void lapic_timer_set_deadline(uint64_t tsc) { wrmsr(MSR_TSC_DEADLINE, tsc); }

void lapic_timer_stop(void)
{
    wr(LAPIC_LVT_TIMER, LVT_MASKED | VEC_LAPIC_TIMER);
    wr(LAPIC_TMICT, 0);
    if (lapic_has_tsc_deadline())
        wrmsr(MSR_TSC_DEADLINE, 0);
}

uint32_t lapic_timer_current_count(void) { return rd(LAPIC_TMCCT); }
