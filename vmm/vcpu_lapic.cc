#include "vmm/vcpu_lapic.h"

#include <sched.h>
#include <sys/ioctl.h>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm {

namespace {

constexpr std::uint32_t kMsrTsc = 0x10;

RateLimit g_injection_log;
RateLimit g_msr_log;
RateLimit g_start_log;

}  // namespace

VcpuLapic::VcpuLapic(devices::Lapic& lapic, timers::CyclicSystem& timers, const VcpuSnapshot& power_on,
                     AcknowledgeExtInt acknowledge_extint)
    : lapic_(lapic),
      timers_(timers),
      power_on_(power_on),
      acknowledge_extint_(std::move(acknowledge_extint)),
      waiting_for_sipi_(lapic.index() != 0) {}

void VcpuLapic::reset() noexcept {
  waiting_for_sipi_ = lapic_.index() != 0;
  cpu_ = -1;
}

devices::LapicTimer::Config VcpuLapic::tsc_timer_config(const KvmVcpu& vcpu, const timers::Clock& clock) {
  const int khz = ::ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
  if (khz <= 0) throw_errno("KVM_GET_TSC_KHZ (the guest TSC rate, for the TSC-deadline timer)");
  const std::uint32_t index = kMsrTsc;
  // Read the clock on both sides of the TSC and take the middle, so the
  // origin is off by at most half of one KVM_GET_MSRS.
  const timers::Nanos before = clock.now();
  const std::uint64_t tsc = vcpu.msrs(std::span(&index, 1)).at(0).data;
  const timers::Nanos after = clock.now();
  devices::LapicTimer::Config config;
  config.tsc_hz = std::uint64_t(khz) * 1000;
  const timers::Nanos at = before + (after - before) / 2;
  const auto elapsed_ticks = static_cast<__int128>(at) * config.tsc_hz / 1'000'000'000;
  config.tsc_at_zero = static_cast<std::int64_t>(static_cast<__int128>(tsc) - elapsed_ticks);
  return config;
}

void VcpuLapic::follow_cpu() noexcept {
  // bhyve localizes each vCPU's vlapic timer: the interrupt is raised on
  // the CPU that will take it. Cheap when the thread did not move.
  const int cpu = ::sched_getcpu();
  if (cpu == cpu_) return;
  cpu_ = cpu;
  lapic_.bind_timers(timers_.loop_for_current_cpu());
}

bool VcpuLapic::take_init_and_sipi(KvmVcpu& vcpu, const devices::Lapic::Events& events) noexcept {
  try {
    if (events.init) {
      // The APIC has reset itself; the processor goes back to its power-on
      // registers and waits for a start-up IPI.
      vcpu.restore(power_on_);
      waiting_for_sipi_ = true;
    }
    if (events.sipi && waiting_for_sipi_) {
      // Real mode at the page the vector names (SDM "MP Initialization").
      kvm_sregs sregs = vcpu.sregs();
      sregs.cs.selector = static_cast<std::uint16_t>(*events.sipi << 8);
      sregs.cs.base = std::uint64_t{*events.sipi} << 12;
      vcpu.set_sregs(sregs);
      kvm_regs regs = vcpu.regs();
      regs.rip = 0;
      vcpu.set_regs(regs);
      waiting_for_sipi_ = false;
    }
    return true;
  } catch (const Error& e) {
    if (g_start_log.allow()) {
      spdlog::error("vcpu {}: INIT/SIPI: {} ({} similar suppressed)", lapic_.index(), e.what(),
                    g_start_log.take_suppressed());
    }
    return false;
  }
}

VcpuInterrupts::Next VcpuLapic::before_run(KvmVcpu& vcpu) noexcept {
  follow_cpu();
  const devices::Lapic::Events events = lapic_.take_events();
  if (events.init && lapic_.index() == 0) return Next::reset;
  if ((events.init || events.sipi) && !take_init_and_sipi(vcpu, events)) waiting_for_sipi_ = true;
  // A processor waiting for SIPI takes no NMI or interrupt.
  if (waiting_for_sipi_) return Next::wait_sipi;
  if (events.nmi && ::ioctl(vcpu.fd(), KVM_NMI) != 0 && g_injection_log.allow()) {
    spdlog::warn("vcpu {}: KVM_NMI failed ({} similar suppressed)", lapic_.index(), g_injection_log.take_suppressed());
  }
  // SMI: there is no SMM here; the APIC has latched it, nothing takes it.
  kvm_run* run = vcpu.run_page();
  run->cr8 = lapic_.cr8();
  inject(vcpu);
  return Next::run;
}

void VcpuLapic::inject(KvmVcpu& vcpu) noexcept {
  kvm_run* run = vcpu.run_page();
  const auto interrupt = [&](std::uint8_t vector) {
    kvm_interrupt request{};
    request.irq = vector;
    if (::ioctl(vcpu.fd(), KVM_INTERRUPT, &request) == 0) return true;
    if (g_injection_log.allow()) {
      spdlog::warn("vcpu {}: KVM_INTERRUPT of vector {:#x} failed ({} similar suppressed)", lapic_.index(), vector,
                   g_injection_log.take_suppressed());
    }
    return false;
  };
  // KVM says "ready" only when IF is set, no interrupt shadow is in force
  // and no earlier KVM_INTERRUPT is still queued: one vector per entry.
  // But "ready" was taken at the exit: an MSR exit that we answer with a #GP
  // re-enters delivering that fault, and without an in-kernel irqchip KVM
  // then drops the interrupt queued for the same entry at the next exit. It
  // would stay in service here for good, blocking its class and below (the
  // lost Linux console: IRQ 0 taken in over AMD's MSR probe). So on that
  // entry only the window is asked for; the interrupt goes in after the fault.
  const bool entry_delivers_fault =
      (run->exit_reason == KVM_EXIT_X86_RDMSR || run->exit_reason == KVM_EXIT_X86_WRMSR) && run->msr.error != 0;
  if (run->ready_for_interrupt_injection && !entry_delivers_fault) {
    if (lapic_.extint_pending()) {
      // The 8259 has priority over the APIC's own vectors (LINT0 ExtINT).
      const std::uint8_t vector = acknowledge_extint_ ? acknowledge_extint_() : 0;
      SPDLOG_TRACE("vcpu {}: ExtINT vector {:#x} from the 8259", lapic_.index(), vector);
      lapic_.extint_accepted();
      if (acknowledge_extint_) interrupt(vector);
    } else if (const auto vector = lapic_.next_interrupt()) {
      // IRR -> ISR only once KVM has taken it.
      if (interrupt(*vector)) lapic_.accept(*vector);
    }
    run->request_interrupt_window = 0;
    // Anything still waiting needs the next window (KVM reports one after
    // the vector just queued has been delivered).
    if (lapic_.extint_pending() || lapic_.next_interrupt()) run->request_interrupt_window = 1;
    return;
  }
  run->request_interrupt_window = (lapic_.extint_pending() || lapic_.next_interrupt()) ? 1 : 0;
}

void VcpuLapic::after_run(KvmVcpu& vcpu) noexcept { lapic_.set_cr8(vcpu.run_page()->cr8); }

bool VcpuLapic::mmio(std::uint64_t address, std::span<std::uint8_t> data, bool is_write) noexcept {
  if (address < devices::Lapic::kMmioBase || address - devices::Lapic::kMmioBase >= devices::Lapic::kMmioSize) {
    return false;
  }
  // A hardware-disabled APIC does not decode its page: the access goes to
  // the bus (where nothing answers) like any other stray address.
  if (!lapic_.enabled()) return false;
  const std::uint64_t offset = address - devices::Lapic::kMmioBase;
  if (is_write) {
    lapic_.write(offset, data);
  } else {
    lapic_.read(offset, data);
  }
  return true;
}

bool VcpuLapic::read_msr(std::uint32_t index, std::uint64_t& value) noexcept {
  if (devices::Lapic::is_apic_msr(index)) {
    const auto v = lapic_.read_msr(index);  // the APIC logs its own faults
    if (v) value = *v;
    return v.has_value();
  }
  // KVM sends every RDMSR it would fault here (KVM_MSR_EXIT_REASON_INVAL
  // and _UNKNOWN, which carry the x2APIC range); the others fault as before.
  if (g_msr_log.allow()) {
    spdlog::debug("vcpu {}: rdmsr {:#x}: #GP ({} similar suppressed)", lapic_.index(), index,
                  g_msr_log.take_suppressed());
  }
  return false;
}

bool VcpuLapic::write_msr(std::uint32_t index, std::uint64_t value) noexcept {
  if (devices::Lapic::is_apic_msr(index)) return lapic_.write_msr(index, value);
  if (g_msr_log.allow()) {
    spdlog::debug("vcpu {}: wrmsr {:#x} <- {:#x}: #GP ({} similar suppressed)", lapic_.index(), index, value,
                  g_msr_log.take_suppressed());
  }
  return false;
}

bool VcpuLapic::should_wake(Wait wait) const noexcept {
  switch (wait) {
    case Wait::halted: return lapic_.pending_wakeup();
    case Wait::halted_interrupts_off:
    case Wait::sipi: return lapic_.events_pending();
  }
  return true;
}

}  // namespace vmm
