#include "serial.h"

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

#define COM1 0x3f8
#define UART_THR 0 /* transmit holding register (DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1
#define UART_DLM 1
#define UART_FCR 2 /* write: FIFO control */
#define UART_IIR 2 /* read: interrupt identification, bits 7:6 say FIFO */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5

#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define FCR_ENABLE_CLEAR 0x07 /* enable FIFOs, clear receive and transmit */
#define MCR_DTR_RTS 0x03      /* OUT2 stays off: it would gate the IRQ line */
#define LSR_THRE 0x20         /* holding register (or the whole FIFO) empty */

/* 1 until probed: a plain 8250 takes one byte per THRE. */
static unsigned tx_burst = 1;
static volatile uint32_t lock_word;

void serial_init(void)
{
    /* Same order as Linux's 8250 set-up: interrupts off, divisor, line format, FIFO, modem lines. */
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, LCR_DLAB);
    outb(COM1 + UART_DLL, 1); /* 115200 baud; emulated UARTs ignore it, real ones need it */
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, LCR_8N1);
    outb(COM1 + UART_FCR, FCR_ENABLE_CLEAR);
    outb(COM1 + UART_MCR, MCR_DTR_RTS);
    /*
     * A 16550A reports working FIFOs in IIR bits 7:6. Loading 16 bytes per
     * THRE poll cuts the number of LSR reads (each one an exit) by 16.
     * An absent UART reads 0xff: that also says "FIFO", harmlessly.
     */
    if ((inb(COM1 + UART_IIR) & 0xc0) == 0xc0)
        tx_burst = 16;
}

static void wait_thre(void)
{
    /* Bounded: a wedged UART must not hang the guest, we lose output instead. */
    for (unsigned i = 0; i < 100000; i++)
        if (inb(COM1 + UART_LSR) & LSR_THRE)
            return;
}

void serial_write(const char *s, size_t n)
{
    while (n) {
        wait_thre();
        for (unsigned k = 0; k < tx_burst && n; k++, n--)
            outb(COM1 + UART_THR, (uint8_t)*s++);
    }
}

static bool try_lock(void)
{
    uint32_t old = 1;
    __asm__ volatile("xchgl %0, %1" : "+r"(old), "+m"(lock_word)::"memory");
    return old == 0;
}

void serial_lock(void)
{
    while (!try_lock())
        cpu_relax();
}

void serial_lock_panic(void)
{
    for (unsigned i = 0; i < 1000000; i++)
        if (try_lock())
            return;
}

void serial_unlock(void)
{
    barrier();
    lock_word = 0;
}

void serial_flush(void)
{
    /* TEMT: holding register and shift register both empty, the last byte is out. */
    for (unsigned i = 0; i < 100000; i++)
        if (inb(COM1 + UART_LSR) & 0x40)
            return;
}
