// Backend selection, without starting a VM (tests/vm starts real ones).
#include "slingshot/vm/hypervisor.h"

#include <gtest/gtest.h>

namespace slingshot::testing {
namespace {

TEST(HypervisorTest, UnknownChoicesAreRefusedByName) {
  HypervisorOptions o;
  o.backend = "vmware";
  auto h = OpenHypervisor(o);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(h.status().message().find("auto, qemu or xen"), std::string::npos);

  o.backend = "qemu";
  o.accel = "hvf";
  h = OpenHypervisor(o);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("auto, kvm or tcg"), std::string::npos);
}

TEST(HypervisorTest, MissingQemuSaysWhatToInstall) {
  HypervisorOptions o;
  o.backend = "qemu";
  o.accel = "tcg";
  o.qemu_binary = "qemu-system-does-not-exist";
  auto h = OpenHypervisor(o);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Status::Code::kNotFound);
  EXPECT_NE(h.status().message().find("install qemu-system-x86"), std::string::npos);
}

TEST(HypervisorTest, ForcedTcgNamesItself) {
  HypervisorOptions o;
  o.backend = "qemu";
  o.accel = "tcg";
  auto h = OpenHypervisor(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ((*h)->Name(), "qemu-tcg");
  EXPECT_TRUE((*h)->List().empty());
  EXPECT_EQ((*h)->Destroy("nothing").code(), Status::Code::kNotFound);
  VmSpec bad;
  bad.name = "bad name!";
  EXPECT_EQ((*h)->Boot(bad).code(), Status::Code::kInvalidArgument);
  bad.name = "ok";
  bad.kernel = "/no/such/kernel";
  Status s = (*h)->Boot(bad);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("/no/such/kernel"), std::string::npos);
}

TEST(HypervisorTest, XenOutsideDom0FailsClearly) {
  std::string why;
  if (XenIsRunning(&why)) GTEST_SKIP() << "this machine is a Xen dom0";
  EXPECT_FALSE(why.empty());
  HypervisorOptions o;
  o.backend = "xen";
  auto h = OpenHypervisor(o);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("dom0"), std::string::npos) << h.status().ToString();
  // Auto picks QEMU here.
  o.backend = "auto";
  o.accel = "tcg";
  h = OpenHypervisor(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ((*h)->Name(), "qemu-tcg");
}

TEST(HypervisorTest, KvmProbeFailsWithoutQemu) {
  Status s = ProbeKvm("/nonexistent/qemu", 1000);
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace slingshot::testing
