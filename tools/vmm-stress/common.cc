#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "timers/clock.h"
#include "tools/vmm-stress/stress.h"

namespace vmm::stress {

namespace {

long count_entries(const char* dir) {
  long n = 0;
  if (DIR* d = ::opendir(dir)) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
  }
  return n;
}

std::string read_first_line(const std::string& path) {
  std::string text = read_small_file(path, 4096);
  if (const std::size_t newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
  return text;
}

long count_lines(const std::string& path) {
  const std::string text = read_small_file(path, std::size_t{64} << 20);
  return static_cast<long>(std::count(text.begin(), text.end(), '\n'));
}

}  // namespace

std::string read_small_file(const std::string& path, std::size_t max) {
  std::string text;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buffer[4096];
  while (text.size() < max) {
    const ssize_t n = ::read(fd, buffer, std::min(sizeof buffer, max - text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

std::int64_t now_ns() noexcept { return timers::MonotonicClock::instance().now(); }

Resources measure_resources() {
  // Freed memory that malloc keeps for reuse is not a leak: hand it back
  // first, so that the figure tracks live allocations and mappings.
  ::malloc_trim(0);
  Resources r;
  // The DIR itself holds one fd while /proc/self/fd is listed.
  r.fds = count_entries("/proc/self/fd") - 1;
  r.threads = count_entries("/proc/self/task");
  r.maps = count_lines("/proc/self/maps");
  const std::string status = read_small_file("/proc/self/status");
  if (const std::size_t at = status.find("VmRSS:"); at != std::string::npos) {
    r.rss_kib = std::strtol(status.c_str() + at + 6, nullptr, 10);
  }
  return r;
}

std::string describe_threads(pid_t pid) {
  const std::string base = pid == 0 ? "/proc/self" : "/proc/" + std::to_string(pid);
  std::ostringstream out;
  std::vector<std::string> tids;
  if (DIR* d = ::opendir((base + "/task").c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') tids.emplace_back(e->d_name);
    }
    ::closedir(d);
  }
  std::sort(tids.begin(), tids.end(), [](const std::string& a, const std::string& b) { return std::stol(a) < std::stol(b); });
  out << "  threads of ";
  if (pid == 0) {
    out << "vmm-stress";
  } else {
    out << "pid " << pid;
  }
  out << " (" << tids.size() << "):\n";
  for (const std::string& tid : tids) {
    const std::string task = base + "/task/" + tid;
    const std::string comm = read_first_line(task + "/comm");
    const std::string stat = read_first_line(task + "/stat");
    // The state is the field after the parenthesised name (which may hold spaces).
    char state = '?';
    if (const std::size_t close = stat.rfind(')'); close != std::string::npos && close + 2 < stat.size()) {
      state = stat[close + 2];
    }
    const std::string wchan = read_first_line(task + "/wchan");
    const std::string syscall = read_first_line(task + "/syscall");
    const std::size_t syscall_number_end = std::min(syscall.find(' '), syscall.size());
    char line[256];
    std::snprintf(line, sizeof line, "    %-8s %-16s state=%c wchan=%-24s syscall=%.*s\n", tid.c_str(), comm.c_str(),
                  state, wchan.empty() || wchan == "0" ? "-" : wchan.c_str(), static_cast<int>(syscall_number_end),
                  syscall.c_str());
    out << line;
  }
  return out.str();
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  const std::size_t k = std::min(values.size() - 1, static_cast<std::size_t>(std::ceil(p / 100.0 * values.size())) -
                                                        (p > 0 ? 1 : 0));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

void Tally::fail(std::string note) {
  failures.fetch_add(1);
  std::lock_guard lock(mu);
  if (failure_notes.size() < 20) failure_notes.push_back(std::move(note));
}

void Tally::add_stop_ms(double ms) {
  std::lock_guard lock(mu);
  stop_ms.push_back(ms);
}

void WorkerSlot::beat() noexcept { heartbeat_ns.store(now_ns(), std::memory_order_relaxed); }

void WorkerSlot::set(std::string what, std::function<std::string()> describe_vm, pid_t pid) {
  std::lock_guard lock(mu);
  activity = std::move(what);
  describe = std::move(describe_vm);
  child = pid;
  heartbeat_ns.store(now_ns(), std::memory_order_relaxed);
}

void WorkerSlot::idle() {
  std::lock_guard lock(mu);
  heartbeat_ns.store(0, std::memory_order_relaxed);
  activity.clear();
  describe = nullptr;
  child = 0;
}

std::chrono::microseconds jitter(std::mt19937_64& rng, unsigned min_ms, unsigned max_ms) {
  std::uniform_int_distribution<std::int64_t> d(std::int64_t{min_ms} * 1000, std::int64_t{max_ms} * 1000);
  return std::chrono::microseconds(d(rng));
}

std::uint64_t automatic_warmup(std::uint64_t cycles) {
  return std::clamp<std::uint64_t>(cycles / 10, 1, 200);
}

// ---------------------------------------------------------------- guests

namespace {
// Little console output (every byte is an exit, slow under emulation), a
// panic that ends the VM, and the tick on the HPET: with it each reboot
// resets a device timer that is re-arming (illumos 12476's window). Without
// the TSC-deadline timer, or Linux would keep the local APIC's tick anyway.
constexpr const char* kLinuxBase = "console=ttyS0 quiet panic=-1 nolapic_timer lapic=notscdeadline";
constexpr const char* kLinuxReady = "vmm-initramfs: ready";
}  // namespace

GuestProfile guest_profile(const Options& options) {
  GuestProfile g;
  g.is_linux = options.guest == GuestKind::linux_initramfs;
  g.ready = !options.ready.empty() ? options.ready : g.is_linux ? kLinuxReady : "reboot: boot ";
  return g;
}

std::string GuestProfile::reboot_cmdline(const std::string& base, std::uint64_t reboots) const {
  // The initramfs counts its boots in CMOS NVRAM and tries each reboot
  // method in turn: the i8042, a triple fault, the FADT's reset register,
  // port 0xCF9. The test guest counts boots itself.
  if (is_linux) return base + " vmm.reboots=" + std::to_string(reboots) + " vmm.reboot_methods=kbd,triple,acpi,pci";
  return base + " count=" + std::to_string(reboots + 1);
}

std::string GuestProfile::reboot_success(std::uint64_t reboots) const {
  if (is_linux) return "VMMCHECK reboot boot=" + std::to_string(reboots) + " of=" + std::to_string(reboots);
  return "reboot ok boots=" + std::to_string(reboots + 1);
}

std::string GuestProfile::default_reboot_base() const { return is_linux ? kLinuxBase : "test=reboot"; }

std::string GuestProfile::default_stop_force_cmdline() const {
  return is_linux ? std::string(kLinuxBase) + " vmm.run=sleep,86400" : "test=reboot count=65535";
}

void LineCounter::feed(std::string_view bytes) {
  if (needle_.empty()) return;
  carry_.append(bytes);
  std::size_t from = 0;
  for (std::size_t at; (at = carry_.find(needle_, from)) != std::string::npos; from = at + needle_.size()) ++count_;
  // Keep only what a later match could start in, and never a counted one.
  const std::size_t tail = carry_.size() >= needle_.size() ? carry_.size() - (needle_.size() - 1) : 0;
  carry_.erase(0, std::max(from, tail));
}

// ------------------------------------------------------------- Supervisor

Supervisor::Supervisor(const Options& options, Tally& tally, std::uint64_t total_cycles, std::string what)
    : options_(options),
      tally_(tally),
      total_(total_cycles),
      what_(std::move(what)),
      start_(Clock::now()),
      tty_(options.progress && !options.json && ::isatty(STDOUT_FILENO)) {}

double Supervisor::elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

void Supervisor::draw_progress() {
  if (!tty_) return;
  const std::uint64_t done = tally_.cycles.load();
  const double fraction = total_ == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(fraction * kWidth);
  const double elapsed = elapsed_s();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - std::min(total_, done)) / rate : 0;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  std::printf("\r%s [%s] %" PRIu64 "/%" PRIu64 " %5.1f%% %7.1f/s fail=%" PRIu64 " eta %4.0fs\033[K", what_.c_str(),
              bar.c_str(), done, total_, fraction * 100, rate, tally_.failures.load(), eta);
  std::fflush(stdout);
}

void Supervisor::clear_progress() {
  if (!tty_) return;
  std::printf("\r\033[K");
  std::fflush(stdout);
}

void Supervisor::run_phase(unsigned workers, const std::function<void(unsigned, WorkerSlot&)>& work) {
  while (slots_.size() < workers) slots_.push_back(std::make_unique<WorkerSlot>());
  std::vector<std::thread> threads;
  std::atomic<unsigned> running{workers};
  for (unsigned w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      pthread_setname_np(pthread_self(), ("stress-" + std::to_string(w)).substr(0, 15).c_str());
      work(w, *slots_[w]);
      slots_[w]->idle();
      running.fetch_sub(1);
    });
  }
  const std::int64_t timeout_ns = std::chrono::nanoseconds(options_.hang_timeout).count();
  while (running.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    draw_progress();
    const std::int64_t now = now_ns();
    for (unsigned w = 0; w < workers; ++w) {
      const std::int64_t beat = slots_[w]->heartbeat_ns.load(std::memory_order_relaxed);
      if (beat != 0 && now - beat > timeout_ns) declare_hang(w, *slots_[w], static_cast<double>(now - beat) / 1e6);
    }
  }
  for (auto& t : threads) t.join();
  draw_progress();
}

void Supervisor::declare_hang(unsigned worker, WorkerSlot& slot, double silent_ms) {
  clear_progress();
  tally_.hangs.fetch_add(1);
  std::string report;
  {
    // Held until the process exits: the worker cannot tear its VM down
    // under the status query below.
    slot.mu.lock();
    report += "vmm-stress: HANG: worker " + std::to_string(worker) + " made no progress for " +
              std::to_string(static_cast<long>(silent_ms)) + " ms (timeout " +
              std::to_string(options_.hang_timeout.count()) + " ms) while: " + slot.activity + "\n";
    report += describe_threads(0);
    if (slot.child != 0) report += describe_threads(slot.child);
    if (slot.describe) {
      // The VM's lock may be the one that is stuck: ask on a thread of its
      // own and give up after a second.
      auto answer = std::make_shared<std::promise<std::string>>();
      std::future<std::string> future = answer->get_future();
      std::thread([answer, describe = slot.describe] {
        try {
          answer->set_value(describe());
        } catch (const std::exception& e) {
          answer->set_value(std::string("status failed: ") + e.what());
        }
      }).detach();
      if (future.wait_for(std::chrono::seconds(1)) == std::future_status::ready) {
        report += "  vm status: " + future.get() + "\n";
      } else {
        report += "  vm status: no answer within 1 s (its lock is held)\n";
      }
    }
  }
  std::fputs(report.c_str(), stderr);
  std::fflush(stderr);
  if (on_hang_) on_hang_();
  if (final_report_) final_report_();
  std::fflush(stdout);
  std::fflush(stderr);
  // Threads are stuck: no destructors, no joins.
  std::_Exit(3);
}

// ---------------------------------------------------------------- summary

void set_counts(Summary& s, const Tally& tally, double elapsed_s) {
  s.cycles = tally.cycles.load();
  s.failures = tally.failures.load();
  s.hangs = tally.hangs.load();
  s.rate_per_s = elapsed_s > 0 ? static_cast<double>(s.cycles) / elapsed_s : 0;
}

void RebootChunks::add(std::uint64_t reboots) {
  std::lock_guard lock(mu_);
  for (std::uint64_t left = reboots; left > 0;) {
    const std::uint64_t m = std::min(left, per_vm_);
    chunks_.push_back(m);
    left -= m;
  }
}

std::uint64_t RebootChunks::take() {
  std::lock_guard lock(mu_);
  if (chunks_.empty()) return 0;
  const std::uint64_t m = chunks_.front();
  chunks_.pop_front();
  return m;
}

std::string default_vmm_binary(const Options& o) {
  if (!o.vmm_binary.empty()) return o.vmm_binary;
#ifdef VMM_STRESS_DEFAULT_VMM
  return VMM_STRESS_DEFAULT_VMM;
#else
  return "vmm";
#endif
}

int print_summary(const Options& options, const Summary& s, const Tally& tally) {
  std::vector<double> stops;
  std::vector<std::string> notes;
  {
    std::lock_guard lock(tally.mu);
    stops = tally.stop_ms;
    notes = tally.failure_notes;
  }
  const bool rss_leak = s.rss_growth_kib > options.rss_limit_kib;
  const bool leaked = s.fd_leak > 0 || s.thread_leak > 0 || rss_leak;
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", s.rate_per_s);

  for (const std::string& note : notes) std::fprintf(stderr, "vmm-stress: failure: %s\n", note.c_str());
  if (s.fd_leak > 0) std::fprintf(stderr, "vmm-stress: %ld file descriptors leaked\n", s.fd_leak);
  if (s.thread_leak > 0) std::fprintf(stderr, "vmm-stress: %ld threads leaked\n", s.thread_leak);
  if (rss_leak) {
    std::fprintf(stderr, "vmm-stress: RSS grew by %ld KiB (limit %" PRId64 " KiB, --rss-limit-kib)\n",
                 s.rss_growth_kib, options.rss_limit_kib);
  }

  if (options.json) {
    nlohmann::json j = {
        {"mode", s.mode},
        {"cycles", s.cycles},
        {"failures", s.failures},
        {"hangs", s.hangs},
        {"fd_leak", s.fd_leak},
        {"rss_growth_kib", s.rss_growth_kib},
        {"rate_per_s", std::round(s.rate_per_s * 10) / 10},
        {"thread_leak", s.thread_leak},
        {"maps_growth", s.maps_growth},
        {"ended_early", tally.ended_early.load()},
        {"ok", s.failures == 0 && s.hangs == 0 && !leaked},
    };
    if (!stops.empty()) {
      j["stop_ms"] = {{"p50", percentile(stops, 50)}, {"p99", percentile(stops, 99)},
                      {"max", *std::max_element(stops.begin(), stops.end())}, {"count", stops.size()}};
    }
    if (!s.extra_json.empty()) {
      const nlohmann::json extra = nlohmann::json::parse(s.extra_json, nullptr, false);
      if (extra.is_object()) {
        for (const auto& [key, value] : extra.items()) j[key] = value;
      }
    }
    if (!notes.empty()) j["failure_notes"] = notes;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::string info = s.mode;
    if (!stops.empty()) {
      char buf[128];
      std::snprintf(buf, sizeof buf, " stop_ms_p50=%.2f stop_ms_p99=%.2f stop_ms_max=%.2f", percentile(stops, 50),
                    percentile(stops, 99), *std::max_element(stops.begin(), stops.end()));
      info += buf;
    }
    info += " thread_leak=" + std::to_string(s.thread_leak) + " maps_growth=" + std::to_string(s.maps_growth) +
            " ended_early=" + std::to_string(tally.ended_early.load());
    if (!s.extra_text.empty()) info += " " + s.extra_text;
    std::printf("%s\n", info.c_str());
    std::printf("cycles=%" PRIu64 " failures=%" PRIu64 " hangs=%" PRIu64 " fd_leak=%ld rss_growth_kib=%ld rate_per_s=%s\n",
                s.cycles, s.failures, s.hangs, s.fd_leak, s.rss_growth_kib, rate);
  }
  std::fflush(stdout);
  return s.failures == 0 && s.hangs == 0 && !leaked ? 0 : 1;
}

}  // namespace vmm::stress
