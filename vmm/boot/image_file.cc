#include "vmm/boot/image_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "devices/error.h"
#include "timers/unique_fd.h"

namespace vmm::boot {

ImageFile ImageFile::open(const std::filesystem::path& path, std::string_view role, std::uint64_t max_size,
                          std::string_view max_what) {
  const std::string name(role);
  // O_NONBLOCK: a FIFO or device given by mistake must fail the regular-file
  // check below, not hang the open. It changes nothing for regular files.
  timers::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT) throw Error(fmt::format("{} {}: file not found", name, path.string()));
    throw Error(fmt::format("{} {}: cannot open: {}", name, path.string(), std::strerror(err)));
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    throw Error(fmt::format("{} {}: cannot stat: {}", name, path.string(), std::strerror(errno)));
  }
  if (!S_ISREG(info.st_mode)) {
    throw Error(fmt::format("{} {}: not a regular file", name, path.string()));
  }
  if (info.st_size == 0) throw Error(fmt::format("{} {}: file is empty", name, path.string()));
  const auto size = static_cast<std::uint64_t>(info.st_size);
  if (size > max_size) {
    throw Error(fmt::format("{} {}: {:.1f} MiB ({} bytes) is larger than {}", name, path.string(),
                            static_cast<double>(size) / (1 << 20), size, max_what));
  }
  std::vector<std::uint8_t> bytes(size);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw Error(fmt::format("{} {}: read failed: {}", name, path.string(), std::strerror(errno)));
    }
    if (n == 0) {
      throw Error(fmt::format("{} {}: file shrank to {} bytes while being read", name, path.string(), done));
    }
    done += static_cast<std::size_t>(n);
  }
  return ImageFile(path, name, std::move(bytes));
}

void ImageFile::fail(std::string_view what) const {
  throw Error(fmt::format("{} {}: {}", role_, path_.string(), what));
}

}  // namespace vmm::boot
