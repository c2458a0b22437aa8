// IOAPIC: registers per the 82093AA datasheet (version 0x20), edge/level
// delivery, Remote IRR and EOI, the MSI encoding, and the route observer the
// split-irqchip VMM depends on.
#include "devices/ioapic.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::FakeMsiSink;

// Observer calls and MSIs in one timeline, to check their order.
struct Event {
  enum Kind { route, msi } kind;
  unsigned pin;  // route only
  MsiMessage message;
  bool masked;
  bool level;
};

class Timeline final : public IoApicRouteObserver, public MsiSink {
 public:
  void on_route_changed(unsigned pin, const MsiMessage& message, bool masked, bool level) noexcept override {
    std::lock_guard lock(mu_);
    events_.push_back(Event{Event::route, pin, message, masked, level});
  }
  void send_msi(const MsiMessage& message) noexcept override {
    std::lock_guard lock(mu_);
    events_.push_back(Event{Event::msi, 0, message, false, false});
  }
  std::vector<Event> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<Event> routes() const {
    std::vector<Event> out;
    for (const Event& e : events()) {
      if (e.kind == Event::route) out.push_back(e);
    }
    return out;
  }
  std::size_t msis() const {
    std::size_t n = 0;
    for (const Event& e : events()) n += e.kind == Event::msi;
    return n;
  }
  void clear() {
    std::lock_guard lock(mu_);
    events_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Event> events_;
};

constexpr std::uint64_t kEdge = 0;
constexpr std::uint64_t kLevel = IoApic::kLevelTriggered;

std::uint64_t entry(std::uint8_t vector, std::uint64_t flags = 0, std::uint8_t destination = 0) {
  return vector | flags | (std::uint64_t{destination} << IoApic::kDestinationShift);
}

struct Chip {
  FakeMsiSink sink;
  IoApic ioapic{sink};

  void select(std::uint8_t reg) {
    const std::uint8_t bytes[4] = {reg, 0, 0, 0};
    ioapic.write(IoApic::kRegisterSelect, bytes);
  }
  std::uint32_t read_reg(std::uint8_t reg) {
    select(reg);
    std::uint8_t bytes[4];
    ioapic.read(IoApic::kWindow, bytes);
    return static_cast<std::uint32_t>(load_le(bytes));
  }
  void write_reg(std::uint8_t reg, std::uint32_t value) {
    select(reg);
    std::uint8_t bytes[4];
    store_le(bytes, value);
    ioapic.write(IoApic::kWindow, bytes);
  }
  void program(unsigned pin, std::uint64_t value) {
    // High dword first, as Linux does, so the entry is never live half-written.
    write_reg(static_cast<std::uint8_t>(0x11 + 2 * pin), static_cast<std::uint32_t>(value >> 32));
    write_reg(static_cast<std::uint8_t>(0x10 + 2 * pin), static_cast<std::uint32_t>(value));
  }
  std::uint64_t read_entry(unsigned pin) {
    const std::uint64_t low = read_reg(static_cast<std::uint8_t>(0x10 + 2 * pin));
    const std::uint64_t high = read_reg(static_cast<std::uint8_t>(0x11 + 2 * pin));
    return low | (high << 32);
  }
  void eoi_register(std::uint8_t vector) {
    const std::uint8_t bytes[4] = {vector, 0, 0, 0};
    ioapic.write(IoApic::kEoi, bytes);
  }
};

TEST(IoApic, IdentificationRegisters) {
  Chip c;
  EXPECT_EQ(c.read_reg(IoApic::kRegVersion), 0x00170020u) << "24 entries (max index 0x17), version 0x20";
  EXPECT_EQ(c.read_reg(IoApic::kRegId), 0u);
  c.write_reg(IoApic::kRegId, 0xFFFFFFFF);
  EXPECT_EQ(c.read_reg(IoApic::kRegId), 0xFF000000u) << "only the 8-bit ID in bits 31:24 is writable";
  EXPECT_EQ(c.read_reg(IoApic::kRegArbitration), 0xFF000000u);
  c.write_reg(IoApic::kRegVersion, 0);
  c.write_reg(IoApic::kRegArbitration, 0);
  EXPECT_EQ(c.read_reg(IoApic::kRegVersion), 0x00170020u);
  EXPECT_EQ(c.read_reg(0x03), 0u) << "reserved registers read as zero";
  EXPECT_EQ(c.read_reg(0x40), 0u) << "past the last redirection entry";
}

TEST(IoApic, IoRegSelReadsBack) {
  Chip c;
  c.select(0x2B);
  std::uint8_t bytes[4] = {};
  c.ioapic.read(IoApic::kRegisterSelect, bytes);
  EXPECT_EQ(load_le(bytes), 0x2Bu);
}

TEST(IoApic, EntriesStartMaskedAndKeepOnlyDefinedBits) {
  Chip c;
  for (unsigned pin = 0; pin < IoApic::kPins; ++pin) {
    EXPECT_EQ(c.read_entry(pin), IoApic::kMasked) << pin;
  }
  c.program(5, ~std::uint64_t{0});
  // Delivery Status (12) and Remote IRR (14) are read-only; 17-55 reserved.
  EXPECT_EQ(c.read_entry(5), 0xFF0000000001AFFFull);
  EXPECT_EQ(c.ioapic.redirection_entry(5), 0xFF0000000001AFFFull);
  EXPECT_EQ(c.ioapic.redirection_entry(24), ~std::uint64_t{0});
}

TEST(IoApic, MsiEncoding) {
  // Fixed, physical destination 3, edge.
  MsiMessage m = IoApic::message_for(entry(0x31, kEdge, 3));
  EXPECT_EQ(m.address, 0xFEE03000u);
  EXPECT_EQ(m.data, 0x4031u);
  // Lowest priority, logical destination 0x0F, level.
  m = IoApic::message_for(entry(0x41, kLevel | IoApic::kDestinationLogical | (1u << 8), 0x0F));
  EXPECT_EQ(m.address, 0xFEE0F004u);
  EXPECT_EQ(m.data, 0xC141u);
  // NMI (delivery mode 100), destination 0xFF.
  m = IoApic::message_for(entry(0x00, 4u << 8, 0xFF));
  EXPECT_EQ(m.address, 0xFEEFF000u);
  EXPECT_EQ(m.data, 0x4400u);
  // Polarity and mask do not show in the message.
  EXPECT_EQ(IoApic::message_for(entry(0x31, IoApic::kPolarityLow | IoApic::kMasked, 3)).data, 0x4031u);
}

TEST(IoApic, EdgePinDeliversOnRisingEdgesOnly) {
  Chip c;
  c.program(4, entry(0x24, kEdge, 1));
  auto& pin = c.ioapic.pin(4);
  pin.set_level(true);
  EXPECT_EQ(c.sink.count(), 1u);
  EXPECT_EQ(c.sink.last()->address, 0xFEE01000u);
  EXPECT_EQ(c.sink.last()->data, 0x4024u);
  pin.set_level(true);  // no edge
  EXPECT_EQ(c.sink.count(), 1u);
  pin.set_level(false);
  EXPECT_EQ(c.sink.count(), 1u);
  pin.pulse();
  pin.pulse();
  EXPECT_EQ(c.sink.count(), 3u);
  EXPECT_EQ(c.read_entry(4) & IoApic::kRemoteIrr, 0u) << "edge entries never set Remote IRR";
}

TEST(IoApic, EdgeWhileMaskedIsDroppedNotRemembered) {
  Chip c;
  c.program(4, entry(0x24, kEdge | IoApic::kMasked));
  c.ioapic.pin(4).pulse();
  c.program(4, entry(0x24, kEdge));
  EXPECT_EQ(c.sink.count(), 0u);
  c.program(4, entry(0x24, kEdge | IoApic::kMasked));
  c.ioapic.pin(4).set_level(true);
  c.program(4, entry(0x25, kEdge));  // line already high: unmasking is not an edge
  EXPECT_EQ(c.sink.count(), 0u);
  c.ioapic.pin(4).pulse();
  EXPECT_EQ(c.sink.count(), 0u) << "the line was already high: no rising edge";
}

TEST(IoApic, LevelPinDeliversOnceUntilEoiAndRedeliversWhileAsserted) {
  Chip c;
  c.program(9, entry(0x39, kLevel, 0));
  auto& pin = c.ioapic.pin(9);
  pin.set_level(true);
  ASSERT_EQ(c.sink.count(), 1u);
  EXPECT_EQ(c.sink.last()->data, 0xC039u);
  EXPECT_NE(c.read_entry(9) & IoApic::kRemoteIrr, 0u);
  pin.set_level(true);
  pin.set_level(false);
  pin.set_level(true);
  EXPECT_EQ(c.sink.count(), 1u) << "Remote IRR blocks re-delivery until the EOI";
  c.ioapic.end_of_interrupt(0x39);
  EXPECT_EQ(c.sink.count(), 2u) << "still asserted at EOI: delivered again";
  EXPECT_NE(c.read_entry(9) & IoApic::kRemoteIrr, 0u);
  pin.set_level(false);
  c.ioapic.end_of_interrupt(0x39);
  EXPECT_EQ(c.sink.count(), 2u);
  EXPECT_EQ(c.read_entry(9) & IoApic::kRemoteIrr, 0u);
  pin.set_level(true);
  EXPECT_EQ(c.sink.count(), 3u);
}

TEST(IoApic, EoiRegisterWorksLikeTheEoiExit) {
  Chip c;
  c.program(9, entry(0x39, kLevel));
  c.ioapic.pin(9).set_level(true);
  c.eoi_register(0x38);
  EXPECT_NE(c.read_entry(9) & IoApic::kRemoteIrr, 0u) << "other vector: no effect";
  c.eoi_register(0x39);
  EXPECT_EQ(c.sink.count(), 2u);
}

TEST(IoApic, EoiForAnEdgeVectorIsIgnored) {
  // Older kernels (before the 2020 trigger-mode fix) report EOIs for edge routes too.
  Chip c;
  c.program(4, entry(0x24, kEdge));
  c.ioapic.pin(4).set_level(true);
  c.ioapic.end_of_interrupt(0x24);
  c.ioapic.end_of_interrupt(0x24);
  EXPECT_EQ(c.sink.count(), 1u);
}

TEST(IoApic, EoiServesEveryLevelEntryWithThatVector) {
  Chip c;
  c.program(16, entry(0x50, kLevel));
  c.program(17, entry(0x50, kLevel));
  c.ioapic.pin(16).set_level(true);
  c.ioapic.pin(17).set_level(true);
  ASSERT_EQ(c.sink.count(), 2u);
  c.ioapic.pin(17).set_level(false);
  c.ioapic.end_of_interrupt(0x50);
  EXPECT_EQ(c.sink.count(), 3u) << "pin 16 still asserted, pin 17 not";
  EXPECT_NE(c.read_entry(16) & IoApic::kRemoteIrr, 0u);
  EXPECT_EQ(c.read_entry(17) & IoApic::kRemoteIrr, 0u);
}

TEST(IoApic, UnmaskingAnAssertedLevelPinDelivers) {
  Chip c;
  c.program(10, entry(0x3A, kLevel | IoApic::kMasked));
  c.ioapic.pin(10).set_level(true);
  EXPECT_EQ(c.sink.count(), 0u);
  c.program(10, entry(0x3A, kLevel));
  EXPECT_EQ(c.sink.count(), 1u);
  EXPECT_NE(c.read_entry(10) & IoApic::kRemoteIrr, 0u);
}

TEST(IoApic, MaskedLevelPinWaitsAndEoiDoesNotDeliverWhileMasked) {
  Chip c;
  c.program(10, entry(0x3A, kLevel));
  c.ioapic.pin(10).set_level(true);
  c.program(10, entry(0x3A, kLevel | IoApic::kMasked));
  c.ioapic.end_of_interrupt(0x3A);
  EXPECT_EQ(c.sink.count(), 1u);
  EXPECT_EQ(c.read_entry(10) & IoApic::kRemoteIrr, 0u);
  c.program(10, entry(0x3A, kLevel));
  EXPECT_EQ(c.sink.count(), 2u);
}

TEST(IoApic, RewritingAsEdgeClearsRemoteIrr) {
  // Linux's EOI for IOAPICs without an EOI register: mask, switch to edge,
  // switch back to level.
  Chip c;
  c.program(11, entry(0x3B, kLevel));
  c.ioapic.pin(11).set_level(true);
  ASSERT_NE(c.read_entry(11) & IoApic::kRemoteIrr, 0u);
  c.program(11, entry(0x3B, kEdge | IoApic::kMasked));
  EXPECT_EQ(c.read_entry(11) & IoApic::kRemoteIrr, 0u);
  c.program(11, entry(0x3B, kLevel));
  EXPECT_EQ(c.sink.count(), 2u) << "still asserted: delivered again once level and unmasked";
}

TEST(IoApic, RemoteIrrSurvivesRewritesOfALevelEntry) {
  Chip c;
  c.program(11, entry(0x3B, kLevel));
  c.ioapic.pin(11).set_level(true);
  c.program(11, entry(0x3B, kLevel, 2));  // retarget while in service
  EXPECT_NE(c.read_entry(11) & IoApic::kRemoteIrr, 0u);
  EXPECT_EQ(c.sink.count(), 1u);
}

TEST(IoApic, PinOutOfRangeIsASetUpError) {
  Chip c;
  EXPECT_NO_THROW(c.ioapic.pin(23));
  EXPECT_THROW(c.ioapic.pin(24), vmm::Error);
}

TEST(IoApic, UnsupportedAccessesReadAllOnesAndDoNothing) {
  Chip c;
  c.program(3, entry(0x33, kEdge));
  c.select(0x16);
  std::uint8_t two[2] = {};
  c.ioapic.read(IoApic::kWindow, two);
  EXPECT_EQ(two[0], 0xff);
  std::uint8_t eight[8] = {};
  c.ioapic.read(IoApic::kWindow, eight);
  EXPECT_EQ(eight[7], 0xff);
  const std::uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  c.ioapic.write(IoApic::kWindow, std::span<const std::uint8_t>(junk, 2));
  c.ioapic.write(IoApic::kWindow, junk);
  c.ioapic.write(0x14, std::span<const std::uint8_t>(junk, 4));
  c.ioapic.write(0xFFF, std::span<const std::uint8_t>(junk, 1));
  EXPECT_EQ(c.read_entry(3), entry(0x33, kEdge));
  std::uint8_t eoi[4] = {};
  c.ioapic.read(IoApic::kEoi, eoi);
  EXPECT_EQ(eoi[0], 0xff);
}

TEST(IoApic, ResetMasksEverythingAndClearsRemoteIrr) {
  Chip c;
  c.program(9, entry(0x39, kLevel));
  c.ioapic.pin(9).set_level(true);
  c.write_reg(IoApic::kRegId, 0x05000000);
  c.ioapic.reset();
  EXPECT_EQ(c.read_entry(9), IoApic::kMasked);
  EXPECT_EQ(c.read_reg(IoApic::kRegId), 0u);
  c.program(9, entry(0x39, kLevel));
  EXPECT_EQ(c.sink.count(), 2u) << "the device still holds the line: unmasking after reset delivers";
}

TEST(IoApic, ConfiguredIdSurvivesReset) {
  FakeMsiSink sink;
  IoApic ioapic(sink, nullptr, 2);
  ioapic.reset();
  const std::uint8_t sel[4] = {IoApic::kRegId, 0, 0, 0};
  ioapic.write(IoApic::kRegisterSelect, sel);
  std::uint8_t value[4];
  ioapic.read(IoApic::kWindow, value);
  EXPECT_EQ(load_le(value), 0x02000000u);
}

// ---- route observer --------------------------------------------------------

struct ObservedChip {
  Timeline timeline;
  IoApic ioapic{timeline, &timeline};

  void program(unsigned pin, std::uint64_t value) {
    const auto write_reg = [&](std::uint8_t reg, std::uint32_t v) {
      const std::uint8_t sel[4] = {reg, 0, 0, 0};
      ioapic.write(IoApic::kRegisterSelect, sel);
      std::uint8_t bytes[4];
      store_le(bytes, v);
      ioapic.write(IoApic::kWindow, bytes);
    };
    write_reg(static_cast<std::uint8_t>(0x11 + 2 * pin), static_cast<std::uint32_t>(value >> 32));
    write_reg(static_cast<std::uint8_t>(0x10 + 2 * pin), static_cast<std::uint32_t>(value));
  }
};

TEST(IoApicRoutes, NotCalledFromTheConstructorButForEveryPinOnPublishAll) {
  ObservedChip c;
  EXPECT_TRUE(c.timeline.events().empty());
  c.ioapic.publish_all_routes();
  const auto routes = c.timeline.routes();
  ASSERT_EQ(routes.size(), IoApic::kPins);
  for (unsigned pin = 0; pin < IoApic::kPins; ++pin) {
    EXPECT_EQ(routes[pin].pin, pin);
    EXPECT_TRUE(routes[pin].masked);
    EXPECT_FALSE(routes[pin].level);
  }
}

TEST(IoApicRoutes, ReportsEachEntryChangeWithItsMessage) {
  ObservedChip c;
  c.program(7, entry(0x47, kLevel, 1));
  auto routes = c.timeline.routes();
  // The high dword (destination) changed first, then the low dword.
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[1].pin, 7u);
  EXPECT_EQ(routes[1].message.address, 0xFEE01000u);
  EXPECT_EQ(routes[1].message.data, 0xC047u);
  EXPECT_FALSE(routes[1].masked);
  EXPECT_TRUE(routes[1].level);
  c.timeline.clear();
  c.program(7, entry(0x47, kLevel, 1));  // same value again
  EXPECT_TRUE(c.timeline.routes().empty()) << "no change, no route update";
  c.program(7, entry(0x47, kLevel | IoApic::kMasked, 1));
  routes = c.timeline.routes();
  ASSERT_EQ(routes.size(), 1u);
  EXPECT_TRUE(routes[0].masked);
  EXPECT_EQ(routes[0].message.data, 0xC047u) << "a masked pin's message still describes the entry";
}

TEST(IoApicRoutes, PolarityAndRemoteIrrAreNotRouteChanges) {
  ObservedChip c;
  c.program(7, entry(0x47, kLevel, 1));
  c.timeline.clear();
  c.program(7, entry(0x47, kLevel | IoApic::kPolarityLow, 1));
  c.ioapic.pin(7).set_level(true);  // sets Remote IRR
  c.ioapic.end_of_interrupt(0x47);  // clears and sets it again
  EXPECT_TRUE(c.timeline.routes().empty());
  EXPECT_EQ(c.timeline.msis(), 2u);
}

TEST(IoApicRoutes, RouteIsPublishedBeforeTheInterruptItEnables) {
  ObservedChip c;
  c.program(9, entry(0x39, kLevel | IoApic::kMasked));
  c.ioapic.pin(9).set_level(true);
  c.timeline.clear();
  c.program(9, entry(0x39, kLevel));  // unmask an asserted level pin
  const auto events = c.timeline.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Event::route);
  EXPECT_FALSE(events[0].masked);
  EXPECT_EQ(events[1].kind, Event::msi);
  EXPECT_EQ(events[1].message.data, events[0].message.data);
  EXPECT_EQ(events[1].message.address, events[0].message.address);
}

TEST(IoApicRoutes, VectorChangeOnAnAssertedPinIsRoutedBeforeRedelivery) {
  // The QEMU bug: re-delivering a pending level interrupt through the old
  // route when the guest retargets the entry (Linux moves an IRQ with the
  // pin masked, then unmasks). The new route must be out before the MSI.
  ObservedChip c;
  c.program(9, entry(0x39, kLevel, 0));
  c.ioapic.pin(9).set_level(true);
  c.program(9, entry(0x39, kLevel | IoApic::kMasked, 0));
  c.ioapic.end_of_interrupt(0x39);  // clears Remote IRR; masked, so no delivery
  c.program(9, entry(0x3C, kLevel | IoApic::kMasked, 1));
  c.timeline.clear();
  c.program(9, entry(0x3C, kLevel, 1));
  const auto events = c.timeline.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Event::route);
  EXPECT_EQ(events[0].message.data & 0xff, 0x3Cu);
  EXPECT_EQ(events[1].kind, Event::msi);
  EXPECT_EQ(events[1].message.address, 0xFEE01000u);
}

TEST(IoApicRoutes, ResetPublishesEveryPin) {
  ObservedChip c;
  c.program(3, entry(0x33, kEdge));
  c.timeline.clear();
  c.ioapic.reset();
  EXPECT_EQ(c.timeline.routes().size(), IoApic::kPins);
}

TEST(IoApicRoutes, ConcurrentUseEndsWithTheLatestRoutePerPin) {
  // Writers own their pins (as a guest holding its IOAPIC lock would), while
  // other threads toggle lines and send EOIs. Whatever the interleaving, the
  // last route the observer saw for each pin must match the entry, and no
  // thread may deadlock.
  ObservedChip c;
  constexpr int kWriters = 2;
  constexpr int kIterations = 3000;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(100 + w);
      for (int i = 0; i < kIterations; ++i) {
        const unsigned pin = static_cast<unsigned>(w * 12 + rng() % 12);
        const std::uint64_t flags = (rng() & 1 ? kLevel : kEdge) | (rng() & 2 ? IoApic::kMasked : 0);
        c.program(pin, entry(static_cast<std::uint8_t>(0x30 + rng() % 64), flags,
                             static_cast<std::uint8_t>(rng() % 4)));
      }
    });
  }
  threads.emplace_back([&] {
    std::mt19937 rng(7);
    while (!stop) c.ioapic.pin(rng() % IoApic::kPins).set_level(rng() & 1);
  });
  threads.emplace_back([&] {
    std::mt19937 rng(8);
    while (!stop) c.ioapic.end_of_interrupt(static_cast<std::uint8_t>(0x30 + rng() % 64));
  });
  for (int w = 0; w < kWriters; ++w) threads[static_cast<std::size_t>(w)].join();
  // The writers can finish before the line toggler has hit an unmasked pin
  // (a fast run takes about a millisecond); about half the pins end
  // unmasked, so interrupts follow within moments.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (c.timeline.msis() == 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  for (std::size_t i = kWriters; i < threads.size(); ++i) threads[i].join();

  std::vector<const Event*> last(IoApic::kPins, nullptr);
  const auto routes = c.timeline.routes();
  for (const Event& e : routes) last[e.pin] = &e;
  for (unsigned pin = 0; pin < IoApic::kPins; ++pin) {
    const std::uint64_t now = c.ioapic.redirection_entry(pin);
    if (!last[pin]) {
      EXPECT_EQ(now, IoApic::kMasked) << pin;
      continue;
    }
    const MsiMessage expected = IoApic::message_for(now);
    EXPECT_EQ(last[pin]->message.address, expected.address) << pin;
    EXPECT_EQ(last[pin]->message.data, expected.data) << pin;
    EXPECT_EQ(last[pin]->masked, (now & IoApic::kMasked) != 0) << pin;
    EXPECT_EQ(last[pin]->level, (now & IoApic::kLevelTriggered) != 0) << pin;
  }
  EXPECT_GT(c.timeline.msis(), 0u);
}

}  // namespace
}  // namespace vmm::devices
