// Fuzz entry point of a control-socket connection's state machine
// (vmm/control_connection.h), shared by libFuzzer (VMM_FUZZ=ON) and the
// gtest driver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace vmm::fuzz {

// Plays `data` as one client's life against a ControlConnection on a manual
// clock: byte 0 says whether it is an overflow client, then operations
// (bytes received, a long run of one byte, a canned request line, time
// passing, the peer reading some of its replies, its end of input, its
// hang-up), each followed by the server's deadline check and settle, as a
// poll round does. Checks, after every operation and at the end:
//   - the lines executed, each with its newline, are a prefix of what the
//     client sent while it was being read: in order, whole, none invented,
//     none longer than kControlMaxLine, none after the connection closed;
//   - an overflow client gets at most one request executed;
//   - one reply line per line executed and per reason given for closing,
//     every one a JSON object with a boolean "ok";
//   - unread replies stay bounded (a connection over the bound is dropped);
//   - its deadline is never further than the idle timeout (reading) or the
//     close grace (closing);
//   - it cannot be kept: whatever happened, once the idle timeout and the
//     close grace pass without the peer, it is dropped.
// Anything else prints what broke and aborts. Returns 0.
int fuzz_control_stream(const std::uint8_t* data, std::size_t size);

// Canned requests the stream can name by index (operation 6).
extern const char* const kControlStreamRequests[];
extern const std::size_t kControlStreamRequestCount;

}  // namespace vmm::fuzz
