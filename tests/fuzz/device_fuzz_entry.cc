// The libFuzzer entry of one device's fuzzer (VMM_FUZZ_DEVICE names it).
// Apart from device_fuzz.cc so that the rig compiles once for all devices.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/device_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_device(vmm::fuzz::FuzzedDevice::VMM_FUZZ_DEVICE, data, size);
}
