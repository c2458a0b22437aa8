// The vCPU side of the user-space local APIC (--irqchip=userspace): what a
// vCPU thread does around KVM_RUN so that devices/lapic, which never sees
// /dev/kvm, becomes the guest's interrupt controller. The protocol is the one
// devices/lapic.h sets out for vmm/:
//   before KVM_RUN  take INIT/SIPI/NMI; an INIT puts the vCPU back to its
//                   power-on registers and makes it wait for a SIPI (an INIT
//                   to the boot processor resets the machine, as a PC's
//                   firmware would); a SIPI starts a waiting vCPU in real
//                   mode at vector << 12 (CS = vector << 8, IP = 0); an NMI
//                   goes in with KVM_NMI; CR8 := TPR[7:4]; then the ExtINT
//                   (vector from the 8259) or the highest deliverable vector
//                   goes in with KVM_INTERRUPT when KVM says the guest can
//                   take one, else an interrupt window is requested;
//   after KVM_RUN   TPR[7:4] := CR8;
//   exits           the APIC page's MMIO and the APIC MSRs (IA32_APIC_BASE,
//                   IA32_TSC_DEADLINE, the x2APIC range);
//   waiting         a halted vCPU wakes for a deliverable interrupt (or, with
//                   interrupts off, only for NMI/INIT/SIPI); an AP waiting
//                   for SIPI wakes for an event only; ApicBus's kick calls
//                   VcpuThread::notify(), so nobody polls.
// The LAPIC timer follows the vCPU: whenever the thread finds itself on a
// new CPU, the timer's callout moves to that CPU's loop.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/lapic.h"
#include "timers/cyclic.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"

namespace vmm {

class VcpuLapic final : public VcpuInterrupts {
 public:
  // Acknowledges the 8259 pair's interrupt (INTA) and returns its vector.
  using AcknowledgeExtInt = std::function<std::uint8_t()>;

  // `power_on` is what an INIT restores; it must outlive this object.
  VcpuLapic(devices::Lapic& lapic, timers::CyclicSystem& timers, const VcpuSnapshot& power_on,
            AcknowledgeExtInt acknowledge_extint);

  // The VM's reset, while the vCPU is stopped: APs wait for a SIPI again and
  // the timer is bound afresh when the vCPU next runs.
  void reset() noexcept;

  Next before_run(KvmVcpu& vcpu) noexcept override;
  void after_run(KvmVcpu& vcpu) noexcept override;
  bool mmio(std::uint64_t address, std::span<std::uint8_t> data, bool is_write) noexcept override;
  bool read_msr(std::uint32_t index, std::uint64_t& value) noexcept override;
  bool write_msr(std::uint32_t index, std::uint64_t value) noexcept override;
  bool should_wake(Wait wait) const noexcept override;

  // The TSC-deadline mode's view of the guest TSC: its rate
  // (KVM_GET_TSC_KHZ) and its value at clock time 0, read from `vcpu`
  // against `clock`. Throws vmm::Error when KVM cannot tell.
  static devices::LapicTimer::Config tsc_timer_config(const KvmVcpu& vcpu, const timers::Clock& clock);

 private:
  bool take_init_and_sipi(KvmVcpu& vcpu, const devices::Lapic::Events& events) noexcept;
  void inject(KvmVcpu& vcpu) noexcept;
  void follow_cpu() noexcept;

  devices::Lapic& lapic_;
  timers::CyclicSystem& timers_;
  const VcpuSnapshot& power_on_;
  AcknowledgeExtInt acknowledge_extint_;
  // The vCPU thread's own state.
  bool waiting_for_sipi_;
  int cpu_ = -1;
};

}  // namespace vmm
