// Percentile summaries of latency samples, shared by the measuring tools.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace vmm::tools {

struct LatencySummary {
  std::size_t samples = 0;
  double min_us = 0, p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0, mean_us = 0;
};

// Nearest-rank percentiles over nanosecond samples (sorts `ns` in place).
inline LatencySummary summarize(std::vector<std::int64_t>& ns) {
  LatencySummary s;
  s.samples = ns.size();
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(ns.size())));
    return static_cast<double>(ns[std::min(ns.size() - 1, rank == 0 ? 0 : rank - 1)]) / 1000.0;
  };
  s.min_us = static_cast<double>(ns.front()) / 1000.0;
  s.p50_us = at(0.50);
  s.p99_us = at(0.99);
  s.p999_us = at(0.999);
  s.max_us = static_cast<double>(ns.back()) / 1000.0;
  double sum = 0;
  for (auto v : ns) sum += static_cast<double>(v);
  s.mean_us = sum / static_cast<double>(ns.size()) / 1000.0;
  return s;
}

inline std::string to_json(const LatencySummary& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "{\"samples\":%zu,\"min_us\":%.2f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,"
                "\"max_us\":%.2f,\"mean_us\":%.2f}",
                s.samples, s.min_us, s.p50_us, s.p99_us, s.p999_us, s.max_us, s.mean_us);
  return buf;
}

}  // namespace vmm::tools
