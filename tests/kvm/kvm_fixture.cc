#include "kvm_fixture.h"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "vmm/boot/entry_state.h"
#include "vmm/boot/gdt.h"
#include "vmm/boot/page_tables.h"
#include "devices/error.h"
#include "vmm/cpuid.h"

namespace vmm::testing {

KvmSystem& kvm_system() {
  static KvmSystem system;
  return system;
}

// ----------------------------------------------------------------- Recorder

void Recorder::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  for (std::size_t k = 0; k < data.size(); ++k) data[k] = read_byte_(base_ + offset + k);
}

void Recorder::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  const Access access{base_ + offset, data.size(), devices::load_le(data), std::chrono::steady_clock::now()};
  {
    std::lock_guard lock(mu_);
    writes_.push_back(access);
  }
  cv_.notify_all();
  if (hook_) hook_(access);
}

std::vector<Access> Recorder::writes() const {
  std::lock_guard lock(mu_);
  return writes_;
}

std::vector<Access> Recorder::writes_to(std::uint64_t address) const {
  std::lock_guard lock(mu_);
  std::vector<Access> out;
  for (const Access& a : writes_) {
    if (a.address == address) out.push_back(a);
  }
  return out;
}

std::size_t Recorder::count(std::uint64_t address) const { return writes_to(address).size(); }

bool Recorder::wait_count(std::uint64_t address, std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    return static_cast<std::size_t>(std::count_if(writes_.begin(), writes_.end(),
                                                  [&](const Access& a) { return a.address == address; })) >= n;
  });
}

// ----------------------------------------------------------------- EventLog

void EventLog::add(const char* kind, unsigned vcpu, std::string_view reason) noexcept {
  {
    std::lock_guard lock(mu_);
    events_.push_back({kind, vcpu, std::string(reason)});
  }
  cv_.notify_all();
}

std::vector<EventLog::Event> EventLog::events() const {
  std::lock_guard lock(mu_);
  return events_;
}

bool EventLog::wait_count(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
}

// -------------------------------------------------------------- TestMachine

TestMachine::TestMachine(const MachineOptions& options)
    : vm(kvm_system()),
      memory(devices::GuestMemory::allocate(options.memory)),
      pio_device(PORT_PIO_BASE,
                 [this](std::uint64_t port) -> std::uint8_t {
                   // Port base+9 is a counting source (string input test).
                   if (port == PORT_PIO_BASE + 9) return counting_source_++;
                   return static_cast<std::uint8_t>(port);
                 }),
      reports(0xe0, [](std::uint64_t port) { return static_cast<std::uint8_t>(port); }),
      mmio_device(MMIO_DEVICE,
                  [](std::uint64_t address) { return static_cast<std::uint8_t>(0x80 + (address - MMIO_DEVICE)); }) {
  if (options.split_irqchip) vm.enable_split_irqchip(24);
  vm.set_memory(memory);
  pio.insert(PORT_PIO_BASE, 16, pio_device, "test-pio");
  pio.insert(0xe0, 0x20, reports, "reports");
  mmio.insert(MMIO_DEVICE, 0x1000, mmio_device, "test-mmio");

  KvmSystem& system = kvm_system();
  VcpuIo io;
  io.pio = &pio;
  io.mmio = &mmio;
  io.ioapic_eoi = [this](unsigned, std::uint8_t vector) {
    {
      std::lock_guard lock(eoi_mu_);
      eois_.push_back(vector);
    }
    if (eoi_sink_) eoi_sink_(vector);
  };
  for (unsigned i = 0; i < options.vcpus; ++i) {
    KvmVcpu vcpu = vm.create_vcpu(i);
    CpuidOptions cpuid;
    cpuid.vcpu_index = i;
    cpuid.vcpu_count = options.vcpus;
    cpuid.tsc_deadline = options.split_irqchip && system.has_tsc_deadline_timer();
    vcpu.set_cpuid(vcpu_cpuid(system.supported_cpuid(), cpuid));
    if (i == 0) vcpu.setup_boot_lapic();
    vcpus_.push_back(std::make_unique<VcpuThread>(std::move(vcpu), io, events));
  }
}

TestMachine::~TestMachine() {
  for (auto& vcpu : vcpus_) vcpu->stop();
}

void TestMachine::load(std::span<const std::uint8_t> image) {
  if (!memory.write(GUEST_LOAD, image)) throw Error("test guest does not fit in guest memory");
}

void TestMachine::enter_real_mode(unsigned i) {
  KvmVcpu& v = vcpu(i).vcpu();
  kvm_sregs s = v.sregs();
  s.cs.selector = 0;
  s.cs.base = 0;
  v.set_sregs(s);
  kvm_regs r{};
  r.rip = GUEST_LOAD;
  r.rflags = 2;
  v.set_regs(r);
}

void TestMachine::enter_flat32(unsigned i) {
  boot::EntryState state;
  state.mode = boot::EntryMode::pvh32;
  boot::gdt::install(memory, state);
  state.cr0 = boot::kCr0Pe | boot::kCr0Et;
  state.rip = GUEST_LOAD;
  state.rsp = GUEST_STACK_TOP;
  apply_entry_state(vcpu(i).vcpu(), state);
}

void TestMachine::enter_long64(unsigned i, std::uint64_t rsi) {
  boot::EntryState state;
  state.mode = boot::EntryMode::linux64;
  boot::gdt::install(memory, state);
  state.cr3 = boot::write_identity_page_tables(memory);
  state.cr0 = boot::kCr0Pe | boot::kCr0Et | boot::kCr0Pg;
  state.cr4 = boot::kCr4Pae;
  state.efer = boot::kEferLme | boot::kEferLma;
  state.rip = GUEST_LOAD;
  state.rsi = rsi;
  apply_entry_state(vcpu(i).vcpu(), state);
}

std::string TestMachine::describe() {
  std::string out = "\nreport writes:";
  for (const Access& a : reports.writes()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " [%#llx]=%#llx", static_cast<unsigned long long>(a.address),
                  static_cast<unsigned long long>(a.value));
    out += buf;
  }
  for (auto& v : vcpus_) {
    out += "\nvcpu " + std::to_string(v->index()) + ": " + to_string(v->state()) + ", runs " +
           std::to_string(v->stats().runs) + ", io exits " + std::to_string(v->stats().io_exits);
  }
  for (const auto& e : events.events()) out += "\nevent " + e.kind + " on vcpu " + std::to_string(e.vcpu) + ": " + e.reason;
  return out;
}

std::vector<std::uint8_t> TestMachine::eois() const {
  std::lock_guard lock(eoi_mu_);
  return eois_;
}

// ---------------------------------------------------------------- resources

namespace {
std::size_t count_dir(const char* path) {
  std::size_t n = 0;
  if (DIR* dir = ::opendir(path)) {
    while (const dirent* entry = ::readdir(dir)) {
      if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) ++n;
    }
    ::closedir(dir);
  }
  return n;
}
}  // namespace

ProcessResources process_resources() {
  ProcessResources r;
  r.fds = count_dir("/proc/self/fd");
  r.threads = count_dir("/proc/self/task");
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    ++r.mappings;
    if (line.find("kvm-vcpu") != std::string::npos) ++r.kvm_mappings;
  }
  return r;
}

}  // namespace vmm::testing
