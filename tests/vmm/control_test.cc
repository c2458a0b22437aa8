// The control socket (vmm/control.h) against a real VM on /dev/kvm: the
// protocol, what a hostile or broken client can do to it (garbage, huge and
// truncated lines, silent and flooding clients, too many clients, another
// user), the socket file's safety rules, and `vmm ctl` end to end.
#include "vmm/control.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/error.h"
#include "tests/common/subprocess.h"
#include "tests/common/temp_dir.h"
#include "tests/vmm/vmm_fixture.h"
#include "timers/cyclic.h"
#include "vmm/cli.h"
#include "vmm/control_client.h"
#include "vmm/kvm.h"
#include "vmm/syscall_filter.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class ControlEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    signals_.emplace();  // the vCPU kick must be blocked before any thread exists
    spdlog::set_level(spdlog::level::warn);
    ::signal(SIGPIPE, SIG_IGN);
  }
  std::optional<KvmSignals> signals_;
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ControlEnvironment);

// As VMM_REQUIRE_KVM, but a missing guest is a fatal failure, so that a
// fixture's SetUp stops the test body from running on a VM that is not there.
#define REQUIRE_KVM_AND_GUEST()                                                                   \
  do {                                                                                            \
    VMM_SKIP_UNLESS_KVM();                                                                        \
    if (::access(test_guest().c_str(), R_OK) != 0) {                                              \
      GTEST_FAIL() << "the test guest '" << test_guest()                                          \
                   << "' is missing: build the testguest target, or set VMM_TESTGUEST_ELF";       \
    }                                                                                             \
  } while (0)

// A scenario that keeps every timer busy, never resets, and ignores the ACPI
// power button (so a graceful stop stays in "stopping" until its timeout).
constexpr const char* kBusyGuest = "test=retimer seconds=3600";

// A raw client: whatever bytes a test wants, with timeouts on every read.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
    connect_errno_ = errno;
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  int connect_errno() const { return connect_errno_; }
  int fd() const { return fd_; }

  void send(std::string_view bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // The next line, without its newline; nullopt on timeout, EOF or error.
  std::optional<std::string> line(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const std::size_t nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string out = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return out;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) {
        eof_ = true;
        return std::nullopt;
      }
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // True once the server has closed the connection (EOF or reset) within the timeout.
  bool closed_by_server(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!eof_ && std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      char chunk[65536];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) eof_ = true;
    }
    return eof_;
  }
  json request(const std::string& line_text) {
    send(line_text + "\n");
    const auto reply = line();
    if (!reply) return json();
    return json::parse(*reply, nullptr, false);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  int connect_errno_ = 0;
  bool eof_ = false;
  std::string buffer_;
};

std::string error_of(const json& reply) {
  if (!reply.is_object() || !reply.contains("error")) return "<no error in " + reply.dump() + ">";
  return reply["error"].get<std::string>();
}

bool is_ok(const json& reply) { return reply.is_object() && reply.value("ok", false); }

// A VM running `cmdline` on a thread, with a control server on it.
class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_KVM_AND_GUEST();
    kvm_.emplace();
    timers_.emplace();
    start(kBusyGuest);
  }
  void TearDown() override {
    server_.reset();
    if (vm_) vm_->force_stop();
    if (runner_.joinable()) runner_.join();
    vm_.reset();
  }

  void start(const std::string& cmdline) {
    VmConfig config;
    config.boot.kernel = test_guest();
    config.boot.cmdline = cmdline;
    config.memory = 64ull << 20;
    vm_ = std::make_unique<Vm>(config, *kvm_, *timers_);
    server_.emplace(socket_path(), *vm_);
    runner_ = std::thread([this] { outcome_ = vm_->run(); });
    // Requests other than status and a forced stop are refused until run()
    // has started the VM ("the VM has not started").
    for (int i = 0; i < 2000 && vm_->status().state == VmState::created; ++i) std::this_thread::sleep_for(1ms);
  }
  std::string socket_path() const { return dir_.file("vm.sock"); }
  // Connects as many clients as the server serves at once; each has one
  // request answered, which proves the server holds its slot.
  void fill_every_slot(std::vector<std::unique_ptr<RawClient>>& clients) {
    for (std::size_t i = 0; i < kControlMaxClients; ++i) {
      clients.push_back(std::make_unique<RawClient>(socket_path()));
      ASSERT_TRUE(is_ok(clients.back()->request(R"({"cmd":"status"})"))) << "client " << i;
    }
  }

  json status() {
    RawClient client(socket_path());
    return client.request(R"({"cmd":"status"})");
  }
  // The VM is alive and its guest advancing: uptime or reboots move on.
  bool vm_keeps_running() {
    const json a = status();
    std::this_thread::sleep_for(50ms);
    const json b = status();
    return is_ok(a) && is_ok(b) && b["state"] == "running" &&
           (b["uptime_ms"].get<double>() > a["uptime_ms"].get<double>() || b["reboots"] > a["reboots"]);
  }
  bool vm_ended(std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < deadline) {
      if (vm_->status().state == VmState::ended) return true;
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }

  TempDir dir_;
  std::optional<KvmSystem> kvm_;
  std::optional<timers::CyclicSystem> timers_;
  std::unique_ptr<Vm> vm_;
  std::optional<ControlServer> server_;
  std::thread runner_;
  VmOutcome outcome_;
};

TEST_F(ControlTest, StatusDescribesTheRunningVm) {
  RawClient client(socket_path());
  ASSERT_TRUE(client.connected());
  const json reply = client.request(R"({"cmd":"status","id":"abc"})");
  ASSERT_TRUE(is_ok(reply)) << reply.dump();
  EXPECT_EQ(reply["state"], "running");
  EXPECT_EQ(reply["vcpus"], 1);
  EXPECT_EQ(reply["pid"], ::getpid());
  EXPECT_EQ(reply["reboots"], 0);
  EXPECT_EQ(reply["boot_generation"], 0);
  EXPECT_GE(reply["uptime_ms"].get<double>(), 0.0);
  EXPECT_EQ(reply["id"], "abc") << "the id is echoed";
  EXPECT_TRUE(vm_keeps_running());

  struct stat st {};
  ASSERT_EQ(::lstat(socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "only the owner may connect";
}

// Where each vCPU is, for a guest that seems stuck: one line per vCPU with
// its registers, read while it is briefly paused; the guest runs on.
TEST_F(ControlTest, VcpusReportsEachVcpusRegistersAndTheGuestRunsOn) {
  RawClient client(socket_path());
  ASSERT_TRUE(client.connected());
  const json reply = client.request(R"({"cmd":"vcpus","id":7})");
  ASSERT_TRUE(is_ok(reply)) << reply.dump();
  EXPECT_EQ(reply["id"], 7);
  ASSERT_TRUE(reply["vcpus"].is_array()) << reply.dump();
  ASSERT_EQ(reply["vcpus"].size(), 2u) << reply.dump() << "\na time line, then one line for the one vCPU";
  EXPECT_EQ(reply["vcpus"][0].get<std::string>().rfind("at ", 0), 0u) << reply.dump();
  const std::string vcpu0 = reply["vcpus"][1].get<std::string>();
  EXPECT_EQ(vcpu0.rfind("vcpu 0: ", 0), 0u) << vcpu0;
  EXPECT_NE(vcpu0.find("rip=0x"), std::string::npos) << "a running vCPU is read, not skipped: " << vcpu0;
  EXPECT_TRUE(vm_keeps_running());
  EXPECT_EQ(client.request(R"({"cmd":"status"})")["state"], "running");
}

TEST_F(ControlTest, RequestsThatMakeNoSenseInTheCurrentStateAreRefusedWithTheReason) {
  RawClient c(socket_path());
  json r = c.request(R"({"cmd":"resume"})");
  EXPECT_FALSE(is_ok(r));
  EXPECT_NE(error_of(r).find("not paused"), std::string::npos) << error_of(r);

  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"pause"})")));
  // The pause is carried out on the VM's control thread.
  for (int i = 0; i < 200 && c.request(R"({"cmd":"status"})")["state"] != "paused"; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(c.request(R"({"cmd":"status"})")["state"], "paused");
  r = c.request(R"({"cmd":"pause"})");
  EXPECT_FALSE(is_ok(r));
  EXPECT_NE(error_of(r).find("not running"), std::string::npos) << error_of(r);
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"resume"})")));

  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"stop"})"))) << "graceful: the power button, then a timeout";
  r = c.request(R"({"cmd":"stop"})");
  if (!is_ok(r) && error_of(r).find("already pending") != std::string::npos) {
    // Refused too, because the first one was still queued; once the VM's
    // control thread has taken it, the reason is the state.
    for (int i = 0; i < 200 && c.request(R"({"cmd":"status"})")["state"] != "stopping"; ++i) {
      std::this_thread::sleep_for(5ms);
    }
    r = c.request(R"({"cmd":"stop"})");
  }
  EXPECT_FALSE(is_ok(r));
  EXPECT_NE(error_of(r).find("already stopping"), std::string::npos) << error_of(r);
  r = c.request(R"({"cmd":"reset"})");
  EXPECT_FALSE(is_ok(r)) << "no reset while stopping";
  EXPECT_EQ(c.request(R"({"cmd":"status"})")["state"], "stopping");

  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"stop","force":true})"))) << "a forced stop is always accepted";
  EXPECT_TRUE(vm_ended(2s));
  std::printf("[ info ] forced stop: VM ended %.2f ms after the request was sent\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  runner_.join();
  EXPECT_EQ(outcome_.end, VmEnd::stopped);
  r = c.request(R"({"cmd":"pause"})");
  EXPECT_FALSE(is_ok(r));
  EXPECT_NE(error_of(r).find("ended"), std::string::npos) << error_of(r);
}

TEST_F(ControlTest, ResetRebootsTheGuest) {
  RawClient c(socket_path());
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"reset"})")));
  for (int i = 0; i < 400 && c.request(R"({"cmd":"status"})")["reboots"] == 0; ++i) std::this_thread::sleep_for(5ms);
  const json s = c.request(R"({"cmd":"status"})");
  EXPECT_EQ(s["reboots"], 1);
  EXPECT_EQ(s["boot_generation"], 1);
}

TEST_F(ControlTest, GarbageGetsAnErrorAndTheConnectionAndVmCarryOn) {
  RawClient c(socket_path());
  const std::pair<std::string, std::string> cases[] = {
      {"{bad", "invalid JSON"},
      {"", "empty request"},
      {"\r", "empty request"},
      {"[1,2]", "JSON object"},
      {"42", "JSON object"},
      {"\"status\"", "JSON object"},
      {"{}", "missing \"cmd\""},
      {R"({"cmd":5})", "must be a string"},
      {R"({"cmd":null})", "must be a string"},
      {R"({"cmd":"reboot"})", "unknown command"},
      {R"({"cmd":"stop","froce":true})", "unknown field"},
      {R"({"cmd":"stop","force":"yes"})", "true or false"},
      {R"({"cmd":"pause","force":true})", "only to stop"},
      {"\xff\xfe\x00garbage", "invalid JSON"},
      {std::string(2000, '[') + std::string(2000, ']'), "JSON object"},
      {R"({"cmd":"status"} trailing)", "invalid JSON"},
  };
  for (const auto& [line, expected] : cases) {
    const json r = c.request(line);
    ASSERT_TRUE(r.is_object()) << "reply to '" << line.substr(0, 40) << "' is not JSON";
    EXPECT_FALSE(is_ok(r)) << line.substr(0, 40);
    EXPECT_NE(error_of(r).find(expected), std::string::npos) << line.substr(0, 40) << " -> " << error_of(r);
  }
  // Pipelined: one reply per line, in order.
  c.send("{\"cmd\":\"status\",\"id\":1}\n{nope\n{\"cmd\":\"status\",\"id\":3}\n");
  EXPECT_EQ(json::parse(*c.line())["id"], 1);
  EXPECT_FALSE(is_ok(json::parse(*c.line())));
  EXPECT_EQ(json::parse(*c.line())["id"], 3);
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"status"})"))) << "the connection survives";
  EXPECT_TRUE(vm_keeps_running());
}

TEST_F(ControlTest, LinesUpToTheLimitAreServedLongerOnesRefusedAndDropped) {
  {
    // 4096 bytes with the newline: served.
    std::string line = R"({"cmd":"status"})";
    line.append(kControlMaxLine - 1 - line.size(), ' ');
    RawClient c(socket_path());
    EXPECT_TRUE(is_ok(c.request(line)));
  }
  {
    // 4097 with the newline: refused, connection closed.
    std::string line = R"({"cmd":"status"})";
    line.append(kControlMaxLine - line.size(), ' ');
    RawClient c(socket_path());
    const json r = c.request(line);
    EXPECT_FALSE(is_ok(r));
    EXPECT_NE(error_of(r).find("longer than 4096"), std::string::npos) << error_of(r);
    EXPECT_TRUE(c.closed_by_server());
  }
  {
    // A megabyte with no newline at all.
    RawClient c(socket_path());
    c.send(std::string(1 << 20, 'x'));
    const auto reply = c.line();
    ASSERT_TRUE(reply.has_value());
    EXPECT_NE(reply->find("longer than 4096"), std::string::npos) << *reply;
    EXPECT_TRUE(c.closed_by_server());
  }
  EXPECT_TRUE(vm_keeps_running());
}

TEST_F(ControlTest, ATruncatedRequestIsNeverExecuted) {
  RawClient c(socket_path());
  c.send(R"({"cmd":"stop","force":true})");  // no newline
  c.shutdown_write();
  const auto reply = c.line();
  ASSERT_TRUE(reply.has_value());
  EXPECT_NE(reply->find("without a newline"), std::string::npos) << *reply;
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(vm_keeps_running()) << "the truncated stop did not stop the VM";

  // A client that vanishes mid-line, without waiting for anything.
  {
    RawClient gone(socket_path());
    gone.send(R"({"cmd":"st)");
  }
  EXPECT_TRUE(vm_keeps_running());
}

TEST_F(ControlTest, SilentAndNonReadingClientsDoNotBlockTheOthers) {
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 8; ++i) silent.push_back(std::make_unique<RawClient>(socket_path()));

  // Floods requests and never reads a reply: its replies back up and the
  // server drops it instead of blocking or buffering without bound.
  RawClient flooder(socket_path());
  std::string burst;
  for (int i = 0; i < 200; ++i) burst += "{\"cmd\":\"status\"}\n";
  std::size_t sent = 0;
  const auto flood_end = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < flood_end) {
    const ssize_t n = ::send(flooder.fd(), burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) {
      if (errno != EAGAIN) break;  // dropped: the server closed it
      std::this_thread::sleep_for(10ms);
      continue;
    }
    sent += static_cast<std::size_t>(n);
  }
  EXPECT_GT(sent, kControlMaxPendingOutput) << "the flood never started";

  const auto t0 = std::chrono::steady_clock::now();
  const json r = status();
  EXPECT_TRUE(is_ok(r)) << r.dump();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_TRUE(flooder.closed_by_server()) << "a client whose replies back up is dropped";
  EXPECT_TRUE(vm_keeps_running());
}

TEST_F(ControlTest, ClientsBeyondTheLimitGetAnErrorAndAreClosed) {
  std::vector<std::unique_ptr<RawClient>> held;
  ASSERT_NO_FATAL_FAILURE(fill_every_slot(held));
  {
    RawClient extra(socket_path());
    const auto reply = extra.line();
    ASSERT_TRUE(reply.has_value());
    EXPECT_NE(reply->find("too many control clients"), std::string::npos) << *reply;
    EXPECT_TRUE(extra.closed_by_server());
  }
  held.pop_back();
  // The server notices the close on its next round; retry briefly.
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    RawClient again(socket_path());
    served = is_ok(again.request(R"({"cmd":"status"})"));
    if (!served) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(served) << "a freed slot is usable again";
  for (auto& c : held) EXPECT_TRUE(is_ok(c->request(R"({"cmd":"status"})"))) << "held clients still served";
}

TEST_F(ControlTest, IdleClientsAtTheLimitDoNotLockOutAForcedStop) {
  std::vector<std::unique_ptr<RawClient>> idle;
  ASSERT_NO_FATAL_FAILURE(fill_every_slot(idle));
  {
    RawClient other(socket_path());
    EXPECT_NE(error_of(other.request(R"({"cmd":"pause"})")).find("too many control clients"), std::string::npos)
        << "beyond the limit, nothing but a forced stop is served";
    EXPECT_TRUE(other.closed_by_server());
  }
  EXPECT_EQ(vm_->status().state, VmState::running) << "the refused pause was not carried out";
  RawClient stopper(socket_path());
  const json reply = stopper.request(R"({"cmd":"stop","force":true})");
  EXPECT_TRUE(is_ok(reply)) << reply.dump();
  EXPECT_TRUE(vm_ended(2s));
  runner_.join();
  EXPECT_EQ(outcome_.exit_status, kExitStoppedByHost);
}

TEST_F(ControlTest, IdleClientsAreClosedAndTheirSlotsServeOthers) {
  constexpr auto kIdle = 300ms;
  server_.reset();
  server_.emplace(socket_path(), *vm_, kIdle);
  std::vector<std::unique_ptr<RawClient>> idle;
  // Before the first connection: each client's idle time counts from its
  // own connection, so this is the earliest any of them may be closed from.
  const auto quiet_since = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(fill_every_slot(idle));
  for (auto& client : idle) {
    const auto reply = client->line();
    ASSERT_TRUE(reply.has_value()) << "an idle client was left open";
    EXPECT_NE(reply->find("without a request"), std::string::npos) << *reply;
    EXPECT_TRUE(client->closed_by_server());
  }
  EXPECT_GE(std::chrono::steady_clock::now() - quiet_since, kIdle) << "closed before the idle timeout";
  EXPECT_TRUE(is_ok(status())) << "the freed slots serve new clients";
}

// Connects as uid 65534 from a child process and reports what happened:
// 0 connected and got `expect` in a reply and then EOF, 1 connect refused
// with EACCES, other values: something else.
int connect_as_nobody(const std::string& path, const char* expect) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(10);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    const timeval five_seconds{5, 0};  // a server that keeps the connection open fails, not hangs
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five_seconds, sizeof five_seconds);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      ::_exit(errno == EACCES ? 1 : 11);
    }
    // The server may have answered and closed already: a failed send is fine.
    const char request[] = "{\"cmd\":\"stop\",\"force\":true}\n";
    [[maybe_unused]] const ssize_t sent = ::send(fd, request, sizeof request - 1, MSG_NOSIGNAL);
    char buffer[512] = {};
    std::size_t got = 0;
    for (;;) {
      const ssize_t n = ::recv(fd, buffer + got, sizeof buffer - 1 - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    ::_exit(std::strstr(buffer, expect) != nullptr ? 0 : 13);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

TEST_F(ControlTest, OnlyTheOwnerMayConnect) {
  VMM_SKIP_UNLESS(::geteuid() == 0, "needs root to act as another user");
  // Let another user reach the directory: the socket's own mode must stop it.
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  EXPECT_EQ(connect_as_nobody(socket_path(), ""), 1) << "mode 0600 refuses other users";

  // Even with the file opened up (a careless chmod), the peer credentials
  // check refuses them, and their request is not executed.
  ASSERT_EQ(::chmod(socket_path().c_str(), 0666), 0);
  EXPECT_EQ(connect_as_nobody(socket_path(), "permission denied: uid 65534"), 0);
  EXPECT_TRUE(vm_keeps_running()) << "the other user's forced stop was not executed";
}

TEST_F(ControlTest, ForcedStopRepliesThenEndsTheVm) {
  RawClient c(socket_path());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"stop","force":true})")));
  EXPECT_TRUE(vm_ended(2s));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  runner_.join();
  EXPECT_EQ(outcome_.end, VmEnd::stopped);
  EXPECT_EQ(outcome_.exit_status, kExitStoppedByHost);
  std::printf("[ info ] forced stop through the socket: VM ended after %.2f ms\n", ms);
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(socket_path())) << "the socket is removed with the server";
}

// ------------------------------------------------------------ socket file

class ControlSocketFile : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_KVM_AND_GUEST();
    kvm_.emplace();
    timers_.emplace();
    VmConfig config;
    config.boot.kernel = test_guest();
    config.boot.cmdline = "test=boot";
    config.memory = 64ull << 20;
    vm_ = std::make_unique<Vm>(config, *kvm_, *timers_);  // never run: the server only needs it to exist
  }
  TempDir dir_;
  std::optional<KvmSystem> kvm_;
  std::optional<timers::CyclicSystem> timers_;
  std::unique_ptr<Vm> vm_;
};

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST_F(ControlSocketFile, NeverReplacesAFileThatIsNotASocket) {
  const std::string path = dir_.file("precious");
  { std::ofstream(path) << "keep me"; }
  const std::string message = error_message([&] { ControlServer server(path, *vm_); });
  EXPECT_NE(message.find("not a socket"), std::string::npos) << message;
  std::ifstream in(path);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "keep me");

  std::filesystem::create_directory(dir_.file("adir"));
  EXPECT_NE(error_message([&] { ControlServer server(dir_.file("adir"), *vm_); }).find("not a socket"),
            std::string::npos);
}

TEST_F(ControlSocketFile, ReplacesAStaleSocketButNotALiveOne) {
  const std::string path = dir_.file("vm.sock");
  {
    // A socket file whose server is gone (a VMM killed with SIGKILL).
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::is_socket(path));
  {
    ControlServer server(path, *vm_);
    RawClient c(path);
    EXPECT_TRUE(is_ok(c.request(R"({"cmd":"status"})")));
    // A second server on the same path must not steal it.
    const std::string message = error_message([&] { ControlServer other(path, *vm_); });
    EXPECT_NE(message.find("in use"), std::string::npos) << message;
    RawClient c2(path);
    EXPECT_TRUE(is_ok(c2.request(R"({"cmd":"status"})"))) << "the first server still owns it";
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "removed when the server goes";
  std::size_t leftovers = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir_.path())) ++leftovers;
  EXPECT_EQ(leftovers, 0u) << "no temporary directory left behind";
}

TEST_F(ControlSocketFile, DoesNotUnlinkASocketThatReplacedItsOwn) {
  const std::string path = dir_.file("vm.sock");
  std::optional<ControlServer> server;
  server.emplace(path, *vm_);
  // Someone removes ours and another server takes the name.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ControlServer replacement(path, *vm_);
  server.reset();
  EXPECT_TRUE(std::filesystem::is_socket(path)) << "the replacement's socket is not ours to remove";
  RawClient c(path);
  EXPECT_TRUE(is_ok(c.request(R"({"cmd":"status"})")));
}

// The kernel may hand a fatal signal to any thread, and only the main
// thread's filter allows unlink: a crash on a confined thread must still take
// the socket with it (the main thread removes it on that thread's behalf).
TEST_F(ControlSocketFile, ACrashOnAConfinedThreadStillRemovesTheSocket) {
  // Re-executed, not forked: this process has threads, and TSan refuses to
  // start new ones after a multi-threaded fork. The child learns the path
  // from the environment, and says on stderr that it served there.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const char* given = std::getenv("VMM_TEST_CRASH_SOCKET");
  const std::string path = given != nullptr ? given : dir_.file("vm.sock");
  ::setenv("VMM_TEST_CRASH_SOCKET", path.c_str(), 1);
  const auto serve_then_crash_on_a_vcpu_thread = [&] {
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);  // the crash is on purpose
    syscall_filter::enable();
    ControlServer server(path, *vm_);
    if (std::filesystem::is_socket(path)) std::fprintf(stderr, "serving the socket\n");
    std::thread vcpu_like([] {
      syscall_filter::confine(ThreadKind::vcpu);
      std::abort();
    });
    vcpu_like.join();
  };
  EXPECT_EXIT(serve_then_crash_on_a_vcpu_thread(), ::testing::KilledBySignal(SIGABRT), "serving the socket");
  ::unsetenv("VMM_TEST_CRASH_SOCKET");
  EXPECT_FALSE(std::filesystem::exists(path)) << "the confined thread's crash left the socket behind";
}

TEST_F(ControlSocketFile, RefusesPathsThatDoNotFit) {
  EXPECT_NE(error_message([&] { ControlServer s(dir_.file(std::string(200, 'x')), *vm_); }).find("bytes long"),
            std::string::npos);
  EXPECT_NE(error_message([&] { ControlServer s("", *vm_); }).find("bytes long"), std::string::npos);
  EXPECT_NE(error_message([&] { ControlServer s("/nonexistent-dir/vm.sock", *vm_); }).find("/nonexistent-dir"),
            std::string::npos);
}

// ------------------------------------------------------------ command line

TEST(ControlCommandLine, CtlParsesPathCommandAndForce) {
  Command c = parse_command_line({"ctl", "/run/vm.sock", "stop", "--force"});
  EXPECT_EQ(c.kind, Command::Kind::ctl);
  EXPECT_EQ(c.ctl.path, "/run/vm.sock");
  EXPECT_EQ(c.ctl.command, "stop");
  EXPECT_TRUE(c.ctl.force);
  EXPECT_EQ(c.ctl.timeout, 5000ms);

  c = parse_command_line({"ctl", "/run/vm.sock", "status", "--timeout-ms", "250"});
  EXPECT_FALSE(c.ctl.force);
  EXPECT_EQ(c.ctl.timeout, 250ms);
  EXPECT_EQ(control_request_line("status", false), R"({"cmd":"status"})");
  EXPECT_EQ(parse_command_line({"ctl", "/run/vm.sock", "vcpus"}).ctl.command, "vcpus");
  EXPECT_EQ(control_request_line("stop", true), R"({"cmd":"stop","force":true})");

  EXPECT_THROW(parse_command_line({"ctl", "/run/vm.sock", "pause", "--force"}), UsageError);
  EXPECT_THROW(parse_command_line({"ctl", "/run/vm.sock", "reboot"}), UsageError);
  EXPECT_THROW(parse_command_line({"ctl", "/run/vm.sock"}), UsageError);
  EXPECT_THROW(parse_command_line({"ctl"}), UsageError);
}

// --------------------------------------------------------------- end to end

// Starts `vmm run ... --control PATH` and waits for the socket.
struct VmmProcess {
  pid_t pid = -1;
  explicit VmmProcess(const std::string& socket, const std::string& cmdline = kBusyGuest) {
    const std::vector<std::string> argv = {vmm_binary(), "run",    "--kernel", test_guest(), "--memory",
                                           "64M",        "--cmdline", cmdline,  "--serial",   "null",
                                           "--control",  socket};
    if (spawn_with_default_signals(argv, nullptr, &pid) != 0) pid = -1;
    // Until it answers: a stale socket file may be there before it.
    for (int i = 0; i < 2000 && pid > 0; ++i) {
      RawClient probe(socket);
      if (probe.connected()) break;
      std::this_thread::sleep_for(5ms);
    }
  }
  // Exit status, or 128 + signal; -1 (after SIGKILL) when it has not ended
  // within 60 s, so a hang fails the test instead of running into ctest's
  // timeout.
  int wait() {
    int status = 0;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        const std::string threads = describe_threads(pid);
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pid = -1;
        ADD_FAILURE() << "vmm did not exit within 60 s; its threads then:\n" << threads;
        return -1;
      }
      std::this_thread::sleep_for(2ms);
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  ~VmmProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);  // cleanup after a failed assertion only
      ::waitpid(pid, nullptr, 0);
    }
  }
};

TEST(ControlEndToEnd, VmmCtlTalksToVmmRun) {
  REQUIRE_KVM_AND_GUEST();
  TempDir dir;
  const std::string socket = dir.file("vm.sock");
  VmmProcess vmm(socket);
  ASSERT_TRUE(std::filesystem::is_socket(socket));

  ProcessResult r = run_process({vmm_binary(), "ctl", socket, "status"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_TRUE(is_ok(json::parse(r.out, nullptr, false))) << r.out;
  EXPECT_EQ(count_lines(r.out), 1u);

  // The vmm process's own threads answer (its seccomp filters included).
  r = run_process({vmm_binary(), "ctl", socket, "vcpus"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_NE(r.out.find("\"vcpu 0: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rip=0x"), std::string::npos) << r.out;

  r = run_process({vmm_binary(), "ctl", socket, "resume"});
  EXPECT_EQ(r.exit_status, kExitCtlRefused);
  EXPECT_EQ(r.err, "vmm: ctl: resume: the VM is not paused\n");
  EXPECT_TRUE(r.out.empty());

  r = run_process({vmm_binary(), "ctl", socket, "pause", "--force"});
  EXPECT_EQ(r.exit_status, kExitUsage) << "--force is for stop only";
  r = run_process({vmm_binary(), "ctl", socket, "reboot"});
  EXPECT_EQ(r.exit_status, kExitUsage);

  r = run_process({vmm_binary(), "ctl", socket, "stop", "--force"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ok\":true}\n");
  EXPECT_EQ(vmm.wait(), 8) << "stopped by the host";
  EXPECT_FALSE(std::filesystem::exists(socket)) << "vmm removes its socket when it exits";

  r = run_process({vmm_binary(), "ctl", socket, "status"});
  EXPECT_EQ(r.exit_status, kExitCtlNoAnswer);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << "one clear line: " << r.err;
}

TEST(ControlEndToEnd, TheSocketGoesOnEveryExitButSigkill) {
  REQUIRE_KVM_AND_GUEST();
  TempDir dir;
  const std::string socket = dir.file("vm.sock");
  struct Case {
    std::vector<int> signals;
    int status;
  };
  // SIGTERM twice: graceful, then forced (status 8). SIGABRT/SIGSEGV: a
  // crash (the fatal-signal hook unlinks, then the process dies of it).
  // Under TSan only the SIGKILL part below. Its runtime takes over the
  // delivery of every signal a handler is installed for (deferred to its own
  // safe points) and the re-raise in our hook: in the lab one TSan run in
  // four died of SIGSEGV inside that machinery on a kill(SIGABRT), with no
  // report, and the socket stayed. And one TSan run in six of SIGTERM twice
  // left a vmm that never ended (main thread waiting on a futex, the signal
  // watcher in poll, so the signals never reached its signalfd, though
  // /proc shows SIGTERM blocked in every thread): not understood yet, and
  // never seen in the release or ASan builds, which check every case here.
#if defined(__SANITIZE_THREAD__)
  const std::vector<Case> cases = {};
#else
  const std::vector<Case> cases = {{{SIGTERM, SIGTERM}, 8}, {{SIGTERM, SIGINT}, 8}, {{SIGABRT}, 128 + SIGABRT},
                                   {{SIGSEGV}, 128 + SIGSEGV}};
#endif
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);  // the crashes below are on purpose
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The SIGSEGV below comes from kill(2), not a fault: it must reach the
  // VMM's own fatal-signal hook, not the sanitizer's crash reporter (which,
  // under TSan, could stall in a process whose other threads sit in
  // KVM_RUN). The children inherit this; the test process read its options
  // at start-up already.
  for (const char* name : {"ASAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* old = std::getenv(name);
    ::setenv(name, (std::string(old ? old : "") + ":handle_segv=0:handle_abort=0").c_str(), 1);
  }
#endif
  for (const Case& c : cases) {
    VmmProcess vmm(socket);
    ASSERT_TRUE(std::filesystem::is_socket(socket));
    for (int sig : c.signals) {
      ::kill(vmm.pid, sig);
      std::this_thread::sleep_for(20ms);
    }
    const int status = vmm.wait();
    EXPECT_EQ(status, c.status) << "signal " << c.signals.front();
    EXPECT_FALSE(std::filesystem::exists(socket)) << "after signal " << c.signals.front();
  }
  {
    VmmProcess vmm(socket);
    ::kill(vmm.pid, SIGKILL);
    EXPECT_EQ(vmm.wait(), 128 + SIGKILL);
    EXPECT_TRUE(std::filesystem::is_socket(socket)) << "SIGKILL leaves it";
  }
  // ... and the next VMM replaces the stale one.
  VmmProcess next(socket);
  ProcessResult r = run_process({vmm_binary(), "ctl", socket, "stop", "--force"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_EQ(next.wait(), 8);
}

}  // namespace
}  // namespace vmm::testing
