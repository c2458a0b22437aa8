// The loops that drive separate `vmm run --control SOCK` processes, stopped
// the ways an operator or a supervisor would: the control socket (through
// `vmm ctl` and through the client library), SIGTERM then SIGINT, and SIGTERM
// again and again until it takes. Never SIGKILL: that is not a stop the VMM
// takes part in (it is only used to clean up after a hang).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tools/vmm-stress/child.h"
#include "tools/vmm-stress/fault_report.h"
#include "tools/vmm-stress/stress.h"
#include "vmm/control_client.h"

namespace vmm::stress {

namespace {

constexpr int kExitStoppedByHost = 8;  // vmm's status for a stop from the host

// A private directory for the sockets and logs of one run; what is left in
// it at the end is reported, then it is removed.
class WorkDir {
 public:
  WorkDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/vmm-stress.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    path_ = pattern;
  }
  ~WorkDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const std::string& path() const noexcept { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> sockets() const {
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(path_, ec)) {
      if (entry.is_socket(ec)) found.push_back(entry.path().string());
    }
    return found;
  }

 private:
  std::string path_;
};

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string read_file_tail(const std::string& path, std::size_t max = 600) {
  std::string text = read_small_file(path);
  if (text.size() > max) text.erase(0, text.size() - max);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

std::string query_status(const std::string& socket) {
  try {
    ControlClient client(socket, std::chrono::milliseconds(500));
    return client.request(control_request_line("status", false), std::chrono::milliseconds(500));
  } catch (const std::exception& e) {
    return std::string("(no status: ") + e.what() + ")";
  }
}

struct ProcessRun {
  const Options& o;
  Tally tally;
  WorkDir dir;
  std::string vmm;
  Supervisor supervisor;

  ProcessRun(const Options& options, std::uint64_t cycles, const char* what)
      : o(options), vmm(default_vmm_binary(options)), supervisor(options, tally, cycles, what) {
    supervisor.set_on_hang([] { kill_live_children(); });
  }

  std::vector<std::string> vmm_run_argv(const std::string& cmdline, const std::string& serial,
                                        const std::string& socket) const {
    // --debug-exit: the test guest's verdict comes through that port.
    std::vector<std::string> argv = {vmm,         "run",    "--kernel", o.kernel, "--memory",  o.memory,
                                     "--cpus",    std::to_string(o.cpus), "--cmdline", cmdline, "--serial", serial,
                                     "--control", socket,   "--debug-exit"};
    if (!o.initrd.empty()) argv.insert(argv.end(), {"--initrd", o.initrd});
    return argv;
  }

  // Leftovers once every worker is done: processes, socket files.
  void check_leftovers(nlohmann::json& extra, std::string& text) {
    const std::vector<pid_t> procs = leftover_processes(dir.path());
    const std::vector<std::string> sockets = dir.sockets();
    for (pid_t pid : procs) tally.fail("process " + std::to_string(pid) + " left behind");
    for (const auto& s : sockets) tally.fail("socket file " + s + " left behind");
    extra["leftover_processes"] = procs.size();
    extra["leftover_sockets"] = sockets.size();
    text += " leftover_processes=" + std::to_string(procs.size()) + " leftover_sockets=" + std::to_string(sockets.size());
  }

  void final_report(const char* mode) {
    supervisor.set_final_report([this, mode] {
      Summary s;
      s.mode = mode;
      set_counts(s, tally, supervisor.elapsed_s());
      print_summary(o, s, tally);
      std::error_code ec;
      std::filesystem::remove_all(dir.path(), ec);
    });
  }
};

Summary finish(ProcessRun& run, const Resources& before, const char* mode) {
  const Resources after = measure_resources();
  run.supervisor.clear_progress();
  Summary s;
  s.mode = mode;
  s.fd_leak = after.fds - before.fds;
  s.thread_leak = after.threads - before.threads;
  s.maps_growth = after.maps - before.maps;
  s.rss_growth_kib = after.rss_kib - before.rss_kib;
  return s;
}

}  // namespace

// ----------------------------------------------------------------- reboot

int run_reboot_process(const Options& o) {
  ProcessRun run(o, o.cycles, "reboot");
  run.final_report("reboot process");
  const GuestProfile guest = guest_profile(o);
  const std::string base = o.cmdline.empty() ? guest.default_reboot_base() : o.cmdline;
  const std::uint64_t per_vm = std::clamp<std::uint64_t>(o.reboots_per_vm, 1, 65534);
  const std::uint64_t warmup = std::min(o.cycles, o.warmup != 0 ? o.warmup : automatic_warmup(o.cycles));
  RebootChunks chunks(per_vm);
  std::atomic<std::uint64_t> vm_runs{0};
  std::atomic<long> max_child_rss{0};

  auto work = [&](unsigned worker, WorkerSlot& slot) {
    const std::string socket = run.dir.file("vm" + std::to_string(worker) + ".sock");
    const std::string err = run.dir.file("vm" + std::to_string(worker) + ".err");
    for (std::uint64_t m = chunks.take(); m != 0; m = chunks.take()) {
      vm_runs.fetch_add(1);
      const std::string cmdline = guest.reboot_cmdline(base, m);
      std::uint64_t counted = 0;
      std::string pending;  // an incomplete output line
      std::string last_lines;
      bool success_seen = false;
      const std::string success = guest.reboot_success(m);
      try {
        Child child(SpawnSpec{run.vmm_run_argv(cmdline, "stdio", socket), true, err, true});
        slot.set("vmm pid " + std::to_string(child.pid()) + " rebooting " + std::to_string(m) + " times",
                 [socket] { return query_status(socket); }, child.pid());
        std::uint64_t boots = 0;
        bool done = false;
        while (!done) {
          std::string out;
          done = child.wait_for(std::chrono::milliseconds(100), &out);
          pending += out;
          for (std::size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
            const std::string line = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            if (line.find(guest.ready) != std::string::npos) ++boots;
            if (line.find(success) != std::string::npos) success_seen = true;
            last_lines += line + "\n";
            if (last_lines.size() > 1200) last_lines.erase(0, last_lines.size() - 600);
          }
          const std::uint64_t reboots = boots == 0 ? 0 : std::min(boots - 1, m);
          if (reboots > counted) {
            run.tally.cycles.fetch_add(reboots - counted);
            counted = reboots;
            slot.beat();
          }
        }
        long rss = max_child_rss.load();
        while (child.max_rss_kib() > rss && !max_child_rss.compare_exchange_weak(rss, child.max_rss_kib())) {
        }
        const int status = child.wait_status();
        if (!WIFEXITED(status) || WEXITSTATUS(status) != guest.ended_ok_status() || !success_seen || counted != m) {
          run.tally.fail("vmm with " + cmdline + ": " + child.describe_status() + " after " + std::to_string(counted) +
                         " of " + std::to_string(m) + " reboots; stderr: " + read_file_tail(err) +
                         "; last output:\n" + last_lines);
        } else if (exists(socket)) {
          run.tally.fail("vmm with " + cmdline + " exited but left its socket " + socket);
          ::unlink(socket.c_str());
        }
      } catch (const std::exception& e) {
        run.tally.fail(std::string("starting vmm: ") + e.what());
      }
      if (counted < m) run.tally.cycles.fetch_add(m - counted);
      slot.idle();
    }
  };

  chunks.add(warmup);
  run.supervisor.run_phase(std::min<unsigned>(o.vms, 1 + static_cast<unsigned>(warmup / per_vm)), work);
  const Resources before = measure_resources();
  chunks.add(o.cycles - warmup);
  run.supervisor.run_phase(o.vms, work);
  Summary s = finish(run, before, "reboot process");
  nlohmann::json extra = {{"vms", o.vms}, {"vm_runs", vm_runs.load()}, {"reboots_per_vm", per_vm},
                          {"cmdline", base}, {"max_child_rss_kib", max_child_rss.load()}};
  std::string text = "vms=" + std::to_string(o.vms) + " vm_runs=" + std::to_string(vm_runs.load()) +
                     " max_child_rss_kib=" + std::to_string(max_child_rss.load());
  run.check_leftovers(extra, text);
  set_counts(s, run.tally, run.supervisor.elapsed_s());
  s.extra_json = extra.dump();
  s.extra_text = text;
  return print_summary(o, s, run.tally);
}

// -------------------------------------------------------------- stop-force

namespace {

enum class StopMethod { ctl_command, ctl_library, sigterm_sigint, sigterm_repeated, kCount };
constexpr const char* kMethodNames[] = {"ctl_command", "ctl_library", "sigterm_sigint", "sigterm_repeated"};

}  // namespace

int run_stop_force_process(const Options& o) {
  ProcessRun run(o, o.cycles, "stop-force");
  run.final_report("stop-force process");
  const GuestProfile guest = guest_profile(o);
  const std::string cmdline = o.cmdline.empty() ? guest.default_stop_force_cmdline() : o.cmdline;
  const std::uint64_t warmup = std::min(o.cycles, o.warmup != 0 ? o.warmup : automatic_warmup(o.cycles));
  std::atomic<std::uint64_t> next{0};
  std::uint64_t phase_end = 0;
  std::mutex by_method_mu;
  std::map<std::string, std::vector<double>> stop_ms_by_method;
  std::atomic<long> max_child_rss{0};

  auto work = [&](unsigned worker, WorkerSlot& slot) {
    std::mt19937_64 rng(o.seed * 7919 + worker);
    const std::string socket = run.dir.file("vm" + std::to_string(worker) + ".sock");
    const std::string err = run.dir.file("vm" + std::to_string(worker) + ".err");
    const std::string ctl_err = run.dir.file("ctl" + std::to_string(worker) + ".err");
    for (std::uint64_t i = next.fetch_add(1); i < phase_end; i = next.fetch_add(1)) {
      const std::string cycle = "cycle " + std::to_string(i);
      const auto method = static_cast<StopMethod>(i % static_cast<std::uint64_t>(StopMethod::kCount));
      const char* method_name = kMethodNames[static_cast<int>(method)];
      try {
        Child child(SpawnSpec{run.vmm_run_argv(cmdline, "null", socket), false, err, true});
        const std::string who = cycle + ": vmm pid " + std::to_string(child.pid());
        slot.set(who + " running", [socket] { return query_status(socket); }, child.pid());
        std::this_thread::sleep_for(jitter(rng, o.jitter_min_ms, o.jitter_max_ms));

        std::string problem;
        if (method == StopMethod::ctl_command || method == StopMethod::ctl_library) {
          // The socket exists once the VM is built; a supervisor waits for it.
          slot.set(who + ": waiting for its control socket", [socket] { return query_status(socket); }, child.pid());
          while (!is_socket(socket) && !child.wait_for(std::chrono::milliseconds(1))) {
          }
          if (child.exited()) problem = "exited (" + child.describe_status() + ") before its control socket appeared";
        }
        slot.set(who + ": " + method_name + " stop sent", [socket] { return query_status(socket); }, child.pid());
        const auto t0 = Clock::now();
        if (problem.empty()) {
          switch (method) {
            case StopMethod::ctl_command: {
              Child ctl(SpawnSpec{{run.vmm, "ctl", socket, "stop", "--force"}, false, ctl_err, false});
              ctl.wait_for(o.hang_timeout + std::chrono::seconds(1));
              if (!ctl.exited() || !WIFEXITED(ctl.wait_status()) || WEXITSTATUS(ctl.wait_status()) != 0) {
                problem = "vmm ctl stop --force: " + ctl.describe_status() + ": " + read_file_tail(ctl_err);
              }
              break;
            }
            case StopMethod::ctl_library: {
              try {
                ControlClient client(socket, std::chrono::milliseconds(5000));
                const std::string reply = client.request(control_request_line("stop", true));
                if (reply != R"({"ok":true})") problem = "stop --force replied " + reply;
              } catch (const std::exception& e) {
                problem = std::string("control socket: ") + e.what();
              }
              break;
            }
            case StopMethod::sigterm_sigint:
              child.signal(SIGTERM);
              child.signal(SIGINT);
              break;
            case StopMethod::sigterm_repeated:
              // The first asks for a graceful stop, any later one forces it;
              // repeated because signals of one kind that arrive together
              // count once.
              child.signal(SIGTERM);
              while (!child.wait_for(std::chrono::milliseconds(5))) child.signal(SIGTERM);
              break;
            case StopMethod::kCount:
              break;
          }
        }
        while (!child.wait_for(std::chrono::milliseconds(200))) {
        }
        const double stop_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        long rss = max_child_rss.load();
        while (child.max_rss_kib() > rss && !max_child_rss.compare_exchange_weak(rss, child.max_rss_kib())) {
        }
        const int status = child.wait_status();
        const bool stopped = WIFEXITED(status) && WEXITSTATUS(status) == kExitStoppedByHost;
        const bool ended = WIFEXITED(status) && WEXITSTATUS(status) == guest.ended_ok_status();
        if (problem.empty() && stopped) {
          run.tally.add_stop_ms(stop_ms);
          std::lock_guard lock(by_method_mu);
          stop_ms_by_method[method_name].push_back(stop_ms);
        }
        if (!problem.empty()) {
          run.tally.fail(who + ": " + problem + "; vmm " + child.describe_status() + "; stderr: " + read_file_tail(err));
        } else if (ended) {
          run.tally.ended_early.fetch_add(1);
        } else if (!stopped) {
          run.tally.fail(who + ": " + method_name + ": expected exit status 8, got " + child.describe_status() +
                         "; stderr: " + read_file_tail(err));
        } else if (o.max_stop_ms > 0 && stop_ms > o.max_stop_ms) {
          run.tally.fail(who + ": " + method_name + " took " + std::to_string(stop_ms) + " ms (limit " +
                         std::to_string(o.max_stop_ms) + " ms)");
        }
        if (exists(socket)) {
          run.tally.fail(who + ": exited (" + child.describe_status() + ") but left its socket behind");
          ::unlink(socket.c_str());
        }
      } catch (const std::exception& e) {
        run.tally.fail(cycle + ": " + e.what());
      }
      run.tally.cycles.fetch_add(1);
      slot.idle();
    }
  };

  phase_end = warmup;
  run.supervisor.run_phase(o.vms, work);
  const Resources before = measure_resources();
  next.store(warmup);  // each worker's last fetch_add overshot the phase
  phase_end = o.cycles;
  run.supervisor.run_phase(o.vms, work);
  Summary s = finish(run, before, "stop-force process");

  nlohmann::json methods = nlohmann::json::object();
  std::string text = "vms=" + std::to_string(o.vms) + " max_child_rss_kib=" + std::to_string(max_child_rss.load());
  for (const auto& [name, values] : stop_ms_by_method) {
    methods[name] = {{"count", values.size()}, {"p50", percentile(values, 50)}, {"p99", percentile(values, 99)},
                     {"max", *std::max_element(values.begin(), values.end())}};
    char buf[96];
    std::snprintf(buf, sizeof buf, " %s_p50_ms=%.2f", name.c_str(), percentile(values, 50));
    text += buf;
  }
  nlohmann::json extra = {{"vms", o.vms},
                          {"cmdline", cmdline},
                          {"jitter_ms", {o.jitter_min_ms, o.jitter_max_ms}},
                          {"seed", o.seed},
                          {"stop_ms_by_method", methods},
                          {"max_child_rss_kib", max_child_rss.load()}};
  run.check_leftovers(extra, text);
  set_counts(s, run.tally, run.supervisor.elapsed_s());
  s.extra_json = extra.dump();
  s.extra_text = text;
  return print_summary(o, s, run.tally);
}

}  // namespace vmm::stress
