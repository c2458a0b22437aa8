/* IDT, interrupt dispatch and the failure path for anything unexpected. */
#ifndef TESTGUEST_IRQ_H
#define TESTGUEST_IRQ_H

#include <stdint.h>

/* Register frame as isr_common in vectors.S pushes it. */
struct irq_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rdi, rsi, rbp, rbx, rcx, rdx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

/*
 * A handler gets its vector and the TSC read on entry to the stub, and must
 * send its own LAPIC EOI (spurious interrupts must not get one).
 */
typedef void (*irq_handler_fn)(unsigned vector, uint64_t tsc);

/* Vector plan. Anything else that arrives is reported and fails the run. */
#define VEC_IOAPIC_BASE 0x30 /* + GSI, for GSIs 0..47 */
#define VEC_WATCHDOG 0xe8    /* LAPIC one-shot used only to wake a waiting HLT */
#define VEC_LAPIC_TIMER 0xec /* the LAPIC timer under test */
#define VEC_WAKE_IPI 0xf0    /* AP -> BSP "I checked in" */
#define VEC_SPURIOUS 0xff

/* Loads the IDT (a constant table in vectors.S) on this CPU: the BSP at boot, each AP as it starts. */
void idt_load(void);
void irq_set_handler(unsigned vector, irq_handler_fn fn);

/*
 * The scenarios run with interrupts off except while they wait, so when a
 * test stops its timer an interrupt may still be pending in the LAPIC.
 * Opening the window for two instructions lets it in now, to whatever
 * handler the vector has at this point.
 */
static inline void irq_drain_pending(void) { __asm__ volatile("sti; nop; nop; cli" ::: "memory"); }

/* Count of spurious-vector deliveries (allowed, but reported). */
extern volatile uint32_t spurious_count;

/* Report and leave through the debug-exit port; never returns. */
__attribute__((noreturn)) void guest_exit(uint32_t code);
__attribute__((noreturn, format(printf, 2, 3))) void fail(uint32_t code, const char *fmt, ...);

void progress(uint32_t milestone);

#endif
