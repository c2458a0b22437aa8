/* 64-bit, entered through the loader's linux64 entry state. */
#include "guest_defs.h"
  .code64
  .text
  .globl _start
_start:
  movabsq $0x1122334455667788, %rax
  outl %eax, $PORT_REPORT32
  shrq $32, %rax
  outl %eax, $PORT_REPORT32
  movq %rsi, %rax                            /* the entry state's RSI */
  outl %eax, $PORT_REPORT32
  outb %al, $PORT_DONE
1:
  cli
  hlt
  jmp 1b
