// Owning wrappers for the three kinds of KVM file descriptor: the system
// (/dev/kvm), one VM, and one vCPU with its mmap'd kvm_run page.
//
// Every constructor and setter here is set-up code: it throws vmm::Error with
// a message that says what failed and what to do about it. The few calls made
// at run time on behalf of a guest (KvmVcpu::run, KvmVm::signal_msi,
// KvmVm::try_set_gsi_routing) are noexcept and report errors by value.
#pragma once

#include <linux/kvm.h>
#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/interrupts.h"
#include "timers/unique_fd.h"
#include "vmm/boot/entry_state.h"

namespace vmm {

using timers::UniqueFd;

class KvmVm;
class KvmVcpu;

namespace detail {
// The headers of the KVM structures that end in a flexible array, with the
// layout the kernel uses. Debian 12's <linux/kvm.h> (linux-libc-dev 6.1)
// declares those arrays with __DECLARE_FLEX_ARRAY, which in C++ puts a
// one-byte empty struct in front of the array: kvm_cpuid2, kvm_msrs,
// kvm_msr_list, kvm_irq_routing, kvm_signal_mask (and kvm_xsave) get the
// wrong size and entry offset in C++, and the ioctl numbers computed from
// sizeof() are wrong too (KVM answers EINVAL or ENOTTY). Never use those
// structs or their ioctl macros from C++; use these.
struct Cpuid2Header {
  std::uint32_t nent;
  std::uint32_t padding;
};
struct MsrsHeader {
  std::uint32_t nmsrs;
  std::uint32_t pad;
};
struct MsrListHeader {
  std::uint32_t nmsrs;
};
struct IrqRoutingHeader {
  std::uint32_t nr;
  std::uint32_t flags;
};
struct SignalMaskHeader {
  std::uint32_t len;
};

inline constexpr unsigned long kIoctlGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, sizeof(MsrListHeader));
inline constexpr unsigned long kIoctlGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, sizeof(Cpuid2Header));
inline constexpr unsigned long kIoctlSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, sizeof(IrqRoutingHeader));
inline constexpr unsigned long kIoctlGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, sizeof(MsrsHeader));
inline constexpr unsigned long kIoctlSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, sizeof(MsrsHeader));
inline constexpr unsigned long kIoctlSetSignalMask = _IOC(_IOC_WRITE, KVMIO, 0x8b, sizeof(SignalMaskHeader));
inline constexpr unsigned long kIoctlSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, sizeof(Cpuid2Header));
inline constexpr unsigned long kIoctlGetCpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, sizeof(Cpuid2Header));
// kvm_xsave: its 4 KiB legacy region (what KVM_GET_XSAVE fills).
inline constexpr std::size_t kXsaveRegionSize = 4096;
inline constexpr unsigned long kIoctlGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, kXsaveRegionSize);
inline constexpr unsigned long kIoctlSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, kXsaveRegionSize);

// Storage for one of those structures: a header followed by `count`
// entries, zeroed and 8-byte aligned.
template <typename Header, typename Entry>
class FlexBuffer {
 public:
  explicit FlexBuffer(std::size_t count)
      : words_((sizeof(Header) + count * sizeof(Entry) + 7) / 8),
        storage_(std::make_unique<std::uint64_t[]>(words_)) {
    static_assert(sizeof(Header) % alignof(Entry) == 0, "entries must follow the header directly");
  }
  Header* get() noexcept { return reinterpret_cast<Header*>(storage_.get()); }
  Header* operator->() noexcept { return get(); }
  Entry* entries() noexcept {
    return reinterpret_cast<Entry*>(reinterpret_cast<char*>(storage_.get()) + sizeof(Header));
  }

 private:
  std::size_t words_;
  std::unique_ptr<std::uint64_t[]> storage_;
};
}  // namespace detail

class KvmSystem {
 public:
  static constexpr int kApiVersion = 12;

  // Opens `path` and checks the API version and the capabilities every VM
  // needs. Throws vmm::Error naming the problem and its fix.
  explicit KvmSystem(const std::string& path = "/dev/kvm");

  int fd() const noexcept { return fd_.get(); }

  // KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else the (cap-specific)
  // positive value.
  int check_extension(long cap) const noexcept;

  std::size_t vcpu_mmap_size() const noexcept { return vcpu_mmap_size_; }

  // The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS, falling back to
  // KVM_CAP_NR_VCPUS, then to 4 as the API document says).
  unsigned max_vcpus() const noexcept { return max_vcpus_; }
  // How many vCPUs KVM recommends (KVM_CAP_NR_VCPUS): usually the host's
  // CPU count. More than this works but overcommits the host.
  unsigned recommended_vcpus() const noexcept { return recommended_vcpus_; }
  // Throws "--cpus N exceeds the M this host's KVM allows" when count is 0 or
  // above max_vcpus().
  void check_vcpu_count(unsigned count) const;

  bool has_tsc_deadline_timer() const noexcept { return tsc_deadline_; }

  // KVM_GET_SUPPORTED_CPUID, fetched once.
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const noexcept { return supported_cpuid_; }

  // KVM_GET_MSR_INDEX_LIST: every MSR that KVM_GET/SET_MSRS can save and
  // restore on this host.
  std::vector<std::uint32_t> msr_index_list() const;

  // The message for a failed open of `path` with `err` (exposed for tests).
  static std::string open_error_message(const std::string& path, int err);

  // Whether the host CPU offers hardware virtualization (vmx or svm among
  // /proc/cpuinfo's flags). Without it /dev/kvm is software-only (PVM and
  // the like): the test guest runs, but KVM's emulator lacks instructions a
  // general guest executes (Debian's Linux stops at `lock cmpxchg16b` in
  // SLUB, and with CX16 hidden at XRSTOR).
  bool hardware_virtualization() const noexcept { return hardware_virtualization_; }
  // The same decision, read from /proc/cpuinfo now; unreadable counts as
  // hardware, so that only a host known to lack it is called software-only.
  static bool host_offers_virtualization() noexcept;
  // The same decision from a /proc/cpuinfo text (exposed for tests).
  static bool cpuinfo_offers_virtualization(const std::string& cpuinfo) noexcept;
  // One line for a guest KVM could not run on a software-only /dev/kvm.
  static const char* software_only_hint() noexcept;

 private:
  UniqueFd fd_;
  std::size_t vcpu_mmap_size_ = 0;
  unsigned max_vcpus_ = 0;
  unsigned recommended_vcpus_ = 0;
  bool tsc_deadline_ = false;
  bool hardware_virtualization_ = true;
  std::vector<kvm_cpuid_entry2> supported_cpuid_;
};

class KvmVm {
 public:
  // Intel VMX needs three pages for a real-mode TSS and one for an identity
  // page table while it runs real-mode or unpaged guest code. They must not
  // overlap guest RAM or any device: the e820 map marks them reserved. They
  // sit just below the 256 KiB BIOS window that ends at 4 GiB, clear of the
  // IOAPIC (0xFEC00000), HPET (0xFED00000) and LAPIC (0xFEE00000).
  static constexpr std::uint64_t kIdentityMapAddress = 0xFFFB'C000;
  static constexpr std::uint64_t kTssAddress = 0xFFFB'D000;
  static constexpr std::uint64_t kReservedBase = kIdentityMapAddress;
  static constexpr std::uint64_t kReservedSize = 4 * 4096;

  // KVM_CREATE_VM plus the x86 set-up every VM needs before its first vCPU
  // (TSS and identity-map addresses).
  explicit KvmVm(const KvmSystem& system);
  // KvmMsiSink and IoapicRoutes keep a reference: a VM stays where it was
  // made (hold it in a std::optional or std::unique_ptr to defer creation).
  KvmVm(const KvmVm&) = delete;
  KvmVm& operator=(const KvmVm&) = delete;

  int fd() const noexcept { return fd_.get(); }

  // KVM_CHECK_EXTENSION on the VM (some answers are per VM).
  int check_extension(long cap) const noexcept;

  // KVM_ENABLE_CAP on the VM; throws with `what` in the message.
  void enable_cap(std::uint32_t cap, std::span<const std::uint64_t> args, const std::string& what);

  // Registers each GuestMemory region as one memory slot (slot i for
  // region i). The mappings must outlive the VM's use of them.
  void set_memory(const devices::GuestMemory& memory);

  // In-kernel LAPICs, user-space IOAPIC/PIC/PIT. GSIs [0, ioapic_pins) are
  // reserved for the IOAPIC's routes (see irq_routing.h). Must precede the
  // first create_vcpu().
  void enable_split_irqchip(unsigned ioapic_pins = 24);
  bool has_split_irqchip() const noexcept { return ioapic_pins_ > 0; }
  unsigned ioapic_pins() const noexcept { return ioapic_pins_; }

  // For the user-space irqchip (no in-kernel LAPIC): every RDMSR/WRMSR KVM
  // would answer with #GP (among them the whole x2APIC range) and every
  // access to an MSR of `to_user_space` exits to user space instead
  // (KVM_CAP_X86_USER_SPACE_MSR, KVM_X86_SET_MSR_FILTER). False, with
  // nothing changed, when this KVM lacks either; throws when it has them
  // but refuses.
  bool route_msrs_to_user_space(std::span<const std::uint32_t> to_user_space);

  // KVM_SIGNAL_MSI. Thread-safe. Returns > 0 when delivered, 0 when the
  // guest blocked it (e.g. LAPIC software-disabled), or -errno.
  int signal_msi(const devices::MsiMessage& message) const noexcept;

  // KVM_IOEVENTFD on MMIO: a guest write of exactly `length` bytes at
  // `address` signals `eventfd` inside KVM, without an exit to user space.
  // `assign` false removes the same registration. Thread-safe. Returns 0 or
  // -errno.
  int set_ioeventfd(int eventfd, std::uint64_t address, std::uint32_t length, bool assign) const noexcept;

  // KVM_SET_GSI_ROUTING: replaces the whole table. Returns 0 or -errno.
  int try_set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) const noexcept;

  // KVM_CREATE_VCPU with vCPU id = APIC ID = `index`, and its kvm_run mapping.
  KvmVcpu create_vcpu(unsigned index);

  unsigned max_vcpus() const noexcept { return max_vcpus_; }
  unsigned vcpu_count() const noexcept { return vcpu_count_; }

 private:
  UniqueFd fd_;
  std::size_t vcpu_mmap_size_;
  unsigned max_vcpus_;
  unsigned nr_memslots_;
  unsigned ioapic_pins_ = 0;
  unsigned vcpu_count_ = 0;
  unsigned slots_used_ = 0;
};

// A complete architectural snapshot of one vCPU, enough to put it back into
// the state it had when the snapshot was taken (used for VM reset: take one
// right after creation, restore it before every restart).
struct VcpuSnapshot {
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  // x87, SSE and every extended (AVX, AVX-512, PKRU...) register; empty
  // where KVM has no KVM_GET_XSAVE.
  std::vector<std::uint8_t> xsave;
  kvm_debugregs debugregs{};
  kvm_xcrs xcrs{};
  bool has_xcrs = false;
  kvm_lapic_state lapic{};
  bool has_lapic = false;
  kvm_vcpu_events events{};
  kvm_mp_state mp_state{};
  std::vector<kvm_msr_entry> msrs;
};

class KvmVcpu {
 public:
  KvmVcpu(UniqueFd fd, std::size_t run_size, unsigned index, bool has_lapic);
  ~KvmVcpu();
  KvmVcpu(KvmVcpu&& other) noexcept;
  KvmVcpu& operator=(KvmVcpu&& other) noexcept;
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;

  unsigned index() const noexcept { return index_; }
  int fd() const noexcept { return fd_.get(); }
  kvm_run* run_page() const noexcept { return run_; }
  std::size_t run_size() const noexcept { return run_size_; }
  bool has_lapic() const noexcept { return has_lapic_; }

  // One KVM_RUN. Returns 0 or -errno (-EINTR after a kick or signal).
  int run() noexcept;

  kvm_regs regs() const;
  void set_regs(const kvm_regs& regs);
  kvm_sregs sregs() const;
  void set_sregs(const kvm_sregs& sregs);
  kvm_fpu fpu() const;
  void set_fpu(const kvm_fpu& fpu);
  kvm_lapic_state lapic() const;
  void set_lapic(const kvm_lapic_state& lapic);
  kvm_mp_state mp_state() const;
  void set_mp_state(std::uint32_t state);
  kvm_vcpu_events events() const;
  void set_events(const kvm_vcpu_events& events);
  kvm_xcrs xcrs() const;
  void set_xcrs(const kvm_xcrs& xcrs);
  kvm_debugregs debugregs() const;
  void set_debugregs(const kvm_debugregs& debugregs);
  // KVM_GET_XSAVE's region; empty when this KVM has none.
  std::vector<std::uint8_t> xsave() const;
  void set_xsave(std::span<const std::uint8_t> region);
  // Reads the listed MSRs; throws if KVM cannot read one of them.
  std::vector<kvm_msr_entry> msrs(std::span<const std::uint32_t> indices) const;
  void set_msrs(std::span<const kvm_msr_entry> msrs);
  void set_cpuid(std::span<const kvm_cpuid_entry2> entries);
  std::vector<kvm_cpuid_entry2> cpuid() const;
  // KVM_SET_SIGNAL_MASK: the signal mask in force while inside KVM_RUN.
  void set_signal_mask(const sigset_t& mask);

  // Writes this vCPU's TSC offset back into the hardware's control block,
  // unchanged. Needed after a triple fault on AMD: KVM's SVM code wipes the
  // VMCB on a SHUTDOWN intercept and its re-initialisation leaves the TSC
  // offset at 0, so the vCPU reads the host's raw TSC (days ahead on a
  // long-running host) while KVM keeps computing kvmclock and the
  // TSC-deadline timer from the offset it believes in: the rebooted guest's
  // clock leaps and its timers fire days late. Uses KVM_VCPU_TSC_OFFSET
  // (Linux 5.16+); older kernels get the TSC written back as a host write,
  // which KVM treats as a synchronisation with the other vCPUs.
  void reload_tsc_offset();

  // `msr_indices`: which MSRs to include (see reset_msr_indices()).
  VcpuSnapshot snapshot(std::span<const std::uint32_t> msr_indices) const;
  void restore(const VcpuSnapshot& snapshot);

  // What firmware leaves in the boot processor's LAPIC: software-enabled
  // (spurious vector 0xFF), LINT0 = ExtINT (virtual-wire mode for the 8259),
  // LINT1 = NMI. Linux keeps this "virtual wire" set-up on the boot CPU when
  // it finds it. Application processors are left alone: their INIT resets
  // the LAPIC anyway.
  void setup_boot_lapic();

  // Logs general and segment registers at debug level (for fatal exits).
  void dump_registers_debug() const noexcept;

 private:
  void unmap() noexcept;

  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  std::size_t run_size_ = 0;
  unsigned index_ = 0;
  bool has_lapic_ = false;
};

// Loads the loader's entry state (segments with their hidden parts,
// descriptor tables, control registers, EFER, general registers, RIP and
// RFLAGS) into the boot vCPU. Other sregs fields (CR8, APIC base, pending
// interrupt bitmap) keep their current values.
void apply_entry_state(KvmVcpu& vcpu, const boot::EntryState& state);

// MSRs that a reset must put back: every MSR this host's KVM saves
// (KvmSystem::msr_index_list()) that `probe`, a vCPU at power-on with its
// CPUID set, can read and write back. Whatever the guest left in them
// (syscall entry points, PAT, MTRRs, debug control, the KVM paravirtual
// MSRs that would keep KVM writing kvmclock, steal-time and async-PF data
// into the rebooted guest's memory...) must not outlive a reboot. Left out:
// the TSC and TSC_ADJUST, which keep counting across a reset so the
// guest's clocks and KVM's synchronisation of the vCPUs' TSCs hold, and
// APIC_BASE and EFER, which the segment registers' snapshot carries.
std::vector<std::uint32_t> reset_msr_indices(const KvmSystem& system, KvmVcpu& probe);

// LAPIC register access in a kvm_lapic_state (little-endian 32-bit words).
std::uint32_t lapic_reg(const kvm_lapic_state& lapic, std::uint32_t offset) noexcept;
void set_lapic_reg(kvm_lapic_state& lapic, std::uint32_t offset, std::uint32_t value) noexcept;

// The name of a KVM_EXIT_* reason, for messages.
const char* exit_reason_name(std::uint32_t reason) noexcept;

}  // namespace vmm
