/* 64-bit: handlers for an edge MSI vector and two level vectors; each EOIs
   and reports its vector. Waits with interrupts on. */
#include "macros.inc"
  .code64
  .text
  .globl _start
_start:
  movq $GUEST_STACK_TOP, %rsp
  SET_GATE VECTOR_MSI, handler_msi
  SET_GATE VECTOR_LEVEL_A, handler_level_a
  SET_GATE VECTOR_LEVEL_B, handler_level_b
  LOAD_IDT
  outb %al, $PORT_MARK
  sti
1:
  hlt
  jmp 1b

EOI_AND_REPORT_HANDLER handler_msi, VECTOR_MSI
EOI_AND_REPORT_HANDLER handler_level_a, VECTOR_LEVEL_A
EOI_AND_REPORT_HANDLER handler_level_b, VECTOR_LEVEL_B
IDT_DESCRIPTOR
