#include "vmm/vm.h"

#include <sched.h>
#include <thread>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "vmm/boot/acpi.h"
#include "vmm/cpuid.h"

namespace vmm {

namespace {

timers::Nanos now_ns() { return timers::MonotonicClock::instance().now(); }

constexpr std::uint32_t kMsrKvmPvEoi = 0x4B564D04;
constexpr std::uint32_t kMsrKvmAsyncPfInt = 0x4B564D06;

std::uint64_t host_ram_bytes() {
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) return 0;
  return std::uint64_t{info.totalram} * info.mem_unit;
}

devices::GuestMemory allocate_memory(std::uint64_t bytes) {
  if (bytes == 0) throw Error("guest memory size must be more than 0");
  const std::uint64_t host = host_ram_bytes();
  if (host != 0 && bytes > host) {
    throw Error("guest memory of " + std::to_string(bytes >> 20) + " MiB is more than this host's " +
                std::to_string(host >> 20) + " MiB of RAM");
  }
  if (bytes < (2ull << 20)) throw Error("guest memory must be at least 2 MiB (got " + std::to_string(bytes) + " bytes)");
  return devices::GuestMemory::allocate(bytes);
}

void check_cpu_count(unsigned cpus) {
  if (cpus == 0) throw Error("the number of vCPUs must be at least 1");
  if (cpus > boot::acpi::kMaxCpus) {
    throw Error("--cpus " + std::to_string(cpus) + " exceeds the " + std::to_string(boot::acpi::kMaxCpus) +
                " vCPUs this VMM's MADT and IOAPIC numbering allow");
  }
}

}  // namespace

const char* to_string(VmState state) noexcept {
  switch (state) {
    case VmState::created: return "created";
    case VmState::running: return "running";
    case VmState::paused: return "paused";
    case VmState::resetting: return "resetting";
    case VmState::stopping: return "stopping";
    case VmState::ended: return "ended";
  }
  return "unknown";
}

PreparedGuest prepare_guest(const VmConfig& config) {
  check_cpu_count(config.boot.cpus);
  devices::GuestMemory memory = allocate_memory(config.memory);
  boot::BootFiles files = boot::BootFiles::open(config.boot, memory.size());
  boot::BootImage image = boot::load(memory, config.boot, files);
  std::vector<OpenDisk> disks = open_disks(config.disks);
  return PreparedGuest{std::move(memory), std::move(files), std::move(image), std::move(disks)};
}

Vm::Vm(const VmConfig& config, const KvmSystem& kvm, timers::CyclicSystem& timers)
    : Vm(config, prepare_guest(config), kvm, timers) {}

Vm::Vm(const VmConfig& config, PreparedGuest guest, const KvmSystem& kvm, timers::CyclicSystem& timers)
    : config_(config),
      timers_(timers),
      memory_(std::move(guest.memory)),
      files_(std::move(guest.files)),
      kvm_vm_(kvm),
      split_irqchip_(!config.userspace_irqchip && (kvm_vm_.enable_split_irqchip(24), true)) {
  if (split_irqchip_) {
    msi_.emplace(kvm_vm_);
    routes_.emplace(kvm_vm_);
  }
  const unsigned cpus = config.boot.cpus;
  kvm.check_vcpu_count(cpus);
  kvm_vm_.set_memory(memory_);

  // With our own LAPIC, x2APIC and TSC-deadline are offered only when their
  // MSRs reach us: the x2APIC range through KVM's "would fault" exits,
  // IA32_APIC_BASE and IA32_TSC_DEADLINE (which KVM would swallow without
  // an in-kernel LAPIC) through its MSR filter.
  bool apic_msrs = false;
  if (config.userspace_irqchip) {
    const std::uint32_t filtered[] = {devices::Lapic::kMsrApicBase, devices::Lapic::kMsrTscDeadline};
    apic_msrs = kvm_vm_.route_msrs_to_user_space(filtered);
    if (!apic_msrs) spdlog::info("vm: KVM cannot send MSR accesses to user space: no x2APIC, no TSC-deadline timer");
  }

  std::vector<KvmVcpu> created;
  for (unsigned i = 0; i < cpus; ++i) {
    KvmVcpu vcpu = kvm_vm_.create_vcpu(i);
    vcpu.set_cpuid(vcpu_cpuid(
        kvm.supported_cpuid(),
        CpuidOptions{.vcpu_index = i, .vcpu_count = cpus,
                     .tsc_deadline = config.userspace_irqchip ? apic_msrs : kvm.has_tsc_deadline_timer(),
                     .userspace_apic = config.userspace_irqchip, .x2apic = apic_msrs}));
    if (i == 0) {
      reset_msrs_ = reset_msr_indices(kvm, vcpu);
      if (config.userspace_irqchip) {
        // Without an in-kernel LAPIC KVM refuses to set the PV EOI and
        // async-PF interrupt MSRs (even to 0), and the guest is not offered
        // either.
        std::erase_if(reset_msrs_, [](std::uint32_t msr) { return msr == kMsrKvmPvEoi || msr == kMsrKvmAsyncPfInt; });
      }
    }
    if (i == 0 && spdlog::should_log(spdlog::level::debug)) {
      std::string listed;
      for (std::uint32_t msr : reset_msrs_) listed += fmt::format(" {:#x}", msr);
      spdlog::debug("vm: {} MSRs put back at every reset:{}", reset_msrs_.size(), listed);
    }
    power_on_.push_back(vcpu.snapshot(reset_msrs_));
    created.push_back(std::move(vcpu));
  }

  timer_loop_.store(&timers_.loop_for_current_cpu());
  PlatformConfig platform_config;
  platform_config.cpus = cpus;
  platform_config.hpet = config.boot.hpet;
  platform_config.debug_exit = config.debug_exit;
  platform_config.serial_output = config.serial_output ? config.serial_output : &null_output_;
  platform_config.boot_progress_start = config.process_start != 0 ? config.process_start : now_ns();
  if (config.userspace_irqchip) {
    platform_config.userspace_apics = true;
    platform_config.lapic.x2apic = apic_msrs;
    platform_config.lapic.tsc_deadline = apic_msrs;
    // KVM keeps the vCPUs' TSCs in step, so vCPU 0's serves them all.
    platform_config.lapic.timer = VcpuLapic::tsc_timer_config(created.front(), timers_.clock());
  }
  platform_ = std::make_unique<Platform>(
      timers_, *timer_loop_.load(), msi_ ? &*msi_ : nullptr, routes_ ? &*routes_ : nullptr, platform_config,
      PlatformEvents{
          [this](const char* source) { post(Request::reset, 0, source); },
          [this] { post(Request::poweroff, 0, "ACPI S5"); },
          [this](std::uint64_t status) { post(Request::debug_exit, status); },
          [this] { post(Request::guest_panic, 0, "the guest kernel panicked (pvpanic)"); },
          [this](bool asserted) {
            // vCPU 0 injects the PIC's ExtINT before it next enters the
            // guest; make it leave KVM_RUN (a halted vCPU 0 would not).
            if (asserted && !vcpus_.empty()) vcpus_[0]->notify();
          },
          [this](unsigned index) {
            if (index < vcpus_.size()) vcpus_[index]->notify();
          },
      });
  platform_->ioapic().publish_all_routes();
  if (!guest.disks.empty()) {
    disks_ = std::make_unique<VirtioDisks>(std::move(guest.disks), *platform_, kvm_vm_, memory_, platform_->msi(),
                                           cpus);
  }

  image_ = std::move(guest.image);
  spdlog::info("vm: {}", boot::describe(image_));

  for (unsigned i = 0; i < cpus; ++i) {
    VcpuIo io;
    io.pio = &platform_->pio();
    io.mmio = &platform_->mmio();
    io.ioapic_eoi = [this](unsigned, std::uint8_t vector) { platform_->ioapic().end_of_interrupt(vector); };
    if (i == 0) io.before_run = [this](KvmVcpu& v) { before_run_vcpu0(v); };
    if (devices::ApicBus* apics = platform_->apic_bus()) {
      vcpu_lapics_.push_back(std::make_unique<VcpuLapic>(apics->lapic(i), timers_, power_on_[i],
                                                         [this] { return platform_->pic().acknowledge(); }));
      io.interrupts = vcpu_lapics_.back().get();
    }
    VcpuEvents& events = *this;  // private base: convert here, where it is accessible
    vcpus_.push_back(std::make_unique<VcpuThread>(std::move(created[i]), std::move(io), events));
  }
  apply_entry_state(vcpus_[0]->vcpu(), image_.entry);
  setup_boot_lapic();
}

void Vm::setup_boot_lapic() {
  if (devices::ApicBus* apics = platform_->apic_bus()) {
    apics->lapic(0).setup_virtual_wire();
  } else {
    vcpus_[0]->vcpu().setup_boot_lapic();
  }
}

Vm::~Vm() {
  // A VM never run, or whose run() was abandoned: nothing may outlive it.
  stop_vcpus();
  if (platform_) platform_->drain_timers();
}

// ---------------------------------------------------------------- reports

void Vm::reset_requested(unsigned vcpu, std::string_view reason) noexcept {
  post(Request::reset, 0, "vcpu " + std::to_string(vcpu) + ": " + std::string(reason));
}

void Vm::poweroff_requested(unsigned vcpu, std::string_view reason) noexcept {
  post(Request::poweroff, 0, "vcpu " + std::to_string(vcpu) + ": " + std::string(reason));
}

void Vm::fatal_error(unsigned vcpu, std::string_view message) noexcept {
  post(Request::fatal, 0, "vcpu " + std::to_string(vcpu) + ": " + std::string(message));
}

void Vm::post(Request request, std::uint64_t value, std::string message) noexcept {
  std::lock_guard lock(mu_);
  reports_.push_back(Report{request, generation_.load(std::memory_order_acquire), value, std::move(message)});
  wake_.notify_all();
}

bool Vm::post_checked(Request request, std::string* why) {
  auto refuse = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  {
    std::lock_guard lock(mu_);
    const VmState state = state_;
    if (state == VmState::ended) return refuse("the VM has ended");
    if (state == VmState::stopping) return refuse("the VM is already stopping");
    switch (request) {
      case Request::pause:
        if (state != VmState::running && state != VmState::resetting) return refuse("the VM is not running");
        break;
      case Request::resume:
        if (state != VmState::paused) return refuse("the VM is not paused");
        break;
      case Request::reset:
      case Request::stop:
        if (state == VmState::created) return refuse("the VM has not started");
        break;
      default:
        break;
    }
    if (handling_ == request) return refuse("the same request is already pending");
    for (const Report& queued : reports_) {
      if (queued.request == request) return refuse("the same request is already pending");
    }
  }
  post(request, 0, request == Request::reset ? "reset requested by the host" : std::string());
  return true;
}

bool Vm::pause(std::string* why) { return post_checked(Request::pause, why); }
bool Vm::resume(std::string* why) { return post_checked(Request::resume, why); }
bool Vm::reset(std::string* why) { return post_checked(Request::reset, why); }
bool Vm::stop(std::string* why) { return post_checked(Request::stop, why); }
void Vm::force_stop() { post(Request::force_stop, 0, "stopped by the host"); }

VmStatus Vm::status() const {
  std::lock_guard lock(mu_);
  VmStatus s;
  s.state = state_;
  s.reboots = generation_.load();
  s.boot_generation = generation_.load();
  s.uptime_ns = boot_started_ != 0 ? now_ns() - boot_started_ : 0;
  s.coalesced_resets = coalesced_resets_;
  return s;
}

std::string Vm::describe_boot_age() const {
  std::lock_guard lock(mu_);
  const std::uint64_t runs = vcpus_.empty() ? 0 : vcpus_[0]->stats().runs - boot_started_runs_;
  return fmt::format("{:.1f} ms and {} vCPU 0 entries into boot {}",
                     static_cast<double>(now_ns() - boot_started_) / 1e6, runs, generation_.load());
}

Vm::VcpuSamples Vm::sample_vcpus(unsigned samples, std::chrono::milliseconds interval,
                                 std::chrono::milliseconds timeout) {
  // The waits between samples happen here, so the control thread is never
  // kept from the VM's other requests for longer than one reading.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  VcpuSamples answer;
  for (unsigned i = 0; i < std::max(1u, samples); ++i) {
    if (i != 0) std::this_thread::sleep_for(interval);
    std::uint64_t ticket = 0;
    {
      std::lock_guard lock(mu_);
      if (state_ == VmState::ended) {
        answer.missing = "the VM has ended";
        return answer;
      }
      ticket = ++samples_asked_;
    }
    post(Request::sample, ticket);
    std::unique_lock lock(mu_);
    if (!wake_.wait_until(lock, deadline, [&] { return samples_answered_ >= ticket; })) {
      answer.missing = "no answer from the control thread within " + std::to_string(timeout.count()) +
                       " ms (it is busy with another request)";
      return answer;
    }
    answer.taken += sample_answer_;
  }
  return answer;
}

// Control thread. A vCPU paused by the host stays paused; a running one is
// paused only for as long as it takes to read it (its pending I/O completes
// first, so the registers are an instruction boundary's).
std::string Vm::describe_vcpus() {
  std::string out = fmt::format("at {} ns:\n", now_ns());
  devices::ApicBus* apics = platform_->apic_bus();
  for (auto& thread : vcpus_) {
    const VcpuStats st = thread->stats();
    out += fmt::format("vcpu {}: {}, {} entries ({} io, {} mmio, {} hlt, {} intr)", thread->index(),
                       to_string(thread->state()), st.runs, st.io_exits, st.mmio_exits, st.hlt_exits, st.intr_exits);
    const bool was_running = thread->state() == VcpuState::running;
    if (was_running) thread->pause();
    if (thread->state() == VcpuState::paused) {
      try {
        const kvm_regs r = thread->vcpu().regs();
        const kvm_sregs sr = thread->vcpu().sregs();
        out += fmt::format(": rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs.l={}",
                           r.rip, r.rsp, r.rflags, sr.cr0, sr.cr3, sr.cr4, sr.efer, sr.cs.l);
      } catch (const Error& e) {
        out += std::string(": registers unreadable: ") + e.what();
      }
    }
    if (was_running) thread->resume();
    out += "\n";
    // With our own LAPICs, what each holds: a vector stuck in service or a
    // timer due in the past is where a guest that waits for ever went wrong.
    if (apics) out += "  " + apics->lapic(thread->index()).describe() + "\n";
  }
  return out;
}

void Vm::set_state(VmState state) noexcept {
  std::lock_guard lock(mu_);
  state_ = state;
}

// ------------------------------------------------------------- vCPU 0 hooks

void Vm::before_run_vcpu0(KvmVcpu& vcpu) noexcept {
  follow_vcpu0_cpu();
  // With the user-space irqchip the PIC reaches vCPU 0 through its LAPIC's
  // LINT0, which VcpuLapic injects.
  if (split_irqchip_) inject_pic(vcpu);
}

void Vm::follow_vcpu0_cpu() noexcept {
  // bhyve runs the PIT, RTC and HPET on vCPU 0's CPU, so their interrupts
  // are raised where they will be taken. Cheap when nothing moved.
  const int cpu = ::sched_getcpu();
  if (cpu == vcpu0_cpu_) return;
  vcpu0_cpu_ = cpu;
  timers::EventLoop& loop = timers_.loop_for_current_cpu();
  if (&loop == timer_loop_.load()) return;
  platform_->bind_timers(loop);
  timer_loop_.store(&loop, std::memory_order_release);
}

void Vm::inject_pic(KvmVcpu& vcpu) noexcept {
  kvm_run* run = vcpu.run_page();
  devices::Pic& pic = platform_->pic();
  if (!pic.interrupt_pending()) {
    run->request_interrupt_window = 0;
    return;
  }
  // With the split irqchip KVM reports "ready" only when the guest can take
  // an interrupt, LINT0 accepts ExtINT and no earlier ExtINT is queued.
  if (run->ready_for_interrupt_injection) {
    kvm_interrupt interrupt{};
    interrupt.irq = pic.acknowledge();
    if (::ioctl(vcpu.fd(), KVM_INTERRUPT, &interrupt) != 0) {
      static RateLimit limit;
      if (limit.allow()) spdlog::warn("vcpu 0: KVM_INTERRUPT of vector {:#x} failed", interrupt.irq);
    }
  }
  run->request_interrupt_window = pic.interrupt_pending() ? 1 : 0;
}

// -------------------------------------------------------------- lifecycle

void Vm::start_vcpus() {
  for (auto& vcpu : vcpus_) vcpu->start();
}

void Vm::stop_vcpus() noexcept {
  for (auto& vcpu : vcpus_) vcpu->stop();
}

VmOutcome Vm::run() {
  {
    std::lock_guard lock(mu_);
    if (ran_) throw Error("a VM runs once; create another Vm to run again");
    ran_ = true;
    state_ = VmState::running;
    boot_started_ = now_ns();
  }
  try {
    start_vcpus();
  } catch (const Error& e) {
    return end(VmEnd::guest_error, kExitGuestError, e.what());
  }

  for (;;) {
    Report report;
    {
      std::unique_lock lock(mu_);
      handling_.reset();  // the previous request's state change is published
      const auto ready = [this] {
        return !reports_.empty() || (stop_deadline_ && now_ns() >= *stop_deadline_);
      };
      if (stop_deadline_) {
        const auto wait = std::chrono::nanoseconds(*stop_deadline_ - now_ns());
        wake_.wait_for(lock, wait > std::chrono::nanoseconds(0) ? wait : std::chrono::nanoseconds(0), ready);
      } else {
        wake_.wait(lock, ready);
      }
      if (reports_.empty()) {
        report = Report{Request::force_stop, generation_.load(), 0,
                        "the guest did not power off within " + std::to_string(config_.graceful_timeout.count()) +
                            " ms of the ACPI power button; stopped by force"};
      } else {
        report = std::move(reports_.front());
        reports_.pop_front();
      }
      handling_ = report.request;
    }

    switch (report.request) {
      case Request::reset:
        if (report.generation != generation_.load()) {  // coalesced: that boot is gone already
          std::lock_guard lock(mu_);
          ++coalesced_resets_;
          break;
        }
        if (!config_.reboot) return end(VmEnd::reset, 0, "guest reset (" + report.message + "); --no-reboot");
        // A host-requested stop ends the VM even if the guest answered the
        // power button with a reset rather than a power-off.
        if (stop_deadline_) {
          return end(VmEnd::stopped, kExitStoppedByHost, "guest reset while stopping (" + report.message + ")");
        }
        spdlog::info("vm: reset ({}) {}", report.message, describe_boot_age());
        try {
          do_reset();
        } catch (const Error& e) {
          return end(VmEnd::guest_error, kExitGuestError, std::string("reset failed: ") + e.what());
        }
        break;
      case Request::poweroff:
        return end(VmEnd::poweroff, 0, "guest powered off (" + report.message + ")");
      case Request::debug_exit:
        return end(VmEnd::debug_exit, static_cast<int>(report.value & 0xff),
                   "guest wrote the debug-exit port (status " + std::to_string(report.value) + ")");
      case Request::fatal:
        return end(VmEnd::guest_error, kExitGuestError, report.message);
      case Request::guest_panic:
        return end(VmEnd::guest_panic, kExitGuestPanic, report.message);
      case Request::pause:
        do_pause();
        break;
      case Request::resume:
        do_resume();
        break;
      case Request::stop:
        if (status().state == VmState::paused) do_resume();
        platform_->acpi_pm().press_power_button();
        stop_deadline_ = now_ns() + std::chrono::nanoseconds(config_.graceful_timeout).count();
        set_state(VmState::stopping);
        break;
      case Request::force_stop:
        return end(VmEnd::stopped, kExitStoppedByHost, report.message);
      case Request::sample: {
        std::string answer = describe_vcpus();
        std::lock_guard lock(mu_);
        sample_answer_ = std::move(answer);
        samples_answered_ = report.value;
        wake_.notify_all();
        break;
      }
    }
  }
}

void Vm::do_pause() {
  for (auto& vcpu : vcpus_) vcpu->pause();
  platform_->pause_timers();
  set_state(VmState::paused);
}

void Vm::do_resume() {
  platform_->resume_timers();
  for (auto& vcpu : vcpus_) vcpu->resume();
  set_state(VmState::running);
}

void Vm::do_reset() {
  set_state(VmState::resetting);
  stop_vcpus();
  // Handlers may be running and re-arming this very moment; drain waits for
  // them and their re-arms are refused (see the header).
  platform_->drain_timers();
  // Before memory is reloaded: no request of the old boot may still be
  // reading or writing it.
  if (disks_) disks_->reset();
  // Also before: the old boot registered guest memory with KVM through MSRs
  // (kvmclock, steal time, async page faults), and KVM writes there until
  // the power-on state turns them off; steal time's "preempted" byte is
  // written whenever the thread in a vCPU ioctl is preempted, this very
  // restore included. Any such write must land in the old boot's memory.
  for (std::size_t i = 0; i < vcpus_.size(); ++i) vcpus_[i]->vcpu().restore(power_on_[i]);

  memory_.discard();
  image_ = boot::load(memory_, config_.boot, files_);
  if (routes_) routes_->clear();
  const timers::Nanos now = now_ns();
  platform_->reset(*timer_loop_.load(), now);  // also republishes every IOAPIC route, resets the LAPICs
  for (auto& lapic : vcpu_lapics_) lapic->reset();
  apply_entry_state(vcpus_[0]->vcpu(), image_.entry);
  setup_boot_lapic();

  {
    std::lock_guard lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    boot_started_ = now;
    boot_started_runs_ = vcpus_[0]->stats().runs;
    state_ = VmState::running;
  }
  start_vcpus();
}

VmOutcome Vm::end(VmEnd how, int status, std::string message) noexcept {
  set_state(VmState::stopping);
  stop_vcpus();
  platform_->drain_timers();
  // Requests in flight finish at io_uring before run() returns; none is
  // completed to the guest any more.
  if (disks_) disks_->reset();
  if (devices::ApicBus* apics = platform_->apic_bus(); apics && spdlog::should_log(spdlog::level::debug)) {
    try {
      for (unsigned i = 0; i < vcpus_.size(); ++i) spdlog::debug("vm: at the end, {}", apics->lapic(i).describe());
    } catch (const std::exception&) {  // a debug line is not worth failing an ending VM
    }
  }
  std::lock_guard lock(mu_);
  state_ = VmState::ended;
  reports_.clear();
  const std::uint64_t reboots = generation_.load();
  spdlog::info("vm: ended: {} (exit status {}, {} reboots)", message, status, reboots);
  return VmOutcome{how, status, std::move(message), reboots};
}

}  // namespace vmm
