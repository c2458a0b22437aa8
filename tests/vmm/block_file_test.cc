// The io_uring disk image backend on temporary files: every way opening can
// fail, locking, I/O through O_DIRECT and buffered paths, discard and
// write-zeroes, completion only through process_completions(), teardown
// with requests in flight, and virtio-blk end to end on top of it.
#include "vmm/block_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "tests/common/temp_dir.h"
#include "tests/devices/virtio_rig.h"

namespace vmm {
namespace {

using devices::virtio::BlockOp;
using devices::virtio::BlockRequest;

using testing::TempDir;

std::vector<std::uint8_t> file_bytes(const std::string& path, std::uint64_t offset, std::size_t length) {
  std::vector<std::uint8_t> out(length);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(::pread(fd, out.data(), length, static_cast<off_t>(offset)), static_cast<ssize_t>(length));
  ::close(fd);
  return out;
}

std::string open_error(const std::string& path, BlockFile::Options options = {}) {
  try {
    BlockFile::open(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Recorder final : devices::virtio::BlockCompletion {
  void complete(std::span<const devices::virtio::BlockDone> batch) noexcept override {
    for (const auto& done : batch) results.emplace_back(done.tag, done.result);
  }
  std::vector<std::pair<std::uint64_t, std::int64_t>> results;
};

// Aligned host memory standing in for guest buffers.
struct Buffer {
  explicit Buffer(std::size_t size) : bytes(static_cast<std::uint8_t*>(std::aligned_alloc(4096, size))), length(size) {}
  ~Buffer() { std::free(bytes); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  iovec at(std::size_t offset, std::size_t n) const { return iovec{bytes + offset, n}; }
  std::uint8_t* bytes;
  std::size_t length;
};

// Drives the file until `count` completions were recorded (or 10 s passed).
void run_until(BlockFile& file, Recorder& recorder, std::size_t count) {
  for (int i = 0; i < 1000 && recorder.results.size() < count; ++i) {
    file.wait_and_process(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(recorder.results.size(), count);
}

TEST(BlockFile, EveryBadImageIsOneClearLine) {
  TempDir dir;
  EXPECT_NE(open_error(dir.file("missing.img")).find("no such file"), std::string::npos);
  EXPECT_NE(open_error(dir.path()).find("not a regular file or block device"), std::string::npos);
  EXPECT_NE(open_error("/dev/null").find("not a regular file or block device"), std::string::npos);
  const std::string small = dir.create("small.img", 100);
  const std::string message = open_error(small);
  EXPECT_NE(message.find("shorter than one 512-byte sector (100 bytes)"), std::string::npos) << message;
  EXPECT_NE(open_error(dir.create("empty.img", 0)).find("shorter than one"), std::string::npos);
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
  EXPECT_NE(message.find(small), std::string::npos) << "names the file";
}

TEST(BlockFile, PermissionDeniedIsReportedAsSuch) {
  TempDir dir;
  const std::string path = dir.create("private.img", 4096);
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  // Root opens anything: check as an unprivileged user, in a child.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
    const std::string m = open_error(path);
    [[maybe_unused]] ssize_t w = ::write(pipe_fds[1], m.data(), m.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string message;
  char chunk[256];
  for (ssize_t n; (n = ::read(pipe_fds[0], chunk, sizeof chunk)) > 0;) message.append(chunk, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "could not drop privileges";
  EXPECT_NE(message.find("permission denied (add ,readonly"), std::string::npos) << message;
}

TEST(BlockFile, ASecondWriterIsRefusedAndReadersShare) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 16);
  BlockFile::Options ro;
  ro.read_only = true;
  {
    auto writer = BlockFile::open(path, {});
    EXPECT_NE(open_error(path).find("in use"), std::string::npos) << "a second writer";
    EXPECT_NE(open_error(path, ro).find("in use"), std::string::npos) << "a reader while someone writes";
  }
  {
    auto reader = BlockFile::open(path, ro);
    auto another = BlockFile::open(path, ro);
    EXPECT_TRUE(reader->read_only());
    EXPECT_FALSE(reader->supports_discard());
    EXPECT_NE(open_error(path).find("in use"), std::string::npos) << "a writer while someone reads";
  }
  EXPECT_NO_THROW(BlockFile::open(path, {})) << "the locks went with their owners";
}

TEST(BlockFile, ReadsAndWritesCompleteOnlyThroughProcessCompletions) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 20, 0x11);
  auto file = BlockFile::open(path, {});
  EXPECT_EQ(file->size(), 1u << 20);
  Recorder recorder;
  file->set_completion(&recorder);

  Buffer out(16384);
  std::memset(out.bytes, 0x5A, 8192);        // direct-capable: aligned
  std::memset(out.bytes + 8192, 0x6B, 4096);  // and an unaligned piece, buffered
  const iovec aligned[] = {out.at(0, 4096), out.at(4096, 4096)};
  const iovec unaligned[] = {out.at(8192 + 1, 1000)};
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kWrite, 4096, 0, aligned, 1}));
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kWrite, 20000, 0, unaligned, 2}));
  file->kick();
  EXPECT_TRUE(recorder.results.empty()) << "nothing is reported from submit or kick";
  run_until(*file, recorder, 2);
  for (auto [tag, result] : recorder.results) EXPECT_EQ(result, tag == 1 ? 8192 : 1000) << tag;
  EXPECT_EQ(file_bytes(path, 4096, 8192), std::vector<std::uint8_t>(8192, 0x5A));
  EXPECT_EQ(file_bytes(path, 20000, 1000), std::vector<std::uint8_t>(1000, 0x6B));
  EXPECT_EQ(file_bytes(path, 4095, 1)[0], 0x11);

  Buffer in(8192);
  const iovec back[] = {in.at(0, 512), in.at(512, 7680)};
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kRead, 4096, 0, back, 3}));
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kFlush, 0, 0, {}, 4}));
  file->kick();
  run_until(*file, recorder, 4);
  // A read and a flush submitted together may complete in either order
  // (io_uring keeps no order between them, and virtio-blk asks for none).
  std::sort(recorder.results.begin() + 2, recorder.results.end());
  EXPECT_EQ(recorder.results[2], std::make_pair(std::uint64_t{3}, std::int64_t{8192}));
  EXPECT_EQ(recorder.results[3], std::make_pair(std::uint64_t{4}, std::int64_t{0}));
  EXPECT_EQ(std::vector<std::uint8_t>(in.bytes, in.bytes + 8192), std::vector<std::uint8_t>(8192, 0x5A));
  std::printf("O_DIRECT on %s: %s\n", dir.path().c_str(), file->direct_io() ? "yes" : "no");
}

TEST(BlockFile, DiscardAndWriteZeroesLeaveZeroesAndTheSize) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 17, 0x5A);
  auto file = BlockFile::open(path, {});
  Recorder recorder;
  file->set_completion(&recorder);
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kDiscard, 16384, 16384, {}, 1}));
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kWriteZeroes, 65536, 1024, {}, 2}));
  file->kick();
  run_until(*file, recorder, 2);
  for (auto [tag, result] : recorder.results) EXPECT_EQ(result, 0) << tag;
  const auto all = file_bytes(path, 0, 1 << 17);
  EXPECT_EQ(all[16383], 0x5A);
  EXPECT_EQ(std::vector<std::uint8_t>(all.begin() + 16384, all.begin() + 32768), std::vector<std::uint8_t>(16384, 0));
  EXPECT_EQ(all[32768], 0x5A);
  EXPECT_EQ(std::vector<std::uint8_t>(all.begin() + 65536, all.begin() + 66560), std::vector<std::uint8_t>(1024, 0));
  EXPECT_EQ(all[66560], 0x5A);
  EXPECT_EQ(std::filesystem::file_size(path), 1u << 17);
}

TEST(BlockFile, AReadPastTheEndOfAShrunkFileFails) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 16);
  auto file = BlockFile::open(path, {});
  ASSERT_EQ(::truncate(path.c_str(), 4096), 0);  // someone else shrinks it
  Recorder recorder;
  file->set_completion(&recorder);
  Buffer in(4096);
  const iovec v[] = {in.at(0, 4096)};
  ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kRead, 8192, 0, v, 7}));
  file->kick();
  run_until(*file, recorder, 1);
  EXPECT_EQ(recorder.results[0].second, -EIO);
}

TEST(BlockFile, QueueDepthBoundsSubmissions) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 16);
  BlockFile::Options options;
  options.queue_depth = 4;
  auto file = BlockFile::open(path, options);
  EXPECT_EQ(file->max_in_flight(), 4u);
  for (std::uint64_t i = 0; i < 4; ++i) EXPECT_TRUE(file->submit(BlockRequest{BlockOp::kFlush, 0, 0, {}, i}));
  EXPECT_FALSE(file->submit(BlockRequest{BlockOp::kFlush, 0, 0, {}, 9}));
  Recorder recorder;
  file->set_completion(&recorder);
  file->kick();
  run_until(*file, recorder, 4);
  EXPECT_EQ(file->in_flight(), 0u);
  EXPECT_TRUE(file->submit(BlockRequest{BlockOp::kFlush, 0, 0, {}, 10}));
}

// A vCPU thread that served a notification reaps what io_uring finished
// inline while the I/O thread reaps the rest: several threads in
// process_completions() at once, each request reported exactly once.
TEST(BlockFile, SeveralThreadsProcessCompletionsAtOnceAndEachIsReportedOnce) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 16, 0x33);
  auto file = BlockFile::open(path, {});
  struct LockedRecorder final : devices::virtio::BlockCompletion {
    void complete(std::span<const devices::virtio::BlockDone> batch) noexcept override {
      std::lock_guard lock(mu);
      for (const auto& done : batch) results.emplace_back(done.tag, done.result);
    }
    std::mutex mu;
    std::vector<std::pair<std::uint64_t, std::int64_t>> results;
  } recorder;
  file->set_completion(&recorder);
  constexpr unsigned kSubmitters = 3, kEach = 200;
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop.load()) file->wait_and_process(std::chrono::milliseconds(1));
  });
  std::vector<std::thread> submitters;
  for (unsigned t = 0; t < kSubmitters; ++t) {
    submitters.emplace_back([&, t] {
      Buffer buffer(4096);
      for (unsigned i = 0; i < kEach; ++i) {
        const iovec one[] = {buffer.at(0, 4096)};
        const std::uint64_t tag = std::uint64_t{t} * kEach + i;
        while (!file->submit(BlockRequest{BlockOp::kRead, (tag % 16) * 4096, 0, one, tag})) file->process_completions();
        file->kick();
        file->process_completions();
        // The buffer is reused: wait until this read was reported (a lost
        // completion fails the test below instead of hanging it).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        for (;;) {
          {
            std::lock_guard lock(recorder.mu);
            if (std::any_of(recorder.results.begin(), recorder.results.end(),
                            [&](const auto& r) { return r.first == tag; })) {
              break;
            }
          }
          if (std::chrono::steady_clock::now() > deadline) return;
          file->process_completions();
        }
      }
    });
  }
  for (auto& s : submitters) s.join();
  stop.store(true);
  loop.join();
  std::sort(recorder.results.begin(), recorder.results.end());
  ASSERT_EQ(recorder.results.size(), std::size_t{kSubmitters} * kEach);
  for (std::size_t i = 0; i < recorder.results.size(); ++i) {
    EXPECT_EQ(recorder.results[i], std::make_pair(std::uint64_t{i}, std::int64_t{4096})) << "reported once, whole";
  }
  EXPECT_EQ(file->in_flight(), 0u);
}

TEST(BlockFile, DestroyingWithRequestsInFlightWaitsAndReportsNothing) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 20, 0x22);
  Recorder recorder;
  Buffer in(1 << 20);
  {
    auto file = BlockFile::open(path, {});
    file->set_completion(&recorder);
    for (std::uint64_t i = 0; i < 16; ++i) {
      const iovec v[] = {in.at(i * 65536, 65536)};
      ASSERT_TRUE(file->submit(BlockRequest{BlockOp::kRead, i * 65536, 0, v, i}));
    }
    file->kick();
  }
  EXPECT_TRUE(recorder.results.empty());
  EXPECT_EQ(in.bytes[(1 << 20) - 1], 0x22) << "the reads had finished when the destructor returned";
}

// ---- virtio-blk on an image file --------------------------------------------------

using FileRig = testing::BasicBlockRig<BlockFile>;
using devices::virtio::VirtioBlock;

void run_until_used(FileRig& rig, std::uint16_t used) {
  for (int i = 0; i < 1000 && rig.driver.ring().used_idx() != used; ++i) {
    rig.backend.wait_and_process(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(rig.driver.ring().used_idx(), used);
}

TEST(BlockFile, VirtioBlockEndToEnd) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 20);
  FileRig rig(BlockFile::open(path, {}), "root", 64);
  ASSERT_TRUE(rig.driver.init(FileRig::kFeatures));
  auto w = rig.post(0, VirtioBlock::kTypeOut, 8, 4096, false);
  rig.fill(w.data, 4096, 0xA5);
  rig.driver.kick();
  run_until_used(rig, 1);
  EXPECT_EQ(rig.status_of(w), VirtioBlock::kStatusOk);
  EXPECT_EQ(file_bytes(path, 8 * 512, 4096), std::vector<std::uint8_t>(4096, 0xA5));

  auto f = rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  auto r = rig.post(2, VirtioBlock::kTypeIn, 8, 4096, true);
  rig.driver.kick();
  run_until_used(rig, 3);
  EXPECT_EQ(rig.status_of(f), VirtioBlock::kStatusOk);
  EXPECT_EQ(rig.status_of(r), VirtioBlock::kStatusOk);
  EXPECT_EQ(rig.bytes(r.data, 4096), std::vector<std::uint8_t>(4096, 0xA5));

  // Reset with reads in flight: none is completed to the driver, and the
  // reset finishes once the file has answered them.
  for (unsigned i = 3; i < 11; ++i) rig.post(i, VirtioBlock::kTypeIn, i * 8, 4096, true);
  rig.driver.kick();
  rig.driver.set_status(0);
  for (int i = 0; i < 1000 && rig.block.in_flight() != 0; ++i) {
    rig.backend.wait_and_process(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(rig.function.wait_idle(std::chrono::milliseconds(0)));
  EXPECT_EQ(rig.driver.status(), 0);
  EXPECT_EQ(rig.driver.ring().used_idx(), 3) << "nothing from before the reset";
}

// The device's loop thread drives the file while the guest (this thread)
// posts requests and the device is reset now and then: no data race between
// the device's lock and the file's (run under TSan), every reset finishes.
TEST(BlockFile, ALoopThreadDrivesCompletionsWhileTheGuestResets) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 20);
  FileRig rig(BlockFile::open(path, {}), "loop", 64);
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop.load(std::memory_order_acquire)) rig.backend.wait_and_process(std::chrono::milliseconds(5));
  });
  for (int round = 0; round < 100; ++round) {
    ASSERT_TRUE(rig.driver.init(FileRig::kFeatures));
    for (unsigned i = 0; i < 8; ++i) {
      rig.post(i, i % 2 ? VirtioBlock::kTypeIn : VirtioBlock::kTypeOut, i * 8, 4096, i % 2 != 0);
    }
    rig.driver.kick();
    if (round % 2 == 0) {
      while (rig.driver.ring().used_idx() != 8) std::this_thread::yield();
    }
    rig.function.reset();
    ASSERT_TRUE(rig.function.wait_idle(std::chrono::seconds(10))) << "round " << round;
  }
  stop.store(true, std::memory_order_release);
  loop.join();
  EXPECT_EQ(rig.backend.in_flight(), 0u);
}

TEST(BlockFile, ReadOnlyImageRefusesGuestWrites) {
  TempDir dir;
  const std::string path = dir.create("disk.img", 1 << 20, 0x33);
  BlockFile::Options ro;
  ro.read_only = true;
  FileRig rig(BlockFile::open(path, ro), "ro", 64);
  ASSERT_TRUE(rig.driver.init(devices::virtio::bit(devices::virtio::kFeatureVersion1)));
  auto w = rig.post(0, VirtioBlock::kTypeOut, 0, 512, false);
  rig.driver.kick();
  EXPECT_EQ(rig.status_of(w), VirtioBlock::kStatusIoErr);
  EXPECT_EQ(file_bytes(path, 0, 512), std::vector<std::uint8_t>(512, 0x33));
}

}  // namespace
}  // namespace vmm
