#include "pit.h"

#include "io.h"

#define PIT_CH0 0x40
#define PIT_CH2 0x42
#define PIT_MODE 0x43
#define PORT_B 0x61 /* bit 0: channel 2 gate, bit 1: speaker, bit 5: channel 2 output */

#define CW_CH0_LOHI_MODE2 0x34
#define CW_CH0_LOHI_MODE0 0x30
#define CW_CH2_LOHI_MODE0 0xb0

static int present = -1;

bool pit_present(void)
{
    if (present >= 0)
        return present;
    /*
     * Program channel 2 (gate low: no speaker, no side effects) and read its
     * status back: a PIT returns the access and mode bits just written; an
     * empty port range reads 0xff. The status, unlike the count, does not
     * depend on how long the host took between the two accesses (QEMU's
     * channel 2 counts even with its gate low, and a slow host let the count
     * wrap past what was loaded).
     */
    outb(PORT_B, inb(PORT_B) & ~0x03);
    outb(PIT_MODE, CW_CH2_LOHI_MODE0);
    outb(PIT_CH2, 0x34);
    outb(PIT_CH2, 0x12);
    outb(PIT_MODE, 0xE8); /* read-back: status only (bit 4 clear), channel 2 */
    uint8_t status = inb(PIT_CH2);
    present = status != 0xff && (status & 0x3f) == 0x30; /* lobyte/hibyte, mode 0, binary */
    return present;
}

void pit_start_periodic(uint16_t latch)
{
    outb(PIT_MODE, CW_CH0_LOHI_MODE2);
    outb(PIT_CH0, latch & 0xff);
    outb(PIT_CH0, latch >> 8);
}

uint32_t pit_read_count(void)
{
    outb(PIT_MODE, 0x00); /* counter latch command, channel 0 */
    uint32_t v = inb(PIT_CH0);
    return v | (uint32_t)inb(PIT_CH0) << 8;
}

void pit_stop(void)
{
    outb(PIT_MODE, CW_CH0_LOHI_MODE0);
    outb(PIT_CH0, 0);
    outb(PIT_CH0, 0);
}

uint64_t pit_calibrate_tsc(void)
{
    if (!pit_present())
        return 0;
    const unsigned ms = 50;
    const uint32_t latch = PIT_HZ / (1000 / ms);
    /* Gate high, speaker off; mode 0 raises OUT2 (port 0x61 bit 5) at terminal count. */
    outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01);
    outb(PIT_MODE, CW_CH2_LOHI_MODE0);
    outb(PIT_CH2, latch & 0xff);
    outb(PIT_CH2, latch >> 8);
    uint64_t t0 = rdtsc(), t1 = t0;
    bool done = false;
    /*
     * A polling loop, but a bounded one: 50 ms, each iteration one port
     * read. The iteration bound only guards against a PIT that never ends.
     */
    for (unsigned long i = 0; i < 10000000ul && !done; i++) {
        t1 = rdtsc();
        done = inb(PORT_B) & 0x20;
    }
    outb(PORT_B, inb(PORT_B) & ~0x01);
    if (!done || t1 == t0)
        return 0;
    /* The exact interval is latch / PIT_HZ seconds, not a rounded 50 ms. */
    return (t1 - t0) * PIT_HZ / latch;
}
