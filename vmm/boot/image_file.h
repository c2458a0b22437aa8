// A kernel or initrd file, read whole once when it is opened. Every boot of
// the VM loads from these bytes, so a file replaced, truncated or deleted
// while the VM runs changes nothing, and a reboot opens nothing. The size is
// checked before anything is read (an oversize image is refused without
// reading it), and every way a file can be wrong becomes a vmm::Error naming
// the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::boot {

class ImageFile {
 public:
  // `role` ("kernel", "initrd") starts every error message. Throws when the
  // file is missing, unreadable, not a regular file, empty, larger than
  // `max_size` (`max_what` says what that limit is), or changes size while
  // it is read.
  static ImageFile open(const std::filesystem::path& path, std::string_view role,
                        std::uint64_t max_size = UINT64_MAX, std::string_view max_what = {});

  // An image that is already in memory (the loader fuzz target): `path`
  // only names it in error messages.
  static ImageFile from_bytes(std::filesystem::path path, std::string_view role, std::vector<std::uint8_t> bytes) {
    return ImageFile(std::move(path), std::string(role), std::move(bytes));
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  const std::string& role() const noexcept { return role_; }
  std::uint64_t size() const noexcept { return bytes_.size(); }
  std::span<const std::uint8_t> bytes() const noexcept { return bytes_; }

  // "<role> <path>: <what>", for the loaders' own errors about this file.
  [[noreturn]] void fail(std::string_view what) const;

 private:
  ImageFile(std::filesystem::path path, std::string role, std::vector<std::uint8_t> bytes)
      : path_(std::move(path)), role_(std::move(role)), bytes_(std::move(bytes)) {}

  std::filesystem::path path_;
  std::string role_;
  std::vector<std::uint8_t> bytes_;
};

}  // namespace vmm::boot
