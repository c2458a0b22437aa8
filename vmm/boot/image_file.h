// A kernel or initrd file opened for loading. Owns the descriptor, knows its
// size up front (so oversize images are refused before anything is read),
// and turns every way a file can be wrong into a vmm::Error naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "timers/unique_fd.h"

namespace vmm::boot {

class ImageFile {
 public:
  // `role` ("kernel", "initrd") starts every error message. Throws when the
  // file is missing, unreadable, not a regular file, or empty.
  static ImageFile open(const std::filesystem::path& path, std::string_view role);

  const std::filesystem::path& path() const noexcept { return path_; }
  const std::string& role() const noexcept { return role_; }
  std::uint64_t size() const noexcept { return size_; }

  // Fills `out` from the start of the file. Throws when the file is shorter
  // than it was at open (it changed underneath us) or a read fails.
  void read_into(std::span<std::uint8_t> out) const;
  std::vector<std::uint8_t> read_all() const;

  // "<role> <path>: <what>", for the loaders' own errors about this file.
  [[noreturn]] void fail(std::string_view what) const;

 private:
  ImageFile(timers::UniqueFd fd, std::filesystem::path path, std::string role, std::uint64_t size)
      : fd_(std::move(fd)), path_(std::move(path)), role_(std::move(role)), size_(size) {}

  timers::UniqueFd fd_;
  std::filesystem::path path_;
  std::string role_;
  std::uint64_t size_ = 0;
};

}  // namespace vmm::boot
