/* 32-bit: an exception with an empty IDT escalates to a triple fault. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
  outb %al, $PORT_MARK
  lidt empty_idt
  ud2
  .balign 8
empty_idt:
  .word 0
  .long 0
