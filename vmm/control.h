// The control socket: `vmm run --control PATH` serves a line-based JSON
// protocol on a Unix stream socket, so a supervisor (or `vmm ctl`) can ask
// for the VM's status and pause, resume, reset or stop it.
//
// Protocol
// --------
// One request per line, one reply line per request, in order. A line is a
// JSON object terminated by "\n" (a "\r" before it is ignored), at most
// 4096 bytes including the newline. Requests:
//
//   {"cmd":"status"}              state, reboots, uptime, vCPUs, boot generation
//   {"cmd":"vcpus"}               where each vCPU is (for a guest that seems stuck)
//   {"cmd":"pause"}               stop every vCPU and pause the device timers
//   {"cmd":"resume"}              undo pause
//   {"cmd":"reset"}               reboot the guest (as a reset button)
//   {"cmd":"stop"}                graceful: press the ACPI power button; if the
//                                 guest has not powered off within the graceful
//                                 timeout (5 s), stop it by force
//   {"cmd":"stop","force":true}   at once: vCPUs kicked and joined, device
//                                 timers drained, memory freed, the process
//                                 exits (status 8)
//
// An optional "id" (any JSON value) is echoed in the reply, to match replies
// to pipelined requests. Any other field is an error (a misspelt "force"
// must not turn into a graceful stop).
//
// Replies: {"ok":true,...} or {"ok":false,"error":"<one line for a human>"}.
//   status:  {"ok":true,"state":"running","reboots":3,"boot_generation":3,
//             "uptime_ms":41.9,"vcpus":1,"pid":1234}
//            state is one of created, running, paused, resetting, stopping,
//            ended; uptime_ms counts from the current boot (reset restarts
//            it); boot_generation counts completed resets, including ones
//            the host asked for.
//   vcpus:   {"ok":true,"vcpus":["at 123456789 ns:","vcpu 0: running, 812
//             entries (...): rip=0x... rsp=... rflags=... cr0=... ...", ...]}
//            one line per vCPU, each running one paused only while it is
//            read; with the user-space irqchip each is followed by a line
//            for its local APIC (TPR, PPR, vectors in service and requested,
//            the timer's deadline on the same clock as the first line). An
//            error when the VM's thread is busy for 1 s (a reset) or ended.
//   others:  {"ok":true} once the request is accepted (it is carried out
//            asynchronously on the VM's control thread; poll status to see
//            it done). A request that makes no sense in the current state is
//            refused with the reason: resume while not paused ("the VM is not
//            paused"), pause while not running, stop while stopping ("the VM
//            is already stopping"), the same request already pending, anything
//            after the VM ended. A forced stop is always accepted.
//
// Errors that keep the connection: invalid JSON, a line that is not an
// object, a missing/non-string "cmd", an unknown command or field, an empty
// line. Errors that close it after the reply: a line longer than 4096 bytes
// ("request line longer than 4096 bytes"), input that ends without a
// newline (the partial line is never executed), a peer that is not the
// socket's owner, a client silent for 30 s (the idle timeout: "closed after
// 30000 ms without a request"). A client whose unread replies back up past
// 64 KiB is disconnected.
//
// At most 16 clients are served at once. One more is still accepted, for
// 1 s and one request: a forced stop is carried out, anything else (or
// nothing) gets "too many control clients" and the connection is closed.
// So neither busy nor forgotten clients can lock out `stop --force`; up to
// 16 such overflow connections wait at a time, the oldest giving way.
//
// Access: only the owner may connect. The socket file is created with mode
// 0600 (bound in a private 0700 directory and linked into place, so it is
// never reachable with wider permissions), and every connection's peer
// credentials (SO_PEERCRED) must carry the VMM's effective uid, or uid 0.
// An existing socket at PATH that nobody listens on (a VMM that was killed)
// is replaced; one that answers is left alone ("in use"); any other kind of
// file is never touched. The socket is unlinked when the VMM exits: on
// return from run, on exceptions, on exit(), and on fatal signals (SIGSEGV,
// SIGABRT, ...). Only SIGKILL leaves it behind, to be replaced next time.
//
// Example:
//   $ vmm run --kernel guest.elf --control /run/vm0.sock &
//   $ vmm ctl /run/vm0.sock status
//   {"ok":true,"state":"running","reboots":0,"boot_generation":0,"uptime_ms":812.4,"vcpus":1,"pid":4242}
//   $ printf '{"cmd":"stop","force":true}\n' | socat - UNIX-CONNECT:/run/vm0.sock
//   {"ok":true}
//
// Threads: the server runs its own thread (poll(2) over the listening socket,
// the clients and an eventfd), never blocks on a client (non-blocking
// sockets, bounded buffers) and never throws or aborts on what a client
// sends; problems are logged at debug level through a RateLimit. The VM's
// requests are the thread-safe Vm calls.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <thread>

#include "timers/unique_fd.h"
#include "vmm/control_connection.h"
#include "vmm/control_request.h"

namespace vmm {

class Vm;

// Executes one request line (without its newline) against `vm` and returns
// the reply line (without its newline). Never throws.
std::string control_handle_request(Vm& vm, std::string_view line) noexcept;

class ControlServer {
 public:
  // Creates the socket at `path` (see "Access" above) and starts serving.
  // Throws vmm::Error naming the problem (path too long, not a socket,
  // in use by a running VMM, permission denied...).
  ControlServer(const std::string& path, Vm& vm,
                std::chrono::milliseconds idle_timeout = kControlIdleTimeout);
  // Stops the thread, closes every connection (after one last attempt to
  // send pending replies) and unlinks the socket.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const noexcept { return path_; }

 private:
  void serve() noexcept;
  void unlink_socket() noexcept;

  std::string path_;
  Vm& vm_;
  const std::chrono::milliseconds idle_timeout_;
  timers::UniqueFd listen_;
  timers::UniqueFd wake_;
  dev_t dev_ = 0;  // the socket file we created, so we never unlink another
  ino_t ino_ = 0;
  std::thread thread_;
};

}  // namespace vmm
