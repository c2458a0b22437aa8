/* Real mode: port I/O of each width, string I/O, an unclaimed port. */
#include "guest_defs.h"
  .code16
  .text
  .globl _start
_start:
  cli
  xorw %ax, %ax
  movw %ax, %ds
  movw %ax, %es
  movw %ax, %ss
  movw $GUEST_STACK_TOP, %sp
  cld

  movb $0x11, %al
  outb %al, $PORT_PIO_BASE
  movw $0x2233, %ax
  outw %ax, $(PORT_PIO_BASE + 2)
  movl $0x44556677, %eax
  outl %eax, $(PORT_PIO_BASE + 4)

  /* The device answers byte k of a read at port p with p + k. */
  inb $PORT_PIO_BASE, %al
  outb %al, $PORT_REPORT8
  inw $(PORT_PIO_BASE + 2), %ax
  outw %ax, $PORT_REPORT16
  inl $(PORT_PIO_BASE + 4), %eax
  outl %eax, $PORT_REPORT32

  /* rep outsb of "hello" to port 0x18. */
  movw $message, %si
  movw $5, %cx
  movw $(PORT_PIO_BASE + 8), %dx
  rep outsb

  /* rep insb of 6 bytes from port 0x19 (a counting source), echoed back
     with rep outsw (3 words) to port 0x1a. */
  movw $buffer, %di
  movw $6, %cx
  movw $(PORT_PIO_BASE + 9), %dx
  rep insb
  movw $buffer, %si
  movw $3, %cx
  movw $(PORT_PIO_BASE + 10), %dx
  rep outsw

  /* Nothing claims PORT_UNCLAIMED: reads must be all ones. */
  inb $PORT_UNCLAIMED, %al
  outb %al, $PORT_REPORT8
  inl $PORT_UNCLAIMED, %eax
  outl %eax, $PORT_REPORT32
  movb $0x5a, %al
  outb %al, $PORT_UNCLAIMED

  outb %al, $PORT_DONE
1:
  hlt
  jmp 1b

message:
  .ascii "hello"
buffer:
  .space 8
