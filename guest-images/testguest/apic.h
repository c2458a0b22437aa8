/* Local APIC in xAPIC (MMIO) mode: set-up, EOI, IPIs and the timer. */
#ifndef TESTGUEST_APIC_H
#define TESTGUEST_APIC_H

#include <stdbool.h>
#include <stdint.h>

#define LAPIC_DEFAULT_BASE 0xfee00000u

/* Software-enables this CPU's LAPIC; bsp selects the LINT1 NMI wiring. */
void lapic_init(bool bsp);
uint32_t lapic_id(void);
void lapic_eoi(void);
/* LINT0 as ExtINT, unmasked: the 8259 pair delivers through it. */
void lapic_virtual_wire(void);

/* ICR low-word fields for lapic_send_ipi. */
#define ICR_FIXED 0x00000
#define ICR_INIT 0x00500
#define ICR_STARTUP 0x00600
#define ICR_LEVEL_ASSERT 0x04000
#define ICR_TRIGGER_LEVEL 0x08000
#define ICR_BUSY 0x01000
/* Returns false if the ICR never reported "delivered". */
bool lapic_send_ipi(uint32_t dest_apic_id, uint32_t icr_low);

/*
 * Timer. The divider is 16, as Linux programs it. lapic_timer_hz() is the
 * rate of the counter after the divider, 0 until lapic_timer_calibrate()
 * succeeded (or CPUID leaf 0x40000010 gave the bus frequency).
 */
bool lapic_timer_calibrate(void);
uint64_t lapic_timer_hz(void);
const char *lapic_timer_hz_source(void);
bool lapic_has_tsc_deadline(void);

void lapic_timer_periodic(uint8_t vector, uint32_t count);
void lapic_timer_oneshot(uint8_t vector, uint32_t count);
void lapic_timer_set_initial_count(uint32_t count); /* re-arm in the current mode */
void lapic_timer_tsc_deadline_mode(uint8_t vector);
void lapic_timer_set_deadline(uint64_t tsc);
void lapic_timer_stop(void);
uint32_t lapic_timer_current_count(void);

/* LAPIC ticks for a TSC interval and back, via a 32.32 fixed-point ratio. */
uint64_t tsc_to_lapic_ticks(uint64_t tsc_delta);

#endif
