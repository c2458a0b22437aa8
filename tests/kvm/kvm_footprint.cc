// Prints what each step of bringing up a one-vCPU VM costs in wall time and
// resident memory, and where the resident memory sits at the end. Run by hand:
//
//   kvm_footprint [guest RAM in MiB, default 64] [--prefault]
//
// The guest is the tiny real-mode port I/O test guest; the run ends when it
// writes its "done" port.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "devices/bus.h"
#include "devices/guest_memory.h"
#include "guest_defs.h"
#include "vmm/cpuid.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"

extern "C" const std::uint8_t kvm_guest_pio_start[];
extern "C" const std::uint8_t kvm_guest_pio_end[];

namespace {

using Clock = std::chrono::steady_clock;
Clock::time_point g_start;

struct Status {
  long rss_kb = 0, hwm_kb = 0, anon_kb = 0, file_kb = 0;
};

Status status() {
  Status s;
  std::ifstream in("/proc/self/status");
  std::string key;
  long value;
  std::string unit;
  while (in >> key) {
    if (key == "VmRSS:" && in >> value) s.rss_kb = value;
    else if (key == "VmHWM:" && in >> value) s.hwm_kb = value;
    else if (key == "RssAnon:" && in >> value) s.anon_kb = value;
    else if (key == "RssFile:" && in >> value) s.file_kb = value;
  }
  return s;
}

Status g_last;
Clock::time_point g_last_time;
void step(const char* name) {
  const auto now = Clock::now();
  const Status s = status();
  const double ms = std::chrono::duration<double, std::milli>(now - g_start).count();
  const double delta = std::chrono::duration<double, std::milli>(now - g_last_time).count();
  std::printf("%-34s %7.3f ms (+%6.3f)  RSS %6ld kB (%+5ld)  peak %6ld kB  anon %5ld  file %5ld\n", name, ms, delta,
              s.rss_kb, s.rss_kb - g_last.rss_kb, s.hwm_kb, s.anon_kb, s.file_kb);
  g_last = s;
  g_last_time = Clock::now();  // exclude the /proc read and printf
}

void rss_by_mapping() {
  std::ifstream in("/proc/self/smaps");
  std::string line, current = "[anon]";
  std::map<std::string, long> totals;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first.empty()) continue;
    if (first.back() == ':') {
      if (first == "Rss:") {
        long kb = 0;
        fields >> kb;
        totals[current] += kb;
      }
      continue;
    }
    // A mapping header: "start-end perms offset dev inode [path]".
    std::string perms, offset, dev, inode, path;
    fields >> perms >> offset >> dev >> inode;
    std::getline(fields >> std::ws, path);
    if (path.empty()) path = "[anon]";
    const auto slash = path.rfind('/');
    current = slash == std::string::npos ? path : path.substr(slash + 1);
  }
  std::printf("\nresident memory by mapping at the end:\n");
  for (const auto& [name, kb] : totals) {
    if (kb > 0) std::printf("  %-40s %6ld kB\n", name.c_str(), kb);
  }
}

struct DoneWatcher final : vmm::devices::BusDevice {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  void read(std::uint64_t, std::span<std::uint8_t> data) noexcept override { std::fill(data.begin(), data.end(), 0); }
  void write(std::uint64_t offset, std::span<const std::uint8_t>) noexcept override {
    if (offset + 0xe0 != PORT_DONE) return;
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  }
};

struct NullDevice final : vmm::devices::BusDevice {
  void read(std::uint64_t, std::span<std::uint8_t> data) noexcept override { std::fill(data.begin(), data.end(), 0); }
  void write(std::uint64_t, std::span<const std::uint8_t>) noexcept override {}
};

struct Events final : vmm::VcpuEvents {
  void reset_requested(unsigned, std::string_view r) noexcept override { std::printf("reset: %.*s\n", int(r.size()), r.data()); }
  void poweroff_requested(unsigned, std::string_view) noexcept override {}
  void fatal_error(unsigned, std::string_view m) noexcept override { std::printf("fatal: %.*s\n", int(m.size()), m.data()); }
};

}  // namespace

int main(int argc, char** argv) {
  g_start = Clock::now();
  g_last_time = g_start;
  // Exec and dynamic loading alone: time this against a run to the end.
  if (std::getenv("FOOTPRINT_EXIT_AT_MAIN") != nullptr) return 0;
  std::uint64_t mib = 64;
  bool prefault = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--prefault") == 0) prefault = true;
    else mib = std::strtoull(argv[i], nullptr, 10);
  }
  g_last = status();
  step("main() entered (loader + libs)");
  spdlog::set_level(spdlog::level::warn);
  spdlog::warn("footprint run, {} MiB guest", mib);
  step("spdlog default logger used");
  try {
    vmm::KvmSystem system;
    step("/dev/kvm opened, CPUID fetched");
    vmm::KvmVm vm(system);
    step("KVM_CREATE_VM + TSS/identity map");
    vm.enable_split_irqchip(24);
    step("split irqchip");
    auto memory = vmm::devices::GuestMemory::allocate(mib << 20);
    step("guest RAM mapped (lazy)");
    vm.set_memory(memory);
    step("KVM_SET_USER_MEMORY_REGION");
    if (prefault) {
      for (const auto& region : memory.regions()) std::memset(region.host, 0, region.size);
      step("guest RAM prefaulted");
    }
    memory.write(GUEST_LOAD, std::span<const std::uint8_t>(kvm_guest_pio_start,
                                                          static_cast<std::size_t>(kvm_guest_pio_end - kvm_guest_pio_start)));
    vmm::KvmVcpu vcpu = vm.create_vcpu(0);
    step("KVM_CREATE_VCPU + kvm_run mmap");
    vcpu.set_cpuid(vmm::vcpu_cpuid(system.supported_cpuid(), {0, 1, system.has_tsc_deadline_timer()}));
    vcpu.setup_boot_lapic();
    kvm_sregs s = vcpu.sregs();
    s.cs.selector = 0;
    s.cs.base = 0;
    vcpu.set_sregs(s);
    kvm_regs r{};
    r.rip = GUEST_LOAD;
    r.rflags = 2;
    vcpu.set_regs(r);
    step("CPUID, LAPIC, registers set");

    vmm::devices::Bus pio("pio"), mmio("mmio");
    NullDevice null_device;
    DoneWatcher reports;
    pio.insert(PORT_PIO_BASE, 16, null_device, "pio-test");
    pio.insert(0xe0, 0x20, reports, "reports");
    Events events;
    vmm::VcpuThread thread(std::move(vcpu), vmm::VcpuIo{&pio, &mmio, {}}, events);
    thread.start();
    {
      std::unique_lock lock(reports.mu);
      reports.cv.wait(lock, [&] { return reports.done; });
    }
    step("vcpu thread ran the guest to done");
    thread.stop();
    step("vcpu thread stopped");
    rss_by_mapping();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  step("VM destroyed");
  return 0;
}
