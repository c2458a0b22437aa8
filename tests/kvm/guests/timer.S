/* 64-bit: periodic LAPIC timer, 1 ms, TIMER_TICKS interrupts, then done. */
#include "macros.inc"
  .code64
  .text
  .globl _start
_start:
  movq $GUEST_STACK_TOP, %rsp
  SET_GATE VECTOR_TIMER, handler_timer
  LOAD_IDT
  xorl %ebx, %ebx
  LAPIC_STORE LAPIC_SVR, 0x1ff
  LAPIC_STORE LAPIC_TIMER_DIVIDE, 0xb              /* divide by 1 */
  LAPIC_STORE LAPIC_LVT_TIMER, (0x20000 | VECTOR_TIMER)  /* periodic */
  LAPIC_STORE LAPIC_TIMER_INITIAL, 1000000         /* 1 ms at KVM's 1 GHz APIC bus */
  outb %al, $PORT_MARK
  sti
1:
  hlt
  cmpl $TIMER_TICKS, %ebx
  jb 1b
  LAPIC_STORE LAPIC_LVT_TIMER, 0x10000             /* masked */
  outb %al, $PORT_DONE
2:
  cli
  hlt
  jmp 2b

handler_timer:
  pushq %rdi
  incl %ebx
  LAPIC_STORE LAPIC_EOI, 0
  movl %ebx, %eax
  outb %al, $PORT_REPORT8
  popq %rdi
  iretq
IDT_DESCRIPTOR
