// A virtio-blk PCI function on a memory disk with a guest-side driver, as
// the transport and block tests use it.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "devices/pci/pci_root.h"
#include "devices/virtio/block.h"
#include "devices/virtio/pci_transport.h"
#include "tests/devices/fakes.h"
#include "tests/devices/virtio_fakes.h"

namespace vmm::testing {

// `Backend` is the disk behind the device (the memory fake, or the VMM's
// io_uring file).
template <typename Backend>
struct BasicBlockRig {
  static constexpr std::uint64_t kDiskBytes = 1 << 20;  // 2048 sectors (the memory disk)
  static constexpr std::uint64_t kHeaders = 0x40000;    // 0x40 per request slot
  static constexpr std::uint64_t kData = 0x100000;      // 64 KiB per request slot
  static constexpr std::uint64_t kFeatures =
      devices::virtio::bit(devices::virtio::kFeatureVersion1) | devices::virtio::bit(devices::virtio::kFeatureEventIdx) |
      devices::virtio::bit(devices::virtio::kFeatureIndirectDesc) |
      devices::virtio::bit(devices::virtio::VirtioBlock::kFeatureFlush) |
      devices::virtio::bit(devices::virtio::VirtioBlock::kFeatureDiscard) |
      devices::virtio::bit(devices::virtio::VirtioBlock::kFeatureWriteZeroes);

  struct Request {
    std::uint16_t head;
    std::uint64_t header;
    std::uint64_t status;
    std::uint64_t data;
  };

  BasicBlockRig(std::unique_ptr<Backend> disk, std::string serial, std::uint16_t queue_size, std::uint16_t queues = 1)
      : BasicBlockRig(std::move(disk), devices::virtio::VirtioBlock::Options{std::move(serial), queue_size, queues}) {}
  BasicBlockRig(std::unique_ptr<Backend> disk, devices::virtio::VirtioBlock::Options options)
      : memory(devices::GuestMemory::allocate(8 << 20)),
        backend_owner(std::move(disk)),
        backend(*backend_owner),
        block(std::move(backend_owner), options),
        function(block, memory, msi, &intx, 11),
        driver(function, memory, options.queue_size) {}

  // Request `slot` (descriptors 3*slot .. 3*slot+2): header, data (if any),
  // status. Returns where everything is; the status byte is preset to 0xAA.
  Request build(unsigned slot, std::uint32_t type, std::uint64_t sector, std::uint32_t data_len, bool device_writes) {
    Request r{static_cast<std::uint16_t>(3 * slot), kHeaders + 0x40ull * slot, kHeaders + 0x40ull * slot + 0x20,
              kData + 0x10000ull * slot};
    std::array<std::uint8_t, 16> header{};
    devices::store_le(std::span(header.data(), 4), type);
    devices::store_le(std::span(header.data() + 8, 8), sector);
    memory.write(r.header, header);
    memory.write_obj(r.status, std::uint8_t{0xAA});
    const auto next = static_cast<std::uint16_t>(r.head + 1);
    constexpr std::uint16_t N = devices::virtio::SplitQueue::kDescNext, W = devices::virtio::SplitQueue::kDescWrite;
    if (data_len == 0) {
      driver.ring().set_desc(r.head, r.header, 16, N, next);
      driver.ring().set_desc(next, r.status, 1, W);
    } else {
      driver.ring().set_desc(r.head, r.header, 16, N, next);
      driver.ring().set_desc(next, r.data, data_len, static_cast<std::uint16_t>(N | (device_writes ? W : 0)),
                             static_cast<std::uint16_t>(next + 1));
      driver.ring().set_desc(static_cast<std::uint16_t>(next + 1), r.status, 1, W);
    }
    return r;
  }
  Request post(unsigned slot, std::uint32_t type, std::uint64_t sector, std::uint32_t data_len, bool device_writes) {
    Request r = build(slot, type, sector, data_len, device_writes);
    driver.ring().publish(r.head);
    return r;
  }
  // A FLUSH on `ring` (another queue's) in descriptors 2*slot, 2*slot+1,
  // with its header and status at `base` + 0x40 * slot; published.
  Request post_flush(DriverRing& ring, unsigned slot, std::uint64_t base) {
    Request r{static_cast<std::uint16_t>(2 * slot), base + 0x40ull * slot, base + 0x40ull * slot + 0x20, 0};
    std::array<std::uint8_t, 16> header{};
    devices::store_le(std::span(header.data(), 4), devices::virtio::VirtioBlock::kTypeFlush);
    memory.write(r.header, header);
    memory.write_obj(r.status, std::uint8_t{0xAA});
    ring.set_desc(r.head, r.header, 16, devices::virtio::SplitQueue::kDescNext, static_cast<std::uint16_t>(r.head + 1));
    ring.set_desc(static_cast<std::uint16_t>(r.head + 1), r.status, 1, devices::virtio::SplitQueue::kDescWrite);
    ring.publish(r.head);
    return r;
  }
  std::uint8_t status_of(const Request& r) {
    std::uint8_t s = 0;
    memory.read_obj(r.status, s);
    return s;
  }
  void fill(std::uint64_t address, std::size_t length, std::uint8_t value) {
    std::vector<std::uint8_t> bytes(length, value);
    memory.write(address, bytes);
  }
  std::vector<std::uint8_t> bytes(std::uint64_t address, std::size_t length) {
    std::vector<std::uint8_t> out(length);
    memory.read(address, out);
    return out;
  }

  devices::GuestMemory memory;
  FakeMsiSink msi;
  FakeIrqLine intx;
  std::unique_ptr<Backend> backend_owner;
  Backend& backend;
  devices::virtio::VirtioBlock block;
  devices::virtio::VirtioPciFunction function;
  VirtioDriver driver;
};

struct BlockRig : BasicBlockRig<MemoryBackend> {
  explicit BlockRig(bool read_only = false, std::uint32_t max_in_flight = 64, std::string serial = "disk-0",
                    std::uint16_t queue_size = 64, std::uint16_t queues = 1)
      : BasicBlockRig(std::make_unique<MemoryBackend>(kDiskBytes, read_only, max_in_flight), std::move(serial),
                      queue_size, queues) {}
  explicit BlockRig(devices::virtio::VirtioBlock::Options options)
      : BasicBlockRig(std::make_unique<MemoryBackend>(kDiskBytes, false, 64), std::move(options)) {}
};

}  // namespace vmm::testing
