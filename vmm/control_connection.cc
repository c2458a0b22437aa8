#include "vmm/control_connection.h"

#include <utility>

#include "vmm/control_request.h"

namespace vmm {

std::string control_too_many_clients_reply() {
  return control_error_reply("too many control clients (at most " + std::to_string(kControlMaxClients) +
                             "); try again later (a forced stop is always served)");
}

ControlConnection::ControlConnection(TimePoint now, std::chrono::milliseconds idle_timeout, bool overflow,
                                     std::function<void(const char*)> log)
    : idle_timeout_(idle_timeout), overflow_(overflow), log_(std::move(log)), last_heard_(now) {
  if (overflow_) close_by_ = now + kControlOverflowGrace;
}

void ControlConnection::note(const char* what) const {
  if (log_) log_(what);
}

ControlConnection::TimePoint ControlConnection::deadline() const noexcept {
  return closing_ || overflow_ ? close_by_ : last_heard_ + idle_timeout_;
}

void ControlConnection::start_closing(TimePoint now) {
  closing_ = true;
  close_by_ = now + kControlCloseGrace;
}

void ControlConnection::receive(std::string_view bytes, TimePoint now, const ControlRequestHandler& handle) {
  if (!reading() || bytes.empty()) return;
  last_heard_ = now;
  in_.append(bytes);
  execute_lines(handle, now);
}

void ControlConnection::execute_lines(const ControlRequestHandler& handle, TimePoint now) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t newline = in_.find('\n', start);
    if (newline == std::string::npos) break;
    if (newline - start + 1 > kControlMaxLine) break;  // reported below
    const std::string_view line(in_.data() + start, newline - start);
    bool forced_stop = false;
    std::string reply = handle(line, overflow_, &forced_stop);
    start = newline + 1;
    if (overflow_) {
      // Its one request: served if it was a forced stop, refused otherwise.
      if (!forced_stop) reply = control_too_many_clients_reply();
      out_ += reply + "\n";
      in_.clear();
      start_closing(now);
      return;
    }
    out_ += reply;
    out_ += '\n';
    if (out_.size() > kControlMaxPendingOutput) {
      note("dropped a client whose replies backed up");
      dropped_ = true;
      return;
    }
  }
  in_.erase(0, start);
  const std::size_t newline = in_.find('\n');
  if ((newline == std::string::npos && in_.size() >= kControlMaxLine) ||
      (newline != std::string::npos && newline + 1 > kControlMaxLine)) {
    note("request line too long");
    out_ += control_error_reply("request line longer than " + std::to_string(kControlMaxLine) + " bytes") + "\n";
    in_.clear();
    start_closing(now);
  }
}

void ControlConnection::end_of_input(TimePoint now) {
  if (!reading()) return;
  if (!in_.empty()) {
    note("request ended without a newline");
    out_ += control_error_reply("request ended without a newline; not executed") + "\n";
    in_.clear();
  }
  start_closing(now);
}

void ControlConnection::check_deadline(TimePoint now) {
  if (!reading() || now < deadline()) return;
  if (overflow_) {
    note("refused a client: too many");
    out_ += control_too_many_clients_reply() + "\n";
  } else {
    note("closed an idle client");
    out_ += control_error_reply("closed after " + std::to_string(idle_timeout_.count()) + " ms without a request") +
            "\n";
  }
  start_closing(now);
}

void ControlConnection::settle(TimePoint now, bool peer_hung_up) noexcept {
  if (closing_ && (out_.empty() || peer_hung_up || now >= close_by_)) dropped_ = true;
}

}  // namespace vmm
