#include "hpet.h"

#include "acpi.h"
#include "io.h"
#include "wait.h"

#define HPET_GCAP_LO 0x000
#define HPET_GCAP_HI 0x004 /* counter period in femtoseconds */
#define HPET_CONF 0x010
#define HPET_COUNTER_LO 0x0f0
#define HPET_COUNTER_HI 0x0f4
#define HPET_TN_CONF(n) (0x100 + 0x20 * (n))
#define HPET_TN_ROUTE(n) (0x104 + 0x20 * (n))
#define HPET_TN_CMP(n) (0x108 + 0x20 * (n))

#define CONF_ENABLE 0x1
#define CONF_LEGACY 0x2

#define TN_INT_TYPE_LEVEL 0x002
#define TN_INT_ENB 0x004
#define TN_PERIODIC 0x008
#define TN_PER_CAP 0x010
#define TN_SETVAL 0x040
#define TN_32BIT 0x100
#define TN_ROUTE_SHIFT 9
#define TN_ROUTE_MASK (0x1fu << TN_ROUTE_SHIFT)
#define TN_FSB_EN 0x4000

static uintptr_t base;
static uint32_t ntimers, period_fs;

static inline uint32_t rd(uint32_t reg) { return mmio_read32(base + reg); }
static inline void wr(uint32_t reg, uint32_t v) { mmio_write32(base + reg, v); }

static void counter_enable(bool on)
{
    uint32_t c = rd(HPET_CONF);
    wr(HPET_CONF, on ? (c | CONF_ENABLE) : (c & ~(uint32_t)CONF_ENABLE));
}

bool hpet_init(void)
{
    if (!acpi.have_hpet)
        return false;
    base = (uintptr_t)acpi.hpet_address;
    uint32_t cap = rd(HPET_GCAP_LO);
    period_fs = rd(HPET_GCAP_HI);
    /* The spec bounds the period at 100 ns; 0 or all-ones means nothing answers there. */
    if (cap == 0xffffffffu || period_fs == 0 || period_fs > 100000000u)
        return false;
    ntimers = ((cap >> 8) & 0x1f) + 1;
    /* As Linux's hpet_enable: stop, zero, start. Legacy routing off: we route each comparator ourselves. */
    wr(HPET_CONF, rd(HPET_CONF) & ~(uint32_t)(CONF_ENABLE | CONF_LEGACY));
    for (uint32_t n = 0; n < ntimers; n++)
        hpet_stop(n);
    wr(HPET_COUNTER_LO, 0);
    wr(HPET_COUNTER_HI, 0);
    counter_enable(true);
    return true;
}

uint32_t hpet_num_timers(void) { return ntimers; }
uint32_t hpet_period_fs(void) { return period_fs; }
uint64_t hpet_hz(void) { return period_fs ? 1000000000000000ull / period_fs : 0; }
bool hpet_periodic_capable(uint32_t n) { return n < ntimers && (rd(HPET_TN_CONF(n)) & TN_PER_CAP); }
uint32_t hpet_route_cap(uint32_t n) { return n < ntimers ? rd(HPET_TN_ROUTE(n)) : 0; }
uint32_t hpet_counter(void) { return rd(HPET_COUNTER_LO); }

static uint32_t base_conf(uint32_t n, uint32_t gsi)
{
    uint32_t c = rd(HPET_TN_CONF(n));
    /* Edge-triggered (INT_TYPE clear), IOAPIC delivery (FSB off), 32-bit comparator. */
    c &= ~(uint32_t)(TN_ROUTE_MASK | TN_FSB_EN | TN_PERIODIC | TN_INT_TYPE_LEVEL);
    return c | TN_INT_ENB | TN_32BIT | (gsi << TN_ROUTE_SHIFT);
}

static void set_periodic(uint32_t n, uint32_t cmp, uint32_t period_ticks)
{
    /*
     * SETVAL lets the first write load the comparator itself; the second
     * write (SETVAL has cleared itself) loads the period. Some HPETs need
     * the 1 us gap between the two.
     */
    wr(HPET_TN_CONF(n), rd(HPET_TN_CONF(n)) | TN_SETVAL);
    wr(HPET_TN_CMP(n), cmp);
    delay_us(1);
    wr(HPET_TN_CMP(n), period_ticks);
}

uint32_t hpet_start_periodic(uint32_t n, uint32_t gsi, uint32_t period_ticks)
{
    counter_enable(false);
    uint32_t first = hpet_counter() + period_ticks;
    wr(HPET_TN_CONF(n), base_conf(n, gsi) | TN_PERIODIC);
    set_periodic(n, first, period_ticks);
    counter_enable(true);
    return first;
}

void hpet_rearm_periodic(uint32_t n, uint32_t period_ticks)
{
    set_periodic(n, hpet_counter() + period_ticks, period_ticks);
}

void hpet_config_oneshot(uint32_t n, uint32_t gsi)
{
    /*
     * Park the comparator as far ahead as a signed 32-bit distance reaches
     * before enabling: an emulated HPET (QEMU's) fires at once on a
     * comparator it judges to be in the past, such as the one the previous
     * user left behind.
     */
    wr(HPET_TN_CMP(n), hpet_counter() + 0x7fffffffu);
    wr(HPET_TN_CONF(n), base_conf(n, gsi));
}

bool hpet_arm_oneshot(uint32_t n, uint32_t cmp)
{
    wr(HPET_TN_CMP(n), cmp);
    /* Read back the counter after the write, as Linux does: a past comparator never fires (until wrap). */
    return (int32_t)(cmp - hpet_counter()) >= HPET_MIN_DELTA;
}

void hpet_stop(uint32_t n)
{
    wr(HPET_TN_CONF(n), rd(HPET_TN_CONF(n)) & ~(uint32_t)(TN_INT_ENB | TN_PERIODIC));
}
