// A small machine for KVM tests: guest RAM, port and MMIO buses with
// recording devices, an event log, and vCPU threads set up the way the VMM
// will set them up (split irqchip, per-vCPU CPUID, firmware LAPIC state).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/guest_memory.h"
#include "guest_defs.h"
#include "tests/common/skip.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"

#define VMM_DECLARE_GUEST(name)                            \
  extern "C" const std::uint8_t kvm_guest_##name##_start[]; \
  extern "C" const std::uint8_t kvm_guest_##name##_end[];
VMM_DECLARE_GUEST(pio)
VMM_DECLARE_GUEST(mmio)
VMM_DECLARE_GUEST(hlt)
VMM_DECLARE_GUEST(spin)
VMM_DECLARE_GUEST(outloop)
VMM_DECLARE_GUEST(triple)
VMM_DECLARE_GUEST(msi)
VMM_DECLARE_GUEST(timer)
VMM_DECLARE_GUEST(tsc_deadline)
VMM_DECLARE_GUEST(smp)
VMM_DECLARE_GUEST(long)
VMM_DECLARE_GUEST(msr)
#undef VMM_DECLARE_GUEST

#define GUEST_IMAGE(name)                                                      \
  std::span<const std::uint8_t>(kvm_guest_##name##_start,                      \
                                static_cast<std::size_t>(kvm_guest_##name##_end - kvm_guest_##name##_start))

// Skips loudly where /dev/kvm is not usable (fails under VMM_NO_SKIP=1).
#define SKIP_WITHOUT_KVM() VMM_SKIP_UNLESS_KVM()

namespace vmm::testing {

inline constexpr auto kTimeout = std::chrono::seconds(10);


// One /dev/kvm handle for the whole test binary.
KvmSystem& kvm_system();

struct Access {
  std::uint64_t address;
  std::size_t size;
  std::uint64_t value;
  std::chrono::steady_clock::time_point when;
};

// Records writes; reads return read_byte(address) for each byte.
class Recorder final : public devices::BusDevice {
 public:
  Recorder(std::uint64_t base, std::function<std::uint8_t(std::uint64_t)> read_byte)
      : base_(base), read_byte_(std::move(read_byte)) {}

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // Called (on the vCPU thread, no lock held) after each write is recorded.
  void on_write(std::function<void(const Access&)> hook) { hook_ = std::move(hook); }

  std::vector<Access> writes() const;
  std::vector<Access> writes_to(std::uint64_t address) const;
  std::size_t count(std::uint64_t address) const;
  // Waits until at least `n` writes to `address` were recorded.
  bool wait_count(std::uint64_t address, std::size_t n, std::chrono::milliseconds timeout = kTimeout) const;

 private:
  const std::uint64_t base_;
  std::function<std::uint8_t(std::uint64_t)> read_byte_;
  std::function<void(const Access&)> hook_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Access> writes_;
};

class EventLog final : public VcpuEvents {
 public:
  struct Event {
    std::string kind;  // "reset", "poweroff", "fatal"
    unsigned vcpu;
    std::string reason;
  };
  void reset_requested(unsigned vcpu, std::string_view reason) noexcept override { add("reset", vcpu, reason); }
  void poweroff_requested(unsigned vcpu, std::string_view reason) noexcept override {
    add("poweroff", vcpu, reason);
  }
  void fatal_error(unsigned vcpu, std::string_view message) noexcept override { add("fatal", vcpu, message); }

  std::vector<Event> events() const;
  bool wait_count(std::size_t n, std::chrono::milliseconds timeout = kTimeout) const;

 private:
  void add(const char* kind, unsigned vcpu, std::string_view reason) noexcept;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Event> events_;
};

struct MachineOptions {
  bool split_irqchip = true;
  std::uint64_t memory = 2 << 20;
  unsigned vcpus = 1;
};

class TestMachine {
 public:
  explicit TestMachine(const MachineOptions& options = {});
  ~TestMachine();

  // Copies a guest image to GUEST_LOAD.
  void load(std::span<const std::uint8_t> image);
  // Real mode, CS = 0, IP = GUEST_LOAD.
  void enter_real_mode(unsigned vcpu);
  // The loader's 32-bit flat entry state (boot GDT), EIP = GUEST_LOAD.
  void enter_flat32(unsigned vcpu);
  // The loader's 64-bit entry state (identity page tables), RIP = GUEST_LOAD.
  void enter_long64(unsigned vcpu, std::uint64_t rsi);

  VcpuThread& vcpu(unsigned i) { return *vcpus_.at(i); }
  // For failure messages: every report write and each vCPU's state.
  std::string describe();
  std::vector<std::uint8_t> eois() const;
  // Also forward KVM_EXIT_IOAPIC_EOI vectors here (set before start()).
  void forward_eois(std::function<void(std::uint8_t)> sink) { eoi_sink_ = std::move(sink); }

  KvmVm vm;
  devices::GuestMemory memory;
  devices::Bus pio{"pio"};
  devices::Bus mmio{"mmio"};
  Recorder pio_device;     // PORT_PIO_BASE .. +15
  Recorder reports;        // 0xe0 .. 0xff
  Recorder mmio_device;    // MMIO_DEVICE .. +4 KiB
  EventLog events;

 private:
  mutable std::mutex eoi_mu_;
  std::vector<std::uint8_t> eois_;
  std::function<void(std::uint8_t)> eoi_sink_;
  std::uint8_t counting_source_ = 0xa0;
  // Last: destroyed (stopped, joined) before everything they use.
  std::vector<std::unique_ptr<VcpuThread>> vcpus_;
};

// Open file descriptors, threads and mappings of this process.
struct ProcessResources {
  std::size_t fds = 0;
  std::size_t threads = 0;
  std::size_t mappings = 0;
  std::size_t kvm_mappings = 0;  // kvm_run pages (anon_inode:kvm-vcpu)
};
ProcessResources process_resources();

}  // namespace vmm::testing
