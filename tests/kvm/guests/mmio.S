/* 32-bit: MMIO to nothing (reads all ones, writes dropped) and to a device. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp

  movl MMIO_UNMAPPED, %eax
  outl %eax, $PORT_REPORT32
  movl $0x12345678, MMIO_UNMAPPED
  movb MMIO_UNMAPPED + 3, %al
  outb %al, $PORT_REPORT8

  movb $0xab, MMIO_DEVICE
  movw $0xcdef, MMIO_DEVICE + 2
  movl $0x01020304, MMIO_DEVICE + 4

  /* The device answers byte k of a read at offset o with 0x80 + o + k. */
  movb MMIO_DEVICE + 1, %al
  outb %al, $PORT_REPORT8
  movw MMIO_DEVICE + 2, %ax
  outw %ax, $PORT_REPORT16
  movl MMIO_DEVICE + 4, %eax
  outl %eax, $PORT_REPORT32

  outb %al, $PORT_DONE
1:
  hlt
  jmp 1b
