/* MC146818 CMOS RTC: NVRAM bytes and the periodic interrupt. */
#ifndef TESTGUEST_RTC_H
#define TESTGUEST_RTC_H

#include <stdbool.h>
#include <stdint.h>

#define RTC_ISA_IRQ 8

uint8_t cmos_read(uint8_t reg);
void cmos_write(uint8_t reg, uint8_t v);

bool rtc_present(void);
/* rate 3..15 gives 32768 >> (rate - 1) Hz: 6 -> 1024 Hz. */
void rtc_periodic_start(uint8_t rate);
void rtc_periodic_stop(void);
/* Reads register C, which acknowledges the interrupt; returns its flags. */
uint8_t rtc_ack(void);

#endif
