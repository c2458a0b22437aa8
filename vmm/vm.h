// A virtual machine: guest memory, the KVM VM and its vCPU threads, the
// board, and the lifecycle that ties them together.
//
// Threads. vCPU threads run the guest and report what ends a run (triple
// fault, reset and power-off requests, debug exit, fatal errors); devices
// report from whichever thread touched them. Nobody acts on a report where
// it arises: every report is posted to the VM's control thread — the thread
// that called run() — which alone starts, stops, resets and tears down. So a
// vCPU never waits for another vCPU, and two reports never race each other.
//
// Reset (guest reboot), on the control thread:
//   1. stop every vCPU (kick + join);
//   2. drain every device timer: handlers may be running and re-arming right
//      now; those re-arms are refused quietly (illumos 12476 cannot happen);
//   3. reset every device (CMOS NVRAM and the RTC's time survive), put guest
//      memory back to zero pages and load the images again;
//   4. restore each vCPU's power-on state, enter the image on vCPU 0, start.
// Reset requests that arrive together are coalesced: reports carry the boot
// generation they were raised in, and those of a generation already reset
// are dropped.
//
// Control from other threads (signals, the control socket, a stress driver):
// pause(), resume(), reset(), stop(), force_stop() post a request and return;
// run() returns once the VM has ended, with every vCPU joined and every
// device timer drained. The destructor force-stops a VM still running.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/serial.h"
#include "timers/cyclic.h"
#include "vmm/boot/loader.h"
#include "vmm/irq_routing.h"
#include "vmm/kvm.h"
#include "vmm/platform.h"
#include "vmm/vcpu.h"
#include "vmm/virtio_disks.h"
#include "vmm/vcpu_lapic.h"

namespace vmm {

struct VmConfig {
  boot::BootConfig boot;                 // kernel, initrd, cmdline, cpus, hpet
  std::uint64_t memory = 256ull << 20;   // bytes
  // Where COM1's output goes. Null: nowhere. The VM does not own it.
  devices::SerialOutput* serial_output = nullptr;
  // A guest reset restarts the guest (true) or ends the run (false, --no-reboot).
  bool reboot = true;
  // stop(): how long the guest has to power off after the ACPI power button
  // before the VM is stopped by force.
  std::chrono::milliseconds graceful_timeout{5000};
  // Boot milestones are timed from here (CLOCK_MONOTONIC ns; 0 = VM creation).
  timers::Nanos process_start = 0;
  // Lets the guest end the run with a status of its choosing through port
  // 0xF4 (--debug-exit). Off by default: a guest could otherwise make the
  // VMM exit with statuses a supervisor reads as the VMM's own failures or
  // as a death by signal. Test guests need it to report their verdict.
  bool debug_exit = false;
  // virtio-blk disks, in PCI slot order (see vmm/virtio_disks.h).
  std::vector<DiskConfig> disks;
  // --irqchip=userspace: KVM gets no irqchip; the local APICs are the
  // board's (devices/lapic) and each vCPU injects its own interrupts
  // (vmm/vcpu_lapic.h). Otherwise the split irqchip: KVM's LAPICs.
  bool userspace_irqchip = false;
};

// How a run ended, and the process exit status the CLI uses for it. Even
// statuses are the VMM's own; odd ones come from the guest's debug-exit port
// ((v << 1) | 1, as QEMU's isa-debug-exit), so the two never collide.
enum class VmEnd : std::uint8_t {
  poweroff,        // ACPI S5 (status 0)
  reset,           // the guest reset with reboot disabled (status 0)
  debug_exit,      // debug-exit port (status (v << 1) | 1, low 8 bits)
  guest_error,     // KVM could not run the guest: internal error, failed entry (status 6)
  stopped,         // stop() or force_stop() from the host (status 8)
  guest_panic,     // the guest kernel reported a panic through pvpanic (status 10)
};

inline constexpr int kExitGuestError = 6;
inline constexpr int kExitStoppedByHost = 8;
inline constexpr int kExitGuestPanic = 10;

struct VmOutcome {
  VmEnd end = VmEnd::stopped;
  int exit_status = kExitStoppedByHost;
  std::string message;
  std::uint64_t reboots = 0;
};

enum class VmState : std::uint8_t { created, running, paused, resetting, stopping, ended };
const char* to_string(VmState state) noexcept;

struct VmStatus {
  VmState state = VmState::created;
  std::uint64_t reboots = 0;
  std::uint64_t boot_generation = 0;
  timers::Nanos uptime_ns = 0;  // since the current boot started
  std::uint64_t coalesced_resets = 0;  // reset reports dropped: their boot was already reset
};

// A VM before KVM is involved: its memory, its kernel and initrd read once,
// and the first boot loaded. A front end makes it before it opens /dev/kvm,
// so every bad input is reported first, on any host.
struct PreparedGuest {
  devices::GuestMemory memory;
  boot::BootFiles files;
  boot::BootImage image;
  std::vector<OpenDisk> disks;  // opened and locked
};

// Throws vmm::Error naming the problem: memory size, vCPU count beyond what
// the firmware tables allow, kernel, initrd, command line, disk images.
PreparedGuest prepare_guest(const VmConfig& config);

class Vm final : private VcpuEvents {
 public:
  // Builds everything around a prepared guest; nothing runs yet. Throws
  // vmm::Error with a message naming the problem (KVM, vCPUs).
  Vm(const VmConfig& config, PreparedGuest guest, const KvmSystem& kvm, timers::CyclicSystem& timers);
  // Prepares the guest too.
  Vm(const VmConfig& config, const KvmSystem& kvm, timers::CyclicSystem& timers);
  ~Vm() override;
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Starts the vCPUs and serves the VM's requests on the calling thread
  // until the VM ends. Call once.
  VmOutcome run();

  // Requests from any thread; they return at once. false: the request makes
  // no sense in the current state (resume while running, pause while
  // stopping...), with the reason in `why` when given.
  bool pause(std::string* why = nullptr);
  bool resume(std::string* why = nullptr);
  bool reset(std::string* why = nullptr);
  // Graceful: press the ACPI power button; force-stop after graceful_timeout.
  bool stop(std::string* why = nullptr);
  // Immediately: vCPUs kicked and joined, timers drained. Always accepted
  // (a second force is harmless).
  void force_stop();

  VmStatus status() const;

  // Where each vCPU is, for hang reports: the control thread pauses each
  // running vCPU, reads its registers and exit counts, lets it go, and does
  // that `samples` times, `interval` apart (a guest spinning in one place
  // shows the same RIP each time). `taken` holds what was read, one
  // "at N ns:" line and a line per vCPU for each sample; `missing` says why
  // the rest is not there (the VM ended, or the control thread was busy for
  // `timeout`), and is empty when every sample was taken.
  struct VcpuSamples {
    std::string taken;
    std::string missing;
    std::string text() const { return missing.empty() ? taken : taken + missing + "\n"; }
  };
  VcpuSamples sample_vcpus(unsigned samples, std::chrono::milliseconds interval, std::chrono::milliseconds timeout);
  devices::Serial& serial() noexcept { return platform_->serial(); }
  devices::BootProgress& boot_progress() noexcept { return platform_->boot_progress(); }
  unsigned vcpu_count() const noexcept { return static_cast<unsigned>(vcpus_.size()); }
  // The loop the PIT, RTC and HPET callouts are on (vCPU 0's CPU's, once it ran).
  timers::EventLoop* legacy_timer_loop() const noexcept { return timer_loop_.load(std::memory_order_acquire); }

 private:
  enum class Request : std::uint8_t {
    reset, poweroff, debug_exit, fatal, guest_panic, pause, resume, stop, force_stop, sample,
  };
  struct Report {
    Request request;
    std::uint64_t generation;  // boot generation it was raised in
    std::uint64_t value = 0;
    std::string message;
  };

  // VcpuEvents, on vCPU threads.
  void reset_requested(unsigned vcpu, std::string_view reason) noexcept override;
  void poweroff_requested(unsigned vcpu, std::string_view reason) noexcept override;
  void fatal_error(unsigned vcpu, std::string_view message) noexcept override;

  void post(Request request, std::uint64_t value = 0, std::string message = {}) noexcept;
  bool post_checked(Request request, std::string* why);
  void before_run_vcpu0(KvmVcpu& vcpu) noexcept;
  void follow_vcpu0_cpu() noexcept;
  void inject_pic(KvmVcpu& vcpu) noexcept;
  // Firmware's LAPIC set-up on vCPU 0 (virtual wire), whoever models it.
  void setup_boot_lapic();

  void start_vcpus();
  void stop_vcpus() noexcept;
  void do_reset();
  void do_pause();
  void do_resume();
  VmOutcome end(VmEnd end, int status, std::string message) noexcept;
  // "12.3 ms and 456 vCPU 0 entries into boot 7", for the reset log line.
  std::string describe_boot_age() const;
  void set_state(VmState state) noexcept;
  std::string describe_vcpus();

  const VmConfig config_;
  timers::CyclicSystem& timers_;

  // Declaration order is teardown order reversed: vCPU threads stop before
  // the board they call into, the board before the KVM VM its MSIs go to,
  // the KVM VM before the memory it maps.
  devices::GuestMemory memory_;
  const boot::BootFiles files_;
  KvmVm kvm_vm_;
  // The split irqchip must exist before the MSI sink and before any vCPU:
  // enabling it is part of member initialisation. Without it (user-space
  // irqchip) there is neither an MSI sink into KVM nor KVM routes.
  bool split_irqchip_ = false;
  std::optional<KvmMsiSink> msi_;
  std::optional<IoapicRoutes> routes_;
  devices::NullOutput null_output_;
  std::unique_ptr<Platform> platform_;
  // After the platform: the disks' interrupts go through it, so they stop
  // first. Null without disks.
  std::unique_ptr<VirtioDisks> disks_;
  boot::BootImage image_;
  std::vector<std::uint32_t> reset_msrs_;
  std::vector<VcpuSnapshot> power_on_;
  // User-space irqchip: each vCPU's side of its LAPIC (empty otherwise).
  std::vector<std::unique_ptr<VcpuLapic>> vcpu_lapics_;
  std::vector<std::unique_ptr<VcpuThread>> vcpus_;

  // vCPU 0's CPU, followed by the legacy timers (vCPU 0's thread only).
  int vcpu0_cpu_ = -1;
  std::atomic<timers::EventLoop*> timer_loop_{nullptr};

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Report> reports_;
  // The request the control thread has taken off reports_ and is carrying
  // out: until its state change is visible, a second one is still "pending".
  std::optional<Request> handling_;
  VmState state_ = VmState::created;
  std::atomic<std::uint64_t> generation_{0};
  std::uint64_t coalesced_resets_ = 0;
  timers::Nanos boot_started_ = 0;
  // vCPU 0's KVM_RUN count when this boot started: a reset's log line says
  // how far into the boot it came (a stale event ends a boot at its first
  // entries, a guest crash later).
  std::uint64_t boot_started_runs_ = 0;
  std::optional<timers::Nanos> stop_deadline_;
  // sample_vcpus(): requests numbered, and the control thread's last answer.
  std::uint64_t samples_asked_ = 0, samples_answered_ = 0;
  std::string sample_answer_;
  bool ran_ = false;
};

}  // namespace vmm
