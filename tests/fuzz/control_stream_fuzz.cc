#include "tests/fuzz/control_stream_fuzz.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "tests/fuzz/byte_reader.h"
#include "vmm/control_connection.h"

namespace vmm::fuzz {

const char* const kControlStreamRequests[] = {
    R"({"cmd":"status"})",
    R"({"cmd":"pause","id":7})",
    R"({"cmd":"resume"})",
    R"({"cmd":"reset","id":"r"})",
    R"({"cmd":"stop"})",
    R"({"cmd":"stop","force":true})",
    R"({"cmd":"reboot"})",
    "not json",
    "",
};
const std::size_t kControlStreamRequestCount = std::size(kControlStreamRequests);

namespace {

using Clock = ControlConnection::Clock;
using std::chrono::milliseconds;

// Short, so that inputs reach it; the connection takes any.
constexpr milliseconds kIdleTimeout{3'000};
// Replies are short here except an error quoting a client's id; a line, and
// so an id, is at most kControlMaxLine.
constexpr std::size_t kMaxReply = kControlMaxLine + 512;

[[noreturn]] void violated(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "control stream fuzz: invariant broken: %s %.*s\n", what,
               static_cast<int>(std::min<std::size_t>(detail.size(), 300)), detail.data());
  std::abort();
}

// What the VM would answer. Cheap on purpose: the request parser has its
// own target (control); here a backed-up client runs a thousand lines per
// input. A forced stop is the canned one, byte for byte.
std::string fake_vm(std::string_view line, bool only_forced_stop, bool* forced_stop) {
  *forced_stop = line == kControlStreamRequests[5];
  if (only_forced_stop && !*forced_stop) return {};
  if (line.empty()) return R"({"ok":false,"error":"empty request line"})";
  return R"({"ok":true,"bytes":)" + std::to_string(line.size()) + "}";
}

struct Life {
  // What the client sent while the connection was reading it.
  std::string sent;
  // Every line the connection executed, each with its newline.
  std::string executed;
  std::size_t executions = 0;
  // Reasons the connection gave in a reply line of its own.
  std::size_t own_replies = 0;
  // Everything the peer read, plus what is still queued at the end.
  std::string replies;
};

void check_replies(const Life& life) {
  std::size_t lines = 0;
  std::size_t start = 0;
  // A backed-up client has a thousand copies of one reply: each is parsed once.
  std::unordered_set<std::string_view> checked;
  while (start < life.replies.size()) {
    const std::size_t newline = life.replies.find('\n', start);
    if (newline == std::string::npos) violated("a reply without its newline", life.replies.substr(start));
    const std::string_view line(life.replies.data() + start, newline - start);
    if (checked.insert(line).second) {
      const nlohmann::json reply = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean()) {
        violated("a reply that is not a JSON object with a boolean ok:", line);
      }
    }
    ++lines;
    start = newline + 1;
  }
  if (lines != life.executions + life.own_replies) {
    violated("reply lines do not match lines executed plus reasons given",
             std::to_string(lines) + " vs " + std::to_string(life.executions) + "+" + std::to_string(life.own_replies));
  }
}

}  // namespace

int fuzz_control_stream(const std::uint8_t* data, std::size_t size) {
  ByteReader in(data, size);
  const bool overflow = (in.byte() & 1) != 0;
  Life life;
  Clock::time_point now = Clock::time_point{} + std::chrono::hours(1);
  ControlConnection connection(now, kIdleTimeout, overflow, [&](const char* what) {
    const std::string_view note(what);
    // The notes that come with a reply line of the connection's own.
    if (note != "dropped a client whose replies backed up") ++life.own_replies;
  });
  const ControlRequestHandler handle = [&](std::string_view line, bool only_forced_stop, bool* forced_stop) {
    if (!connection.reading()) violated("a line executed on a connection that is not reading");
    if (only_forced_stop != overflow) violated("the overflow flag was not passed on");
    if (line.find('\n') != std::string_view::npos) violated("a line with a newline inside:", line);
    if (line.size() + 1 > kControlMaxLine) violated("a line longer than the limit executed");
    if (overflow && life.executions > 0) violated("an overflow client had a second request executed");
    // Earlier lines were checked already: this one must come next, newline included.
    const std::size_t at = life.executed.size();
    life.executed.append(line);
    life.executed += '\n';
    ++life.executions;
    if (life.sent.compare(at, line.size() + 1, life.executed, at) != 0) {
      violated("the lines executed are not what the client sent, in order", line);
    }
    return fake_vm(line, only_forced_stop, forced_stop);
  };
  auto receive = [&](std::string_view bytes) {
    if (connection.reading()) life.sent.append(bytes);
    connection.receive(bytes, now, handle);
  };
  auto peer_reads = [&](std::size_t n) {
    n = std::min(n, connection.output().size());
    life.replies.append(connection.output(), 0, n);
    connection.consume(n);
  };

  while (!in.done() && !connection.dropped()) {
    switch (in.byte() % 7) {
      case 0:
        receive(in.bytes(in.byte()));
        break;
      case 1: {
        const std::size_t count = static_cast<std::size_t>(in.byte()) * 64;
        receive(std::string(count, static_cast<char>(in.byte())));
        break;
      }
      case 2:
        now += milliseconds(in.u16());
        break;
      case 3:
        peer_reads(in.u16());
        break;
      case 4:
        connection.end_of_input(now);
        break;
      case 5:
        connection.settle(now, /*peer_hung_up=*/true);
        break;
      default:
        receive(std::string(kControlStreamRequests[in.byte() % kControlStreamRequestCount]) + "\n");
        break;
    }
    // A poll round: the deadline check, then settle after sending.
    connection.check_deadline(now);
    connection.settle(now, false);
    if (!connection.dropped() && connection.output().size() > kControlMaxPendingOutput + kMaxReply) {
      violated("unread replies grew past their bound");
    }
    const auto limit = connection.reading() ? milliseconds(kIdleTimeout) : kControlCloseGrace;
    if (!connection.dropped() && connection.deadline() > now + limit) violated("a deadline too far ahead");
  }

  // Whatever the client did, the server gets rid of it without its help.
  for (int round = 0; round < 3 && !connection.dropped(); ++round) {
    now += kIdleTimeout + kControlCloseGrace;
    connection.check_deadline(now);
    connection.settle(now, false);
  }
  if (!connection.dropped()) violated("a connection the server cannot get rid of");
  peer_reads(connection.output().size());
  check_replies(life);
  return 0;
}

}  // namespace vmm::fuzz

#if defined(VMM_FUZZ_ENTRY)
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_control_stream(data, size);
}
#endif
