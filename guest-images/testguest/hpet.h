/* HPET: main counter and comparators, each routed to its own IOAPIC pin. */
#ifndef TESTGUEST_HPET_H
#define TESTGUEST_HPET_H

#include <stdbool.h>
#include <stdint.h>

/* Maps the block from the ACPI HPET table, resets and starts the counter. Legacy replacement stays off. */
bool hpet_init(void);
uint32_t hpet_num_timers(void);
uint64_t hpet_hz(void);
uint32_t hpet_period_fs(void);
bool hpet_periodic_capable(uint32_t n);
uint32_t hpet_route_cap(uint32_t n); /* bit g set: comparator n can drive GSI g */
uint32_t hpet_counter(void);         /* low 32 bits: all comparators run in 32-bit mode */

/*
 * Linux's periodic set-up: counter stopped, SETVAL, first expiry, then the
 * period, counter restarted. Returns the counter value of the first expiry.
 */
uint32_t hpet_start_periodic(uint32_t n, uint32_t gsi, uint32_t period_ticks);
/* Same sequence while the counter keeps running: how a guest re-arms a live periodic comparator. */
void hpet_rearm_periodic(uint32_t n, uint32_t period_ticks);
void hpet_config_oneshot(uint32_t n, uint32_t gsi);
/* Writes the comparator; false if the counter is already within HPET_MIN_DELTA of it (Linux's -ETIME). */
bool hpet_arm_oneshot(uint32_t n, uint32_t cmp);
void hpet_stop(uint32_t n);

#define HPET_MIN_DELTA 192 /* Linux's HPET_MIN_PROG_DELTA, in counter ticks */

#endif
