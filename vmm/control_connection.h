// One control-socket client as a state machine without I/O: what it has
// sent is split into request lines and executed, its replies queue up, and
// its limits (line length, unread replies, idle timeout, the overflow
// client's one request) decide when it is closed. The server
// (vmm/control.cc) feeds it what recv() returned and sends what it queued;
// the control-stream fuzz target feeds it arbitrary streams and clocks.
// The protocol itself is described in vmm/control.h.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace vmm {

inline constexpr std::size_t kControlMaxLine = 4096;
inline constexpr std::size_t kControlMaxClients = 16;
inline constexpr std::size_t kControlMaxPendingOutput = 64 * 1024;
inline constexpr std::chrono::milliseconds kControlIdleTimeout{30'000};
// How long a connection being closed may take to read its last replies.
inline constexpr std::chrono::milliseconds kControlCloseGrace{1'000};
// How long a client over the limit has to send a forced stop, the one
// request it may make.
inline constexpr std::chrono::milliseconds kControlOverflowGrace{1'000};

// Executes one request line (without its newline) and returns the reply
// (without its newline); sets *forced_stop when the line was a forced stop
// that was carried out. With `only_forced_stop`, any other well-formed
// request is left undone and the reply is empty. Never throws.
using ControlRequestHandler =
    std::function<std::string(std::string_view line, bool only_forced_stop, bool* forced_stop)>;

std::string control_too_many_clients_reply();

class ControlConnection {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  // `overflow`: accepted beyond kControlMaxClients; it may only stop the VM
  // by force (which must always get through), within kControlOverflowGrace.
  // `log` receives one short note per event worth logging (the server rate
  // limits them); may be empty.
  ControlConnection(TimePoint now, std::chrono::milliseconds idle_timeout, bool overflow,
                    std::function<void(const char*)> log = {});

  // Bytes the peer sent, at `now`: every complete line is executed through
  // `handle`, in order, and its reply queued. Ignored once closing.
  void receive(std::string_view bytes, TimePoint now, const ControlRequestHandler& handle);
  // The peer shut its side: a partial line is reported, never executed.
  void end_of_input(TimePoint now);
  // When the server must act unless the peer is heard from first.
  TimePoint deadline() const noexcept;
  // Past the deadline: an idle or overflow client is told why and closed.
  void check_deadline(TimePoint now);
  // After each attempt to send: a closing connection goes once its replies
  // are out, its peer hung up, or its grace ran out.
  void settle(TimePoint now, bool peer_hung_up) noexcept;

  // What is queued for the peer; consume() what was sent.
  const std::string& output() const noexcept { return out_; }
  void consume(std::size_t sent) noexcept { out_.erase(0, sent); }

  bool overflow() const noexcept { return overflow_; }
  bool reading() const noexcept { return !closing_ && !dropped_; }
  bool closing() const noexcept { return closing_; }
  bool dropped() const noexcept { return dropped_; }
  TimePoint last_heard() const noexcept { return last_heard_; }
  // Close now (the peer is gone, or the server refused it).
  void drop() noexcept { dropped_ = true; }

 private:
  void execute_lines(const ControlRequestHandler& handle, TimePoint now);
  void start_closing(TimePoint now);
  void note(const char* what) const;

  const std::chrono::milliseconds idle_timeout_;
  const bool overflow_;
  std::function<void(const char*)> log_;
  std::string in_;
  std::string out_;
  // Received bytes last at: a client silent for the idle timeout is closed,
  // so forgotten connections cannot hold every slot.
  TimePoint last_heard_;
  // Close once `out_` is flushed, or at close_by_, whichever comes first: a
  // peer that stops reading never holds a slot for long.
  bool closing_ = false;
  TimePoint close_by_{};
  bool dropped_ = false;
};

}  // namespace vmm
