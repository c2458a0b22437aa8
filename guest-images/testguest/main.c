/*
 * The test guest: a PVH ELF that runs one scenario chosen on its command
 * line and reports through the serial port and the debug-exit port. Every
 * guest instruction may be emulated one by one, so the boot path does as
 * little as it can: static page tables and IDT, no memory clearing, and
 * nothing printed that the scenario does not need.
 */
#include "apic.h"
#include "cmdline.h"
#include "io.h"
#include "irq.h"
#include "lib.h"
#include "progress.h"
#include "scenarios.h"
#include "serial.h"
#include "start_info.h"
#include "tsc.h"

struct boot_info boot_info;

extern uint64_t boot_tsc; /* entry.S: TSC at the first instruction */
static uint64_t main_tsc, ready_tsc; /* kmain entered; command line parsed, nothing printed yet */

static uint32_t scenario_boot(void)
{
    /* verbose: how long the boot path took in guest TSC time, before any printing. */
    if (cmdline_flag("verbose") && tsc_init(cmdline_get("tsc")))
        kprintf("testguest: entry to main %ld us, main to command line parsed %ld us (tsc %s)\n",
                tsc_to_us((int64_t)(main_tsc - boot_tsc)), tsc_to_us((int64_t)(ready_tsc - main_tsc)), tsc_method());
    kprintf("testguest: boot ok\n");
    return EXIT_OK;
}

/*
 * Self-test of the failure path: the run must end with EXIT_EXCEPTION and a
 * line naming the vector and RIP, never hang. kind=ud|pf|irq; kind=triple
 * instead shuts the CPU down, which the VMM must report as a reset.
 */
static uint32_t scenario_fault(void)
{
    const char *kind = cmdline_get("kind");
    if (kind && str_eq(kind, "pf")) {
        kprintf("testguest: fault: reading an unmapped address\n");
        (void)*(volatile uint64_t *)0x8000000000ull;
    } else if (kind && str_eq(kind, "triple")) {
        /* An exception with an empty IDT: #UD cannot be delivered, nor the
         * #GP that follows, nor the #DF: the CPU shuts down (triple fault). */
        kprintf("testguest: fault: triple fault through an empty IDT\n");
        static const struct {
            uint16_t limit;
            uint64_t base;
        } __attribute__((packed)) empty_idt = {0, 0};
        __asm__ volatile("lidt %0; ud2" ::"m"(empty_idt));
    } else if (kind && str_eq(kind, "irq")) {
        kprintf("testguest: fault: sending an unhandled vector to ourselves\n");
        lapic_init(true);
        lapic_send_ipi(lapic_id(), ICR_FIXED | 0x99);
        sti();
        __asm__ volatile("hlt");
    } else if (kind && str_eq(kind, "exec-mmio")) {
        /* Code fetched from device memory (the IOAPIC's window) is no
         * instruction KVM can emulate: the VM must end in a guest error. */
        kprintf("testguest: fault: jumping into the IOAPIC's MMIO window\n");
        ((void (*)(void))0xFEC00000ull)();
    } else {
        kprintf("testguest: fault: executing ud2\n");
        __asm__ volatile("ud2");
    }
    kprintf("testguest: fault: survived, the failure path is broken\n");
    return EXIT_FAIL;
}

static const struct {
    const char *name;
    uint32_t (*run)(void);
} scenarios[] = {
    {"boot", scenario_boot},       {"smp", scenario_smp},       {"timers", scenario_timers},
    {"retimer", scenario_retimer}, {"reboot", scenario_reboot}, {"fault", scenario_fault},
    {"chaos", scenario_chaos},     {"poweroff", scenario_poweroff}, {"pic", scenario_pic},
    {"apicstorm", scenario_apicstorm}, {"fastest", scenario_fastest}, {"disk", scenario_disk},
};

void kmain(uint32_t start_info_pa);

void kmain(uint32_t start_info_pa)
{
    main_tsc = rdtsc();
    progress(MS_MAIN);
    serial_init();
    idt_load();

    const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)start_info_pa;
    if (!si || si->magic != HVM_START_MAGIC)
        fail(EXIT_USAGE, "testguest: no PVH start_info (ebx=0x%x magic=0x%x)\n", start_info_pa,
             si ? si->magic : 0);
    cmdline_parse(si->cmdline_paddr ? (const char *)(uintptr_t)si->cmdline_paddr : "");
    boot_info.rsdp_paddr = si->rsdp_paddr;
    if (cmdline_flag("rsdp_scan")) /* exercise the fallback: find the RSDP as if the loader gave none */
        boot_info.rsdp_paddr = 0;
    ready_tsc = rdtsc();

    if (cmdline_flag("verbose"))
        kprintf("testguest: start_info at 0x%x version %u cmdline 0x%lx rsdp 0x%lx memmap 0x%lx (%u entries) \"%s\"\n",
                start_info_pa, si->version, si->cmdline_paddr, si->rsdp_paddr,
                si->version >= 1 ? si->memmap_paddr : 0, si->version >= 1 ? si->memmap_entries : 0, cmdline_raw());

    const char *test = cmdline_get("test");
    if (!test)
        fail(EXIT_USAGE, "testguest: no test= on the command line \"%s\" (known: boot smp timers retimer reboot fault chaos poweroff pic apicstorm fastest)\n",
             cmdline_raw());
    for (unsigned i = 0; i < ARRAY_SIZE(scenarios); i++) {
        if (!str_eq(test, scenarios[i].name))
            continue;
        progress(MS_SCENARIO_START);
        uint32_t rc = scenarios[i].run();
        progress(MS_SCENARIO_DONE);
        guest_exit(rc);
    }
    fail(EXIT_USAGE, "testguest: unknown test=%s (known: boot smp timers retimer reboot fault chaos poweroff pic apicstorm fastest)\n", test);
}
