// A private directory under $TMPDIR, removed with everything in it when the
// object dies: one per test, so tests never share or leave files.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace vmm::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "vmm-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + ".XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  // The path of `name` in the directory (nothing is created).
  std::string file(std::string_view name) const { return (path_ / name).string(); }

  // Creates `name` holding `contents` and returns its path.
  std::filesystem::path write(std::string_view name, const std::vector<std::uint8_t>& contents) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(contents.data()), static_cast<std::streamsize>(contents.size()));
    if (!out) throw std::runtime_error("cannot write " + file.string());
    return file;
  }
  std::filesystem::path write(std::string_view name, std::string_view contents) const {
    return write(name, std::vector<std::uint8_t>(contents.begin(), contents.end()));
  }
  // Creates (or truncates) `name` holding `size` bytes of `fill`; returns its path.
  std::string create(std::string_view name, std::size_t size, std::uint8_t fill = 0) const {
    const std::string p = file(name);
    const std::vector<std::uint8_t> bytes(size, fill);
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const bool ok = fd >= 0 && ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
    if (fd >= 0) ::close(fd);
    if (!ok) throw std::runtime_error("cannot create " + p);
    return p;
  }

 private:
  std::filesystem::path path_;
};

// Every byte of the file at `path` (empty when it cannot be read).
inline std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace vmm::testing
