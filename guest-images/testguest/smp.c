/*
 * test=smp: find the CPUs in the MADT, start each AP with INIT-SIPI-SIPI the
 * way Linux's smpboot does, and have each one report its APIC ID.
 */
#include "acpi.h"
#include "apic.h"
#include "cmdline.h"
#include "io.h"
#include "irq.h"
#include "lib.h"
#include "progress.h"
#include "scenarios.h"
#include "tsc.h"
#include "wait.h"

#define TRAMPOLINE_ADDR 0x8000u
#define AP_STACK_SIZE 8192
#define AP_TIMEOUT_MS 2000 /* per AP; an emulated AP needs a few ms */

extern const uint8_t tramp_start[], tramp_end[];
extern uint64_t ap_boot_stack; /* entry.S: the stack the next AP takes */

static uint8_t ap_stacks[ACPI_MAX_CPUS][AP_STACK_SIZE] __attribute__((section(".noinit"), aligned(16)));

/* The BSP starts one AP at a time, so one slot per field is enough. */
static volatile uint32_t ap_checked_in;    /* APs that reached ap_main */
static volatile uint32_t ap_reported_id;   /* APIC ID the last AP read from its own LAPIC */
static volatile uint32_t bsp_apic_id;

void ap_main(void);

void ap_main(void)
{
    idt_load();
    lapic_init(false);
    outl(PROGRESS_PORT, MS_AP_ONLINE);
    ap_reported_id = lapic_id();
    __atomic_add_fetch(&ap_checked_in, 1, __ATOMIC_SEQ_CST);
    /* Wake the BSP from its HLT at once instead of at its next timer tick. */
    lapic_send_ipi(bsp_apic_id, ICR_FIXED | VEC_WAKE_IPI);
    /* Parked with interrupts off, as Linux parks an offline CPU: nothing more to do. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void wake_ipi(unsigned vector, uint64_t tsc)
{
    (void)vector;
    (void)tsc;
    lapic_eoi();
}

static bool checked_in(void *target)
{
    return ap_checked_in >= *(uint32_t *)target;
}

/*
 * Linux skips the 10 ms INIT delay on CPUs that do not need it (Intel
 * family 6, any family >= 0xf); keep it for the rest.
 */
static uint64_t init_delay_us(void)
{
    struct cpuid_regs r = cpuid(1, 0);
    unsigned family = (r.eax >> 8) & 0xf;
    if (family == 0xf)
        family += (r.eax >> 20) & 0xff;
    return family >= 6 ? 0 : 10000;
}

static bool start_ap(uint32_t apic_id, uint32_t index)
{
    ap_boot_stack = (uint64_t)(uintptr_t)&ap_stacks[index][AP_STACK_SIZE];
    uint32_t target = ap_checked_in + 1;
    bool sent = lapic_send_ipi(apic_id, ICR_TRIGGER_LEVEL | ICR_LEVEL_ASSERT | ICR_INIT);
    uint64_t d = init_delay_us();
    if (d)
        delay_us(d);
    sent = lapic_send_ipi(apic_id, ICR_TRIGGER_LEVEL | ICR_INIT) && sent;
    /* Two STARTUPs: the second is dropped by a CPU already running, and covers a lost first one. */
    for (int i = 0; i < 2 && ap_checked_in < target; i++) {
        sent = lapic_send_ipi(apic_id, ICR_STARTUP | (TRAMPOLINE_ADDR >> 12)) && sent;
        delay_us(d ? 200 : 10);
    }
    if (!sent)
        kprintf("testguest: smp: ICR stayed busy sending to apic_id=%u\n", apic_id);
    uint64_t deadline = rdtsc() + us_to_tsc(AP_TIMEOUT_MS * 1000ull);
    return wait_until(checked_in, &target, deadline, WAKE_WATCHDOG);
}

uint32_t scenario_smp(void)
{
    if (!acpi_init(boot_info.rsdp_paddr) || !acpi.have_madt)
        fail(EXIT_FAIL, "testguest: smp: no ACPI MADT (rsdp hint 0x%lx)\n", boot_info.rsdp_paddr);
    if (!tsc_init(cmdline_get("tsc"))) {
        /*
         * Only timeouts depend on it here. Guessing high makes them longer
         * than stated on a slower TSC, never shorter.
         */
        kprintf("testguest: smp: TSC frequency unknown, assuming 4 GHz for the timeouts\n");
        tsc_assume(4000000000ull);
    }
    lapic_init(true);
    if (!wait_init())
        kprintf("testguest: smp: no LAPIC wake-up timer, timeouts spin\n");
    irq_set_handler(VEC_WAKE_IPI, wake_ipi);
    bsp_apic_id = lapic_id();
    memcpy(phys_ptr(TRAMPOLINE_ADDR), tramp_start, (size_t)(tramp_end - tramp_start));

    /* absent_cpu=ID: also "start" an APIC ID no CPU has, to exercise the timeout path. */
    if (cmdline_get("absent_cpu") && acpi.ncpus < ACPI_MAX_CPUS)
        acpi.cpu_apic_id[acpi.ncpus++] = (uint32_t)cmdline_u64("absent_cpu", 200);
    uint32_t n = acpi.ncpus, online = 1, index = 0, timed_out = 0;
    bool bsp_listed = false;
    uint64_t t0 = rdtsc();
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = acpi.cpu_apic_id[i];
        if (id == bsp_apic_id) {
            bsp_listed = true;
            continue;
        }
        uint64_t t = rdtsc();
        if (!start_ap(id, index++)) {
            timed_out++;
            kprintf("testguest: smp: cpu apic_id=%u did not check in within %u ms\n", id, AP_TIMEOUT_MS);
            continue;
        }
        if (ap_reported_id != id) {
            kprintf("testguest: smp: cpu started as apic_id=%u reports apic_id=%u\n", id, ap_reported_id);
            continue;
        }
        online++;
        kprintf("testguest: smp: cpu apic_id=%u online after %ld us\n", id, tsc_to_us((int64_t)(rdtsc() - t)));
    }
    if (!bsp_listed)
        kprintf("testguest: smp: BSP apic_id=%u is not in the MADT\n", bsp_apic_id);
    if (online != n || !bsp_listed)
        fail(timed_out ? EXIT_TIMEOUT : EXIT_FAIL, "testguest: smp FAILED cpus=%u online=%u timed_out=%u\n", n, online,
             timed_out);
    kprintf("testguest: smp: all %u cpus in %ld us (tsc %s)\n", n, tsc_to_us((int64_t)(rdtsc() - t0)), tsc_method());
    kprintf("testguest: smp ok cpus=%u\n", n);
    return EXIT_OK;
}
