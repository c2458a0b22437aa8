#include "ioapic.h"

#include "acpi.h"
#include "io.h"
#include "irq.h"

#define IOREGSEL 0x00
#define IOWIN 0x10
#define REG_VER 0x01
#define REG_REDIR_LO(pin) (0x10 + 2 * (pin))
#define REG_REDIR_HI(pin) (0x11 + 2 * (pin))

#define RTE_ACTIVE_LOW (1u << 13)
#define RTE_LEVEL (1u << 15)
#define RTE_MASKED (1u << 16)

static uint32_t npins[ACPI_MAX_IOAPICS];

static uint32_t rd(uint32_t idx, uint32_t reg)
{
    uintptr_t b = acpi.ioapic[idx].address;
    mmio_write32(b + IOREGSEL, reg);
    return mmio_read32(b + IOWIN);
}

static void wr(uint32_t idx, uint32_t reg, uint32_t v)
{
    uintptr_t b = acpi.ioapic[idx].address;
    mmio_write32(b + IOREGSEL, reg);
    mmio_write32(b + IOWIN, v);
}

static bool lookup(uint32_t gsi, uint32_t *idx, uint32_t *pin)
{
    for (uint32_t i = 0; i < acpi.nioapics; i++) {
        uint32_t base = acpi.ioapic[i].gsi_base;
        if (gsi >= base && gsi < base + npins[i]) {
            *idx = i;
            *pin = gsi - base;
            return true;
        }
    }
    return false;
}

bool ioapic_init(void)
{
    for (uint32_t i = 0; i < acpi.nioapics; i++) {
        npins[i] = ((rd(i, REG_VER) >> 16) & 0xff) + 1;
        /*
         * Mask every pin before routing anything, as Linux clears the IOAPIC
         * at boot: after a reboot nothing guarantees the loader reset them.
         * Only the low word is written, the mask bit lives there.
         */
        for (uint32_t pin = 0; pin < npins[i]; pin++)
            wr(i, REG_REDIR_LO(pin), RTE_MASKED);
    }
    return acpi.nioapics > 0;
}

bool ioapic_route(uint32_t gsi, uint8_t vector, uint32_t dest_apic_id, bool level, bool active_low)
{
    uint32_t idx, pin;
    if (!lookup(gsi, &idx, &pin))
        return false;
    uint32_t lo = vector | (level ? RTE_LEVEL : 0) | (active_low ? RTE_ACTIVE_LOW : 0);
    /* High word first, then the low word that unmasks: the entry is never live half-written. */
    wr(idx, REG_REDIR_HI(pin), dest_apic_id << 24);
    wr(idx, REG_REDIR_LO(pin), lo);
    return true;
}

void ioapic_mask(uint32_t gsi)
{
    uint32_t idx, pin;
    if (lookup(gsi, &idx, &pin))
        wr(idx, REG_REDIR_LO(pin), RTE_MASKED);
}

bool ioapic_route_isa(uint8_t irq, uint32_t dest_apic_id, uint32_t *gsi_out)
{
    uint32_t gsi;
    bool level, low;
    acpi_isa_irq(irq, &gsi, &level, &low);
    *gsi_out = gsi;
    return gsi < 48 && ioapic_route(gsi, (uint8_t)(VEC_IOAPIC_BASE + gsi), dest_apic_id, level, low);
}
