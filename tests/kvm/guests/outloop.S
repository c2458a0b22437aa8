/* 32-bit: an I/O exit per iteration, forever (the vCPU is often between
   KVM_RUN calls, which is where kicks race). */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
1:
  outb %al, $PORT_MARK
  jmp 1b
