// PCI configuration space, BAR sizing and moves, INTx, MSI-X, and the root
// bus (mechanism #1, ECAM, the BAR window), checked against PCI Local Bus 3.0.
#include <array>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "devices/pci/config_space.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_root.h"
#include "tests/devices/fakes.h"

namespace vmm::devices::pci {
namespace {

using testing::FakeIrqLine;
using testing::FakeMsiSink;

struct Move {
  unsigned bar;
  std::optional<std::uint64_t> address;
  std::uint64_t size;
};

class RecordingObserver final : public PciBarObserver {
 public:
  void on_bar_changed(PciFunction&, unsigned bar, std::optional<std::uint64_t> address, std::uint64_t size) noexcept override {
    moves.push_back({bar, address, size});
  }
  std::vector<Move> moves;
};

// A function with one 4 KiB BAR whose registers are a scratch array and an
// MSI-X table of 4 vectors in BAR 1.
class TestFunction final : public PciFunction {
 public:
  explicit TestFunction(MsiSink& sink)
      : config(PciIdentity{0x1234, 0x5678, 2, 0x018000, 0x1234, 0x0042, 1}), msix(4, sink, 1, 0, 1, 0x800) {
    config.add_memory_bar(0, 0x1000);
    config.add_memory_bar(1, 0x1000);
    msix.add_capability(config);
    config.set_observer(this, nullptr);
  }
  void config_read(std::uint32_t offset, std::span<std::uint8_t> data) noexcept override { config.read(offset, data); }
  void config_write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept override {
    config.write(offset, data);
    msix.config_written(config);
  }
  void bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) noexcept override {
    if (bar == 0) {
      store_le(data, scratch[offset / 4]);
    } else if (offset < 0x800) {
      msix.table_read(offset, data);
    } else {
      msix.pba_read(offset - 0x800, data);
    }
  }
  void bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override {
    if (bar == 0) {
      scratch[offset / 4] = static_cast<std::uint32_t>(load_le(data));
    } else if (offset < 0x800) {
      msix.table_write(offset, data);
    }
  }
  std::optional<BarHit> decode(std::uint64_t address, std::uint64_t length) const noexcept override {
    return config.decode(address, length);
  }
  std::uint64_t bar_size(unsigned bar) const noexcept override { return config.bar_size(bar); }
  void assign_bar(unsigned bar, std::uint64_t address) override { config.assign_bar(bar, address); }
  void set_bar_observer(PciBarObserver* observer) noexcept override { config.set_observer(this, observer); }
  void reset() noexcept override {
    config.reset();
    msix.reset();
  }

  ConfigSpace config;
  Msix msix;
  std::array<std::uint32_t, 1024> scratch{};
};

std::uint32_t cfg_read(PciRoot& root, unsigned slot, std::uint32_t offset, std::size_t width = 4) {
  std::array<std::uint8_t, 4> data{};
  root.config_read(0, slot, 0, offset, std::span(data.data(), width));
  return static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(data.data(), width)));
}
void cfg_write(PciRoot& root, unsigned slot, std::uint32_t offset, std::uint32_t value, std::size_t width = 4) {
  std::array<std::uint8_t, 4> data{};
  store_le(data, value);
  root.config_write(0, slot, 0, offset, std::span<const std::uint8_t>(data.data(), width));
}

TEST(PciConfigSpace, IdentityAndReadOnlyFields) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(3, f);
  EXPECT_EQ(cfg_read(root, 3, kVendorId), 0x5678'1234u);
  EXPECT_EQ(cfg_read(root, 3, kRevisionId), 0x0180'0002u);  // class 01/80/00, revision 2
  EXPECT_EQ(cfg_read(root, 3, kSubsystemVendorId), 0x0042'1234u);
  EXPECT_EQ(cfg_read(root, 3, kInterruptLine) >> 8 & 0xFF, 1u) << "INTA";
  cfg_write(root, 3, kVendorId, 0);
  cfg_write(root, 3, kRevisionId, 0);
  cfg_write(root, 3, kHeaderType, 0xFF, 1);
  EXPECT_EQ(cfg_read(root, 3, kVendorId), 0x5678'1234u) << "IDs are read only";
  EXPECT_EQ(cfg_read(root, 3, kRevisionId), 0x0180'0002u);
  EXPECT_EQ(cfg_read(root, 3, kHeaderType, 1), 0u) << "type 0, single function";
  cfg_write(root, 3, kRomBar, 0xFFFF'FFFF);
  EXPECT_EQ(cfg_read(root, 3, kRomBar), 0u) << "no expansion ROM";
  EXPECT_EQ(cfg_read(root, 3, 0x100), 0u) << "no extended capabilities";
}

TEST(PciConfigSpace, CommandKeepsOnlyDefinedBits) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(1, f);
  cfg_write(root, 1, kCommand, 0xFFFF, 2);
  EXPECT_EQ(cfg_read(root, 1, kCommand, 2), 0x0547u);
  cfg_write(root, 1, kStatus, 0xFFFF, 2);
  EXPECT_EQ(cfg_read(root, 1, kStatus, 2), kStatusCapabilityList) << "status is read only here";
}

TEST(PciConfigSpace, BarAnswersSizeProbingAndKeepsItsType) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(1, f);
  const std::uint32_t original = cfg_read(root, 1, kBar0);
  EXPECT_EQ(original, PciRoot::kMmioWindowBase) << "first BAR placed at the window's base";
  cfg_write(root, 1, kBar0, 0xFFFF'FFFF);
  EXPECT_EQ(cfg_read(root, 1, kBar0), 0xFFFF'F000u) << "4 KiB, 32-bit memory, not prefetchable";
  cfg_write(root, 1, kBar0, original);
  EXPECT_EQ(cfg_read(root, 1, kBar0), original);
  cfg_write(root, 1, kBar0 + 8, 0xFFFF'FFFF);
  EXPECT_EQ(cfg_read(root, 1, kBar0 + 8), 0u) << "an unimplemented BAR reads zero after sizing";
  cfg_write(root, 1, kBar0, 0x1234'5678);
  EXPECT_EQ(cfg_read(root, 1, kBar0), 0x1234'5000u) << "bits below the size read as zero";
  cfg_write(root, 1, kBar0 + 1, 0xAB, 1);
  EXPECT_EQ(cfg_read(root, 1, kBar0), 0x1234'A000u) << "a byte write merges into the BAR";
}

TEST(PciConfigSpace, BarDecodesOnlyWithMemorySpaceEnabledAndReportsMoves) {
  FakeMsiSink sink;
  TestFunction f(sink);
  RecordingObserver observer;
  f.set_bar_observer(&observer);
  PciRoot root;
  root.add(1, f);
  const std::uint64_t base = cfg_read(root, 1, kBar0);
  EXPECT_FALSE(f.decode(base, 4)) << "power-on: memory space disabled";
  cfg_write(root, 1, kCommand, kCommandMemory, 2);
  ASSERT_TRUE(f.decode(base + 8, 4));
  EXPECT_EQ(f.decode(base + 8, 4)->offset, 8u);
  EXPECT_FALSE(f.decode(base + 0xFFE, 4)) << "an access crossing the BAR's end is not decoded";
  ASSERT_EQ(observer.moves.size(), 2u);
  EXPECT_EQ(observer.moves[0].address, base);

  observer.moves.clear();
  cfg_write(root, 1, kBar0, 0xD000'0000);
  ASSERT_EQ(observer.moves.size(), 1u);
  EXPECT_EQ(observer.moves[0].bar, 0u);
  EXPECT_EQ(observer.moves[0].address, 0xD000'0000u);
  EXPECT_EQ(observer.moves[0].size, 0x1000u);
  EXPECT_FALSE(f.decode(base, 4));
  EXPECT_TRUE(f.decode(0xD000'0000, 4));

  observer.moves.clear();
  cfg_write(root, 1, kCommand, 0, 2);
  ASSERT_EQ(observer.moves.size(), 2u);
  EXPECT_FALSE(observer.moves[0].address.has_value()) << "disabling memory space stops decoding";
}

TEST(PciConfigSpace, ResetRestoresTheAssignment) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(1, f);
  const std::uint32_t assigned = cfg_read(root, 1, kBar0);
  cfg_write(root, 1, kBar0, 0xD000'0000);
  cfg_write(root, 1, kCommand, kCommandMemory, 2);
  cfg_write(root, 1, kInterruptLine, 0x33, 1);
  root.reset();
  EXPECT_EQ(cfg_read(root, 1, kBar0), assigned);
  EXPECT_EQ(cfg_read(root, 1, kCommand, 2), 0u);
  EXPECT_FALSE(f.decode(assigned, 4));
}

TEST(PciConfigSpace, CapabilityListIsWalkable) {
  FakeMsiSink sink;
  TestFunction f(sink);
  const std::array<std::uint8_t, 8> vendor{0, 0, 8, 1, 2, 3, 4, 5};
  const std::uint8_t second = f.config.add_capability(0x09, vendor);
  PciRoot root;
  root.add(1, f);
  std::vector<std::uint8_t> ids;
  std::uint32_t at = cfg_read(root, 1, kCapabilityPointer, 1);
  for (int guard = 0; at != 0 && guard < 48; ++guard) {
    EXPECT_EQ(at % 4, 0u) << "capabilities are dword aligned";
    ids.push_back(static_cast<std::uint8_t>(cfg_read(root, 1, at, 1)));
    at = cfg_read(root, 1, at + 1, 1);
  }
  EXPECT_EQ(ids, (std::vector<std::uint8_t>{Msix::kCapabilityId, 0x09}));
  EXPECT_EQ(cfg_read(root, 1, second + 2u, 2), 0x0108u);
  cfg_write(root, 1, second + 2u, 0xFFFF, 2);
  EXPECT_EQ(cfg_read(root, 1, second + 2u, 2), 0x0108u) << "no writable bits declared";
}

TEST(PciConfigSpace, IntxFollowsPendingAndTheDisableBit) {
  FakeMsiSink sink;
  TestFunction f(sink);
  FakeIrqLine line;
  f.config.set_intx_line(&line, 11);
  PciRoot root;
  root.add(1, f);
  EXPECT_EQ(cfg_read(root, 1, kInterruptLine, 1), 11u);
  f.config.set_intx(true);
  EXPECT_TRUE(line.level());
  EXPECT_TRUE(cfg_read(root, 1, kStatus, 2) & kStatusInterrupt);
  cfg_write(root, 1, kCommand, kCommandIntxDisable, 2);
  EXPECT_FALSE(line.level()) << "INTx disable drops the pin";
  EXPECT_TRUE(cfg_read(root, 1, kStatus, 2) & kStatusInterrupt) << "the status bit still shows it";
  cfg_write(root, 1, kCommand, 0, 2);
  EXPECT_TRUE(line.level());
  f.config.set_intx(false);
  EXPECT_FALSE(line.level());
  f.config.set_intx(true);
  root.reset();
  EXPECT_FALSE(line.level()) << "reset deasserts";
}

TEST(PciConfigSpace, SetUpErrorsThrow) {
  ConfigSpace config(PciIdentity{});
  EXPECT_THROW(config.add_memory_bar(6, 0x1000), Error);
  EXPECT_THROW(config.add_memory_bar(0, 0x1800), Error);
  config.add_memory_bar(0, 0x1000);
  EXPECT_THROW(config.add_memory_bar(0, 0x1000), Error);
  EXPECT_THROW(config.assign_bar(0, 0xC000'0800), Error) << "misaligned";
  EXPECT_THROW(config.assign_bar(1, 0xC000'0000), Error) << "not implemented";
}

// ---- MSI-X ---------------------------------------------------------------------

struct MsixFixture {
  FakeMsiSink sink;
  TestFunction f{sink};
  PciRoot root;
  std::uint32_t cap = 0;
  std::uint64_t bar1 = 0;
  MsixFixture() {
    root.add(1, f);
    cap = cfg_read(root, 1, kCapabilityPointer, 1);
    bar1 = cfg_read(root, 1, kBar0 + 4);
    cfg_write(root, 1, kCommand, kCommandMemory, 2);
  }
  void table_write(unsigned vector, std::uint32_t field, std::uint32_t value) {
    std::array<std::uint8_t, 4> data{};
    store_le(data, value);
    root.mmio_window().write(bar1 - PciRoot::kMmioWindowBase + vector * 16 + field, data);
  }
  std::uint64_t pba() {
    std::array<std::uint8_t, 8> data{};
    root.mmio_window().read(bar1 - PciRoot::kMmioWindowBase + 0x800, data);
    return load_le(data);
  }
  void program(unsigned vector, std::uint32_t address, std::uint32_t data) {
    table_write(vector, Msix::kEntryAddressLow, address);
    table_write(vector, Msix::kEntryAddressHigh, 0);
    table_write(vector, Msix::kEntryData, data);
  }
  void control(std::uint16_t value) { cfg_write(root, 1, cap + 2, value, 2); }
};

TEST(PciMsix, CapabilityDescribesTableAndPba) {
  MsixFixture m;
  EXPECT_EQ(cfg_read(m.root, 1, m.cap, 1), Msix::kCapabilityId);
  EXPECT_EQ(cfg_read(m.root, 1, m.cap + 2, 2), 3u) << "table size - 1, disabled, not masked";
  EXPECT_EQ(cfg_read(m.root, 1, m.cap + 4), 1u) << "table at offset 0 of BAR 1";
  EXPECT_EQ(cfg_read(m.root, 1, m.cap + 8), 0x801u) << "PBA at 0x800 of BAR 1";
  m.control(0x07FF);
  EXPECT_EQ(cfg_read(m.root, 1, m.cap + 2, 2), 3u) << "table size is read only";
}

TEST(PciMsix, EntriesStartMaskedAndDeliverWhenUnmasked) {
  MsixFixture m;
  m.control(Msix::kControlEnable);
  m.program(2, 0xFEE0'1000, 0x41);
  EXPECT_TRUE(m.f.msix.signal(2));
  EXPECT_EQ(m.sink.count(), 0u) << "entries start masked";
  EXPECT_EQ(m.pba(), 1u << 2);
  m.table_write(2, Msix::kEntryControl, 0);
  ASSERT_EQ(m.sink.count(), 1u) << "unmasking delivers the pending message";
  EXPECT_EQ(m.sink.last()->address, 0xFEE0'1000u);
  EXPECT_EQ(m.sink.last()->data, 0x41u);
  EXPECT_EQ(m.pba(), 0u);
  EXPECT_TRUE(m.f.msix.signal(2));
  EXPECT_EQ(m.sink.count(), 2u) << "unmasked: delivered at once";
}

TEST(PciMsix, FunctionMaskHoldsEveryVector) {
  MsixFixture m;
  m.control(Msix::kControlEnable | Msix::kControlFunctionMask);
  for (unsigned v = 0; v < 4; ++v) {
    m.program(v, 0xFEE0'0000, 0x30 + v);
    m.table_write(v, Msix::kEntryControl, 0);
  }
  m.f.msix.signal(1);
  m.f.msix.signal(3);
  EXPECT_EQ(m.sink.count(), 0u);
  EXPECT_EQ(m.pba(), 0b1010u);
  m.control(Msix::kControlEnable);
  EXPECT_EQ(m.sink.vectors(), (std::vector<std::uint8_t>{0x31, 0x33}));
  EXPECT_EQ(m.pba(), 0u);
}

TEST(PciMsix, DisabledMeansNothingIsSentOrPending) {
  MsixFixture m;
  m.program(0, 0xFEE0'0000, 0x30);
  m.table_write(0, Msix::kEntryControl, 0);
  EXPECT_FALSE(m.f.msix.signal(0)) << "disabled: the owner must use INTx";
  EXPECT_EQ(m.pba(), 0u);
  m.control(Msix::kControlEnable);
  EXPECT_FALSE(m.f.msix.signal(4)) << "no such vector";
  EXPECT_EQ(m.sink.count(), 0u);
}

TEST(PciMsix, OddAccessesStayInsideTheTable) {
  MsixFixture m;
  std::array<std::uint8_t, 8> data{};
  store_le(data, ~0ull);
  // An 8-byte write straddling entries 0 and 1 is dropped; one past the
  // table too.
  m.f.msix.table_write(12, data);
  m.f.msix.table_write(64, data);
  m.f.msix.table_write(~0ull - 3, std::span<const std::uint8_t>(data.data(), 4));
  std::array<std::uint8_t, 4> out{};
  m.f.msix.table_read(12, out);
  EXPECT_EQ(load_le(out), 1u) << "entry 0 still masked, only the mask bit defined";
  m.f.msix.table_read(1 << 20, out);
  EXPECT_EQ(load_le(out), 0xFFFF'FFFFu);
  // A qword write of address low+high works.
  store_le(data, 0x0000'0001'FEE0'2000ull);
  m.f.msix.table_write(16, data);
  EXPECT_EQ(m.f.msix.message(1).address, 0x1'FEE0'2000ull);
}

TEST(PciMsix, ResetMasksEverythingAndDisables) {
  MsixFixture m;
  m.control(Msix::kControlEnable);
  m.program(0, 0xFEE0'0000, 0x30);
  m.table_write(0, Msix::kEntryControl, 0);
  m.root.reset();
  EXPECT_FALSE(m.f.msix.enabled());
  EXPECT_EQ(cfg_read(m.root, 1, m.cap + 2, 2), 3u);
  EXPECT_TRUE(m.f.msix.masked(0));
  EXPECT_EQ(m.f.msix.message(0).address, 0u);
}

// ---- Root bus ------------------------------------------------------------------

std::uint32_t io_read(PciRoot& root, std::uint64_t port, std::size_t width) {
  std::array<std::uint8_t, 4> data{};
  root.config_io().read(port - PciRoot::kConfigIoPort, std::span(data.data(), width));
  return static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(data.data(), width)));
}
void io_write(PciRoot& root, std::uint64_t port, std::uint32_t value, std::size_t width) {
  std::array<std::uint8_t, 4> data{};
  store_le(data, value);
  root.config_io().write(port - PciRoot::kConfigIoPort, std::span<const std::uint8_t>(data.data(), width));
}

class CountingPort final : public BusDevice {
 public:
  void read(std::uint64_t, std::span<std::uint8_t> data) noexcept override { store_le(data, 0x5A); }
  void write(std::uint64_t, std::span<const std::uint8_t> data) noexcept override { last = data[0]; ++writes; }
  int writes = 0;
  std::uint8_t last = 0;
};

TEST(PciRoot, MechanismOneReachesTheHostBridgeAndFunctions) {
  FakeMsiSink sink;
  TestFunction f(sink);
  CountingPort reset_port;
  PciRoot root(&reset_port);
  root.add(5, f);
  // Linux's pci_check_type1: byte write to 0xCFB, then the dword round trip.
  io_write(root, 0xCFB, 0x01, 1);
  io_write(root, 0xCF8, 0x8000'0000, 4);
  EXPECT_EQ(io_read(root, 0xCF8, 4), 0x8000'0000u);
  EXPECT_EQ(io_read(root, 0xCFC, 4), (std::uint32_t{PciRoot::kHostBridgeDevice} << 16) | PciRoot::kHostBridgeVendor);
  EXPECT_EQ(io_read(root, 0xCFE, 2), PciRoot::kHostBridgeDevice) << "word access at 0xCFE";
  io_write(root, 0xCF8, 0x8000'0000 | 5 << 11 | 0x08, 4);
  EXPECT_EQ(io_read(root, 0xCFC, 4), 0x0180'0002u);
  EXPECT_EQ(io_read(root, 0xCFF, 1), 0x01u);
  io_write(root, 0xCF8, 0x8000'0000 | 6 << 11, 4);
  EXPECT_EQ(io_read(root, 0xCFC, 4), 0xFFFF'FFFFu) << "empty slot";
  io_write(root, 0xCF8, 0x8000'0000 | 1 << 16, 4);
  EXPECT_EQ(io_read(root, 0xCFC, 4), 0xFFFF'FFFFu) << "other buses are empty";
  io_write(root, 0xCF8, 0x8000'0000 | 5 << 11 | 1 << 8, 4);
  EXPECT_EQ(io_read(root, 0xCFC, 4), 0xFFFF'FFFFu) << "function 1 is empty";
  io_write(root, 0xCF8, 5 << 11, 4);
  EXPECT_EQ(io_read(root, 0xCFC, 4), 0xFFFF'FFFFu) << "enable bit clear";
  // 0xCF9 stays the reset control register.
  io_write(root, 0xCF9, 0x06, 1);
  EXPECT_EQ(reset_port.writes, 1);
  EXPECT_EQ(reset_port.last, 0x06);
  EXPECT_EQ(io_read(root, 0xCF9, 1), 0x5Au);
}

TEST(PciRoot, EcamSeesTheSameConfigurationSpace) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(2, f);
  std::array<std::uint8_t, 4> data{};
  root.ecam().read((2u << 15) + kVendorId, data);
  EXPECT_EQ(load_le(data), 0x5678'1234u);
  store_le(data, kCommandMemory);
  root.ecam().write((2u << 15) + kCommand, std::span<const std::uint8_t>(data.data(), 2));
  EXPECT_EQ(cfg_read(root, 2, kCommand, 2), kCommandMemory);
  root.ecam().read((2u << 15) + 0x101, std::span(data.data(), 2));
  EXPECT_EQ(load_le(std::span<const std::uint8_t>(data.data(), 2)), 0xFFFFu) << "misaligned: all ones";
}

TEST(PciRoot, BarsArePlacedInTheWindowWithoutOverlap) {
  FakeMsiSink sink;
  TestFunction a(sink), b(sink);
  PciRoot root;
  EXPECT_EQ(root.add(a), 1u);
  EXPECT_EQ(root.add(b), 2u);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (unsigned slot : {1u, 2u}) {
    for (unsigned bar = 0; bar < 2; ++bar) {
      const std::uint64_t base = cfg_read(root, slot, kBar0 + 4 * bar);
      EXPECT_GE(base, PciRoot::kMmioWindowBase);
      EXPECT_LE(base + 0x1000, PciRoot::kMmioWindowBase + PciRoot::kMmioWindowSize);
      EXPECT_EQ(base % 0x1000, 0u);
      for (auto [other, size] : ranges) EXPECT_TRUE(base + 0x1000 <= other || other + size <= base);
      ranges.emplace_back(base, 0x1000);
    }
  }
  EXPECT_THROW(root.add(1, b), Error) << "slot taken";
  EXPECT_THROW(root.add(0, b), Error) << "the host bridge's slot";
  EXPECT_THROW(root.add(32, b), Error);
}

TEST(PciRoot, WindowRoutesToWhicheverBarCoversTheAddress) {
  FakeMsiSink sink;
  TestFunction f(sink);
  PciRoot root;
  root.add(1, f);
  const std::uint64_t base = cfg_read(root, 1, kBar0);
  std::array<std::uint8_t, 4> data{};
  store_le(data, 0xCAFE);
  root.mmio_window().write(base - PciRoot::kMmioWindowBase + 8, data);
  EXPECT_EQ(f.scratch[2], 0u) << "memory space disabled: nothing decodes";
  cfg_write(root, 1, kCommand, kCommandMemory, 2);
  root.mmio_window().write(base - PciRoot::kMmioWindowBase + 8, data);
  EXPECT_EQ(f.scratch[2], 0xCAFEu);
  // The guest moves the BAR: the old address stops answering, the new one
  // answers, without rebuilding any bus.
  cfg_write(root, 1, kBar0, 0xD123'4000);
  store_le(data, 0xBEEF);
  root.mmio_window().write(base - PciRoot::kMmioWindowBase + 8, data);
  EXPECT_EQ(f.scratch[2], 0xCAFEu);
  root.mmio_window().write(0xD123'4000 - PciRoot::kMmioWindowBase + 8, data);
  EXPECT_EQ(f.scratch[2], 0xBEEFu);
  root.mmio_window().read(base - PciRoot::kMmioWindowBase + 8, data);
  EXPECT_EQ(load_le(data), 0xFFFF'FFFFu) << "nothing there any more";
}

}  // namespace
}  // namespace vmm::devices::pci
