/* The few ACPI facts the guest needs: CPUs, IOAPICs, ISA overrides, HPET. */
#ifndef TESTGUEST_ACPI_H
#define TESTGUEST_ACPI_H

#include <stdbool.h>
#include <stdint.h>

#define ACPI_MAX_CPUS 64
#define ACPI_MAX_IOAPICS 4
#define ACPI_MAX_OVERRIDES 16

struct acpi_ioapic {
    uint32_t id;
    uint32_t address;
    uint32_t gsi_base;
};

struct acpi_override {
    uint8_t isa_irq;
    uint32_t gsi;
    uint16_t flags; /* MPS INTI flags: polarity bits 1:0, trigger bits 3:2 */
};

struct acpi_info {
    bool found;            /* RSDP and a root table were found */
    uint64_t rsdp;
    bool have_madt;
    uint32_t lapic_address;
    bool pcat_compat;      /* dual 8259s present */
    uint32_t ncpus;        /* enabled (or online-capable) processors */
    uint32_t cpu_apic_id[ACPI_MAX_CPUS];
    uint32_t nioapics;
    struct acpi_ioapic ioapic[ACPI_MAX_IOAPICS];
    uint32_t noverrides;
    struct acpi_override override[ACPI_MAX_OVERRIDES];
    bool have_hpet;
    uint64_t hpet_address;
    bool have_fadt;
    uint16_t iapc_boot_arch; /* FADT: bit 1 = 8042 present */
    /* What ACPI power-off needs, as Linux's acpi_enter_sleep_state reads it. */
    uint32_t smi_cmd;        /* FADT: 0 = always in ACPI mode */
    uint8_t acpi_enable;     /* value for smi_cmd to switch into ACPI mode */
    uint32_t pm1a_cnt;       /* PM1a control block port */
    bool have_s5;            /* the DSDT has \_S5 */
    bool reset_supported;    /* FADT RESET_REG_SUP, with the register below */
    uint8_t reset_space;     /* generic address space: 1 = system I/O */
    uint64_t reset_address;
    uint8_t reset_value;
    uint8_t s5_typ;          /* its first element: SLP_TYPa */
};

extern struct acpi_info acpi;

/* Parses once; rsdp_hint is start_info.rsdp_paddr (0 = scan the BIOS area). */
bool acpi_init(uint64_t rsdp_hint);

/* ISA IRQ -> GSI with polarity/trigger, per the MADT overrides (identity, edge, high if none). */
void acpi_isa_irq(uint8_t irq, uint32_t *gsi, bool *level, bool *active_low);
/* Only the GSI, for code that lets ioapic_route_isa() take care of the rest. */
uint32_t acpi_isa_gsi(uint8_t irq);

#endif
