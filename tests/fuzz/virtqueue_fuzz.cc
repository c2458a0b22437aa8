// Input layout (everything optional; missing bytes read as zero):
//   byte 0      bits 0-2: log2 of the queue size (1..128); bit 3: EVENT_IDX;
//               bit 4: INDIRECT_DESC; bit 5: fold descriptor addresses into
//               [0, RAM size + 256) so they land on and around real buffers;
//               bit 6: the device turns notifications off while it drains
//   bytes 1-2   available index the driver publishes
//   bytes 3-4   used_event
//   then        the descriptor table (16 bytes an entry), the available
//               ring entries (2 bytes each), and the rest copied to the area
//               indirect tables are likely to point at.
#include "tests/fuzz/virtqueue_fuzz.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/virtio/virtqueue.h"

namespace vmm::fuzz {

namespace {

using devices::GuestMemory;
using devices::virtio::Chain;
using devices::virtio::ChainError;
using devices::virtio::QueueLayout;
using devices::virtio::SplitQueue;

constexpr std::uint64_t kRamSize = 64 * 1024;
constexpr std::uint64_t kDesc = 0x1000, kAvail = 0x3000, kUsed = 0x4000, kData = 0x8000;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "virtqueue fuzz: invariant broken: %s\n", what);
  std::abort();
}

GuestMemory& memory() {
  static GuestMemory ram = GuestMemory::allocate(kRamSize);
  return ram;
}

bool inside_ram(const GuestMemory& ram, std::span<const std::uint8_t> span) {
  for (const auto& region : ram.regions()) {
    const auto* begin = region.host;
    const auto* end = region.host + region.size;
    if (span.data() >= begin && span.data() <= end && span.size() <= static_cast<std::size_t>(end - span.data())) {
      return true;
    }
  }
  return false;
}

// What a device reads first (a request header) and writes back (data and a
// status): gather and scatter must succeed exactly when the chain's buffers
// hold `skip` + the bytes, and gather must read them in chain order.
void check_copies(const Chain& chain, std::uint64_t skip) {
  std::vector<std::uint8_t> flat;
  for (const auto& span : chain.readable) flat.insert(flat.end(), span.begin(), span.end());
  std::uint8_t header[16];
  const bool fits = skip + sizeof header <= chain.readable_bytes;
  if (devices::virtio::gather(chain.readable, skip, header) != fits) violated("gather succeeded or failed wrongly");
  if (fits && std::memcmp(header, flat.data() + skip, sizeof header) != 0) violated("gather read the wrong bytes");
  const std::uint8_t status[3] = {0xa5, 0x5a, 0x00};
  const bool room = skip + sizeof status <= chain.writable_bytes;
  if (devices::virtio::scatter(chain.writable, skip, status) != room) violated("scatter succeeded or failed wrongly");
}

void check_spans(const GuestMemory& ram, const std::vector<std::span<std::uint8_t>>& spans, std::uint64_t bytes) {
  std::uint64_t total = 0;
  for (const auto& span : spans) {
    if (!inside_ram(ram, span)) violated("a span outside guest memory");
    total += span.size();
  }
  if (total != bytes) violated("span lengths do not add up to the chain's byte count");
}

}  // namespace

int fuzz_virtqueue(const std::uint8_t* data, std::size_t size) {
  GuestMemory& ram = memory();
  ram.discard();
  auto byte = [&](std::size_t i) -> std::uint8_t { return i < size ? data[i] : 0; };
  const std::uint16_t queue_size = static_cast<std::uint16_t>(1u << (byte(0) & 7));
  const bool event_idx = (byte(0) & 0x08) != 0;
  const bool indirect = (byte(0) & 0x10) != 0;
  const bool fold = (byte(0) & 0x20) != 0;
  const std::uint16_t avail_idx = static_cast<std::uint16_t>(byte(1) | byte(2) << 8);
  const std::uint16_t used_event = static_cast<std::uint16_t>(byte(3) | byte(4) << 8);
  std::size_t at = 5;

  for (std::uint16_t i = 0; i < queue_size; ++i, at += 16) {
    std::uint8_t raw[16] = {};
    for (std::size_t j = 0; j < 16; ++j) raw[j] = byte(at + j);
    if (fold) {
      std::uint64_t address;
      std::memcpy(&address, raw, 8);
      address %= kRamSize + 256;
      std::memcpy(raw, &address, 8);
    }
    ram.write(kDesc + 16ull * i, raw);
  }
  const std::uint16_t header[2] = {0, avail_idx};
  ram.write_obj(kAvail, header);
  for (std::uint16_t i = 0; i < queue_size; ++i, at += 2) {
    const std::uint16_t head = static_cast<std::uint16_t>(byte(at) | byte(at + 1) << 8);
    ram.write_obj(kAvail + 4 + 2ull * i, head);
  }
  ram.write_obj(kAvail + 4 + 2ull * queue_size, used_event);
  if (at < size) {
    const std::size_t n = std::min<std::size_t>(size - at, kRamSize - kData);
    ram.write(kData, std::span(data + at, n));
  }

  SplitQueue queue;
  const QueueLayout layout{queue_size, kDesc, kAvail, kUsed};
  if (queue.activate(ram, layout, event_idx, indirect) != nullptr) violated("a valid layout was refused");

  const bool quiet = (byte(0) & 0x40) != 0;
  if (quiet) queue.disable_notification();

  Chain chain;
  ChainError why = ChainError::kNone;
  const std::uint32_t max_descriptors = queue_size + SplitQueue::kMaxIndirect;
  bool drained = false;
  // At most queue_size chains can be available; one more pop must say so.
  for (unsigned step = 0; step <= queue_size; ++step) {
    const SplitQueue::Pop result = queue.pop(chain, why);
    if (result == SplitQueue::Pop::kEmpty || result == SplitQueue::Pop::kBroken) {
      if ((result == SplitQueue::Pop::kBroken) != (why != ChainError::kNone)) violated("broken without a reason");
      drained = true;
      break;
    }
    if (chain.head >= queue_size) violated("a head outside the queue was handed out");
    if (chain.descriptors > max_descriptors) violated("a chain walked past every limit");
    if (result == SplitQueue::Pop::kChain) {
      if (why != ChainError::kNone) violated("a chain with an error");
      check_spans(ram, chain.readable, chain.readable_bytes);
      check_spans(ram, chain.writable, chain.writable_bytes);
      // Skips around the buffers' ends, from the input's last bytes.
      const std::uint64_t knob = size > 0 ? data[size - 1 - step % size] : 0;
      check_copies(chain, knob % (std::max(chain.readable_bytes, chain.writable_bytes) + 2));
      queue.push_used(chain.head, static_cast<std::uint32_t>(chain.writable_bytes));
    } else {
      if (why == ChainError::kNone) violated("a refused chain without a reason");
      const std::string_view reason = devices::virtio::to_string(why);
      if (reason.empty() || reason == "unknown error") violated("a refusal the log cannot name");
      queue.push_used(chain.head, 0);
    }
  }
  if (!drained) violated("the queue did not drain within queue-size pops");
  (void)queue.needs_signal();
  (void)queue.enable_notification();
  return 0;
}

}  // namespace vmm::fuzz

#ifdef VMM_FUZZ_ENTRY
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_virtqueue(data, size);
}
#endif
