// One harness for every device's register interface: the device is built on
// a ManualClock with a caller-driven loop, so each input is deterministic
// and every timer the guest arms fires at an exact, reproducible time. The
// input format and the invariants are in device_fuzz.h.
#include "tests/fuzz/device_fuzz.h"
#include "tests/fuzz/byte_reader.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "devices/acpi_pm.h"
#include "devices/apic_bus.h"
#include "devices/boot_progress.h"
#include "devices/bus.h"
#include "devices/debug_exit.h"
#include "devices/hpet.h"
#include "devices/i8042.h"
#include "devices/interrupts.h"
#include "devices/ioapic.h"
#include "devices/lapic.h"
#include "devices/pic.h"
#include "devices/pit.h"
#include "devices/pvpanic.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/guest_memory.h"
#include "devices/pci/pci_root.h"
#include "devices/timer_device.h"
#include "devices/virtio/block.h"
#include "devices/virtio/pci_transport.h"
#include "tests/devices/virtio_fakes.h"
#include "timers/clock.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"

namespace vmm::fuzz {

namespace {

using devices::BusDevice;
using timers::Nanos;

// Every device's periodic callouts are thinned to at most one per 100 us
// (Pit::kMinIrqInterval, Hpet::kMinRearmInterval, LapicTimer::kMinPeriod).
constexpr Nanos kFloor = 100 * timers::kMicrosecond;
static_assert(devices::Pit::kMinIrqInterval == kFloor);
static_assert(devices::Hpet::kMinRearmInterval == kFloor);
static_assert(devices::LapicTimer::kMinPeriod == kFloor);

[[noreturn]] void violated(FuzzedDevice device, const char* what) {
  std::fprintf(stderr, "%.*s fuzz: invariant broken: %s\n", static_cast<int>(name(device).size()),
               name(device).data(), what);
  std::abort();
}

// Lines logged through the default logger while an input runs, at debug and
// above (what `--log-level debug` would show).
class LineCounter final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::size_t take() {
    std::lock_guard lock(this->mutex_);
    const std::size_t n = lines_;
    lines_ = 0;
    return n;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg&) override { ++lines_; }
  void flush_() override {}

 private:
  std::size_t lines_ = 0;
};

std::shared_ptr<LineCounter> counting_logger() {
  static const std::shared_ptr<LineCounter> sink = [] {
    auto counter = std::make_shared<LineCounter>();
    auto logger = std::make_shared<spdlog::logger>("device-fuzz", counter);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(std::move(logger));
    return counter;
  }();
  return sink;
}

// An interrupt line or MSI sink that only counts: the devices must not care
// what is on the other end.
struct CountingLine final : devices::IrqLine {
  void set_level(bool asserted) noexcept override { edges += asserted && !level; level = asserted; }
  bool level = false;
  std::uint64_t edges = 0;
};
struct CountingMsi final : devices::MsiSink {
  void send_msi(const devices::MsiMessage&) noexcept override { ++messages; }
  std::uint64_t messages = 0;
};

std::uint32_t read32(BusDevice& device, std::uint64_t offset) {
  std::array<std::uint8_t, 4> bytes{};
  device.read(offset, bytes);
  return static_cast<std::uint32_t>(devices::load_le(bytes));
}

// A device as the harness sees it: register windows, optionally a timer
// lifecycle, device-side events and invariants.
class Rig {
 public:
  struct Window {
    BusDevice* device;
    std::uint64_t size;
  };
  virtual ~Rig() = default;

  std::vector<Window> windows;
  devices::TimerDevice* timer_device = nullptr;
  unsigned callouts = 0;  // callouts the device can have armed at once

  virtual void event(std::uint8_t, std::uint8_t) {}
  // Power-on state, as at a VM reset (timer devices are drained first).
  virtual void reset(timers::EventLoop& loop) {
    if (timer_device == nullptr) return;
    timer_device->drain_timers();
    timer_device->reset(loop);
  }
  // Returns what broke, or nullptr.
  virtual const char* check() { return nullptr; }
};

struct Environment {
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  timers::EventLoop& loop() { return system.loop(0); }
};

class PitRig final : public Rig {
 public:
  explicit PitRig(Environment& env) : pit_(env.system, env.loop(), irq_) {
    windows = {{&pit_, devices::Pit::kSize}, {&pit_.port61(), devices::Pit::kPort61Size}};
    timer_device = &pit_;
    callouts = 3;
  }
  void event(std::uint8_t a, std::uint8_t) override { pit_.set_output_enabled(a & 1); }

 private:
  CountingLine irq_;
  devices::Pit pit_;
};

class RtcRig final : public Rig {
 public:
  explicit RtcRig(Environment& env)
      : clock_(env.clock),
        rtc_(env.system, env.loop(), irq_, [this] { return std::int64_t{1'767'225'600} * timers::kSecond + clock_.now(); }) {
    windows = {{&rtc_, devices::Rtc::kSize}};
    timer_device = &rtc_;
    callouts = 3;
  }
  void event(std::uint8_t a, std::uint8_t) override { rtc_.set_output_enabled(a & 1); }

 private:
  const timers::ManualClock& clock_;
  CountingLine irq_;
  devices::Rtc rtc_;
};

class HpetRig final : public Rig {
 public:
  explicit HpetRig(Environment& env)
      : hpet_(env.system, env.loop(), [this](unsigned pin) -> devices::IrqLine& { return pins_[pin % pins_.size()]; },
              irq0_, irq8_, msi_) {
    windows = {{&hpet_, devices::Hpet::kSize}};
    timer_device = &hpet_;
    callouts = 3;
  }
  const char* check() override {
    if (read32(hpet_, 0) != static_cast<std::uint32_t>(devices::Hpet::kCapabilities)) {
      return "the capabilities register changed";
    }
    if (read32(hpet_, 4) != static_cast<std::uint32_t>(devices::Hpet::kCapabilities >> 32)) {
      return "the counter period changed";
    }
    return nullptr;
  }

 private:
  std::array<CountingLine, devices::IoApic::kPins> pins_;
  CountingLine irq0_, irq8_;
  CountingMsi msi_;
  devices::Hpet hpet_;
};

class IoApicRig final : public Rig {
 public:
  IoApicRig() : ioapic_(msi_) { windows = {{&ioapic_, devices::IoApic::kSize}}; }
  void event(std::uint8_t a, std::uint8_t b) override {
    if (a & 0x80) {
      ioapic_.end_of_interrupt(b);
    } else {
      ioapic_.pin(a % devices::IoApic::kPins).set_level(b & 1);
    }
  }
  void reset(timers::EventLoop&) override { ioapic_.reset(); }
  const char* check() override {
    for (unsigned pin = 0; pin < devices::IoApic::kPins; ++pin) {
      if (ioapic_.redirection_entry(pin) & 0x00FF'FFFF'FFFE'0000ull) return "reserved redirection bits set";
    }
    return nullptr;
  }

 private:
  CountingMsi msi_;
  devices::IoApic ioapic_;
};

class PicRig final : public Rig {
 public:
  PicRig() : pic_(int_) {
    windows = {{&pic_.master(), devices::Pic::kChipSize},
               {&pic_.slave(), devices::Pic::kChipSize},
               {&pic_.elcr(), devices::Pic::kElcrSize}};
  }
  void event(std::uint8_t a, std::uint8_t b) override {
    if (a & 0x80) {
      if (pic_.interrupt_pending()) pic_.acknowledge();
    } else {
      pic_.set_irq(a % 20, b & 1);  // 16..19 do not exist
    }
  }
  void reset(timers::EventLoop&) override { pic_.reset(); }
  const char* check() override {
    const auto master = pic_.chip_state(false);
    const auto slave = pic_.chip_state(true);
    if (master.elcr & ~devices::Pic::kMasterElcrMask) return "an edge-only master IRQ became level-triggered";
    if (slave.elcr & ~devices::Pic::kSlaveElcrMask) return "an edge-only slave IRQ became level-triggered";
    if ((master.vector_base | slave.vector_base) & 7) return "a vector base with its low 3 bits set";
    return nullptr;
  }

 private:
  CountingLine int_;
  devices::Pic pic_;
};

// COM1 writing to a console log file as `--serial file:` opens it (here
// capped at 4 KiB, so the cap is reached too), the file made once per
// process and truncated by every input's open.
std::string serial_log_path() {
  static const std::string path = [] {
    std::string dir = "/tmp/vmm-serial-fuzz.XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) std::abort();
    static const std::string file = dir + "/console.log";
    static const std::string folder = dir;
    std::atexit([] {
      ::unlink(file.c_str());
      ::rmdir(folder.c_str());
    });
    return file;
  }();
  return path;
}

class SerialRig final : public Rig {
 public:
  SerialRig()
      : output_(devices::FdOutput::open_file(serial_log_path(), 4096, std::chrono::milliseconds(0))),
        serial_(irq_, *output_) {
    windows = {{&serial_, devices::Serial::kSize}};
  }
  void event(std::uint8_t a, std::uint8_t b) override {
    const std::array<std::uint8_t, 4> input = {a, b, static_cast<std::uint8_t>(a ^ b), '\n'};
    serial_.receive(std::span<const std::uint8_t>(input.data(), 1 + b % input.size()));
  }
  void reset(timers::EventLoop&) override { serial_.reset(); }
  const char* check() override {
    if (output_->bytes_written() > 4096) return "the console log grew past its cap";
    return nullptr;
  }

 private:
  CountingLine irq_;
  std::unique_ptr<devices::FdOutput> output_;
  devices::Serial serial_;
};

class I8042Rig final : public Rig {
 public:
  I8042Rig() : i8042_(kbd_, aux_, [] {}) {
    windows = {{&i8042_.data_port(), 1}, {&i8042_.command_port(), 1}};
  }
  void reset(timers::EventLoop&) override { i8042_.reset(); }
  const char* check() override {
    std::uint8_t status = 0;
    i8042_.command_port().read(0, std::span<std::uint8_t>(&status, 1));
    if (status & devices::I8042::kStatusInputFull) return "the input buffer stays full";
    return nullptr;
  }

 private:
  CountingLine kbd_, aux_;
  devices::I8042 i8042_;
};

class AcpiPmRig final : public Rig {
 public:
  explicit AcpiPmRig(Environment& env)
      : pm_(sci_, 5, devices::AcpiPm::Callbacks{[] {}, [] {}}, env.clock) {
    // PM1 event block 4 bytes, PM1 control 2, the PM timer 4 (the FADT's).
    windows = {{&pm_.event_block(), 4}, {&pm_.control_block(), 2}, {&pm_.reset_port(), 1}, {&pm_.pm_timer(), 4}};
  }
  void event(std::uint8_t, std::uint8_t) override { pm_.press_power_button(); }
  void reset(timers::EventLoop&) override { pm_.reset(); }
  const char* check() override {
    if (read32(pm_.pm_timer(), 0) >> devices::AcpiPm::kTimerBits) return "the 24-bit PM timer has bits above 23";
    return nullptr;
  }

 private:
  CountingLine sci_;
  devices::AcpiPm pm_;
};

// Two local APICs; window 2 turns accesses into x2APIC MSR reads and writes
// (the offset picks the MSR: the x2APIC range, IA32_APIC_BASE or
// IA32_TSC_DEADLINE), windows 0 and 1 are each APIC's MMIO page.
class LapicRig final : public Rig {
 public:
  explicit LapicRig(Environment& env)
      : bus_(env.system, env.loop(), devices::ApicBus::Config{.cpus = 2}, [](unsigned) {},
             [](std::uint8_t) {}),
        msrs_(bus_) {
    windows = {{&bus_.lapic(0), 0x1000}, {&bus_.lapic(1), 0x1000}, {&msrs_, 0x800}};
    timer_device = &bus_;
    callouts = 2;
  }
  void event(std::uint8_t a, std::uint8_t b) override {
    devices::Lapic& apic = bus_.lapic(b & 1);
    switch (a % 6) {
      case 0:
        if (const auto vector = apic.next_interrupt()) apic.accept(*vector);
        break;
      case 1:
        apic.set_cr8(b >> 4);
        break;
      case 2:
        apic.set_lint((a >> 3) & 1, (a >> 4) & 1);
        break;
      case 3:
        apic.take_events();
        break;
      case 4:
        if (apic.extint_pending()) apic.extint_accepted();
        break;
      default:  // an MSI from the IOAPIC or HPET, to any destination
        bus_.send_msi(devices::MsiMessage{0xFEE0'0000ull | (std::uint64_t{b} << 12) | ((a & 0xC0u) >> 4),
                                          static_cast<std::uint32_t>(a) << 8 | b});
        break;
    }
  }
  const char* check() override {
    for (unsigned i = 0; i < bus_.size(); ++i) {
      const auto vector = bus_.lapic(i).next_interrupt();
      if (vector && *vector < 16) return "a vector below 16 offered for delivery";
    }
    return nullptr;
  }

 private:
  struct MsrWindow final : BusDevice {
    explicit MsrWindow(devices::ApicBus& apics) : bus(apics) {}
    // Offset bit 10 picks the APIC; bits 0-9 the MSR.
    static std::uint32_t index(std::uint64_t offset) {
      const std::uint64_t pick = offset & 0x3FF;
      if (offset > 0xFFFF) return static_cast<std::uint32_t>(offset >> 32);  // any MSR at all
      if (pick < 0x100) return devices::Lapic::kMsrX2apicFirst + static_cast<std::uint32_t>(pick);
      if (pick < 0x200) return devices::Lapic::kMsrApicBase;
      if (pick < 0x300) return devices::Lapic::kMsrTscDeadline;
      return 0x780 + static_cast<std::uint32_t>(pick - 0x300);  // around the x2APIC range's start
    }
    devices::Lapic& apic(std::uint64_t offset) { return bus.lapic((offset >> 10) & 1); }
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override {
      devices::store_le(data, apic(offset).read_msr(index(offset)).value_or(0));
    }
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override {
      apic(offset).write_msr(index(offset), devices::load_le(data));
    }
    devices::ApicBus& bus;
  };

  devices::ApicBus bus_;
  MsrWindow msrs_;
};

class BoardPortsRig final : public Rig {
 public:
  explicit BoardPortsRig(Environment& env)
      : clock_(env.clock),
        debug_exit_([this](std::uint64_t status) { last_exit_ = status; }),
        progress_(env.clock, env.clock.now()),
        pvpanic_([] {}) {
    windows = {{&debug_exit_, devices::DebugExit::kSize},
               {&progress_, devices::BootProgress::kSize},
               {&pvpanic_, devices::PvPanic::kSize}};
  }
  void reset(timers::EventLoop&) override { progress_.restart(clock_.now()); }
  const char* check() override {
    if (last_exit_ && (*last_exit_ & 1) == 0) return "a debug-exit status that is not odd (it would look like a normal exit)";
    const std::uint64_t recorded = progress_.total_recorded();
    const std::size_t kept = progress_.milestones().size();
    if (kept != std::min<std::uint64_t>(recorded, devices::BootProgress::kCapacity)) {
      return "boot-progress keeps the wrong number of milestones";
    }
    return nullptr;
  }

 private:
  const timers::ManualClock& clock_;
  std::optional<std::uint64_t> last_exit_;
  devices::DebugExit debug_exit_;
  devices::BootProgress progress_;
  devices::PvPanic pvpanic_;
};

// The PCI root with a virtio-blk function in slot 1 over a disk in memory,
// and 64 KiB of guest RAM the input writes its rings and requests into.
// Windows: 0 the configuration ports (0xCF8-0xCFF), 1 the first 32 KiB of
// the MMIO window, where BAR 0 (the virtio regions) sits until the guest
// moves it. Events (a, b): a >> 6 == 0 shifts b into the RAM cursor (16
// bits), 1 stores b at the cursor and advances it, 2 completes the
// backend's request a & 7 (b != 0: with that errno), 3 completes them all
// (a even) or advances the clock b us and releases the interrupts that
// coalescing (adaptive, at most 20 us) held and that are due (a odd).
// Invariant: every buffer a request hands the backend lies in guest RAM.
class PciRig final : public Rig {
 public:
  static constexpr std::uint64_t kRam = 64 * 1024;

  PciRig()
      : memory_(devices::GuestMemory::allocate(kRam)),
        block_(make_backend(), devices::virtio::VirtioBlock::Options{"fuzz", 16, 1, std::chrono::microseconds(20),
                                                                     [this] { return now_; }, {},
                                                                     /*coalesce_follows_completions=*/true}),
        function_(block_, memory_, msi_, &intx_, 11) {
    root_.add(1, function_);
    windows = {{&root_.config_io(), devices::pci::PciRoot::kConfigIoSize},
               {&root_.mmio_window(), devices::virtio::VirtioPciFunction::kBarSize}};
  }
  ~PciRig() override { backend_->complete_all(); }

  void event(std::uint8_t a, std::uint8_t b) override {
    switch (a >> 6) {
      case 0: cursor_ = static_cast<std::uint16_t>(cursor_ << 8 | b); break;
      case 1:
        memory_.write_obj(cursor_ % kRam, b);
        ++cursor_;
        break;
      case 2: backend_->complete(a & 7, b); break;
      default:
        if ((a & 1) == 0) {
          backend_->complete_all();
        } else {
          now_ += std::chrono::microseconds(b);
          block_.release_due(now_);
        }
        break;
    }
  }
  void reset(timers::EventLoop&) override {
    root_.reset();
    // What the VMM does at a reset: requests in flight finish at the
    // backend, none is completed to the guest any more.
    backend_->complete_all();
  }
  const char* check() override {
    for (std::size_t i = 0;; ++i) {
      const std::optional<testing::MemoryBackend::Pending> pending = backend_->peek(i);
      if (!pending) break;
      for (const iovec& v : pending->iov) {
        if (!inside_ram(v)) return "a request's buffer lies outside guest memory";
      }
    }
    return nullptr;
  }

 private:
  std::unique_ptr<devices::virtio::BlockBackend> make_backend() {
    // Small: the disk is allocated (and zeroed) afresh for every input.
    auto backend = std::make_unique<testing::MemoryBackend>(16 * 1024, false, 8);
    backend_ = backend.get();
    return backend;
  }
  bool inside_ram(const iovec& v) const {
    const auto* base = static_cast<const std::uint8_t*>(v.iov_base);
    for (const auto& region : memory_.regions()) {
      if (base >= region.host && v.iov_len <= region.size &&
          static_cast<std::uint64_t>(base - region.host) <= region.size - v.iov_len) {
        return true;
      }
    }
    return false;
  }

  devices::GuestMemory memory_;
  testing::MemoryBackend* backend_ = nullptr;
  CountingMsi msi_;
  CountingLine intx_;
  devices::virtio::VirtioBlock block_;
  devices::virtio::VirtioPciFunction function_;
  devices::pci::PciRoot root_;
  std::uint16_t cursor_ = 0;
  std::chrono::nanoseconds now_{0};
};

std::unique_ptr<Rig> make_rig(FuzzedDevice device, Environment& env) {
  switch (device) {
    case FuzzedDevice::kPit: return std::make_unique<PitRig>(env);
    case FuzzedDevice::kRtc: return std::make_unique<RtcRig>(env);
    case FuzzedDevice::kHpet: return std::make_unique<HpetRig>(env);
    case FuzzedDevice::kIoApic: return std::make_unique<IoApicRig>();
    case FuzzedDevice::kPic: return std::make_unique<PicRig>();
    case FuzzedDevice::kSerial: return std::make_unique<SerialRig>();
    case FuzzedDevice::kI8042: return std::make_unique<I8042Rig>();
    case FuzzedDevice::kAcpiPm: return std::make_unique<AcpiPmRig>(env);
    case FuzzedDevice::kLapic: return std::make_unique<LapicRig>(env);
    case FuzzedDevice::kBoardPorts: return std::make_unique<BoardPortsRig>(env);
    case FuzzedDevice::kPci: return std::make_unique<PciRig>();
  }
  std::abort();
}

}  // namespace

std::string_view name(FuzzedDevice device) noexcept {
  switch (device) {
    case FuzzedDevice::kPit: return "pit";
    case FuzzedDevice::kRtc: return "rtc";
    case FuzzedDevice::kHpet: return "hpet";
    case FuzzedDevice::kIoApic: return "ioapic";
    case FuzzedDevice::kPic: return "pic";
    case FuzzedDevice::kSerial: return "serial";
    case FuzzedDevice::kI8042: return "i8042";
    case FuzzedDevice::kAcpiPm: return "acpi_pm";
    case FuzzedDevice::kLapic: return "lapic";
    case FuzzedDevice::kBoardPorts: return "board_ports";
    case FuzzedDevice::kPci: return "pci";
  }
  return "unknown";
}

int fuzz_device(FuzzedDevice device, const std::uint8_t* data, std::size_t size) {
  const std::shared_ptr<LineCounter> log_lines = counting_logger();
  log_lines->take();
  {
    // One loop for the process (an io_uring and an eventfd each input would
    // halve the executions per second); every input starts it empty, at the
    // same time, so inputs replay exactly.
    static Environment env;
    env.clock.set(timers::kSecond);
    std::unique_ptr<Rig> rig = make_rig(device, env);
    timers::EventLoop& loop = env.loop();
    bool paused = false;
    ByteReader in(data, size);
    while (!in.done()) {
      const std::uint8_t opcode = in.byte();
      const unsigned kind = opcode & 7;
      const std::size_t width = std::size_t{1} << ((opcode >> 3) & 3);
      const Rig::Window& window = rig->windows[(opcode >> 5) % rig->windows.size()];
      Nanos step = 0;
      const std::uint64_t calls_before = loop.stats().handler_calls;

      if (kind == 3) {
        const std::uint8_t b = in.byte();
        step = static_cast<Nanos>(b & 63) << (6 * (b >> 6));
      } else if (kind == 4 || kind == 5) {
        const std::uint8_t a = in.byte(), b = in.byte();
        if (kind == 4) {
          if (!paused) rig->event(a, b);
        } else {
          switch (a % 4) {
            case 0:
              rig->reset(loop);
              paused = false;  // a reset leaves the device running, paused or not
              break;
            case 1:
              if (rig->timer_device && !paused) rig->timer_device->pause(), paused = true;
              break;
            case 2:
              if (rig->timer_device && paused) rig->timer_device->resume(), paused = false;
              break;
            default:
              if (rig->timer_device) rig->timer_device->bind_timers(loop);
              break;
          }
        }
      } else {
        const std::uint16_t raw = in.u16();
        const std::uint64_t offset =
            raw & 0x8000 ? (std::uint64_t{raw} << 48 | raw) : raw % (window.size + 8);
        std::array<std::uint8_t, 8> value{};
        for (std::size_t i = 0; i < width; ++i) value[i] = in.byte();
        // A paused VM runs no vCPU: no guest access reaches its devices.
        if (!paused) {
          if (kind == 2) {
            window.device->read(offset, std::span<std::uint8_t>(value.data(), width));
          } else {
            window.device->write(offset, std::span<const std::uint8_t>(value.data(), width));
          }
        }
      }

      // Time passes as a loop thread sees it: it wakes at each deadline in
      // turn and runs what is due, so a device that re-arms too soon (or in
      // the past) makes it run more handlers than its callouts at their
      // floor rate could.
      const Nanos end = env.clock.now() + step;
      const std::uint64_t bound = 2 + rig->callouts * (2 + static_cast<std::uint64_t>(step / kFloor));
      for (;;) {
        loop.run_due();
        const std::uint64_t calls = loop.stats().handler_calls - calls_before;
        if (paused && calls != 0) violated(device, "a handler ran while the device was paused");
        if (calls > bound) violated(device, "handlers ran faster than the 100 us floor allows");
        const Nanos next = loop.next_deadline();
        if (next <= env.clock.now() && env.clock.now() == end) violated(device, "a callout left armed in the past");
        if (env.clock.now() == end) break;
        env.clock.set(std::clamp(next, env.clock.now(), end));
      }
      if (const char* what = rig->check()) violated(device, what);
    }
    rig.reset();
    if (env.loop().heap_size() != 0) violated(device, "a callout outlived its device");
  }
  if (log_lines->take() > kMaxLogLinesPerInput) violated(device, "the log grew without bound");
  return 0;
}

}  // namespace vmm::fuzz
