#include "rtc.h"

#include "io.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d

#define REG_A_DV_32KHZ 0x20 /* divider chain running from a 32.768 kHz crystal */
#define REG_B_PIE 0x40
#define REG_B_AIE 0x20
#define REG_B_UIE 0x10

/*
 * Index then data: an interrupt handler reading register C in between would
 * move the index under us, so each pair runs with interrupts off. APs never
 * touch CMOS, so that is all the locking needed. Bit 7 of the index port is
 * the NMI mask on a PC; Linux's accessors leave it clear, and so do we.
 */
uint8_t cmos_read(uint8_t reg)
{
    uint64_t flags = read_rflags();
    cli();
    outb(CMOS_INDEX, reg & 0x7f);
    uint8_t v = inb(CMOS_DATA);
    if (flags & 0x200)
        sti();
    return v;
}

void cmos_write(uint8_t reg, uint8_t v)
{
    uint64_t flags = read_rflags();
    cli();
    outb(CMOS_INDEX, reg & 0x7f);
    outb(CMOS_DATA, v);
    if (flags & 0x200)
        sti();
}

bool rtc_present(void)
{
    /* Register D reads 0x80 (valid RAM and time) on an RTC, 0xff on an empty bus. */
    return cmos_read(RTC_REG_D) != 0xff;
}

void rtc_periodic_start(uint8_t rate)
{
    /* Like rtc-cmos: set the rate, clear stale flags, then enable PIE. */
    cmos_write(RTC_REG_A, REG_A_DV_32KHZ | (rate & 0x0f));
    uint8_t b = cmos_read(RTC_REG_B);
    (void)cmos_read(RTC_REG_C);
    cmos_write(RTC_REG_B, (uint8_t)((b | REG_B_PIE) & ~(REG_B_AIE | REG_B_UIE)));
}

void rtc_periodic_stop(void)
{
    cmos_write(RTC_REG_B, cmos_read(RTC_REG_B) & (uint8_t)~REG_B_PIE);
    (void)cmos_read(RTC_REG_C);
}

uint8_t rtc_ack(void) { return cmos_read(RTC_REG_C); }
