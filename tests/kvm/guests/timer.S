/*
 * 64-bit: periodic LAPIC timer, 1 ms, TIMER_TICKS interrupts, then done.
 * The TSC's low 32 bits go to PORT_REPORT32 right after the timer is armed
 * and after the last tick: the guest's own clock, which no host delay in
 * handling these exits can shift.
 */
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
  rdtsc
  outl %eax, $PORT_REPORT32
  outb %al, $PORT_MARK
  /*
   * Test and sleep with interrupts off until the HLT: sti's one-instruction
   * shadow makes "sti; hlt" atomic, so the last tick cannot land between
   * the test and the HLT and leave us asleep with the timer masked.
   */
1:
  cli
  cmpl $TIMER_TICKS, %ebx
  jae 4f
  sti
  hlt
  jmp 1b
4:
  movl %r8d, %eax
  outl %eax, $PORT_REPORT32
  outb %al, $PORT_DONE
2:
  cli
  hlt
  jmp 2b

handler_timer:
  pushq %rdi
  pushq %rdx
  incl %ebx
  LAPIC_STORE LAPIC_EOI, 0
  /*
   * The last tick masks the timer before it reports: the report is an exit
   * the host may take milliseconds to handle, and no tick may follow it.
   */
  cmpl $TIMER_TICKS, %ebx
  jb 3f
  LAPIC_STORE LAPIC_LVT_TIMER, 0x10000             /* masked */
  rdtsc
  movl %eax, %r8d
3:
  movl %ebx, %eax
  outb %al, $PORT_REPORT8
  popq %rdx
  popq %rdi
  iretq
IDT_DESCRIPTOR
