// The serial console on the VMM's own terminal: stdin feeds COM1, and a
// terminal is put in raw mode for it and given back as it was on every way
// out (normal return, exceptions, fatal signals, exit()).
//
// Escape: Ctrl-A then x stops the VM by force (Ctrl-A Ctrl-A sends one
// Ctrl-A to the guest). Raw mode passes Ctrl-C to the guest, as a serial
// line would.
#pragma once

#include <termios.h>

#include <atomic>
#include <functional>
#include <thread>

#include "devices/serial.h"
#include "timers/unique_fd.h"

namespace vmm {

// Raw mode on a terminal fd for the object's lifetime. Also restores on
// exit() and on fatal signals (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL),
// which then proceed with their default action.
class TerminalRawMode {
 public:
  explicit TerminalRawMode(int fd);  // no effect when fd is not a terminal
  ~TerminalRawMode();
  TerminalRawMode(const TerminalRawMode&) = delete;
  TerminalRawMode& operator=(const TerminalRawMode&) = delete;
  bool active() const noexcept { return active_; }

 private:
  bool active_ = false;
};

// Copies stdin (or any fd) into the UART's receive FIFO on a thread of its
// own, never faster than the FIFO drains, so no byte is lost.
class ConsoleInput {
 public:
  ConsoleInput(int fd, devices::Serial& serial, std::function<void()> escape_stop);
  ~ConsoleInput();  // stops and joins the thread
  ConsoleInput(const ConsoleInput&) = delete;
  ConsoleInput& operator=(const ConsoleInput&) = delete;

 private:
  void pump() noexcept;
  void deliver(const std::uint8_t* data, std::size_t size) noexcept;

  int fd_;
  devices::Serial& serial_;
  std::function<void()> escape_stop_;
  timers::UniqueFd wake_;  // eventfd: tells the thread to finish
  bool escape_pending_ = false;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace vmm
