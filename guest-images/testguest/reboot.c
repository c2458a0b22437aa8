/*
 * test=reboot: start every timer, then reset through the i8042 while they
 * fire, as Linux's reboot=k does. The boot count lives in CMOS NVRAM, which
 * a PC keeps across a reset; after count=N boots the run succeeds.
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
 * The last two bytes of the standard 128-byte CMOS bank: outside the clock
 * registers (0x00-0x0d) and unused by QEMU's PC CMOS layout and SeaBIOS
 * (0x0e-0x3d, 0x5b-0x5f).
 */
#define NVRAM_MAGIC 0x7e
#define NVRAM_BOOTS 0x7f
#define NVRAM_BOOTS_HIGH 0x7d /* boots above 255 */
#define MAGIC_VALUE 0xa5

#define I8042_STATUS 0x64
#define I8042_CMD 0x64
#define I8042_INPUT_FULL 0x02
#define I8042_PULSE_RESET 0xfe

static volatile uint32_t hits[256];

static void count_irq(unsigned v, uint64_t tsc)
{
    (void)tsc;
    hits[v & 0xff]++;
    if (plat.have_rtc && v == VEC_IOAPIC_BASE + RTC_ISA_IRQ)
        rtc_ack();
    lapic_eoi();
}

/* The vectors we expect to fire, and a description of what drives them for the log. */
struct started {
    uint8_t vec[8];
    uint32_t n;
    char what[120];
    uint32_t len;
};

static void describe(struct started *s, const char *name, int gsi)
{
    char tmp[24];
    uint32_t k = 0;
    for (const char *p = name; *p && k < 12; p++)
        tmp[k++] = *p;
    if (gsi >= 0) {
        tmp[k++] = '@';
        tmp[k++] = 'g';
        if (gsi >= 10)
            tmp[k++] = (char)('0' + gsi / 10);
        tmp[k++] = (char)('0' + gsi % 10);
    }
    if (s->len + k + 2 >= sizeof(s->what))
        return;
    if (s->len)
        s->what[s->len++] = ' ';
    memcpy(s->what + s->len, tmp, k);
    s->len += k;
    s->what[s->len] = 0;
}

static void route(struct started *s, const char *name, uint32_t gsi)
{
    uint8_t v = (uint8_t)(VEC_IOAPIC_BASE + gsi);
    irq_set_handler(v, count_irq);
    describe(s, name, (int)gsi);
    for (uint32_t i = 0; i < s->n; i++)
        if (s->vec[i] == v)
            return;
    s->vec[s->n++] = v;
}

static bool all_fired(void *arg)
{
    const struct started *s = arg;
    for (uint32_t i = 0; i < s->n; i++)
        if (!hits[s->vec[i]])
            return false;
    return true;
}

static void start_all_timers(struct started *s)
{
    uint32_t gsi;
    if (plat.have_pit && plat.have_ioapic) {
        gsi = acpi_isa_gsi(PIT_ISA_IRQ);
        route(s, "pit", gsi);
        ioapic_route_isa(PIT_ISA_IRQ, plat.bsp_apic_id, &gsi);
        pit_start_periodic((PIT_HZ + 500) / 1000);
    }
    if (plat.have_rtc && plat.have_ioapic) {
        gsi = acpi_isa_gsi(RTC_ISA_IRQ);
        route(s, "rtc", gsi);
        ioapic_route_isa(RTC_ISA_IRQ, plat.bsp_apic_id, &gsi);
        rtc_periodic_start(6);
    }
    if (plat.have_hpet && plat.have_ioapic) {
        /* Every comparator at once; on a PC whose HPET only reaches pin 2 they share it with the PIT (all edge). */
        static const char *const names[] = {"hpet0", "hpet1", "hpet2"};
        uint32_t n = hpet_num_timers() < 3 ? hpet_num_timers() : 3;
        for (uint32_t i = 0; i < n; i++) {
            int g = hpet_pick_gsi(i, 1u << RTC_ISA_IRQ);
            if (g < 0 || g >= 48)
                continue;
            route(s, names[i], (uint32_t)g);
            ioapic_route((uint32_t)g, (uint8_t)(VEC_IOAPIC_BASE + g), plat.bsp_apic_id, false, false);
            if (hpet_periodic_capable(i)) {
                hpet_start_periodic(i, (uint32_t)g, (uint32_t)(hpet_hz() / 1000));
            } else {
                hpet_config_oneshot(i, (uint32_t)g);
                hpet_arm_oneshot(i, hpet_counter() + (uint32_t)(hpet_hz() / 1000));
            }
        }
    }
    if (plat.have_lapic_timer) {
        irq_set_handler(VEC_LAPIC_TIMER, count_irq);
        describe(s, "lapic", -1);
        s->vec[s->n++] = VEC_LAPIC_TIMER;
        lapic_timer_periodic(VEC_LAPIC_TIMER, (uint32_t)(lapic_timer_hz() / 1000));
    }
}

static void i8042_reset(void)
{
    /* Linux's reboot=k: wait for the input buffer, pulse the reset line, ten times over. */
    for (int attempt = 0; attempt < 10; attempt++) {
        for (unsigned i = 0; i < 0x10000; i++) {
            if (!(inb(I8042_STATUS) & I8042_INPUT_FULL))
                break;
            delay_us(2);
        }
        delay_us(50);
        outb(I8042_CMD, I8042_PULSE_RESET);
        delay_us(50);
    }
}

/*
 * The other ways a PC resets, each as Linux's reboot= option does it:
 * triple (reboot=t: an empty IDT, then an exception), acpi (reboot=a: the
 * FADT's reset register), cf9 (reboot=p: the reset control port); double
 * raises two requests back to back, which must make one reboot.
 */
static void triple_fault_reset(void)
{
    static const struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) empty_idt = {0, 0};
    __asm__ volatile("lidt %0; ud2" ::"m"(empty_idt));
}

static void acpi_reset(void)
{
    if (!acpi.reset_supported || acpi.reset_space != 1)
        fail(EXIT_FAIL, "testguest: reboot FAILED: the FADT has no I/O reset register\n");
    outb((uint16_t)acpi.reset_address, acpi.reset_value);
}

static void cf9_reset(void)
{
    outb(0xcf9, 0x02);
    delay_us(50);
    outb(0xcf9, 0x06);
}

static void clear_marker(void)
{
    cmos_write(NVRAM_BOOTS, 0);
    cmos_write(NVRAM_BOOTS_HIGH, 0);
    cmos_write(NVRAM_MAGIC, 0);
}

/*
 * A TSC deadline 1 ms ahead must fire promptly in every boot after a triple
 * fault: the TSC this vCPU reads and the one KVM counts its deadline against
 * must be the same.
 * After a triple fault on an AMD host they were not (KVM's SVM code wiped
 * the control block and left its TSC offset at 0 until the VMM put it back),
 * and every deadline of the next boot landed as late as the host had been up
 * when the VM was created. Polled with interrupts open: the LAPIC timer is
 * what is checked, so it cannot also be what wakes us. The patience is
 * 5 s of TSC time: a starved nested host lets this loop read the TSC before
 * it raises an overdue timer (one boot in a loaded CI run waited 2 s), and
 * the lost offset makes the deadline as late as the host's uptime at VM
 * creation, tens of seconds at least where these tests run.
 */
#define VEC_DEADLINE_CHECK 0xe4
#define DEADLINE_AHEAD_US 1000
#define DEADLINE_PATIENCE_US 5000000

static volatile uint64_t deadline_fired_tsc;

static void deadline_check_irq(unsigned v, uint64_t tsc)
{
    (void)v;
    deadline_fired_tsc = tsc;
    lapic_eoi();
}

static void check_tsc_deadline(uint32_t boot, bool after_triple_fault)
{
    if (!plat.have_tsc_deadline)
        return;
    irq_set_handler(VEC_DEADLINE_CHECK, deadline_check_irq);
    deadline_fired_tsc = 0;
    lapic_timer_tsc_deadline_mode(VEC_DEADLINE_CHECK);
    const uint64_t armed = rdtsc();
    lapic_timer_set_deadline(armed + us_to_tsc(DEADLINE_AHEAD_US));
    const uint64_t give_up = armed + us_to_tsc(DEADLINE_PATIENCE_US);
    sti();
    while (!deadline_fired_tsc && rdtsc() < give_up)
        cpu_relax();
    cli();
    lapic_timer_stop();
    irq_drain_pending();
    if (!deadline_fired_tsc && after_triple_fault) {
        clear_marker();
        fail(EXIT_FAIL,
             "testguest: reboot FAILED: boot %u: a TSC deadline %u us ahead had not fired after %u ms "
             "(the vCPU's TSC is not the one its timer counts)\n",
             boot, DEADLINE_AHEAD_US, DEADLINE_PATIENCE_US / 1000);
    }
    if (!deadline_fired_tsc) {
        /*
         * An open defect, not the one this guards: about one boot in a
         * thousand after an i8042 reset in the lab. Said on its own line so
         * that runs can count it; the boot goes on.
         */
        kprintf("testguest: reboot: boot %u: LATE TSC DEADLINE: %u us ahead, not fired after %u ms\n", boot,
                DEADLINE_AHEAD_US, DEADLINE_PATIENCE_US / 1000);
        return;
    }
    kprintf("testguest: reboot: boot %u: a TSC deadline %u us ahead fired after %ld us\n", boot,
            DEADLINE_AHEAD_US, (long)tsc_to_us((int64_t)(deadline_fired_tsc - armed)));
}

uint32_t scenario_reboot(void)
{
    if (!platform_init("reboot"))
        return EXIT_FAIL;
    uint32_t target = (uint32_t)cmdline_u64("count", 3);
    if (target < 1 || target > 65535)
        fail(EXIT_USAGE, "testguest: reboot: count=%u out of range 1..65535\n", target);
    const char *via = cmdline_get("via");
    if (!via)
        via = "kbd";
    if (!str_eq(via, "kbd") && !str_eq(via, "triple") && !str_eq(via, "acpi") && !str_eq(via, "cf9") &&
        !str_eq(via, "double"))
        fail(EXIT_USAGE, "testguest: reboot: via=%s (known: kbd triple acpi cf9 double)\n", via);
    if (!plat.have_rtc)
        fail(EXIT_FAIL, "testguest: reboot FAILED: no CMOS to count boots in\n");
    const uint32_t stored = cmos_read(NVRAM_BOOTS) | ((uint32_t)cmos_read(NVRAM_BOOTS_HIGH) << 8);
    uint32_t boots = cmos_read(NVRAM_MAGIC) == MAGIC_VALUE ? stored + 1u : 1u;
    if (boots > target) {
        clear_marker();
        fail(EXIT_FAIL, "testguest: reboot FAILED: CMOS says boot %u of %u\n", boots, target);
    }
    kprintf("testguest: reboot: boot %u of %u\n", boots, target);
    check_tsc_deadline(boots, str_eq(via, "triple"));
    if (boots == target) {
        clear_marker();
        kprintf("testguest: reboot ok boots=%u\n", boots);
        return EXIT_OK;
    }
    if (inb(I8042_STATUS) == 0xff || !plat.have_lapic_timer) {
        clear_marker();
        fail(EXIT_FAIL, "testguest: reboot FAILED: %s\n",
             plat.have_lapic_timer ? "no i8042 at port 0x64" : "the LAPIC timer is not usable");
    }
    cmos_write(NVRAM_BOOTS, (uint8_t)boots);
    cmos_write(NVRAM_BOOTS_HIGH, (uint8_t)(boots >> 8));
    cmos_write(NVRAM_MAGIC, MAGIC_VALUE);
    struct started s = {0};
    start_all_timers(&s);
    /*
     * Wait (100 ms at most) until each source has fired once, so the reset
     * lands on live timers. The timers themselves wake us: the LAPIC timer
     * is one of them and cannot also be the watchdog.
     */
    bool live = wait_until(all_fired, &s, rdtsc() + us_to_tsc(100000), WAKE_EXTERNAL);
    kprintf("testguest: reboot: timers %s (%s), resetting via %s\n", live ? "firing" : "started, not all fired yet",
            s.what, via);
    if (str_eq(via, "triple"))
        triple_fault_reset();
    else if (str_eq(via, "acpi"))
        acpi_reset();
    else if (str_eq(via, "cf9"))
        cf9_reset();
    else if (str_eq(via, "double")) {
        /* Two requests at once (reset control port, then the i8042 pulse):
         * the VMM must reboot once, not twice. */
        outb(0xcf9, 0x06);
        outb(I8042_CMD, I8042_PULSE_RESET);
    } else
        i8042_reset();
    /* Still here: the reset did not happen. */
    wait_until(0, 0, rdtsc() + us_to_tsc(1000000), WAKE_WATCHDOG);
    clear_marker();
    fail(EXIT_FAIL, "testguest: reboot FAILED: still running 1 s after the reset via %s\n", via);
}
