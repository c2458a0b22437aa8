#include "irq.h"

#include <stdarg.h>

#include "apic.h"
#include "io.h"
#include "lib.h"
#include "progress.h"
#include "serial.h"

struct idt_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

/* vectors.S: the IDT, a constant table pointing at one stub per vector. */
extern const uint8_t idt[], idt_end[];

static irq_handler_fn handlers[256];
volatile uint32_t spurious_count;

static const char *const exception_names[32] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound",
    "#UD invalid opcode", "#NM no FPU", "#DF double fault", "coprocessor overrun", "#TS invalid TSS",
    "#NP segment not present", "#SS stack fault", "#GP general protection", "#PF page fault",
    "reserved", "#MF x87 error", "#AC alignment", "#MC machine check", "#XM SIMD error",
    "#VE virtualization", "#CP control protection",
};

/*
 * Every vector has a gate, so whatever arrives lands in isr_dispatch and is
 * reported by number; a not-present gate would only show up as a #NP or,
 * worse, a triple fault that silently resets the machine.
 */
void idt_load(void)
{
    struct idt_ptr p = {(uint16_t)(idt_end - idt - 1), (uint64_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" ::"m"(p));
}

void irq_set_handler(unsigned vector, irq_handler_fn fn)
{
    handlers[vector & 0xff] = fn;
}

void progress(uint32_t milestone)
{
    outl(PROGRESS_PORT, milestone);
}

__attribute__((noreturn)) void guest_exit(uint32_t code)
{
    cli();
    serial_flush();
    outl(DEBUG_EXIT_PORT, code);
    /* No debug-exit device: park. The last line printed says why we stopped. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

__attribute__((noreturn)) void fail(uint32_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    serial_lock_panic();
    kvprintf(fmt, ap);
    serial_unlock();
    va_end(ap);
    guest_exit(code);
}

void isr_dispatch(struct irq_frame *f, uint64_t tsc);

void isr_dispatch(struct irq_frame *f, uint64_t tsc)
{
    unsigned v = (unsigned)f->vector;
    if (v >= 32) {
        if (handlers[v]) {
            handlers[v](v, tsc);
            return;
        }
        if (v == VEC_SPURIOUS) {
            spurious_count++;
            return;
        }
    }
    progress(MS_PANIC);
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    if (v < 32)
        fail(EXIT_EXCEPTION,
             "testguest: unexpected exception vector=%u (%s) error=0x%lx rip=0x%lx rsp=0x%lx cr2=0x%lx apic_id=%u\n", v,
             exception_names[v] ? exception_names[v] : "reserved", f->error, f->rip, f->rsp, cr2, lapic_id());
    fail(EXIT_EXCEPTION, "testguest: unexpected interrupt vector=%u (0x%x) rip=0x%lx apic_id=%u\n", v, v, f->rip,
         lapic_id());
}
