/* 32-bit: read an MSR no one implements. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
  outb %al, $PORT_MARK
  movl $0x12345678, %ecx
  rdmsr
  outb %al, $PORT_DONE
1:
  hlt
  jmp 1b
