/* 32-bit: report, halt with interrupts off, and again if ever woken. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
1:
  outb %al, $PORT_MARK
  cli
  hlt
  jmp 1b
