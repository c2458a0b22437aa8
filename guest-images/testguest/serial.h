/* COM1, a 16550A at 0x3f8, polled: the guest never takes UART interrupts. */
#ifndef TESTGUEST_SERIAL_H
#define TESTGUEST_SERIAL_H

#include <stddef.h>

void serial_init(void);
void serial_write(const char *s, size_t n);
void serial_flush(void); /* wait until the last byte has left the UART */

/*
 * Serialises whole lines between CPUs. serial_lock_panic() gives up after a
 * bounded wait, so a CPU that faults while holding the lock can still report.
 */
void serial_lock(void);
void serial_lock_panic(void);
void serial_unlock(void);

#endif
