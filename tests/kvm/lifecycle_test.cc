// Pause, resume, stop and restart of vCPU threads; the kick that cannot be
// lost; create/destroy cycles that leak nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

#include "devices/error.h"
#include "tests/common/sync.h"
#include "kvm_fixture.h"
#include "timers/race_points.h"
#include "vmm/boot/entry_state.h"
#include "vmm/boot/gdt.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;

std::uint64_t guest_rcx(VcpuThread& vcpu) { return vcpu.vcpu().regs().rcx; }

TEST(Lifecycle, PauseResumeStopAVcpuBlockedInHlt) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(hlt));
  m.enter_flat32(0);
  EXPECT_FALSE(m.vcpu(0).pause()) << "nothing to pause before start";
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::created);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  std::this_thread::sleep_for(10ms);  // let it reach the HLT

  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(m.vcpu(0).pause());
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(m.vcpu(0).state(), VcpuState::paused);
    EXPECT_LT(waited, 100ms);
    EXPECT_TRUE(m.vcpu(0).pause()) << "pausing a paused vCPU is a no-op";
    m.vcpu(0).resume();
  }
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::exited);
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::stopped);
  EXPECT_EQ(m.reports.count(PORT_MARK), 1u) << "a kicked HLT does not run on past the HLT";
  EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u);
  m.vcpu(0).stop();  // idempotent
  EXPECT_FALSE(m.vcpu(0).pause());
}

TEST(Lifecycle, PauseReallyStopsASpinningGuest) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(spin));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  std::this_thread::sleep_for(50ms);

  ASSERT_TRUE(m.vcpu(0).pause());
  const std::uint64_t a = guest_rcx(m.vcpu(0));
  EXPECT_GT(a, 0u) << "the guest ran";
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(guest_rcx(m.vcpu(0)), a) << "a paused guest does not advance";
  m.vcpu(0).resume();
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(m.vcpu(0).pause());
  const std::uint64_t b = guest_rcx(m.vcpu(0));
  EXPECT_GT(b, a) << "a resumed guest advances";
  std::printf("[ info ] spin loop: %.1f M iterations/s\n", static_cast<double>(b - a) / 50e3);
  m.vcpu(0).resume();
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::stopped);
  EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u);
}

// Many kicks against a guest that is either always inside KVM_RUN (spin) or
// constantly between exits (outloop): every pause must land promptly and
// never need a second kick.
void kick_storm(std::span<const std::uint8_t> image, int rounds) {
  TestMachine m;
  m.load(image);
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> pause_us(0, 300);
  auto worst = std::chrono::steady_clock::duration::zero();
  for (int i = 0; i < rounds; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(m.vcpu(0).pause()) << "round " << i;
    worst = std::max(worst, std::chrono::steady_clock::now() - t0);
    ASSERT_EQ(m.vcpu(0).state(), VcpuState::paused);
    m.vcpu(0).resume();
  }
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u);
  EXPECT_TRUE(m.events.events().empty());
  std::printf("[ info ] %d pauses, slowest %lld us, %llu KVM_RUN calls, %llu EINTR exits\n", rounds,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(worst).count()),
              static_cast<unsigned long long>(m.vcpu(0).stats().runs),
              static_cast<unsigned long long>(m.vcpu(0).stats().intr_exits));
}

TEST(Lifecycle, KickStormAgainstASpinningGuest) {
  SKIP_WITHOUT_KVM();
  kick_storm(GUEST_IMAGE(spin), 300);
}

TEST(Lifecycle, KickStormAgainstAGuestBetweenExits) {
  SKIP_WITHOUT_KVM();
  kick_storm(GUEST_IMAGE(outloop), 300);
}

// Forces the window the design has to cover: the vCPU returned from KVM_RUN
// (an I/O exit) and has not yet acknowledged anything when pause() kicks it.
// The kick is recorded as a request under the state lock, so the vCPU must
// park at its next check instead of re-entering the guest.
struct ParkAtAck {
  std::atomic<bool> armed{false};
  std::atomic<int> hits{0};
  Gate parked;
  Gate release;
  static void hook(timers::RacePoint point, void* context) {
    auto* self = static_cast<ParkAtAck*>(context);
    if (point != timers::RacePoint::vcpu_exit_before_kick_ack) return;
    self->hits.fetch_add(1);
    if (!self->armed.exchange(false)) return;
    self->parked.open();
    self->release.wait();
  }
};

TEST(Lifecycle, KickBetweenExitAndAcknowledgementIsNotLost) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(outloop));
  m.enter_flat32(0);
  ParkAtAck park;
  timers::set_race_hook(&ParkAtAck::hook, &park);
  struct Unhook {
    ~Unhook() { timers::set_race_hook(nullptr, nullptr); }
  } unhook;

  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  park.armed = true;
  ASSERT_TRUE(park.parked.wait_for(std::chrono::milliseconds(5000))) << "race point never reached";
  EXPECT_GT(park.hits.load(), 0);

  auto paused = std::async(std::launch::async, [&] { return m.vcpu(0).pause(); });
  // pause() has set the request, immediate_exit and the signal by now (or
  // will, without our help); the vCPU is still held inside the window.
  EXPECT_EQ(paused.wait_for(50ms), std::future_status::timeout);
  const std::size_t marks_before = m.reports.count(PORT_MARK);
  park.release.open();
  ASSERT_EQ(paused.wait_for(2s), std::future_status::ready);
  EXPECT_TRUE(paused.get());
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::paused);
  // The exit that was in flight is completed (its write recorded, and KVM
  // finished the OUT so RIP is past it), and nothing more ran.
  EXPECT_EQ(m.reports.count(PORT_MARK), marks_before + 1) << "no guest instruction ran after the kick";
  std::uint8_t opcode = 0;
  ASSERT_TRUE(m.memory.read_obj(m.vcpu(0).vcpu().regs().rip, opcode));
  EXPECT_EQ(opcode, 0xebu) << "RIP is at the JMP after the OUT: the instruction was completed before parking";
  EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u) << "one kick was enough";
  m.vcpu(0).resume();
  m.vcpu(0).stop();
}

TEST(Lifecycle, StopFromManyThreadsAtOnceAndAtAnyMoment) {
  SKIP_WITHOUT_KVM();
  for (int round = 0; round < 20; ++round) {
    TestMachine m;
    m.load(round % 2 == 0 ? GUEST_IMAGE(spin) : GUEST_IMAGE(outloop));
    m.enter_flat32(0);
    m.vcpu(0).start();
    if (round % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(100 * round));
    std::vector<std::thread> stoppers;
    for (int t = 0; t < 3; ++t) stoppers.emplace_back([&] { m.vcpu(0).stop(); });
    std::thread pauser([&] { m.vcpu(0).pause(); });
    for (auto& t : stoppers) t.join();
    pauser.join();
    EXPECT_EQ(m.vcpu(0).state(), VcpuState::exited);
    EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::stopped);
    // Restart after stop, as after a reset.
    m.enter_flat32(0);
    m.vcpu(0).start();
    EXPECT_THROW(m.vcpu(0).start(), Error) << "starting a running vCPU is refused";
    m.vcpu(0).stop();
    EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u);
  }
}

TEST(Lifecycle, StopFromTheVcpusOwnEventCallbackDoesNotDeadlock) {
  SKIP_WITHOUT_KVM();
  // An events sink that stops the reporting vCPU from inside the callback.
  struct SelfStopper : VcpuEvents {
    VcpuThread* vcpu = nullptr;
    Gate done;
    void reset_requested(unsigned, std::string_view) noexcept override {
      vcpu->stop();
      vcpu->pause();
      done.open();
    }
    void poweroff_requested(unsigned, std::string_view) noexcept override {}
    void fatal_error(unsigned, std::string_view) noexcept override {}
  } events;
  KvmVm vm(kvm_system());
  vm.enable_split_irqchip(24);
  auto memory = devices::GuestMemory::allocate(2 << 20);
  vm.set_memory(memory);
  devices::Bus pio("pio"), mmio("mmio");
  VcpuThread vcpu(vm.create_vcpu(0), VcpuIo{&pio, &mmio, {}}, events);
  events.vcpu = &vcpu;
  ASSERT_TRUE(memory.write(GUEST_LOAD, GUEST_IMAGE(triple)));
  boot::EntryState state;
  state.mode = boot::EntryMode::pvh32;
  boot::gdt::install(memory, state);
  state.cr0 = boot::kCr0Pe | boot::kCr0Et;
  state.rip = GUEST_LOAD;
  apply_entry_state(vcpu.vcpu(), state);
  vcpu.start();
  ASSERT_TRUE(events.done.wait_for(std::chrono::milliseconds(10000)));
  vcpu.stop();
  EXPECT_EQ(vcpu.last_exit(), VcpuExit::reset);
}

// 200 complete VM lifetimes in one process: create, start, (sometimes wait
// for the guest, pause, resume), stop, destroy. Nothing may accumulate.
TEST(Lifecycle, TwoHundredCreateStartStopDestroyCyclesLeakNothing) {
  SKIP_WITHOUT_KVM();
  auto cycle = [](int i) {
    TestMachine m({.vcpus = i % 10 == 0 ? 2u : 1u});
    m.load(GUEST_IMAGE(spin));
    m.enter_flat32(0);
    if (i % 10 == 0) m.vcpu(1).start();  // an AP waiting for a SIPI that never comes
    m.vcpu(0).start();
    switch (i % 4) {
      case 0:  // force stop mid-boot: no waiting at all
        break;
      case 1:
        ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1)) << "cycle " << i;
        break;
      case 2:
        ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1)) << "cycle " << i;
        ASSERT_TRUE(m.vcpu(0).pause());
        m.vcpu(0).resume();
        break;
      case 3:
        ASSERT_TRUE(m.vcpu(0).pause() || m.vcpu(0).state() == VcpuState::exited);
        break;
    }
    // Destruction stops (and joins) every vCPU, closes every fd, unmaps
    // kvm_run pages and guest RAM.
  };
  // malloc gives each thread that allocates concurrently its own arena (a
  // mapping that glibc keeps for reuse); let those settle before counting.
  for (int i = 0; i < 20; ++i) cycle(i);
  const ProcessResources before = process_resources();
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int kCycles = 200;
  for (int i = 0; i < kCycles; ++i) {
    cycle(i);
    if (HasFatalFailure()) return;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const ProcessResources after = process_resources();
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.threads, before.threads);
  EXPECT_EQ(after.kvm_mappings, before.kvm_mappings);
  // glibc may still add an arena (two mappings) when several threads happen
  // to allocate at once; it keeps at most 8 per core and reuses them. A leak
  // of guest RAM or kvm_run pages would show as hundreds.
  EXPECT_LE(after.mappings, before.mappings + 4);
  std::printf("[ info ] %d VM lifetimes in %.0f ms (%.2f ms each); fds %zu, threads %zu, mappings %zu\n", kCycles,
              ms, ms / kCycles, after.fds, after.threads, after.mappings);
}

}  // namespace
}  // namespace vmm::testing
