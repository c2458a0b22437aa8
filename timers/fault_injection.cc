// Random sleeps at the race points; see fault_injection.h. This file is
// compiled only with VMM_FAULT_INJECTION=ON.
#include "timers/fault_injection.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace vmm::timers {

namespace {

constexpr std::size_t kPoints = static_cast<std::size_t>(RacePoint::count_);
constexpr std::uint64_t kMaxDelayUs = 10'000'000;
// Probabilities are compared against 32 random bits; 2^32 means "always".
constexpr std::uint64_t kAlways = std::uint64_t{1} << 32;

// Read by the hook on hot paths (every KVM exit passes one point), written
// rarely: plain relaxed atomics, so a reconfiguration never needs a lock
// the hook would take.
struct PointConfig {
  std::atomic<std::uint64_t> threshold{0};
  std::atomic<std::uint64_t> max_us{0};
};

struct PointCounters {
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> delays{0};
  std::atomic<std::uint64_t> slept_us{0};
};

std::array<PointConfig, kPoints> g_config;
std::array<PointCounters, kPoints> g_counters;
std::mutex g_spec_mu;  // serialises configure calls and guards g_spec
std::string g_spec;

std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One generator per thread: no shared state on the hot path, and threads do
// not march in lockstep.
std::uint64_t next_random() noexcept {
  thread_local std::uint64_t state = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    std::uint64_t seed = static_cast<std::uint64_t>(ts.tv_nsec) ^ (static_cast<std::uint64_t>(ts.tv_sec) << 32) ^
                         (static_cast<std::uint64_t>(::gettid()) << 16);
    return splitmix64(seed);
  }();
  return splitmix64(state);
}

void sleep_us(std::uint64_t us) noexcept {
  timespec ts{static_cast<time_t>(us / 1'000'000), static_cast<long>((us % 1'000'000) * 1000)};
  // The kick signal stays blocked outside KVM_RUN, so this is not cut short
  // by a kick; any other interruption just ends the delay early.
  ::nanosleep(&ts, nullptr);
}

void hook(RacePoint point, void*) {
  const auto index = static_cast<std::size_t>(point);
  if (index >= kPoints) return;
  const std::uint64_t threshold = g_config[index].threshold.load(std::memory_order_relaxed);
  if (threshold == 0) return;
  PointCounters& counters = g_counters[index];
  counters.hits.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t r = next_random();
  if ((r & 0xffffffffull) >= threshold) return;
  const std::uint64_t max_us = g_config[index].max_us.load(std::memory_order_relaxed);
  const std::uint64_t us = max_us == 0 ? 0 : (r >> 32) % (max_us + 1);
  counters.delays.fetch_add(1, std::memory_order_relaxed);
  counters.slept_us.fetch_add(us, std::memory_order_relaxed);
  if (us > 0) sleep_us(us);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

// "'<text>'<rest>", built by appending: GCC 12 at -O3 warns (-Wrestrict,
// wrongly) about the prepend that "'" + std::string(...) compiles to.
std::string quoted(std::string_view text, std::string_view rest) {
  std::string out;
  out.reserve(text.size() + rest.size() + 2);
  out += '\'';
  out += text;
  out += '\'';
  out += rest;
  return out;
}

struct Entry {
  std::size_t point;  // kPoints: all
  std::uint64_t threshold;
  std::uint64_t max_us;
};

bool parse_entry(std::string_view text, Entry& out, std::string& error) {
  const std::size_t c1 = text.find(':');
  const std::size_t c2 = c1 == std::string_view::npos ? c1 : text.find(':', c1 + 1);
  if (c2 == std::string_view::npos || text.find(':', c2 + 1) != std::string_view::npos) {
    error = quoted(text, ": expected point:probability:max_us");
    return false;
  }
  const std::string_view name = trim(text.substr(0, c1));
  const std::string probability_text(trim(text.substr(c1 + 1, c2 - c1 - 1)));
  const std::string_view max_text = trim(text.substr(c2 + 1));

  if (name == "all") {
    out.point = kPoints;
  } else {
    out.point = kPoints + 1;
    for (std::size_t i = 0; i < kPoints; ++i) {
      if (name == race_point_name(static_cast<RacePoint>(i))) out.point = i;
    }
    if (out.point > kPoints) {
      error = "unknown race point " + quoted(name, " (known: all");
      for (std::size_t i = 0; i < kPoints; ++i) error += std::string(", ") + race_point_name(static_cast<RacePoint>(i));
      error += ")";
      return false;
    }
  }

  // strtod: std::from_chars for double is not in GCC 12's libstdc++ for all
  // formats we want to accept ("1e-3", ".5").
  char* end = nullptr;
  const double probability = std::strtod(probability_text.c_str(), &end);
  if (probability_text.empty() || end == nullptr || *end != '\0' || !std::isfinite(probability) ||
      probability < 0.0 || probability > 1.0) {
    error = quoted(text, ": probability must be a number in [0, 1]");
    return false;
  }
  std::uint64_t max_us = 0;
  const auto [ptr, ec] = std::from_chars(max_text.data(), max_text.data() + max_text.size(), max_us);
  if (max_text.empty() || ec != std::errc() || ptr != max_text.data() + max_text.size() || max_us > kMaxDelayUs) {
    error = quoted(text, ": max_us must be an integer in [0, " + std::to_string(kMaxDelayUs) + "]");
    return false;
  }
  out.threshold = probability >= 1.0 ? kAlways : static_cast<std::uint64_t>(std::ldexp(probability, 32));
  out.max_us = max_us;
  return true;
}

void install_from_environment() noexcept {
  const char* spec = std::getenv(kFaultInjectEnv);
  if (spec == nullptr || *spec == '\0') return;
  std::string error;
  try {
    if (!configure_fault_injection(spec, &error)) {
      // Before main(): no logger yet, and a silently ignored spec would make
      // a stress run look clean when it injected nothing.
      std::fprintf(stderr, "%s=%s: %s; no faults are injected\n", kFaultInjectEnv, spec, error.c_str());
    }
  } catch (...) {
    std::fprintf(stderr, "%s: out of memory; no faults are injected\n", kFaultInjectEnv);
  }
}

}  // namespace

bool configure_fault_injection(std::string_view spec, std::string* error) {
  std::vector<Entry> entries;
  std::string reason;
  spec = trim(spec);
  if (!spec.empty() && spec != "off") {
    while (!spec.empty()) {
      const std::size_t comma = spec.find(',');
      const std::string_view item = trim(spec.substr(0, comma));
      if (item.empty()) {
        reason = "empty entry in the list";
      } else {
        Entry entry{};
        if (parse_entry(item, entry, reason)) entries.push_back(entry);
      }
      if (!reason.empty()) {
        if (error) *error = reason;
        return false;
      }
      if (comma == std::string_view::npos) break;
      spec.remove_prefix(comma + 1);
    }
  }

  std::array<std::uint64_t, kPoints> threshold{};
  std::array<std::uint64_t, kPoints> max_us{};
  for (const Entry& e : entries) {
    for (std::size_t i = 0; i < kPoints; ++i) {
      if (e.point == kPoints || e.point == i) {
        threshold[i] = e.threshold;
        max_us[i] = e.max_us;
      }
    }
  }

  std::lock_guard lock(g_spec_mu);
  bool any = false;
  std::string normalised;
  for (std::size_t i = 0; i < kPoints; ++i) {
    g_config[i].max_us.store(max_us[i], std::memory_order_relaxed);
    g_config[i].threshold.store(threshold[i], std::memory_order_relaxed);
    if (threshold[i] == 0) continue;
    any = true;
    char probability[32];
    std::snprintf(probability, sizeof probability, "%g", std::ldexp(static_cast<double>(threshold[i]), -32));
    if (!normalised.empty()) normalised += ',';
    normalised += std::string(race_point_name(static_cast<RacePoint>(i))) + ':' + probability + ':' +
                  std::to_string(max_us[i]);
  }
  g_spec = normalised;
  set_race_hook(any ? &hook : nullptr, nullptr);
  return true;
}

FaultStats fault_injection_stats() noexcept {
  FaultStats stats{};
  for (std::size_t i = 0; i < kPoints; ++i) {
    stats[i].hits = g_counters[i].hits.load(std::memory_order_relaxed);
    stats[i].delays = g_counters[i].delays.load(std::memory_order_relaxed);
    stats[i].slept_us = g_counters[i].slept_us.load(std::memory_order_relaxed);
  }
  return stats;
}

std::string fault_injection_spec() {
  std::lock_guard lock(g_spec_mu);
  return g_spec;
}

}  // namespace vmm::timers

// vmm_timers links this object into every program with --undefined of this
// symbol (timers/CMakeLists.txt): a static library member that nothing
// references would otherwise be left out, and its initializer with it.
extern "C" {
extern const int vmm_fault_injection_linked;
const int vmm_fault_injection_linked = 1;
}

namespace {
// Runs before main() in every program linked with vmm_timers.
[[maybe_unused]] const bool g_installed_from_environment = (vmm::timers::install_from_environment(), true);
}  // namespace
