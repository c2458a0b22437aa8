// Set-up error messages that do not need /dev/kvm to be checked.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "devices/error.h"
#include "vmm/kvm.h"

namespace vmm {
namespace {

TEST(KvmErrors, MissingDeviceSuggestsLoadingTheModule) {
  const std::string m = KvmSystem::open_error_message("/dev/kvm", ENOENT);
  EXPECT_NE(m.find("/dev/kvm"), std::string::npos) << m;
  EXPECT_NE(m.find("is the kvm module loaded?"), std::string::npos) << m;
}

TEST(KvmErrors, PermissionDeniedSuggestsTheKvmGroup) {
  for (int err : {EACCES, EPERM}) {
    const std::string m = KvmSystem::open_error_message("/dev/kvm", err);
    EXPECT_NE(m.find("add your user to the kvm group"), std::string::npos) << m;
  }
}

TEST(KvmErrors, OnlyVmxOrSvmAmongTheFlagsCountsAsHardwareVirtualization) {
  const std::string head = "processor\t: 0\nvendor_id\t: AuthenticAMD\n";
  EXPECT_TRUE(KvmSystem::cpuinfo_offers_virtualization(head + "flags\t\t: fpu vme svm lahf_lm\n"));
  EXPECT_TRUE(KvmSystem::cpuinfo_offers_virtualization(head + "flags\t\t: fpu vmx\nbugs\t\t: spectre_v1\n"));
  // PVM's guest kernel: the hypervisor flag, and no vmx or svm.
  EXPECT_FALSE(KvmSystem::cpuinfo_offers_virtualization(head + "flags\t\t: fpu hypervisor cx16 xsave\n"));
  // Only whole words of the flags line count.
  EXPECT_FALSE(KvmSystem::cpuinfo_offers_virtualization(head + "flags\t\t: fpu svm_lock vmxx\n"));
  EXPECT_FALSE(KvmSystem::cpuinfo_offers_virtualization(head + "vmx flags\t: ept vpid\nflags\t\t: fpu\n"));
  EXPECT_FALSE(KvmSystem::cpuinfo_offers_virtualization(""));
}

TEST(KvmErrors, OpeningANonexistentPathThrowsTheActionableMessage) {
  try {
    KvmSystem system("/nonexistent/kvm-device");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is the kvm module loaded?"), std::string::npos) << e.what();
  }
}

TEST(KvmErrors, ANonKvmDeviceIsRejected) {
  // /dev/null opens fine but answers no KVM ioctl.
  try {
    KvmSystem system("/dev/null");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a KVM device"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vmm

namespace vmm {
namespace {

// The values a C compiler computes from <linux/kvm.h>: the ABI. The C++
// view of the same headers gets them wrong (see vmm/kvm.h, detail).
TEST(KvmAbi, FlexibleArrayIoctlsMatchTheCAbi) {
  EXPECT_EQ(detail::kIoctlGetSupportedCpuid, 0xc008ae05ul);
  EXPECT_EQ(detail::kIoctlSetCpuid2, 0x4008ae90ul);
  EXPECT_EQ(detail::kIoctlGetCpuid2, 0xc008ae91ul);
  EXPECT_EQ(detail::kIoctlGetMsrs, 0xc008ae88ul);
  EXPECT_EQ(detail::kIoctlSetMsrs, 0x4008ae89ul);
  EXPECT_EQ(detail::kIoctlGetMsrIndexList, 0xc004ae02ul);
  EXPECT_EQ(detail::kIoctlSetGsiRouting, 0x4008ae6aul);
  EXPECT_EQ(detail::kIoctlSetSignalMask, 0x4004ae8bul);
}

TEST(KvmAbi, FlexBufferPutsEntriesRightAfterTheHeader) {
  detail::FlexBuffer<detail::Cpuid2Header, kvm_cpuid_entry2> cpuid(3);
  EXPECT_EQ(reinterpret_cast<char*>(cpuid.entries()) - reinterpret_cast<char*>(cpuid.get()), 8);
  detail::FlexBuffer<detail::MsrListHeader, std::uint32_t> list(3);
  EXPECT_EQ(reinterpret_cast<char*>(list.entries()) - reinterpret_cast<char*>(list.get()), 4);
  detail::FlexBuffer<detail::SignalMaskHeader, std::uint8_t> mask(8);
  EXPECT_EQ(reinterpret_cast<char*>(mask.entries()) - reinterpret_cast<char*>(mask.get()), 4);
  EXPECT_EQ(sizeof(kvm_run), 2352u) << "structures without flexible arrays are fine";
}

}  // namespace
}  // namespace vmm
