#include "vmm/boot/initrd.h"

#include <algorithm>

#include <fmt/format.h>

#include "devices/error.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {

std::optional<std::uint64_t> place_initrd(std::uint64_t size, std::uint64_t ceiling, GuestRange kernel) noexcept {
  auto fits = [&](std::uint64_t address) {
    return address >= layout::kHighMemoryStart && !GuestRange{address, size}.overlaps(kernel);
  };
  if (size == 0 || size > ceiling) return std::nullopt;
  const std::uint64_t top = layout::align_down(ceiling - size, layout::kInitrdAlignment);
  if (fits(top)) return top;
  // Above the kernel there is no room: try right below it.
  if (kernel.address >= size) {
    const std::uint64_t below = layout::align_down(kernel.address - size, layout::kInitrdAlignment);
    if (fits(below)) return below;
  }
  return std::nullopt;
}

GuestRange load_initrd(devices::GuestMemory& memory, const ImageFile& initrd, std::uint64_t ceiling,
                       GuestRange kernel) {
  const std::optional<std::uint64_t> address = place_initrd(initrd.size(), ceiling, kernel);
  if (!address) {
    initrd.fail(fmt::format(
        "{} bytes do not fit in guest RAM below {:#x} beside the kernel at [{:#x}, {:#x}); "
        "give the guest more memory or use a smaller initrd",
        initrd.size(), ceiling, kernel.address, kernel.end()));
  }
  auto destination = memory.slice(*address, initrd.size());
  if (!destination) {
    initrd.fail(fmt::format("guest RAM does not cover [{:#x}, {:#x})", *address, *address + initrd.size()));
  }
  std::copy(initrd.bytes().begin(), initrd.bytes().end(), destination->begin());
  return {*address, initrd.size()};
}

}  // namespace vmm::boot
