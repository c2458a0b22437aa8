#include "vmm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>

#include "devices/error.h"

namespace vmm {

namespace {

// ioctl with its argument, retried when a signal interrupts it. Set-up
// ioctls are not supposed to see EINTR, but a kick signal that happens to be
// pending must not turn into a spurious set-up failure.
template <typename Arg>
int xioctl(int fd, unsigned long request, Arg arg) noexcept {
  int r;
  do {
    r = ::ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

std::string hex(std::uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(value));
  return buf;
}

[[noreturn]] void throw_vcpu_errno(unsigned index, const char* what) {
  throw_errno("vcpu " + std::to_string(index) + ": " + what);
}

}  // namespace

// ---------------------------------------------------------------- KvmSystem

std::string KvmSystem::open_error_message(const std::string& path, int err) {
  switch (err) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return "cannot open " + path + ": " + std::strerror(err) +
             " (is the kvm module loaded? try 'modprobe kvm_intel' or 'modprobe kvm_amd', and check that "
             "virtualization is enabled in the firmware)";
    case EACCES:
    case EPERM:
      return "cannot open " + path + ": " + std::strerror(err) +
             " (add your user to the kvm group: 'sudo usermod -aG kvm $USER', then log in again)";
    default:
      return "cannot open " + path + ": " + std::strerror(err);
  }
}

bool KvmSystem::cpuinfo_offers_virtualization(const std::string& cpuinfo) noexcept {
  std::istringstream lines(cpuinfo);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    for (std::string word; words >> word;) {
      if (word == "vmx" || word == "svm") return true;
    }
    return false;  // every CPU lists the same flags
  }
  return false;
}

bool KvmSystem::host_offers_virtualization() noexcept {
  try {
    std::ifstream cpuinfo("/proc/cpuinfo");
    if (!cpuinfo) return true;
    std::ostringstream text;
    text << cpuinfo.rdbuf();
    return cpuinfo_offers_virtualization(text.str());
  } catch (...) {
    return true;
  }
}

const char* KvmSystem::software_only_hint() noexcept {
  return "this host's /dev/kvm is software-only (no vmx or svm in /proc/cpuinfo): KVM cannot run every guest "
         "instruction on it; a guest such as Debian's Linux needs a host with hardware virtualization";
}

KvmSystem::KvmSystem(const std::string& path) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd_) throw Error(open_error_message(path, errno));

  const int version = ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (version < 0) {
    throw Error(path + " does not answer KVM_GET_API_VERSION (" + std::strerror(errno) +
                "): it is not a KVM device");
  }
  if (version != kApiVersion) {
    throw Error(path + " speaks KVM API version " + std::to_string(version) + ", this VMM needs version " +
                std::to_string(kApiVersion) + " (a host kernel from this century provides it)");
  }

  struct Required {
    long cap;
    const char* name;
    const char* why;
  };
  static constexpr Required kRequired[] = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "to map guest RAM"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "to stop vCPUs without losing a kick (Linux 4.11+)"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "to configure CPUID"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "for real-mode guest code"},
      {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "to start and reset vCPUs"},
  };
  for (const Required& r : kRequired) {
    if (check_extension(r.cap) <= 0) {
      throw Error(std::string("this host's KVM lacks ") + r.name + ", needed " + r.why);
    }
  }

  const int mmap_size = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run))) throw_errno("KVM_GET_VCPU_MMAP_SIZE failed");
  vcpu_mmap_size_ = static_cast<std::size_t>(mmap_size);

  const int nr = check_extension(KVM_CAP_NR_VCPUS);
  const int max = check_extension(KVM_CAP_MAX_VCPUS);
  recommended_vcpus_ = nr > 0 ? static_cast<unsigned>(nr) : 4;
  max_vcpus_ = max > 0 ? static_cast<unsigned>(max) : recommended_vcpus_;
  tsc_deadline_ = check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  // Read once here, before any thread confines itself.
  hardware_virtualization_ = host_offers_virtualization();

  // E2BIG means "more entries than you gave room for": grow and ask again.
  for (std::size_t room = 128;; room *= 2) {
    detail::FlexBuffer<detail::Cpuid2Header, kvm_cpuid_entry2> buffer(room);
    buffer->nent = static_cast<std::uint32_t>(room);
    if (xioctl(fd_.get(), detail::kIoctlGetSupportedCpuid, buffer.get()) == 0) {
      supported_cpuid_.assign(buffer.entries(), buffer.entries() + buffer->nent);
      break;
    }
    if (errno != E2BIG || room >= 4096) throw_errno("KVM_GET_SUPPORTED_CPUID failed");
  }
}

int KvmSystem::check_extension(long cap) const noexcept {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

void KvmSystem::check_vcpu_count(unsigned count) const {
  if (count == 0) throw Error("--cpus must be at least 1");
  if (count > max_vcpus_) {
    throw Error("--cpus " + std::to_string(count) + " exceeds the " + std::to_string(max_vcpus_) +
                " this host's KVM allows");
  }
}

std::vector<std::uint32_t> KvmSystem::msr_index_list() const {
  detail::MsrListHeader probe{};
  // The first call fails with E2BIG and reports the count.
  if (xioctl(fd_.get(), detail::kIoctlGetMsrIndexList, &probe) < 0 && errno != E2BIG) {
    throw_errno("KVM_GET_MSR_INDEX_LIST failed");
  }
  detail::FlexBuffer<detail::MsrListHeader, std::uint32_t> list(probe.nmsrs);
  list->nmsrs = probe.nmsrs;
  if (xioctl(fd_.get(), detail::kIoctlGetMsrIndexList, list.get()) < 0) {
    throw_errno("KVM_GET_MSR_INDEX_LIST failed");
  }
  return {list.entries(), list.entries() + list->nmsrs};
}

// -------------------------------------------------------------------- KvmVm

KvmVm::KvmVm(const KvmSystem& system)
    : vcpu_mmap_size_(system.vcpu_mmap_size()), max_vcpus_(system.max_vcpus()) {
  int fd;
  // KVM_CREATE_VM can fail with EINTR when a signal arrives while the kernel
  // sets up the VM; retrying is what the API expects.
  do {
    fd = ::ioctl(system.fd(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    throw_errno(errno == ENOMEM || errno == EMFILE
                    ? "KVM_CREATE_VM failed (host out of memory or file descriptors)"
                    : "KVM_CREATE_VM failed");
  }
  fd_.reset(fd);
  const int slots = check_extension(KVM_CAP_NR_MEMSLOTS);
  nr_memslots_ = slots > 0 ? static_cast<unsigned>(slots) : 32;

  std::uint64_t identity_map = kIdentityMapAddress;
  if (xioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &identity_map) < 0) {
    throw_errno("KVM_SET_IDENTITY_MAP_ADDR " + hex(kIdentityMapAddress) + " failed");
  }
  if (xioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(kTssAddress)) < 0) {
    throw_errno("KVM_SET_TSS_ADDR " + hex(kTssAddress) + " failed");
  }
#ifdef KVM_VCPUEVENT_VALID_TRIPLE_FAULT
  // A triple fault KVM raised itself (KVM_REQ_TRIPLE_FAULT) and had not yet
  // reported when a reboot stopped the vCPU would otherwise survive the
  // reset and end the next boot at its first instruction. With this, the
  // vCPU events carry it, and restoring the power-on snapshot clears it.
  if (check_extension(KVM_CAP_X86_TRIPLE_FAULT_EVENT) > 0) {
    const std::uint64_t on = 1;
    enable_cap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, std::span(&on, 1), "KVM_CAP_X86_TRIPLE_FAULT_EVENT");
  }
#endif
}

int KvmVm::check_extension(long cap) const noexcept {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

void KvmVm::enable_cap(std::uint32_t cap, std::span<const std::uint64_t> args, const std::string& what) {
  kvm_enable_cap request{};
  request.cap = cap;
  for (std::size_t i = 0; i < args.size() && i < std::size(request.args); ++i) request.args[i] = args[i];
  if (xioctl(fd_.get(), KVM_ENABLE_CAP, &request) < 0) throw_errno("KVM_ENABLE_CAP " + what + " failed");
}

void KvmVm::set_memory(const devices::GuestMemory& memory) {
  const auto regions = memory.regions();
  if (slots_used_ + regions.size() > nr_memslots_) {
    throw Error("guest memory needs " + std::to_string(slots_used_ + regions.size()) +
                " KVM memory slots, this host allows " + std::to_string(nr_memslots_));
  }
  for (const devices::MemoryRegion& region : regions) {
    kvm_userspace_memory_region slot{};
    slot.slot = slots_used_;
    slot.guest_phys_addr = region.guest_address;
    slot.memory_size = region.size;
    slot.userspace_addr = reinterpret_cast<std::uint64_t>(region.host);
    if (xioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
      const int err = errno;
      throw_errno("KVM refused guest memory slot " + std::to_string(slots_used_) + " (guest " +
                      hex(region.guest_address) + ", " + std::to_string(region.size >> 20) +
                      " MiB); try less --memory or check the host's limits",
                  err);
    }
    ++slots_used_;
  }
}

void KvmVm::enable_split_irqchip(unsigned ioapic_pins) {
  if (ioapic_pins_ != 0) return;
  if (vcpu_count_ != 0) throw Error("split irqchip must be enabled before the first vCPU is created");
  if (check_extension(KVM_CAP_SPLIT_IRQCHIP) <= 0) {
    throw Error("this host's KVM lacks KVM_CAP_SPLIT_IRQCHIP (in-kernel LAPIC with a user-space IOAPIC; Linux 4.4+)");
  }
  if (check_extension(KVM_CAP_SIGNAL_MSI) <= 0) throw Error("this host's KVM lacks KVM_CAP_SIGNAL_MSI");
  if (check_extension(KVM_CAP_IRQ_ROUTING) <= 0) throw Error("this host's KVM lacks KVM_CAP_IRQ_ROUTING");
  const std::uint64_t pins = ioapic_pins;
  enable_cap(KVM_CAP_SPLIT_IRQCHIP, std::span(&pins, 1), "KVM_CAP_SPLIT_IRQCHIP");
  ioapic_pins_ = ioapic_pins;
}

bool KvmVm::route_msrs_to_user_space(std::span<const std::uint32_t> to_user_space) {
  if (check_extension(KVM_CAP_X86_USER_SPACE_MSR) <= 0 || check_extension(KVM_CAP_X86_MSR_FILTER) <= 0) return false;
  if (to_user_space.size() > KVM_MSR_FILTER_MAX_RANGES) throw Error("too many MSRs for KVM_X86_SET_MSR_FILTER");
  const std::uint64_t reasons = KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;
  enable_cap(KVM_CAP_X86_USER_SPACE_MSR, std::span(&reasons, 1), "KVM_CAP_X86_USER_SPACE_MSR");
  // One single-MSR range each, its bit clear: "denied", which with
  // KVM_MSR_EXIT_REASON_FILTER means "asked of user space". Every other MSR
  // stays KVM's.
  std::uint8_t deny = 0;
  kvm_msr_filter filter{};
  filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  for (std::size_t i = 0; i < to_user_space.size(); ++i) {
    filter.ranges[i].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
    filter.ranges[i].nmsrs = 1;
    filter.ranges[i].base = to_user_space[i];
    filter.ranges[i].bitmap = &deny;
  }
  if (xioctl(fd_.get(), KVM_X86_SET_MSR_FILTER, &filter) < 0) throw_errno("KVM_X86_SET_MSR_FILTER failed");
  return true;
}

int KvmVm::signal_msi(const devices::MsiMessage& message) const noexcept {
  kvm_msi msi{};
  msi.address_lo = static_cast<std::uint32_t>(message.address);
  msi.address_hi = static_cast<std::uint32_t>(message.address >> 32);
  msi.data = message.data;
  const int r = xioctl(fd_.get(), KVM_SIGNAL_MSI, &msi);
  return r < 0 ? -errno : r;
}

int KvmVm::set_ioeventfd(int eventfd, std::uint64_t address, std::uint32_t length, bool assign) const noexcept {
  kvm_ioeventfd request{};
  request.addr = address;
  request.len = length;
  request.fd = eventfd;
  request.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN;
  const int r = xioctl(fd_.get(), KVM_IOEVENTFD, &request);
  return r < 0 ? -errno : 0;
}

int KvmVm::try_set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) const noexcept {
  try {
    detail::FlexBuffer<detail::IrqRoutingHeader, kvm_irq_routing_entry> table(entries.size());
    table->nr = static_cast<std::uint32_t>(entries.size());
    table->flags = 0;
    std::copy(entries.begin(), entries.end(), table.entries());
    return xioctl(fd_.get(), detail::kIoctlSetGsiRouting, table.get()) < 0 ? -errno : 0;
  } catch (const std::bad_alloc&) {
    return -ENOMEM;
  }
}

KvmVcpu KvmVm::create_vcpu(unsigned index) {
  if (index >= max_vcpus_) {
    throw Error("vCPU " + std::to_string(index) + " exceeds the " + std::to_string(max_vcpus_) +
                " this host's KVM allows");
  }
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno("KVM_CREATE_VCPU " + std::to_string(index) + " failed");
  KvmVcpu vcpu(UniqueFd(fd), vcpu_mmap_size_, index, has_split_irqchip());
  ++vcpu_count_;
  if (vcpu.has_lapic()) {
    // KVM routes interrupts through a map of APIC IDs that it rebuilds when
    // LAPIC state changes. The rebuild during vCPU creation runs before the
    // new vCPU is listed, so until some later LAPIC write the newest vCPU
    // is missing from the map and INIT, SIPI and MSIs addressed to it are
    // dropped (seen on this project's hosts: the guest's INIT-SIPI-SIPI to
    // an AP never arrived). Writing its unchanged state back rebuilds the
    // map with every vCPU created so far.
    vcpu.set_lapic(vcpu.lapic());
  }
  return vcpu;
}

// ------------------------------------------------------------------ KvmVcpu

KvmVcpu::KvmVcpu(UniqueFd fd, std::size_t run_size, unsigned index, bool has_lapic)
    : fd_(std::move(fd)), run_size_(run_size), index_(index), has_lapic_(has_lapic) {
  void* page = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (page == MAP_FAILED) throw_vcpu_errno(index_, "cannot map kvm_run");
  run_ = static_cast<kvm_run*>(page);
}

KvmVcpu::~KvmVcpu() { unmap(); }

KvmVcpu::KvmVcpu(KvmVcpu&& other) noexcept
    : fd_(std::move(other.fd_)),
      run_(std::exchange(other.run_, nullptr)),
      run_size_(std::exchange(other.run_size_, 0)),
      index_(other.index_),
      has_lapic_(other.has_lapic_) {}

KvmVcpu& KvmVcpu::operator=(KvmVcpu&& other) noexcept {
  if (this != &other) {
    unmap();
    fd_ = std::move(other.fd_);
    run_ = std::exchange(other.run_, nullptr);
    run_size_ = std::exchange(other.run_size_, 0);
    index_ = other.index_;
    has_lapic_ = other.has_lapic_;
  }
  return *this;
}

void KvmVcpu::unmap() noexcept {
  if (run_ != nullptr) ::munmap(run_, run_size_);
  run_ = nullptr;
}

int KvmVcpu::run() noexcept { return ::ioctl(fd_.get(), KVM_RUN, 0) < 0 ? -errno : 0; }

#define VMM_VCPU_GET(type, name, request)                                       \
  type KvmVcpu::name() const {                                                  \
    type value{};                                                               \
    if (xioctl(fd_.get(), request, &value) < 0) throw_vcpu_errno(index_, #request " failed"); \
    return value;                                                               \
  }
#define VMM_VCPU_SET(type, name, request)                                       \
  void KvmVcpu::name(const type& value) {                                       \
    if (xioctl(fd_.get(), request, &value) < 0) throw_vcpu_errno(index_, #request " failed"); \
  }

VMM_VCPU_GET(kvm_regs, regs, KVM_GET_REGS)
VMM_VCPU_SET(kvm_regs, set_regs, KVM_SET_REGS)
VMM_VCPU_GET(kvm_sregs, sregs, KVM_GET_SREGS)
VMM_VCPU_SET(kvm_sregs, set_sregs, KVM_SET_SREGS)
VMM_VCPU_GET(kvm_fpu, fpu, KVM_GET_FPU)
VMM_VCPU_SET(kvm_fpu, set_fpu, KVM_SET_FPU)
VMM_VCPU_GET(kvm_lapic_state, lapic, KVM_GET_LAPIC)
VMM_VCPU_SET(kvm_lapic_state, set_lapic, KVM_SET_LAPIC)
VMM_VCPU_GET(kvm_mp_state, mp_state, KVM_GET_MP_STATE)
VMM_VCPU_GET(kvm_vcpu_events, events, KVM_GET_VCPU_EVENTS)
VMM_VCPU_SET(kvm_vcpu_events, set_events, KVM_SET_VCPU_EVENTS)
VMM_VCPU_GET(kvm_xcrs, xcrs, KVM_GET_XCRS)
VMM_VCPU_SET(kvm_xcrs, set_xcrs, KVM_SET_XCRS)
VMM_VCPU_GET(kvm_debugregs, debugregs, KVM_GET_DEBUGREGS)
VMM_VCPU_SET(kvm_debugregs, set_debugregs, KVM_SET_DEBUGREGS)

#undef VMM_VCPU_GET
#undef VMM_VCPU_SET

std::vector<std::uint8_t> KvmVcpu::xsave() const {
  std::vector<std::uint8_t> region(detail::kXsaveRegionSize);
  if (xioctl(fd_.get(), detail::kIoctlGetXsave, region.data()) < 0) {
    if (errno == EINVAL || errno == ENOTTY) return {};
    throw_vcpu_errno(index_, "KVM_GET_XSAVE failed");
  }
  return region;
}

void KvmVcpu::set_xsave(std::span<const std::uint8_t> region) {
  if (region.size() != detail::kXsaveRegionSize) throw Error("vcpu " + std::to_string(index_) + ": bad XSAVE region size");
  if (xioctl(fd_.get(), detail::kIoctlSetXsave, region.data()) < 0) throw_vcpu_errno(index_, "KVM_SET_XSAVE failed");
}

void KvmVcpu::set_mp_state(std::uint32_t state) {
  kvm_mp_state mp{};
  mp.mp_state = state;
  if (xioctl(fd_.get(), KVM_SET_MP_STATE, &mp) < 0) throw_vcpu_errno(index_, "KVM_SET_MP_STATE failed");
}

std::vector<kvm_msr_entry> KvmVcpu::msrs(std::span<const std::uint32_t> indices) const {
  detail::FlexBuffer<detail::MsrsHeader, kvm_msr_entry> buffer(indices.size());
  buffer->nmsrs = static_cast<std::uint32_t>(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) buffer.entries()[i].index = indices[i];
  const int r = xioctl(fd_.get(), detail::kIoctlGetMsrs, buffer.get());
  if (r < 0) throw_vcpu_errno(index_, "KVM_GET_MSRS failed");
  if (static_cast<std::size_t>(r) != indices.size()) {
    throw Error("vcpu " + std::to_string(index_) + ": KVM_GET_MSRS could not read MSR " +
                hex(indices[static_cast<std::size_t>(r)]));
  }
  return {buffer.entries(), buffer.entries() + indices.size()};
}

void KvmVcpu::set_msrs(std::span<const kvm_msr_entry> msrs) {
  detail::FlexBuffer<detail::MsrsHeader, kvm_msr_entry> buffer(msrs.size());
  buffer->nmsrs = static_cast<std::uint32_t>(msrs.size());
  std::copy(msrs.begin(), msrs.end(), buffer.entries());
  const int r = xioctl(fd_.get(), detail::kIoctlSetMsrs, buffer.get());
  if (r < 0) throw_vcpu_errno(index_, "KVM_SET_MSRS failed");
  if (static_cast<std::size_t>(r) != msrs.size()) {
    throw Error("vcpu " + std::to_string(index_) + ": KVM_SET_MSRS refused MSR " +
                hex(msrs[static_cast<std::size_t>(r)].index));
  }
}

void KvmVcpu::reload_tsc_offset() {
  std::uint64_t offset = 0;
  kvm_device_attr attr{};
  attr.group = KVM_VCPU_TSC_CTRL;
  attr.attr = KVM_VCPU_TSC_OFFSET;
  attr.addr = reinterpret_cast<std::uint64_t>(&offset);
  if (xioctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &attr) == 0) {
    if (xioctl(fd_.get(), KVM_GET_DEVICE_ATTR, &attr) < 0) throw_vcpu_errno(index_, "KVM_GET_DEVICE_ATTR (TSC offset) failed");
    if (xioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &attr) < 0) throw_vcpu_errno(index_, "KVM_SET_DEVICE_ATTR (TSC offset) failed");
    return;
  }
  constexpr std::uint32_t kMsrTsc = 0x10;
  set_msrs(msrs(std::span(&kMsrTsc, 1)));
}

void KvmVcpu::set_cpuid(std::span<const kvm_cpuid_entry2> entries) {
  detail::FlexBuffer<detail::Cpuid2Header, kvm_cpuid_entry2> buffer(entries.size());
  buffer->nent = static_cast<std::uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), buffer.entries());
  if (xioctl(fd_.get(), detail::kIoctlSetCpuid2, buffer.get()) < 0) throw_vcpu_errno(index_, "KVM_SET_CPUID2 failed");
}

std::vector<kvm_cpuid_entry2> KvmVcpu::cpuid() const {
  for (std::size_t room = 128;; room *= 2) {
    detail::FlexBuffer<detail::Cpuid2Header, kvm_cpuid_entry2> buffer(room);
    buffer->nent = static_cast<std::uint32_t>(room);
    if (xioctl(fd_.get(), detail::kIoctlGetCpuid2, buffer.get()) == 0) {
      return {buffer.entries(), buffer.entries() + buffer->nent};
    }
    if (errno != E2BIG || room >= 4096) throw_vcpu_errno(index_, "KVM_GET_CPUID2 failed");
  }
}

void KvmVcpu::set_signal_mask(const sigset_t& mask) {
  // The kernel's sigset is 8 bytes on x86-64; glibc's sigset_t is larger and
  // starts with the same bits.
  constexpr std::size_t kKernelSigsetSize = 8;
  static_assert(sizeof(sigset_t) >= kKernelSigsetSize);
  detail::FlexBuffer<detail::SignalMaskHeader, std::uint8_t> buffer(kKernelSigsetSize);
  buffer->len = kKernelSigsetSize;
  std::memcpy(buffer.entries(), &mask, kKernelSigsetSize);
  if (xioctl(fd_.get(), detail::kIoctlSetSignalMask, buffer.get()) < 0) {
    throw_vcpu_errno(index_, "KVM_SET_SIGNAL_MASK failed");
  }
}

VcpuSnapshot KvmVcpu::snapshot(std::span<const std::uint32_t> msr_indices) const {
  VcpuSnapshot s;
  s.regs = regs();
  s.sregs = sregs();
  s.fpu = fpu();
  s.xsave = xsave();
  s.debugregs = debugregs();
  kvm_xcrs x{};
  if (xioctl(fd_.get(), KVM_GET_XCRS, &x) == 0) {
    s.xcrs = x;
    s.has_xcrs = true;
  }
  if (has_lapic_) {
    s.lapic = lapic();
    s.has_lapic = true;
  }
  s.events = events();
  s.mp_state = mp_state();
  s.msrs = msrs(msr_indices);
  return s;
}

void KvmVcpu::restore(const VcpuSnapshot& s) {
  // Order matters: SREGS carries APIC_BASE, which must be in place before
  // the LAPIC registers; the MP state goes last because KVM_SET_LAPIC and
  // KVM_SET_VCPU_EVENTS may leave INIT/SIPI bookkeeping behind.
  set_sregs(s.sregs);
  set_regs(s.regs);
  set_fpu(s.fpu);
  // After the FPU, which it contains and completes with the extended state.
  if (!s.xsave.empty()) set_xsave(s.xsave);
  if (s.has_xcrs) set_xcrs(s.xcrs);
  set_msrs(s.msrs);
  set_debugregs(s.debugregs);
  if (s.has_lapic) set_lapic(s.lapic);
  // The snapshot's events carry "nothing pending": restoring them drops any
  // exception, NMI or interrupt the old run left queued.
  set_events(s.events);
  set_mp_state(s.mp_state.mp_state);
}

std::uint32_t lapic_reg(const kvm_lapic_state& lapic, std::uint32_t offset) noexcept {
  std::uint32_t value = 0;
  if (offset + 4 <= sizeof lapic.regs) std::memcpy(&value, lapic.regs + offset, 4);
  return value;
}

void set_lapic_reg(kvm_lapic_state& lapic, std::uint32_t offset, std::uint32_t value) noexcept {
  if (offset + 4 <= sizeof lapic.regs) std::memcpy(lapic.regs + offset, &value, 4);
}

void KvmVcpu::setup_boot_lapic() {
  if (!has_lapic_) return;
  constexpr std::uint32_t kSvr = 0xF0, kLint0 = 0x350, kLint1 = 0x360;
  constexpr std::uint32_t kSoftwareEnable = 1u << 8, kSpuriousVector = 0xFF;
  constexpr std::uint32_t kDeliveryExtInt = 7u << 8, kDeliveryNmi = 4u << 8;
  kvm_lapic_state state = lapic();
  set_lapic_reg(state, kSvr, kSoftwareEnable | kSpuriousVector);
  set_lapic_reg(state, kLint0, kDeliveryExtInt);
  set_lapic_reg(state, kLint1, kDeliveryNmi);
  set_lapic(state);
}

void KvmVcpu::dump_registers_debug() const noexcept {
  if (!spdlog::should_log(spdlog::level::debug)) return;
  kvm_regs r{};
  kvm_sregs s{};
  if (xioctl(fd_.get(), KVM_GET_REGS, &r) < 0 || xioctl(fd_.get(), KVM_GET_SREGS, &s) < 0) {
    spdlog::debug("vcpu {}: cannot read registers: {}", index_, std::strerror(errno));
    return;
  }
  spdlog::debug("vcpu {}: rip={:#x} rflags={:#x} rsp={:#x} rbp={:#x}", index_, r.rip, r.rflags, r.rsp, r.rbp);
  spdlog::debug("vcpu {}: rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}", index_, r.rax, r.rbx,
                r.rcx, r.rdx, r.rsi, r.rdi);
  spdlog::debug("vcpu {}: r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}", index_,
                r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
  spdlog::debug("vcpu {}: cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} apic_base={:#x}", index_, s.cr0, s.cr2,
                s.cr3, s.cr4, s.efer, s.apic_base);
  const std::pair<const char*, const kvm_segment*> segments[] = {{"cs", &s.cs}, {"ds", &s.ds}, {"es", &s.es},
                                                                 {"ss", &s.ss}, {"fs", &s.fs}, {"gs", &s.gs},
                                                                 {"tr", &s.tr}, {"ldt", &s.ldt}};
  for (const auto& [name, seg] : segments) {
    spdlog::debug("vcpu {}: {}={:#x} base={:#x} limit={:#x} type={} present={} dpl={} db={} l={} g={}", index_, name,
                  seg->selector, seg->base, seg->limit, seg->type, seg->present, seg->dpl, seg->db, seg->l, seg->g);
  }
  spdlog::debug("vcpu {}: gdt={:#x}/{:#x} idt={:#x}/{:#x}", index_, s.gdt.base, s.gdt.limit, s.idt.base,
                s.idt.limit);
}

namespace {

kvm_segment to_kvm(const boot::Segment& in) noexcept {
  kvm_segment out{};
  out.base = in.base;
  out.limit = in.limit;
  out.selector = in.selector;
  out.type = in.type;
  out.present = in.present;
  out.dpl = in.dpl;
  out.db = in.db;
  out.s = in.s;
  out.l = in.l;
  out.g = in.g;
  out.avl = in.avl;
  out.unusable = in.unusable;
  return out;
}

}  // namespace

void apply_entry_state(KvmVcpu& vcpu, const boot::EntryState& state) {
  kvm_sregs s = vcpu.sregs();
  s.cs = to_kvm(state.cs);
  s.ds = to_kvm(state.ds);
  s.es = to_kvm(state.es);
  s.fs = to_kvm(state.fs);
  s.gs = to_kvm(state.gs);
  s.ss = to_kvm(state.ss);
  s.tr = to_kvm(state.tr);
  s.ldt = to_kvm(state.ldt);
  s.gdt.base = state.gdt.base;
  s.gdt.limit = state.gdt.limit;
  s.idt.base = state.idt.base;
  s.idt.limit = state.idt.limit;
  s.cr0 = state.cr0;
  s.cr3 = state.cr3;
  s.cr4 = state.cr4;
  s.efer = state.efer;
  vcpu.set_sregs(s);

  kvm_regs r{};
  r.rax = state.rax;
  r.rbx = state.rbx;
  r.rcx = state.rcx;
  r.rdx = state.rdx;
  r.rsi = state.rsi;
  r.rdi = state.rdi;
  r.rsp = state.rsp;
  r.rbp = state.rbp;
  r.r8 = state.r8;
  r.r9 = state.r9;
  r.r10 = state.r10;
  r.r11 = state.r11;
  r.r12 = state.r12;
  r.r13 = state.r13;
  r.r14 = state.r14;
  r.r15 = state.r15;
  r.rip = state.rip;
  r.rflags = state.rflags;
  vcpu.set_regs(r);
}

std::vector<std::uint32_t> reset_msr_indices(const KvmSystem& system, KvmVcpu& probe) {
  static constexpr std::uint32_t kKept[] = {
      0x10,        // IA32_TSC
      0x1B,        // IA32_APIC_BASE (in the sregs)
      0x3B,        // IA32_TSC_ADJUST
      0xC0000080,  // EFER (in the sregs)
  };
  std::vector<std::uint32_t> result;
  for (std::uint32_t msr : system.msr_index_list()) {
    if (std::find(std::begin(kKept), std::end(kKept), msr) != std::end(kKept)) continue;
    // Some listed MSRs belong to features this vCPU does not have: keep
    // only what KVM lets us read and put back unchanged.
    try {
      probe.set_msrs(probe.msrs(std::span(&msr, 1)));
      result.push_back(msr);
    } catch (const Error&) {
    }
  }
  return result;
}

const char* exit_reason_name(std::uint32_t reason) noexcept {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HYPERCALL: return "HYPERCALL";
    case KVM_EXIT_DEBUG: return "DEBUG";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTR: return "INTR";
    case KVM_EXIT_SET_TPR: return "SET_TPR";
    case KVM_EXIT_TPR_ACCESS: return "TPR_ACCESS";
    case KVM_EXIT_NMI: return "NMI";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
    case KVM_EXIT_IOAPIC_EOI: return "IOAPIC_EOI";
    case KVM_EXIT_HYPERV: return "HYPERV";
    case KVM_EXIT_X86_RDMSR: return "X86_RDMSR";
    case KVM_EXIT_X86_WRMSR: return "X86_WRMSR";
    case KVM_EXIT_DIRTY_RING_FULL: return "DIRTY_RING_FULL";
    case KVM_EXIT_AP_RESET_HOLD: return "AP_RESET_HOLD";
    case KVM_EXIT_X86_BUS_LOCK: return "X86_BUS_LOCK";
    case KVM_EXIT_XEN: return "XEN";
    case KVM_EXIT_NOTIFY: return "NOTIFY";
    default: return "?";
  }
}

}  // namespace vmm
