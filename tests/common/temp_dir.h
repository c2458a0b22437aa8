// A private temporary directory for a test, removed with everything in it.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
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

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Creates (or truncates) `name` holding `size` bytes of `fill`; returns its path.
  std::string create(const std::string& name, std::size_t size, std::uint8_t fill = 0) const {
    const std::string p = file(name);
    const std::vector<std::uint8_t> bytes(size, fill);
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const bool ok = fd >= 0 && ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
    if (fd >= 0) ::close(fd);
    if (!ok) throw std::runtime_error("cannot create " + p);
    return p;
  }

 private:
  std::string path_;
};

}  // namespace vmm::testing
