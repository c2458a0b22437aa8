/* Waiting without spinning: HLT until an interrupt, re-check, repeat. */
#ifndef TESTGUEST_WAIT_H
#define TESTGUEST_WAIT_H

#include <stdbool.h>
#include <stdint.h>

typedef bool (*wait_cond_fn)(void *arg);

/*
 * How a waiter is guaranteed to wake up by its deadline:
 * WAKE_WATCHDOG arms the LAPIC timer (TSC-deadline mode when the CPU has
 * it, else a calibrated one-shot) on VEC_WATCHDOG; WAKE_EXTERNAL relies on
 * an interrupt source the caller already has running (used while the LAPIC
 * timer itself is under test).
 */
enum wake { WAKE_WATCHDOG, WAKE_EXTERNAL };

/* Sets up the watchdog vector; needs the TSC frequency. */
bool wait_init(void);

/* Returns true if cond held, false at the deadline. cond == NULL waits for the deadline. */
bool wait_until(wait_cond_fn cond, void *arg, uint64_t deadline_tsc, enum wake how);

/* Microsecond delay: spins for short ones (<= 1 ms), halts for longer ones. */
void delay_us(uint64_t us);

#endif
