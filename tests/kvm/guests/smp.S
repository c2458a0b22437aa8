/* Boot processor (32-bit) reports its APIC ID from CPUID, starts APIC ID 1
   with INIT-SIPI-SIPI, and waits for it. The application processor starts in
   real mode at GUEST_AP_PAGE and reports its APIC ID and x2APIC ID. */
#include "guest_defs.h"
  .code32
  .text
  .globl _start
_start:
  movl $GUEST_STACK_TOP, %esp
  movl $1, %eax
  cpuid
  shrl $24, %ebx
  movl %ebx, %eax
  outb %al, $PORT_REPORT8

  movl $0x01000000, LAPIC_ICR_HIGH
  movl $0x00004500, LAPIC_ICR_LOW            /* INIT, assert */
  movl $0x01000000, LAPIC_ICR_HIGH
  movl $(0x00004600 | (GUEST_AP_PAGE >> 12)), LAPIC_ICR_LOW   /* SIPI */
  movl $0x01000000, LAPIC_ICR_HIGH
  movl $(0x00004600 | (GUEST_AP_PAGE >> 12)), LAPIC_ICR_LOW   /* SIPI again */
1:
  pause
  cmpl $0, ap_flag
  je 1b
  outb %al, $PORT_DONE
2:
  cli
  hlt
  jmp 2b

  .balign 4
ap_flag:
  .long 0

  .org GUEST_AP_PAGE - GUEST_LOAD
  .code16
ap_start:
  ljmp $0, $ap_flat                          /* CS base 0: link addresses work */
ap_flat:
  xorw %ax, %ax
  movw %ax, %ds
  movl $1, %eax
  cpuid
  shrl $24, %ebx
  movb %bl, %al
  outb %al, $PORT_AP_REPORT8
  movl $0xb, %eax
  xorl %ecx, %ecx
  cpuid
  movl %edx, %eax
  outl %eax, $PORT_AP_REPORT32
  movl $1, ap_flag
3:
  cli
  hlt
  jmp 3b
