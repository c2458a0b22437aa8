/* 32-bit: report once, then count in ECX forever without exiting. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
  xorl %ecx, %ecx
  outb %al, $PORT_MARK
1:
  incl %ecx
  jmp 1b
