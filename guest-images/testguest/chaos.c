/*
 * test=chaos: every device register and stray addresses get pseudo-random
 * values at every width, then are read back; the VMM must stay up and keep
 * its log bounded, and the guest prints "chaos ok" afterwards.
 *
 * The writes are random except where a single value would end the run on
 * purpose (the debug-exit port, reset through the i8042 or 0xCF9, S5 through
 * PM1a) or hand the guest an interrupt it cannot take with IF clear (NMI or
 * INIT through an IOAPIC or HPET FSB route): those bits are cleared, since
 * each of them is a documented request with its own test.
 *
 * Options: ops=N (default 5000), seed=N.
 */
#include "acpi.h"
#include "apic.h"
#include "cmdline.h"
#include "io.h"
#include "irq.h"
#include "lib.h"
#include "progress.h"
#include "scenarios.h"
#include "serial.h"

static uint64_t state;

static uint64_t next(void)
{
    /* xorshift64*: fast to emulate, good enough to reach every bit */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

static const uint16_t device_ports[] = {
    0x20,  0x21,  0xa0,  0xa1,  0x4d0, 0x4d1, 0x40,  0x41,  0x42,  0x43,  0x61,  0x60,  0x64,
    0x70,  0x71,  0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x600, 0x601, 0x602,
    0x603, 0x604, 0x605, 0xcf9, 0xff0, 0x80,
};

static bool port_ends_the_run(uint16_t port, uint32_t width)
{
    /* The debug-exit port covers 0xf4-0xf7 whatever the width. */
    return port + width > 0xf4 && port < 0xf8;
}

static uint32_t tame_port_value(uint16_t port, uint32_t value)
{
    if (port == 0x64 && ((value & 0xff) == 0xd1 || (value & 0xf0) == 0xf0))
        value = 0xa7; /* write-output-port and pulse commands can reset: disable aux instead */
    if (port <= 0xcf9 && port + 4 > 0xcf9)
        value &= ~(0x04u << ((0xcf9 - port) * 8)); /* RST_CPU */
    if (port <= 0x605 && port + 4 > 0x605)
        value &= ~(0x20u << ((0x605 - port) * 8)); /* SLP_EN is bit 13 of PM1a_CNT */
    return value;
}

static void chaos_port(uint16_t port)
{
    const uint32_t width = 1u << (next() % 3);
    if (port_ends_the_run(port, width))
        return;
    const uint32_t value = tame_port_value(port, (uint32_t)next());
    if (next() & 1) {
        if (width == 1)
            outb(port, (uint8_t)value);
        else if (width == 2)
            __asm__ volatile("outw %0, %1" ::"a"((uint16_t)value), "Nd"(port));
        else
            outl(port, value);
    } else {
        if (width == 1)
            (void)inb(port);
        else if (width == 2) {
            uint16_t v;
            __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
        } else {
            uint32_t v;
            __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
        }
    }
}

static void chaos_ioapic(void)
{
    volatile uint32_t *sel = (volatile uint32_t *)0xfec00000ul;
    volatile uint32_t *win = (volatile uint32_t *)0xfec00010ul;
    const uint32_t reg = (uint32_t)next() & 0x7f;
    *sel = reg;
    uint32_t value = (uint32_t)next();
    if (reg >= 0x10 && reg < 0x40 && (reg & 1) == 0)
        value |= 1u << 16; /* redirection entries stay masked */
    if (next() & 1)
        *win = value;
    else
        (void)*win;
    if ((next() & 15) == 0)
        *(volatile uint32_t *)0xfec00040ul = (uint32_t)next(); /* EOI register */
}

static void chaos_hpet(void)
{
    const uint32_t offset = (uint32_t)(next() % 0x400) & ~7u;
    volatile uint64_t *reg = (volatile uint64_t *)(0xfed00000ul + offset);
    uint64_t value = next();
    if (offset >= 0x100 && ((offset - 0x100) & 0x1f) == 0)
        value &= ~(1ull << 14); /* Tn_FSB_EN_CNF: no MSI of a random kind */
    const uint64_t how = next() % 4;
    if (how == 0)
        *reg = value;
    else if (how == 1)
        *(volatile uint32_t *)reg = (uint32_t)value;
    else
        (void)*reg;
}

static void chaos_stray_mmio(void)
{
    /* Anywhere in the 32-bit hole that no device decodes (the LAPIC excepted:
     * it belongs to the guest's own CPU, and KVM handles it). */
    uintptr_t addr = 0xc0000000ul + ((next() % 0x3fec0000ul) & ~3ul);
    if (addr >= 0xfee00000ul && addr < 0xfee01000ul)
        addr += 0x1000;
    if (next() & 1)
        *(volatile uint32_t *)addr = (uint32_t)next();
    else
        (void)*(volatile uint32_t *)addr;
}

static volatile uint32_t nmis;
static void count_nmi(unsigned vector, uint64_t tsc)
{
    (void)vector;
    (void)tsc;
    nmis++;
}

uint32_t scenario_chaos(void)
{
    const uint64_t ops = cmdline_u64("ops", 5000);
    state = cmdline_u64("seed", 0x9e3779b97f4a7c15ull) | 1;
    irq_set_handler(2, count_nmi);
    cli();
    kprintf("testguest: chaos: %lu random register accesses\n", (unsigned long)ops);
    for (uint64_t i = 0; i < ops; i++) {
        switch (next() % 8) {
        case 0: case 1: case 2:
            chaos_port(device_ports[next() % ARRAY_SIZE(device_ports)]);
            break;
        case 3:
            chaos_port((uint16_t)next());
            break;
        case 4: case 5:
            chaos_ioapic();
            break;
        case 6:
            chaos_hpet();
            break;
        default:
            chaos_stray_mmio();
            break;
        }
    }
    serial_init(); /* the UART got random settings too */
    kprintf("testguest: chaos ok ops=%lu nmis=%u\n", (unsigned long)ops, nmis);
    return EXIT_OK;
}

/*
 * test=poweroff: ACPI S5 the way Linux's acpi_enter_sleep_state does it:
 * switch to ACPI mode through SMI_CMD if SCI_EN is clear, then write SLP_TYPa
 * from \_S5 with SLP_EN to PM1a_CNT.
 */
uint32_t scenario_poweroff(void)
{
    if (!acpi_init(boot_info.rsdp_paddr) || !acpi.have_fadt || !acpi.have_s5 || !acpi.pm1a_cnt) {
        kprintf("testguest: poweroff: no FADT PM1a control block or no \\_S5\n");
        return EXIT_FAIL;
    }
    const uint16_t cnt = (uint16_t)acpi.pm1a_cnt;
    uint16_t value;
    __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(cnt));
    if (!(value & 1) && acpi.smi_cmd) {
        outb((uint16_t)acpi.smi_cmd, acpi.acpi_enable);
        for (int i = 0; i < 1000 && !(value & 1); i++)
            __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(cnt));
    }
    kprintf("testguest: poweroff: S5 (SLP_TYPa=%u) through port 0x%x\n", acpi.s5_typ, cnt);
    value = (uint16_t)((value & ~(7u << 10)) | ((uint16_t)acpi.s5_typ << 10) | (1u << 13));
    __asm__ volatile("outw %0, %1" ::"a"(value), "Nd"(cnt));
    for (;;)
        __asm__ volatile("hlt"); /* the VMM ends the run; nothing else may follow */
}
