/*
 * test=disk: the first virtio-blk function, driven the way a modern driver
 * finds it and nothing more: PCI configuration through ports 0xCF8/0xCFC,
 * the virtio-pci capabilities (common, notify, device), feature
 * negotiation, one split queue of 8 that the guest polls (no interrupt is
 * asked for), then requests whose every status byte is checked:
 *
 *   GET_ID           the serial the host gave (serial=ID on our command line)
 *   OUT sector S     a pattern the host can recompute (sector=S, default 1)
 *   FLUSH            when offered
 *   IN sector S      the pattern back, byte for byte
 *   IN at capacity   one sector past the end: IOERR
 *
 * With `readonly` the function must offer VIRTIO_BLK_F_RO and answer the
 * OUT with IOERR, and the IN must find the sector unchanged from the image
 * (pattern=0: the host made it of zeros). The host checks the image file
 * afterwards. A device that misbehaves fails the scenario with one line.
 */
#include "cmdline.h"
#include "io.h"
#include "lib.h"
#include "progress.h"
#include "scenarios.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_BLK_MODERN 0x1042
#define PCI_CAP_VENDOR 0x09
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_DEVICE 4

/* Common configuration (VIRTIO 1.1, 4.1.4.3). */
#define COMMON_DEVICE_FEATURE_SELECT 0x00
#define COMMON_DEVICE_FEATURE 0x04
#define COMMON_DRIVER_FEATURE_SELECT 0x08
#define COMMON_DRIVER_FEATURE 0x0c
#define COMMON_MSIX_CONFIG 0x10
#define COMMON_STATUS 0x14
#define COMMON_QUEUE_SELECT 0x16
#define COMMON_QUEUE_SIZE 0x18
#define COMMON_QUEUE_MSIX_VECTOR 0x1a
#define COMMON_QUEUE_ENABLE 0x1c
#define COMMON_QUEUE_NOTIFY_OFF 0x1e
#define COMMON_QUEUE_DESC 0x20
#define COMMON_QUEUE_DRIVER 0x28
#define COMMON_QUEUE_DEVICE 0x30

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 0x40
#define NO_VECTOR 0xffff

#define FEATURE_RO (1u << 5)
#define FEATURE_FLUSH (1u << 9)
#define FEATURE_HI_VERSION_1 (1u << 0) /* bit 32 */

#define REQ_IN 0
#define REQ_OUT 1
#define REQ_FLUSH 4
#define REQ_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define AVAIL_F_NO_INTERRUPT 1
#define QUEUE_SIZE 8
#define SECTOR 512

struct vq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
struct vq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QUEUE_SIZE];
    uint16_t used_event;
};
struct vq_used {
    uint16_t flags;
    uint16_t idx;
    struct {
        uint32_t id;
        uint32_t len;
    } ring[QUEUE_SIZE];
    uint16_t avail_event;
};
struct blk_header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

static struct vq_desc desc[QUEUE_SIZE] __attribute__((aligned(4096)));
static struct vq_avail avail __attribute__((aligned(4096)));
static struct vq_used used __attribute__((aligned(4096)));
static struct blk_header header __attribute__((aligned(16)));
static uint8_t data[SECTOR] __attribute__((aligned(4096)));
static volatile uint8_t status_byte;

static uintptr_t common, notify, device;
static uint32_t notify_multiplier; /* 0 is valid: every queue notifies at one address */
static uint16_t last_used;

static uint32_t pci_read32(unsigned slot, unsigned offset)
{
    outl(0xcf8, 0x80000000u | slot << 11 | (offset & 0xfc));
    return inl(0xcfc);
}

static void pci_write16(unsigned slot, unsigned offset, uint16_t value)
{
    outl(0xcf8, 0x80000000u | slot << 11 | (offset & 0xfc));
    outw((uint16_t)(0xcfc + (offset & 2)), value);
}

static uint8_t pci_read8(unsigned slot, unsigned offset)
{
    return (uint8_t)(pci_read32(slot, offset) >> (8 * (offset & 3)));
}

/* The address BAR `bar` decodes at (the VMM assigned it; we keep it). */
static uint64_t bar_address(unsigned slot, unsigned bar)
{
    uint32_t low = pci_read32(slot, 0x10 + 4 * bar);
    uint64_t address = low & ~0xfu;
    if ((low & 0x6) == 0x4)
        address |= (uint64_t)pci_read32(slot, 0x14 + 4 * bar) << 32;
    return address;
}

static int find_disk(void)
{
    for (unsigned slot = 0; slot < 32; slot++) {
        uint32_t id = pci_read32(slot, 0);
        if ((id & 0xffff) == VIRTIO_VENDOR && (id >> 16) == VIRTIO_BLK_MODERN)
            return (int)slot;
    }
    return -1;
}

/* Finds the common, notify and device capabilities; false when one is missing. */
static bool find_capabilities(unsigned slot)
{
    if (!(pci_read32(slot, 0x04) >> 16 & 0x10))
        return false;
    /* A capability list longer than config space would be a loop: stop at 48. */
    unsigned at = pci_read8(slot, 0x34) & 0xfc;
    for (unsigned n = 0; at && n < 48; n++, at = pci_read8(slot, at + 1) & 0xfc) {
        if (pci_read8(slot, at) != PCI_CAP_VENDOR)
            continue;
        uint8_t type = pci_read8(slot, at + 3);
        uintptr_t where = (uintptr_t)(bar_address(slot, pci_read8(slot, at + 4)) + pci_read32(slot, at + 8));
        if (type == CAP_COMMON && !common)
            common = where;
        else if (type == CAP_NOTIFY && !notify) {
            notify = where;
            notify_multiplier = pci_read32(slot, at + 16);
        } else if (type == CAP_DEVICE && !device)
            device = where;
    }
    return common && notify && device;
}

static void set_status(uint8_t bits) { mmio_write8(common + COMMON_STATUS, bits); }

static void write64(uintptr_t at, uint64_t v)
{
    mmio_write32(at, (uint32_t)v);
    mmio_write32(at + 4, (uint32_t)(v >> 32));
}

/* Posts one request (header, optional data, status) and polls for it. */
static bool request(uint32_t type, uint64_t sector, uint32_t data_len, bool device_writes, uint8_t *status)
{
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status_byte = 0xff;
    unsigned n = 0;
    desc[n] = (struct vq_desc){(uintptr_t)&header, sizeof header, DESC_F_NEXT, (uint16_t)(n + 1)};
    n++;
    if (data_len) {
        desc[n] = (struct vq_desc){(uintptr_t)data, data_len, (uint16_t)(DESC_F_NEXT | (device_writes ? DESC_F_WRITE : 0)),
                                   (uint16_t)(n + 1)};
        n++;
    }
    desc[n] = (struct vq_desc){(uintptr_t)&status_byte, 1, DESC_F_WRITE, 0};
    avail.ring[avail.idx % QUEUE_SIZE] = 0;
    __asm__ volatile("mfence" ::: "memory");
    avail.idx++;
    __asm__ volatile("mfence" ::: "memory");
    mmio_write16(notify, 0);
    /* Polled, bounded: about 2^31 pauses is minutes even under emulation. */
    for (uint64_t spins = 0; *(volatile uint16_t *)&used.idx == last_used; spins++) {
        if (spins > (1ull << 31)) {
            kprintf("testguest: disk: request type %u got no answer\n", type);
            return false;
        }
        cpu_relax();
    }
    barrier();
    uint32_t id = used.ring[last_used % QUEUE_SIZE].id;
    last_used++;
    if (id != 0) {
        kprintf("testguest: disk: the used ring named head %u, not 0\n", id);
        return false;
    }
    *status = status_byte;
    return true;
}

static uint8_t pattern_byte(uint64_t sector, unsigned i) { return (uint8_t)(i * 7 + sector * 13 + 1); }

static uint32_t fail(const char *why)
{
    kprintf("testguest: disk: FAIL: %s\n", why);
    return EXIT_FAIL;
}

uint32_t scenario_disk(void)
{
    const uint64_t sector = cmdline_u64("sector", 1);
    const bool readonly = cmdline_flag("readonly");
    const char *serial = cmdline_get("serial");

    int slot = find_disk();
    if (slot < 0)
        return fail("no virtio-blk function (1af4:1042) on bus 0");
    /* Memory space and bus mastering: the device may reach guest memory. */
    pci_write16((unsigned)slot, 0x04, (uint16_t)(pci_read32((unsigned)slot, 0x04) | 0x6));
    if (!find_capabilities((unsigned)slot))
        return fail("a virtio-pci capability (common, notify or device) is missing");
    kprintf("testguest: disk: 00:%02x.0, common %p notify %p device %p\n", (unsigned)slot, (void *)common,
            (void *)notify, (void *)device);

    set_status(0);
    if (mmio_read8(common + COMMON_STATUS) != 0)
        return fail("the device did not reset");
    set_status(STATUS_ACKNOWLEDGE);
    set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    mmio_write32(common + COMMON_DEVICE_FEATURE_SELECT, 0);
    uint32_t features_lo = mmio_read32(common + COMMON_DEVICE_FEATURE);
    mmio_write32(common + COMMON_DEVICE_FEATURE_SELECT, 1);
    uint32_t features_hi = mmio_read32(common + COMMON_DEVICE_FEATURE);
    if (!(features_hi & FEATURE_HI_VERSION_1))
        return fail("VIRTIO_F_VERSION_1 is not offered");
    if (readonly != ((features_lo & FEATURE_RO) != 0))
        return fail(readonly ? "a read-only disk without VIRTIO_BLK_F_RO" : "VIRTIO_BLK_F_RO on a writable disk");
    const uint32_t taken_lo = features_lo & (FEATURE_RO | FEATURE_FLUSH);
    mmio_write32(common + COMMON_DRIVER_FEATURE_SELECT, 0);
    mmio_write32(common + COMMON_DRIVER_FEATURE, taken_lo);
    mmio_write32(common + COMMON_DRIVER_FEATURE_SELECT, 1);
    mmio_write32(common + COMMON_DRIVER_FEATURE, FEATURE_HI_VERSION_1);
    set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(mmio_read8(common + COMMON_STATUS) & STATUS_FEATURES_OK))
        return fail("the device refused features it offered");

    mmio_write16(common + COMMON_MSIX_CONFIG, NO_VECTOR);
    mmio_write16(common + COMMON_QUEUE_SELECT, 0);
    if (mmio_read16(common + COMMON_QUEUE_SIZE) < QUEUE_SIZE)
        return fail("queue 0 is shorter than 8");
    mmio_write16(common + COMMON_QUEUE_SIZE, QUEUE_SIZE);
    mmio_write16(common + COMMON_QUEUE_MSIX_VECTOR, NO_VECTOR);
    avail.flags = AVAIL_F_NO_INTERRUPT; /* polled */
    write64(common + COMMON_QUEUE_DESC, (uintptr_t)desc);
    write64(common + COMMON_QUEUE_DRIVER, (uintptr_t)&avail);
    write64(common + COMMON_QUEUE_DEVICE, (uintptr_t)&used);
    notify += (uintptr_t)mmio_read16(common + COMMON_QUEUE_NOTIFY_OFF) * notify_multiplier;
    mmio_write16(common + COMMON_QUEUE_ENABLE, 1);
    set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    if (mmio_read8(common + COMMON_STATUS) & STATUS_NEEDS_RESET)
        return fail("the device needs a reset after DRIVER_OK");
    const uint64_t capacity = (uint64_t)mmio_read32(device) | (uint64_t)mmio_read32(device + 4) << 32;
    if (sector >= capacity)
        return fail("sector= is past the end of the disk");

    uint8_t status;
    memset(data, 0, sizeof data);
    if (!request(REQ_GET_ID, 0, 20, true, &status))
        return EXIT_FAIL;
    if (status != BLK_S_OK)
        return fail("GET_ID did not answer OK");
    char id[21];
    memcpy(id, data, 20);
    id[20] = 0;
    if (serial && !str_eq(id, serial))
        return fail("GET_ID is not the serial= the host gave");

    for (unsigned i = 0; i < SECTOR; i++)
        data[i] = pattern_byte(sector, i);
    if (!request(REQ_OUT, sector, SECTOR, false, &status))
        return EXIT_FAIL;
    if (status != (readonly ? BLK_S_IOERR : BLK_S_OK))
        return fail(readonly ? "a write to a read-only disk did not fail with IOERR" : "the write did not answer OK");
    if (features_lo & FEATURE_FLUSH) {
        if (!request(REQ_FLUSH, 0, 0, false, &status))
            return EXIT_FAIL;
        if (status != BLK_S_OK)
            return fail("FLUSH did not answer OK");
    }

    memset(data, 0xa5, sizeof data);
    if (!request(REQ_IN, sector, SECTOR, true, &status))
        return EXIT_FAIL;
    if (status != BLK_S_OK)
        return fail("the read did not answer OK");
    for (unsigned i = 0; i < SECTOR; i++) {
        uint8_t want = readonly ? 0 : pattern_byte(sector, i);
        if (data[i] != want) {
            kprintf("testguest: disk: byte %u of sector %lu reads 0x%x, not 0x%x\n", i, (unsigned long)sector, data[i],
                    want);
            return EXIT_FAIL;
        }
    }
    if (!request(REQ_IN, capacity, SECTOR, true, &status))
        return EXIT_FAIL;
    if (status != BLK_S_IOERR)
        return fail("a read past the end did not fail with IOERR");

    set_status(0);
    kprintf("testguest: disk: id=%s capacity=%lu sectors, sector %lu %s, flush %s, past the end IOERR: PASS\n", id,
            (unsigned long)capacity, (unsigned long)sector, readonly ? "refused the write and read back unchanged"
                                                                     : "written and read back",
            (features_lo & FEATURE_FLUSH) ? "ok" : "not offered");
    return EXIT_OK;
}
