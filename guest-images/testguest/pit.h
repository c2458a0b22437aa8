/* i8254 PIT: channel 0 as the tick, channel 2 (gated by port 0x61) to measure the TSC. */
#ifndef TESTGUEST_PIT_H
#define TESTGUEST_PIT_H

#include <stdbool.h>
#include <stdint.h>

#define PIT_HZ 1193182u /* input clock: 14.31818 MHz / 12 */
#define PIT_ISA_IRQ 0

bool pit_present(void);
/* Mode 2 (rate generator), as Linux's i8253 clockevent runs it periodically. */
void pit_start_periodic(uint16_t latch);
/* Latches and reads channel 0's current count. */
uint32_t pit_read_count(void);
/* Linux's shutdown: mode 0 with a zero count. It raises one more edge 55 ms later. */
void pit_stop(void);
/* TSC Hz measured over a 50 ms channel-2 count, 0 if there is no PIT. */
uint64_t pit_calibrate_tsc(void);

#endif
