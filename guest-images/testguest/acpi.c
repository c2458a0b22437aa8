#include "acpi.h"

#include "io.h"
#include "lib.h"

struct acpi_info acpi;

struct rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt;
    uint32_t length; /* revision >= 2 from here */
    uint64_t xsdt;
    uint8_t ext_checksum;
    uint8_t reserved[3];
} __attribute__((packed));

struct sdt_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
} __attribute__((packed));

static uint8_t sum(const void *p, uint32_t n)
{
    const uint8_t *b = p;
    uint8_t s = 0;
    while (n--)
        s += *b++;
    return s;
}

static const struct rsdp *check_rsdp(uint64_t addr)
{
    const struct rsdp *r = (const struct rsdp *)(uintptr_t)addr;
    if (memcmp(r->signature, "RSD PTR ", 8) != 0 || sum(r, 20) != 0)
        return 0;
    return r;
}

static const struct rsdp *scan(uint64_t start, uint64_t end)
{
    /* 16-byte steps, comparing 8 bytes at once: the scan costs a few instructions per step. */
    const uint64_t sig = 0x2052545020445352ull; /* "RSD PTR " little-endian */
    for (uint64_t a = start; a < end; a += 16)
        if (*(const volatile uint64_t *)(uintptr_t)a == sig && check_rsdp(a))
            return (const struct rsdp *)(uintptr_t)a;
    return 0;
}

static const struct rsdp *find_rsdp(uint64_t hint)
{
    if (hint)
        return check_rsdp(hint);
    /* Where the ACPI spec puts it on a PC: the first KiB of the EBDA, then the BIOS ROM. */
    uint64_t ebda = (uint64_t)*(const volatile uint16_t *)phys_ptr(0x40e) << 4;
    const struct rsdp *r = 0;
    if (ebda >= 0x80000 && ebda < 0xa0000)
        r = scan(ebda, ebda + 1024);
    return r ? r : scan(0xe0000, 0x100000);
}

static void parse_madt(const struct sdt_header *h)
{
    const uint8_t *p = (const uint8_t *)h;
    acpi.have_madt = true;
    memcpy(&acpi.lapic_address, p + 36, 4);
    uint32_t flags;
    memcpy(&flags, p + 40, 4);
    acpi.pcat_compat = flags & 1;
    for (uint32_t off = 44; off + 2 <= h->length;) {
        uint8_t type = p[off], len = p[off + 1];
        if (len < 2 || off + len > h->length)
            break;
        const uint8_t *e = p + off;
        uint32_t u32;
        switch (type) {
        case 0: /* processor local APIC: enabled (bit 0) or online-capable (bit 1) */
            memcpy(&u32, e + 4, 4);
            if ((u32 & 3) && acpi.ncpus < ACPI_MAX_CPUS)
                acpi.cpu_apic_id[acpi.ncpus++] = e[3];
            break;
        case 9: /* processor local x2APIC */
            memcpy(&u32, e + 8, 4);
            if ((u32 & 3) && acpi.ncpus < ACPI_MAX_CPUS)
                memcpy(&acpi.cpu_apic_id[acpi.ncpus++], e + 4, 4);
            break;
        case 1: /* IOAPIC */
            if (acpi.nioapics < ACPI_MAX_IOAPICS) {
                struct acpi_ioapic *io = &acpi.ioapic[acpi.nioapics++];
                io->id = e[2];
                memcpy(&io->address, e + 4, 4);
                memcpy(&io->gsi_base, e + 8, 4);
            }
            break;
        case 2: /* interrupt source override, bus 0 = ISA */
            if (e[2] == 0 && acpi.noverrides < ACPI_MAX_OVERRIDES) {
                struct acpi_override *o = &acpi.override[acpi.noverrides++];
                o->isa_irq = e[3];
                memcpy(&o->gsi, e + 4, 4);
                memcpy(&o->flags, e + 8, 2);
            }
            break;
        default:
            break;
        }
        off += len;
    }
}

static bool valid(const struct sdt_header *h)
{
    return h->length >= sizeof(*h) && sum(h, h->length) == 0;
}

/*
 * \_S5 is "NameOp '_S5_' PackageOp PkgLength NumElements element...", and
 * its first element is SLP_TYPa: a ByteConst (0x0A n), Zero (0x00), One
 * (0x01) or, as some firmware writes it, a bare small byte. Searching for
 * the name is what Linux's early power-off code did before it had an AML
 * interpreter, and it is plenty for a table this guest trusts.
 */
static void find_s5(const struct sdt_header *dsdt)
{
    if (memcmp(dsdt->signature, "DSDT", 4) != 0 || dsdt->length < sizeof(*dsdt) + 8)
        return;
    const uint8_t *aml = (const uint8_t *)dsdt;
    for (uint32_t i = sizeof(*dsdt); i + 8 < dsdt->length; i++) {
        if (aml[i] != '_' || aml[i + 1] != 'S' || aml[i + 2] != '5' || aml[i + 3] != '_' || aml[i + 4] != 0x12)
            continue;
        uint32_t j = i + 5;
        j += 1 + (aml[j] >> 6); /* PkgLength: the top two bits count its extra bytes */
        j += 1;                 /* NumElements */
        if (j >= dsdt->length)
            return;
        const uint8_t op = aml[j];
        acpi.s5_typ = op == 0x0a ? aml[j + 1] : op == 0x01 ? 1 : op == 0x00 ? 0 : op;
        acpi.have_s5 = true;
        return;
    }
}

static void parse_table(const struct sdt_header *h)
{
    /* Signature first: checksumming tables we do not read would cost emulated instructions for nothing. */
    const uint8_t *p = (const uint8_t *)h;
    if (memcmp(h->signature, "APIC", 4) != 0 && memcmp(h->signature, "HPET", 4) != 0 &&
        memcmp(h->signature, "FACP", 4) != 0)
        return;
    if (!valid(h))
        return;
    if (memcmp(h->signature, "APIC", 4) == 0 && !acpi.have_madt) {
        parse_madt(h);
    } else if (memcmp(h->signature, "HPET", 4) == 0 && !acpi.have_hpet && h->length >= 56) {
        /* Generic address structure at 40; its 64-bit address at 44. Space 0 = memory. */
        if (p[40] == 0) {
            memcpy(&acpi.hpet_address, p + 44, 8);
            acpi.have_hpet = acpi.hpet_address != 0;
        }
    } else if (memcmp(h->signature, "FACP", 4) == 0 && !acpi.have_fadt && h->length >= 111) {
        acpi.have_fadt = true;
        memcpy(&acpi.iapc_boot_arch, p + 109, 2);
        uint32_t dsdt32 = 0;
        uint64_t dsdt = 0;
        memcpy(&dsdt32, p + 40, 4);
        memcpy(&acpi.smi_cmd, p + 48, 4);
        acpi.acpi_enable = p[52];
        memcpy(&acpi.pm1a_cnt, p + 64, 4);
        if (h->length >= 129) {
            uint32_t flags;
            memcpy(&flags, p + 112, 4);
            acpi.reset_supported = (flags & (1u << 10)) != 0;
            acpi.reset_space = p[116];
            memcpy(&acpi.reset_address, p + 120, 8);
            acpi.reset_value = p[128];
        }
        dsdt = dsdt32;
        if (h->length >= 148)
            memcpy(&dsdt, p + 140, 8); /* X_DSDT wins when present */
        if (!dsdt)
            dsdt = dsdt32;
        if (dsdt)
            find_s5((const struct sdt_header *)(uintptr_t)dsdt);
    }
}

bool acpi_init(uint64_t rsdp_hint)
{
    static bool done;
    if (done)
        return acpi.found;
    done = true;
    const struct rsdp *r = find_rsdp(rsdp_hint);
    if (!r && rsdp_hint)
        r = find_rsdp(0);
    if (!r)
        return false;
    acpi.rsdp = (uint64_t)(uintptr_t)r;
    bool xsdt = r->revision >= 2 && r->xsdt && sum(r, r->length) == 0;
    const struct sdt_header *root =
        (const struct sdt_header *)(uintptr_t)(xsdt ? r->xsdt : (uint64_t)r->rsdt);
    if (!root || !valid(root))
        return false;
    acpi.found = true;
    unsigned width = xsdt ? 8 : 4;
    uint32_t n = (root->length - (uint32_t)sizeof(*root)) / width;
    const uint8_t *entries = (const uint8_t *)root + sizeof(*root);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t a = 0;
        memcpy(&a, entries + i * width, width);
        /* Our page tables cover 4 GiB; a table above that is not for this guest. */
        if (a && a < 0x100000000ull)
            parse_table((const struct sdt_header *)(uintptr_t)a);
    }
    return true;
}

void acpi_isa_irq(uint8_t irq, uint32_t *gsi, bool *level, bool *active_low)
{
    *gsi = irq;
    *level = false;
    *active_low = false;
    for (uint32_t i = 0; i < acpi.noverrides; i++) {
        const struct acpi_override *o = &acpi.override[i];
        if (o->isa_irq != irq)
            continue;
        *gsi = o->gsi;
        /* 00 = "conforms to the bus": ISA is edge-triggered, active high. */
        *active_low = (o->flags & 3) == 3;
        *level = ((o->flags >> 2) & 3) == 3;
    }
}

uint32_t acpi_isa_gsi(uint8_t irq)
{
    uint32_t gsi;
    bool level, active_low;
    acpi_isa_irq(irq, &gsi, &level, &active_low);
    return gsi;
}
