/* 64-bit: one TSC-deadline timer interrupt, after checking CPUID for it. */
#include "macros.inc"
  .code64
  .text
  .globl _start
_start:
  movq $GUEST_STACK_TOP, %rsp
  SET_GATE VECTOR_TSC_DEADLINE, handler_deadline
  LOAD_IDT
  movl $1, %eax
  cpuid
  movl %ecx, %eax
  outl %eax, $PORT_REPORT32                  /* leaf 1 ECX */
  LAPIC_STORE LAPIC_SVR, 0x1ff
  LAPIC_STORE LAPIC_LVT_TIMER, (0x40000 | VECTOR_TSC_DEADLINE)  /* TSC-deadline mode */
  rdtsc
  addl $2000000, %eax
  adcl $0, %edx
  movl $0x6e0, %ecx                          /* IA32_TSC_DEADLINE */
  wrmsr
  outb %al, $PORT_MARK
  sti
1:
  hlt
  jmp 1b

handler_deadline:
  pushq %rdi
  LAPIC_STORE LAPIC_EOI, 0
  movb $VECTOR_TSC_DEADLINE, %al
  outb %al, $PORT_REPORT8
  outb %al, $PORT_DONE
  popq %rdi
  iretq
IDT_DESCRIPTOR
