// Fuzz entry points shared by libFuzzer (VMM_FUZZ=ON) and the gtest drivers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm::fuzz {

// Drives the split-virtqueue parser with a descriptor table, available ring
// and indirect-table area taken from `data`, and checks every span it hands
// out lies inside guest memory, every chain is bounded, and the queue drains
// in a bounded number of steps. Returns 0; a broken invariant prints what
// broke and aborts (as libFuzzer expects).
int fuzz_virtqueue(const std::uint8_t* data, std::size_t size);

}  // namespace vmm::fuzz
