/* IOAPIC redirection entries, programmed as Linux's io_apic.c writes them. */
#ifndef TESTGUEST_IOAPIC_H
#define TESTGUEST_IOAPIC_H

#include <stdbool.h>
#include <stdint.h>

/* Takes the IOAPICs from the MADT and masks every pin. */
bool ioapic_init(void);
/* Fixed delivery, physical destination. Returns false if no IOAPIC serves the GSI. */
bool ioapic_route(uint32_t gsi, uint8_t vector, uint32_t dest_apic_id, bool level, bool active_low);
void ioapic_mask(uint32_t gsi);
/* ISA IRQ through the MADT overrides: returns the GSI, routed to VEC_IOAPIC_BASE + GSI. */
bool ioapic_route_isa(uint8_t irq, uint32_t dest_apic_id, uint32_t *gsi_out);

#endif
