/*
 * AP start-up code. The BSP copies it to TRAMPOLINE_ADDR (below 1 MiB, page
 * aligned) and sends STARTUP IPIs with vector TRAMPOLINE_ADDR >> 12, so an AP
 * starts here in real mode with CS = TRAMPOLINE_ADDR >> 4, IP = 0.
 *
 * It only has to reach 32-bit protected mode: from there it jumps into the
 * image at ap_entry32 (entry.S), which shares the long-mode switch with the
 * BSP. Every address used before that jump is relative to tramp_start,
 * because this code runs at a different address from where it is linked.
 */
    .section .text.trampoline, "ax"
    .code16
    .globl tramp_start, tramp_end
tramp_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tramp_gdtr - tramp_start
    mov $0x11, %eax             /* PE | ET: protected mode, paging still off */
    mov %eax, %cr0
    ljmpl $0x18, $ap_entry32    /* flat 32-bit code selector from our GDT */

    .balign 8
tramp_gdtr:
    .word 31                    /* four descriptors */
    .long gdt
tramp_end:

    .section .note.GNU-stack, "", @progbits
