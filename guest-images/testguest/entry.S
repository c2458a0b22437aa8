/*
 * PVH entry: the loader (QEMU, or the project's VMM) starts us in 32-bit
 * protected mode, paging off, flat segments, EBX = physical address of the
 * hvm_start_info. We switch to long mode on static page tables and call C.
 *
 * Everything here that could be computed at build time is: the page tables
 * and the GDT are initialised data in the image, so the boot path runs a few
 * dozen instructions instead of thousands of emulated stores.
 */
#include "progress.h"

#define SEL_CODE64 0x08
#define SEL_DATA   0x10
#define SEL_CODE32 0x18

#define CR0_PE 0x00000001
#define CR0_ET 0x00000010
#define CR0_NE 0x00000020
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

/* Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (18): where a PVH loader jumps. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 8                 /* descsz: QEMU reads a 64-bit value for ELF64 */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_entry

    .section .text.entry, "ax"
    .code32
    .globl pvh_entry
pvh_entry:
    cli
    cld
    rdtsc                       /* for verbose runs: time from entry to main */
    mov %eax, boot_tsc
    mov %edx, boot_tsc + 4
    mov $PROGRESS_PORT, %dx
    mov $MS_ENTRY32, %eax
    out %eax, %dx
    mov %ebx, pvh_start_info_pa
    lgdt gdt_ptr
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    ljmp $SEL_CODE32, $enter_long_mode_bsp

/*
 * Shared by the BSP and by APs arriving from the real-mode trampoline:
 * PAE, our CR3, EFER.LME, then paging on. CR0 is written whole because an
 * AP comes out of INIT with CD/NW set.
 */
.macro ENTER_LONG_MODE target
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov $(CR0_PG | CR0_NE | CR0_ET | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $\target
.endm

enter_long_mode_bsp:
    ENTER_LONG_MODE long_mode_bsp

    /* The trampoline jumps here with our GDT loaded and CS flat 32-bit. */
    .globl ap_entry32
ap_entry32:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    ENTER_LONG_MODE long_mode_ap

/* Flat data segments for long mode; FS and GS are unused (null). */
.macro LONG_MODE_SEGMENTS
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
.endm

    .code64
long_mode_bsp:
    LONG_MODE_SEGMENTS
    lea boot_stack_top(%rip), %rsp
    mov $PROGRESS_PORT, %dx
    mov $MS_LONG_MODE, %eax
    out %eax, %dx
    mov pvh_start_info_pa(%rip), %edi
    call kmain
    jmp halt_forever

long_mode_ap:
    LONG_MODE_SEGMENTS
    /* APs are started one at a time; the BSP published this one's stack. */
    mov ap_boot_stack(%rip), %rsp
    call ap_main

    .globl halt_forever
halt_forever:
    cli
    hlt
    jmp halt_forever

    .data
    .balign 8
    .globl pvh_start_info_pa
pvh_start_info_pa:
    .long 0
    .long 0
    .globl ap_boot_stack
ap_boot_stack:
    .quad 0
    .globl boot_tsc
boot_tsc:
    .quad 0

/* Selector 0x18 (32-bit code) serves the PVH entry and the AP trampoline. */
    .balign 16
    .globl gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
    .quad 0x00cf9a000000ffff    /* 0x18: flat 32-bit code */
gdt_end:
    .balign 8
    .word 0, 0, 0
    .globl gdt_ptr
gdt_ptr:                        /* limit at an address = 6 mod 8 keeps the base aligned */
    .word gdt_end - gdt - 1
    .quad gdt

/*
 * Identity map of the first 4 GiB with 2 MiB pages, built by the assembler.
 * RAM is write-back; the top GiB (IOAPIC, HPET, LAPIC at 0xfec00000..)
 * is uncached, as a driver's ioremap would make it.
 */
    .section .data.pagetables, "aw"
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + 0x3            /* present, writable */
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .fill 508, 8, 0
pd:
    .set addr, 0
    .rept 3 * 512
    .quad addr | 0x83           /* present, writable, 2 MiB page */
    .set addr, addr + 0x200000
    .endr
    .rept 512
    .quad addr | 0x9b           /* ... plus PWT and PCD: uncached */
    .set addr, addr + 0x200000
    .endr

    .section .noinit, "aw", @nobits
    .balign 16
boot_stack:
    .skip 16384
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
