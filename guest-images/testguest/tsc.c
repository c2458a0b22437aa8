#include "tsc.h"

#include "io.h"
#include "lib.h"
#include "cmdline.h"
#include "pit.h"
#include "irq.h"
#include "progress.h"

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_SYSTEM_TIME 0x12
#define KVM_FEATURE_CLOCKSOURCE (1u << 0)
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

static uint64_t hz;
static const char *method = "none";

uint64_t tsc_hz(void) { return hz; }

void tsc_assume(uint64_t assumed)
{
    hz = assumed;
    method = "assumed";
}
const char *tsc_method(void) { return method; }

bool tsc_invariant(void)
{
    if (cpuid(0x80000000, 0).eax < 0x80000007)
        return false;
    return (cpuid(0x80000007, 0).edx >> 8) & 1;
}

int64_t tsc_to_us(int64_t delta)
{
    return hz ? delta * 1000 / (int64_t)(hz / 1000) : 0;
}

int64_t tsc_to_ns(int64_t delta)
{
    return hz ? delta * 1000000 / (int64_t)(hz / 1000) : 0;
}

uint64_t tsc_bracket(uint32_t (*read)(void), uint32_t *value)
{
    uint64_t best_width = ~0ull, best_mid = 0;
    for (int i = 0; i < 6; i++) {
        uint64_t a = rdtsc();
        uint32_t v = read();
        uint64_t b = rdtsc();
        if (b - a < best_width) {
            best_width = b - a;
            best_mid = a + (b - a) / 2;
            *value = v;
        }
    }
    return best_mid;
}

static uint64_t from_leaf15(void)
{
    if (cpuid(0, 0).eax < 0x15)
        return 0;
    struct cpuid_regs r = cpuid(0x15, 0);
    /* EAX = denominator, EBX = numerator, ECX = crystal Hz (0 = not enumerated). */
    if (!r.eax || !r.ebx || !r.ecx)
        return 0;
    return (uint64_t)r.ecx * r.ebx / r.eax;
}

static uint32_t hypervisor_max_leaf(const char *sig12)
{
    if (!((cpuid(1, 0).ecx >> 31) & 1)) /* CPUID.1:ECX.hypervisor */
        return 0;
    struct cpuid_regs r = cpuid(0x40000000, 0);
    if (sig12) {
        char s[12];
        memcpy(s, &r.ebx, 4);
        memcpy(s + 4, &r.ecx, 4);
        memcpy(s + 8, &r.edx, 4);
        if (memcmp(s, sig12, 12) != 0)
            return 0;
    }
    return r.eax;
}

static uint64_t from_timing_leaf(void)
{
    if (hypervisor_max_leaf(0) < 0x40000010)
        return 0;
    return (uint64_t)cpuid(0x40000010, 0).eax * 1000;
}

uint32_t tsc_hypervisor_apic_bus_khz(void)
{
    if (hypervisor_max_leaf(0) < 0x40000010)
        return 0;
    return cpuid(0x40000010, 0).ebx;
}

/* The pvclock record KVM keeps updated in guest memory while enabled. */
struct pvclock {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad[2];
} __attribute__((packed));

static struct pvclock pvclock_page __attribute__((aligned(64)));

static uint64_t from_kvmclock(void)
{
    if (hypervisor_max_leaf("KVMKVMKVM\0\0\0") < 0x40000001)
        return 0;
    uint32_t features = cpuid(0x40000001, 0).eax;
    uint32_t msr;
    if (features & KVM_FEATURE_CLOCKSOURCE2)
        msr = MSR_KVM_SYSTEM_TIME_NEW;
    else if (features & KVM_FEATURE_CLOCKSOURCE)
        msr = MSR_KVM_SYSTEM_TIME;
    else
        return 0;
    volatile struct pvclock *p = &pvclock_page;
    p->version = 0;
    p->tsc_to_system_mul = 0;
    wrmsr(msr, (uint64_t)(uintptr_t)&pvclock_page | 1);
    uint32_t mul = 0;
    int8_t shift = 0;
    /* An odd version means KVM is in the middle of an update: read again. */
    for (int i = 0; i < 100; i++) {
        uint32_t v = p->version;
        barrier();
        mul = p->tsc_to_system_mul;
        shift = p->tsc_shift;
        barrier();
        if (!(v & 1) && v == p->version && mul)
            break;
    }
    /* Stop KVM writing into our memory: it would keep doing so across a reboot. */
    wrmsr(msr, 0);
    if (!mul)
        return 0;
    /* ns = (tsc << shift) * mul >> 32, so kHz = 10^6 * 2^32 / mul, shifted back. */
    uint64_t khz = (1000000ull << 32) / mul;
    if (shift < 0)
        khz <<= -shift;
    else
        khz >>= shift;
    return khz * 1000;
}

bool tsc_init(const char *force)
{
    struct {
        const char *name;
        uint64_t (*fn)(void);
    } sources[] = {
        {"cpuid-0x15", from_leaf15},
        {"cpuid-0x40000010", from_timing_leaf},
        {"kvmclock", from_kvmclock},
        {"pit", pit_calibrate_tsc},
    };
    for (unsigned i = 0; i < ARRAY_SIZE(sources); i++) {
        if (force && *force && !str_eq(force, sources[i].name))
            continue;
        uint64_t v = sources[i].fn();
        if (v) {
            hz = v;
            method = sources[i].name;
            return true;
        }
    }
    return false;
}

uint64_t exit_cost_ns(void)
{
    uint64_t best = ~0ull;
    for (int batch = 0; batch < 8; batch++) {
        uint64_t t0 = rdtsc();
        for (int i = 0; i < 32; i++)
            outb(0x80, 0);
        uint64_t t = rdtsc() - t0;
        if (t < best)
            best = t;
    }
    return (uint64_t)tsc_to_ns((int64_t)best) / 32;
}

uint32_t guest_tick_us(const char *scenario, uint32_t max_us)
{
    const char *arg = cmdline_get("tick_us");
    if (arg && *arg && !str_eq(arg, "auto")) {
        uint64_t tick = cmdline_u64("tick_us", 1000);
        if (tick < 1000 || tick > max_us)
            fail(EXIT_USAGE, "testguest: %s: tick_us=%lu out of range 1000..%u\n", scenario, tick, max_us);
        return (uint32_t)tick;
    }
    uint64_t exit_ns = exit_cost_ns();
    uint64_t tick = 1000;
    if (exit_ns >= 5000)
        tick = (exit_ns * 250 / 1000 + 999) / 1000 * 1000;
    if (tick > max_us)
        tick = max_us;
    kprintf("testguest: %s: a VM exit costs %lu ns here: tick %lu us (tick_us=N overrides)\n", scenario, exit_ns,
            tick);
    return (uint32_t)tick;
}
