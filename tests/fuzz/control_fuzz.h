// Fuzz entry point of the control socket's request parser, shared by
// libFuzzer (VMM_FUZZ=ON) and the gtest driver.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm::fuzz {

// Parses `data` as one request line (parse_control_request, the part of
// the server that reads what a client sends). Either a request comes out
// (a known command; force only with stop; an id that is valid JSON) or an
// error reply that is one line of JSON: an object with "ok":false and an
// "error" string, echoing the id when the request had one. Anything else
// prints what broke and aborts. Returns 0.
int fuzz_control(const std::uint8_t* data, std::size_t size);

}  // namespace vmm::fuzz
