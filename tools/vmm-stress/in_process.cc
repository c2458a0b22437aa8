// The loops that drive VMs through the in-process API (vmm/vm.h): many Vm
// objects created, run on a thread, stopped and destroyed in this process,
// which is what must leak nothing.
#include <algorithm>
#include <cinttypes>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "devices/error.h"
#include "devices/serial.h"
#include "timers/cyclic.h"
#include "tools/vmm-stress/fault_report.h"
#include "tools/vmm-stress/stress.h"
#include "vmm/cli.h"
#include "vmm/kvm.h"
#include "vmm/vm.h"

namespace vmm::stress {

namespace {

// Keeps the tail of what the guest prints, for the success check and for
// failure reports. Called on a vCPU thread with the UART lock held: short.
// Also counts the guest's readiness line, once per boot.
class CapturedSerial final : public devices::SerialOutput {
 public:
  explicit CapturedSerial(const GuestProfile& guest) : ready_(guest.ready) {}
  void write(std::span<const std::uint8_t> bytes) noexcept override {
    const std::string_view piece(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::lock_guard lock(mu_);
    text_.append(piece);
    if (text_.size() > kKeep * 2) text_.erase(0, text_.size() - kKeep);
    ready_.feed(piece);
  }
  std::string text() const {
    std::lock_guard lock(mu_);
    return text_;
  }
  std::uint64_t ready_count() const {
    std::lock_guard lock(mu_);
    return ready_.count();
  }

 private:
  static constexpr std::size_t kKeep = 8192;
  mutable std::mutex mu_;
  std::string text_;
  LineCounter ready_;
};

// The last `lines` lines of `text`.
std::string tail(const std::string& text, std::size_t lines) {
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (; lines > 0; --lines) {
    const std::size_t newline = pos == 0 ? std::string::npos : text.rfind('\n', pos - 1);
    if (newline == std::string::npos) return text;
    pos = newline;
  }
  return text.substr(pos + 1);
}

// For hang reports (the supervisor waits a second for it): the VM's state,
// then where its vCPUs are, three times 150 ms apart.
std::string describe_status(Vm& vm) {
  const VmStatus s = vm.status();
  std::string text = std::string("state=") + to_string(s.state) + " reboots=" + std::to_string(s.reboots) +
                     " boot_generation=" + std::to_string(s.boot_generation) +
                     " uptime_ms=" + std::to_string(static_cast<double>(s.uptime_ns) / 1e6);
  using std::chrono::milliseconds;
  std::string samples = vm.sample_vcpus(3, milliseconds(150), milliseconds(700)).text();
  for (std::size_t at = 0; (at = samples.find('\n', at)) != std::string::npos && at + 1 < samples.size(); at += 5) {
    samples.replace(at, 1, "\n    ");
  }
  return text + "\n    " + samples;
}

// What every VM of a run shares, as VMs on one host would: /dev/kvm and the
// per-CPU timer loops.
struct Host {
  KvmSignals kick;  // before any other thread of ours exists (see vmm/vcpu.h)
  KvmSystem kvm;
  timers::CyclicSystem timers;
};

std::unique_ptr<Vm> make_vm(Host& host, const Options& o, const std::string& cmdline, devices::SerialOutput* serial) {
  VmConfig config;
  config.boot.kernel = o.kernel;
  if (!o.initrd.empty()) config.boot.initrd = o.initrd;
  config.boot.cpus = o.cpus;
  config.boot.cmdline = cmdline;
  config.memory = parse_memory_size(o.memory);
  config.serial_output = serial;
  config.reboot = true;
  config.debug_exit = true;  // the guest says "done" through it
  return std::make_unique<Vm>(config, host.kvm, host.timers);
}

// run() on a thread of its own, as a VMM's main thread would.
class Runner {
 public:
  explicit Runner(Vm& vm) : thread_([this, &vm] {
      pthread_setname_np(pthread_self(), "vm-control");
      try {
        outcome_ = vm.run();
      } catch (const std::exception& e) {
        outcome_ = VmOutcome{VmEnd::guest_error, kExitGuestError, std::string("run() threw: ") + e.what(), 0};
      }
      done_.store(true);
    }) {}
  ~Runner() {
    if (thread_.joinable()) thread_.join();
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;
  bool done() const noexcept { return done_.load(); }
  const VmOutcome& join() {
    if (thread_.joinable()) thread_.join();
    return outcome_;
  }

 private:
  VmOutcome outcome_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

struct Baseline {
  Resources before;
  Resources after;
};

Summary resource_summary(const Baseline& b) {
  Summary s;
  s.fd_leak = b.after.fds - b.before.fds;
  s.thread_leak = b.after.threads - b.before.threads;
  s.maps_growth = b.after.maps - b.before.maps;
  s.rss_growth_kib = b.after.rss_kib - b.before.rss_kib;
  return s;
}

void check_timers_released(Host& host, Tally& tally) {
  if (const std::size_t live = host.timers.live_count(); live != 0) {
    tally.fail(std::to_string(live) + " cyclics still allocated after every VM was destroyed");
  }
}

}  // namespace

// ----------------------------------------------------------------- reboot

int run_reboot_in_process(const Options& o) {
  Host host;
  apply_fault_injection_in_process(o);
  Tally tally;
  const GuestProfile guest = guest_profile(o);
  const std::string base = o.cmdline.empty() ? guest.default_reboot_base() : o.cmdline;
  const std::uint64_t per_vm = std::clamp<std::uint64_t>(o.reboots_per_vm, 1, 65534);
  const std::uint64_t warmup = std::min(o.cycles, o.warmup != 0 ? o.warmup : automatic_warmup(o.cycles));
  Supervisor supervisor(o, tally, o.cycles, "reboot");

  // Each VM reboots M times: the guest counts its boots in CMOS and, on
  // boot M + 1, says so (GuestProfile::reboot_success) and ends: the test
  // guest through debug-exit, Linux by powering off.
  RebootChunks chunks(per_vm);
  std::atomic<std::uint64_t> vm_runs{0};

  auto work = [&](unsigned, WorkerSlot& slot) {
    for (std::uint64_t m = chunks.take(); m != 0; m = chunks.take()) {
      vm_runs.fetch_add(1);
      CapturedSerial serial(guest);
      const std::string cmdline = guest.reboot_cmdline(base, m);
      std::unique_ptr<Vm> vm;
      try {
        vm = make_vm(host, o, cmdline, &serial);
      } catch (const std::exception& e) {
        tally.fail(std::string("creating a VM: ") + e.what());
        tally.cycles.fetch_add(m);
        continue;
      }
      slot.set("a VM rebooting " + std::to_string(m) + " times (" + cmdline + ")",
               [&vm, &serial] {
                 // A hang report shows where the guest got to, not only the VM's state.
                 return describe_status(*vm) + "\n  guest's last lines:\n" + tail(serial.text(), 20);
               });
      std::uint64_t counted = 0;
      VmOutcome outcome;
      {
        Runner runner(*vm);
        while (!runner.done()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          const std::uint64_t reboots = std::min(vm->status().reboots, m);
          if (reboots > counted) {
            tally.cycles.fetch_add(reboots - counted);
            counted = reboots;
            slot.beat();
          }
        }
        outcome = runner.join();
      }
      slot.set("destroying a VM after " + std::to_string(outcome.reboots) + " reboots");
      const std::string text = serial.text();
      vm.reset();
      if (counted < m) tally.cycles.fetch_add(m - counted);
      const VmEnd expected_end = guest.is_linux ? VmEnd::poweroff : VmEnd::debug_exit;
      // Linux: every boot reached /init (the readiness line), not only the last.
      const bool every_boot_ready = !guest.is_linux || serial.ready_count() == m + 1;
      if (outcome.end != expected_end || outcome.exit_status != guest.ended_ok_status() || outcome.reboots != m ||
          text.find(guest.reboot_success(m)) == std::string::npos || !every_boot_ready) {
        tally.fail("VM with " + cmdline + ": ended with status " + std::to_string(outcome.exit_status) + " after " +
                   std::to_string(outcome.reboots) + " of " + std::to_string(m) + " reboots (" + outcome.message +
                   "), " + std::to_string(serial.ready_count()) + " boots ready; guest's last lines:\n" + tail(text, 60));
      }
      slot.idle();
    }
  };

  Baseline b;
  supervisor.set_final_report([&] {
    Summary s;
    s.mode = "reboot in-process";
    set_counts(s, tally, supervisor.elapsed_s());
    print_summary(o, s, tally);
  });
  chunks.add(warmup);
  supervisor.run_phase(std::min<unsigned>(o.vms, 1 + static_cast<unsigned>(warmup / per_vm)), work);
  b.before = measure_resources();
  chunks.add(o.cycles - warmup);
  supervisor.run_phase(o.vms, work);
  b.after = measure_resources();
  supervisor.clear_progress();
  check_timers_released(host, tally);

  Summary s = resource_summary(b);
  s.mode = "reboot in-process";
  set_counts(s, tally, supervisor.elapsed_s());
  nlohmann::json extra = {{"vms", o.vms}, {"vm_runs", vm_runs.load()}, {"reboots_per_vm", per_vm},
                          {"cmdline", base}, {"rss_kib", b.after.rss_kib}};
  add_fault_injection_report(extra);
  s.extra_json = extra.dump();
  s.extra_text = "vms=" + std::to_string(o.vms) + " vm_runs=" + std::to_string(vm_runs.load()) +
                 " rss_kib=" + std::to_string(b.after.rss_kib) + fault_injection_text();
  return print_summary(o, s, tally);
}

// -------------------------------------------------------------- stop-force

int run_stop_force_in_process(const Options& o) {
  Host host;
  apply_fault_injection_in_process(o);
  Tally tally;
  const GuestProfile guest = guest_profile(o);
  const std::string cmdline = o.cmdline.empty() ? guest.default_stop_force_cmdline() : o.cmdline;
  const std::uint64_t warmup = std::min(o.cycles, o.warmup != 0 ? o.warmup : automatic_warmup(o.cycles));
  Supervisor supervisor(o, tally, o.cycles, "stop-force");
  std::atomic<std::uint64_t> next{0};
  std::uint64_t phase_end = 0;

  // Where each stop landed, judged just before it was sent.
  enum Landing { before_run, booting, scenario, resetting, paused_or_other, kLandings };
  static constexpr const char* kLandingNames[] = {"before_run", "booting", "scenario", "resetting", "other"};
  std::array<std::atomic<std::uint64_t>, kLandings> landed{};

  auto work = [&](unsigned worker, WorkerSlot& slot) {
    std::mt19937_64 rng(o.seed * 7919 + worker);
    for (std::uint64_t i = next.fetch_add(1); i < phase_end; i = next.fetch_add(1)) {
      const std::string cycle = "cycle " + std::to_string(i);
      slot.set(cycle + ": creating a VM");
      CapturedSerial serial(guest);
      std::unique_ptr<Vm> vm;
      try {
        vm = make_vm(host, o, cmdline, &serial);
      } catch (const std::exception& e) {
        tally.fail(cycle + ": creating a VM: " + e.what());
        tally.cycles.fetch_add(1);
        continue;
      }
      const auto wait = jitter(rng, o.jitter_min_ms, o.jitter_max_ms);
      double stop_ms = 0;
      VmOutcome outcome;
      {
        Runner runner(*vm);
        slot.set(cycle + ": running " + std::to_string(wait.count()) + " us before the forced stop",
                 [&vm] { return describe_status(*vm); });
        std::this_thread::sleep_for(wait);

        const VmStatus status = vm->status();
        Landing landing = paused_or_other;
        if (status.state == VmState::created) {
          landing = before_run;
        } else if (status.state == VmState::resetting) {
          landing = resetting;
        } else if (status.state == VmState::running && guest.is_linux) {
          landing = serial.ready_count() > 0 ? scenario : booting;  // at /init, or before
        } else if (status.state == VmState::running) {
          const auto milestones = vm->boot_progress().milestones();
          const std::uint32_t last = milestones.empty() ? 0 : milestones.back().code;
          landing = last >= static_cast<std::uint32_t>(devices::BootMilestone::scenario_start) ? scenario : booting;
        }
        landed[landing].fetch_add(1);

        slot.set(cycle + ": forced stop sent (state " + to_string(status.state) + ")",
                 [&vm] { return describe_status(*vm); });
        const auto t0 = Clock::now();
        vm->force_stop();
        outcome = runner.join();
        slot.set(cycle + ": destroying the VM");
        const auto t1 = Clock::now();
        vm.reset();
        const auto t2 = Clock::now();
        stop_ms = std::chrono::duration<double, std::milli>(t2 - t0).count();
        std::lock_guard lock(tally.mu);
        tally.teardown_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      }
      tally.add_stop_ms(stop_ms);
      if (outcome.exit_status == guest.ended_ok_status() && outcome.end != VmEnd::stopped) {
        tally.ended_early.fetch_add(1);
      } else if (outcome.end != VmEnd::stopped) {
        tally.fail(cycle + ": expected a forced stop, got status " + std::to_string(outcome.exit_status) + " (" +
                   outcome.message + "); guest's last lines:\n" + tail(serial.text(), 4));
      } else if (o.max_stop_ms > 0 && stop_ms > o.max_stop_ms) {
        tally.fail(cycle + ": the forced stop took " + std::to_string(stop_ms) + " ms (limit " +
                   std::to_string(o.max_stop_ms) + " ms)");
      }
      tally.cycles.fetch_add(1);
      slot.idle();
    }
  };

  supervisor.set_final_report([&] {
    Summary s;
    s.mode = "stop-force in-process";
    set_counts(s, tally, supervisor.elapsed_s());
    print_summary(o, s, tally);
  });
  Baseline b;
  phase_end = warmup;
  supervisor.run_phase(o.vms, work);
  b.before = measure_resources();
  next.store(warmup);  // each worker's last fetch_add overshot the phase
  phase_end = o.cycles;
  supervisor.run_phase(o.vms, work);
  b.after = measure_resources();
  supervisor.clear_progress();
  check_timers_released(host, tally);

  Summary s = resource_summary(b);
  s.mode = "stop-force in-process";
  set_counts(s, tally, supervisor.elapsed_s());
  nlohmann::json landing_json = nlohmann::json::object();
  std::string landing_text;
  for (int l = 0; l < kLandings; ++l) {
    landing_json[kLandingNames[l]] = landed[l].load();
    landing_text += std::string(" landed_") + kLandingNames[l] + "=" + std::to_string(landed[l].load());
  }
  {
    std::lock_guard lock(tally.mu);
    char buf[96];
    std::snprintf(buf, sizeof buf, " teardown_ms_p50=%.2f teardown_ms_p99=%.2f", percentile(tally.teardown_ms, 50),
                  percentile(tally.teardown_ms, 99));
    landing_text += buf;
  }
  nlohmann::json extra = {{"vms", o.vms},
                          {"cmdline", cmdline},
                          {"jitter_ms", {o.jitter_min_ms, o.jitter_max_ms}},
                          {"seed", o.seed},
                          {"landed", landing_json},
                          {"rss_kib", b.after.rss_kib}};
  {
    std::lock_guard lock(tally.mu);
    extra["teardown_ms"] = {{"p50", percentile(tally.teardown_ms, 50)}, {"p99", percentile(tally.teardown_ms, 99)}};
  }
  add_fault_injection_report(extra);
  s.extra_json = extra.dump();
  s.extra_text = "vms=" + std::to_string(o.vms) + " rss_kib=" + std::to_string(b.after.rss_kib) + landing_text +
                 fault_injection_text();
  return print_summary(o, s, tally);
}

}  // namespace vmm::stress
