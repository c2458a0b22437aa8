/* TSC frequency: from CPUID when the platform states it, else measured. */
#ifndef TESTGUEST_TSC_H
#define TESTGUEST_TSC_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Tries, in order, the sources Linux itself uses:
 *   cpuid-0x15        CPUID leaf 0x15 (crystal clock x TSC/crystal ratio)
 *   cpuid-0x40000010  hypervisor timing leaf (TSC kHz in EAX)
 *   kvmclock          KVM paravirtual clock: the TSC->ns multiplier that
 *                     KVM publishes (Linux's kvm_get_tsc_khz)
 *   pit               PIT channel 2 gated through port 0x61, 50 ms window
 *                     (Linux's pit_calibrate_tsc)
 * `force` (from tsc=... on the command line) restricts to one of them.
 */
bool tsc_init(const char *force);
/* For callers that only need rough timeouts: use this rate, reported as "assumed". */
void tsc_assume(uint64_t hz);
uint64_t tsc_hz(void);
const char *tsc_method(void);
bool tsc_invariant(void);
/* APIC bus kHz from leaf 0x40000010 EBX, 0 when not offered. */
uint32_t tsc_hypervisor_apic_bus_khz(void);

/*
 * Reads a device register (often an exit to the device model) between two
 * TSC reads, several times, and keeps the narrowest bracket: a host
 * preemption inside one bracket would otherwise put milliseconds of error
 * into the time we give the reading. Returns the TSC at the bracket's middle.
 */
uint64_t tsc_bracket(uint32_t (*read)(void), uint32_t *value);

/*
 * What one VM exit costs here, in ns: the fastest of several batches of
 * writes to port 0x80 (Linux's delay port, ignored by every PC VMM). About a
 * microsecond with hardware virtualization; tens under software emulation.
 */
uint64_t exit_cost_ns(void);

/*
 * The tick the timer scenarios run at, in us: tick_us=N from the command
 * line, else (or with tick_us=auto) 1000 -- Linux's HZ=1000 tick -- where a
 * VM exit costs under 5 us, and otherwise 250 exits' worth rounded up to
 * whole milliseconds, at most `max_us`. Every timer check is relative to
 * the tick, so on an emulating host, where each interrupt costs many slow
 * exits, the same checks hold; with hardware virtualization they stay the
 * strict 1 ms ones.
 */
uint32_t guest_tick_us(const char *scenario, uint32_t max_us);

static inline uint64_t us_to_tsc(uint64_t us) { return us * (tsc_hz() / 1000) / 1000; }
int64_t tsc_to_us(int64_t delta);
int64_t tsc_to_ns(int64_t delta);

#endif
