/* Shared by the test guests (assembler) and the tests (C++): where guests
   are loaded and which ports they talk on. Plain #defines only. */
#ifndef VMM_TESTS_KVM_GUEST_DEFS_H
#define VMM_TESTS_KVM_GUEST_DEFS_H

/* Every guest is linked to run here. Below it: the boot GDT at 0x1000.
   Above it: the stack top and the IDT, then the page tables the long-mode
   test writes at 0x9000. */
#define GUEST_LOAD 0x2000
#define GUEST_STACK_TOP 0x8000
#define GUEST_IDT 0x6000
/* Page the application processor starts in (SIPI vector GUEST_AP_PAGE >> 12). */
#define GUEST_AP_PAGE 0x4000

/* Port I/O test device: 0x10-0x1f. */
#define PORT_PIO_BASE 0x10
/* Reporting: 0xe0 progress marker, 0xe1/0xe2/0xe4 report a byte/word/dword,
   0xe5 and 0xe8 the application processor's reports, 0xf4 "done". */
#define PORT_MARK 0xe0
#define PORT_REPORT8 0xe1
#define PORT_REPORT16 0xe2
#define PORT_REPORT32 0xe4
#define PORT_AP_REPORT8 0xe5
#define PORT_AP_REPORT32 0xe8
#define PORT_DONE 0xf4
/* Nothing is mapped here. */
#define PORT_UNCLAIMED 0x99

#define MMIO_UNMAPPED 0xd0000000
#define MMIO_DEVICE 0xd0001000

#define LAPIC_BASE 0xfee00000
#define LAPIC_EOI (LAPIC_BASE + 0xb0)
#define LAPIC_SVR (LAPIC_BASE + 0xf0)
#define LAPIC_ICR_LOW (LAPIC_BASE + 0x300)
#define LAPIC_ICR_HIGH (LAPIC_BASE + 0x310)
#define LAPIC_LVT_TIMER (LAPIC_BASE + 0x320)
#define LAPIC_TIMER_INITIAL (LAPIC_BASE + 0x380)
#define LAPIC_TIMER_DIVIDE (LAPIC_BASE + 0x3e0)

#define VECTOR_TIMER 0x30
#define VECTOR_TSC_DEADLINE 0x31
#define VECTOR_MSI 0x40
#define VECTOR_LEVEL_A 0x50
#define VECTOR_LEVEL_B 0x51

#define TIMER_TICKS 20

#endif
