/*
 * test=pic: the legacy path a guest without an IOAPIC driver takes. The
 * 8259 pair is programmed as Linux's init_8259A does (ICW1-4, vector bases
 * 0x20/0x28, cascade on IR2, AEOI off), PIT channel 0 ticks at 1 kHz on
 * IRQ 0, and every tick arrives as an ExtINT through LINT0 of the BSP (the
 * VMM injects the PIC's vector with KVM_INTERRUPT when the guest's interrupt
 * window is open). The handler EOIs the master like Linux's
 * mask_and_ack_8259A. Passes when the rate is right and nothing arrives on
 * a vector the PIC was not told to use.
 */
#include "apic.h"
#include "cmdline.h"
#include "io.h"
#include "irq.h"
#include "lib.h"
#include "pit.h"
#include "platform.h"
#include "progress.h"
#include "scenarios.h"
#include "tsc.h"
#include "wait.h"

#define PIC_MASTER_CMD 0x20
#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_CMD 0xa0
#define PIC_SLAVE_DATA 0xa1
#define PIC_VECTOR_BASE 0x20 /* master IRQ n -> 0x20 + n; slave -> 0x28 + n */
#define PIC_EOI 0x20

static volatile uint32_t ticks;
static volatile uint64_t first_tsc, last_tsc;

static void pic_tick(unsigned vector, uint64_t tsc)
{
    (void)vector;
    if (ticks++ == 0)
        first_tsc = tsc;
    last_tsc = tsc;
    outb(PIC_MASTER_CMD, PIC_EOI); /* non-specific EOI: IRQ 0 leaves the ISR */
}

static void pic_init(void)
{
    outb(PIC_MASTER_DATA, 0xff); /* mask everything while programming */
    outb(PIC_SLAVE_DATA, 0xff);
    outb(PIC_MASTER_CMD, 0x11);            /* ICW1: edge, cascade, ICW4 follows */
    outb(PIC_MASTER_DATA, PIC_VECTOR_BASE); /* ICW2 */
    outb(PIC_MASTER_DATA, 1u << 2);        /* ICW3: slave on IR2 */
    outb(PIC_MASTER_DATA, 0x01);           /* ICW4: 8086 mode, normal EOI */
    outb(PIC_SLAVE_CMD, 0x11);
    outb(PIC_SLAVE_DATA, PIC_VECTOR_BASE + 8);
    outb(PIC_SLAVE_DATA, 2);               /* ICW3: cascade identity */
    outb(PIC_SLAVE_DATA, 0x01);
    outb(PIC_MASTER_DATA, (uint8_t)~((1u << 0) | (1u << 2))); /* IRQ 0 and the cascade */
    outb(PIC_SLAVE_DATA, 0xff);
}

static bool enough_ticks(void *arg)
{
    return ticks >= *(uint32_t *)arg;
}

uint32_t scenario_pic(void)
{
    if (!platform_init("pic") || !plat.have_pit)
        fail(EXIT_FAIL, "testguest: pic FAILED: no PIT\n");
    /* Nothing else may deliver: the IOAPIC stays masked, the LAPIC timer off. */
    for (unsigned v = PIC_VECTOR_BASE; v < PIC_VECTOR_BASE + 16; v++)
        irq_set_handler(v, v == PIC_VECTOR_BASE ? pic_tick : late_irq);
    pic_init();
    lapic_virtual_wire();
    const uint32_t want = (uint32_t)cmdline_u64("ticks", 200);
    /* 1 ms, or longer where VM exits are slow (tsc.h): the rate check is relative to it. */
    const uint32_t tick_us = guest_tick_us("pic", 50000);
    const uint32_t nominal_hz = 1000000 / tick_us;
    pit_start_periodic((uint16_t)(((uint64_t)PIT_HZ * tick_us + 500000) / 1000000));
    const bool done =
        wait_until(enough_ticks, (void *)&want, rdtsc() + us_to_tsc(want * 5ull * tick_us), WAKE_WATCHDOG);
    pit_stop();
    outb(PIC_MASTER_DATA, 0xff);
    irq_drain_pending();
    if (!done)
        fail(EXIT_FAIL, "testguest: pic FAILED: %u of %u ticks through the 8259\n", ticks, want);
    const uint64_t span_us = (last_tsc - first_tsc) * 1000000ull / tsc_hz();
    const uint32_t hz = span_us ? (uint32_t)((uint64_t)(ticks - 1) * 1000000ull / span_us) : 0;
    kprintf("testguest: pic: %u ticks through the 8259 at %u Hz, %u on other vectors\n", ticks, hz, late_irqs);
    if (hz * 10 < nominal_hz * 9 || hz * 10 > nominal_hz * 11)
        fail(EXIT_FAIL, "testguest: pic FAILED: %u Hz instead of %u\n", hz, nominal_hz);
    kprintf("testguest: pic ok\n");
    return EXIT_OK;
}
