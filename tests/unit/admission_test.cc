// Admission (core/replica/admission.h): slots, the memory budget and the
// host's free memory each refuse a replica that would not fit, with what is
// short; a destroyed replica gives its room back. And /proc/meminfo parsing.
#include "slingshot/replica/admission.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

namespace slingshot {
namespace {

// A host whose free memory the test sets.
struct Host {
  uint64_t total = 4096, free = 4096;
  Admission::MemoryFn fn() {
    return [this]() -> Result<HostMemory> { return HostMemory{total, free}; };
  }
};

std::unique_ptr<Admission> Made(Result<std::unique_ptr<Admission>> r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(AdmissionTest, TheBudgetIsTheFreeMemoryAtStartLessTheReserve) {
  Host host;
  host.free = 1280;
  auto a = Admission::Make(AdmissionOptions{8, 0, 256}, host.fn());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->State().budget_mib, 1024u);
  EXPECT_EQ((*a)->State().host_free_mib, 1024u);
  host.free = 200;  // less than the reserve: no room for replicas at all
  auto none = Admission::Make(AdmissionOptions{8, 0, 256}, host.fn());
  EXPECT_EQ(none.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(none.status().message().find("no memory for replicas"), std::string::npos);
}

TEST(AdmissionTest, SlotsRefuseOneReplicaTooMany) {
  Host host;
  auto a = Made(Admission::Make(AdmissionOptions{2, 0, 256}, host.fn()));
  auto t1 = a->Admit("notepad for alice", 100);
  auto t2 = a->Admit("notepad for bob", 100);
  ASSERT_TRUE(t1.ok() && t2.ok());
  auto t3 = a->Admit("notepad for carol", 100);
  ASSERT_EQ(t3.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(t3.status().message().find("cannot host notepad for carol: it already runs 2 of its 2 replicas"),
            std::string::npos)
      << t3.status().ToString();
  t1->reset();  // alice's replica is destroyed: its slot is free again
  EXPECT_TRUE(a->Admit("notepad for carol", 100).ok());
}

TEST(AdmissionTest, TheBudgetCountsWhatAdmittedReplicasNeedEvenBeforeTheyTouchIt) {
  Host host;  // QEMU-like: the host's free memory does not drop when a guest starts
  auto a = Made(Admission::Make(AdmissionOptions{8, 300, 256}, host.fn()));
  auto t1 = a->Admit("notepad for alice", 160);
  ASSERT_TRUE(t1.ok());
  (*t1)->Started();
  auto t2 = a->Admit("notepad for bob", 160);
  ASSERT_EQ(t2.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(t2.status().message().find("needs 160 MiB of memory, and 140 MiB of the 300 MiB for replicas are free"),
            std::string::npos)
      << t2.status().ToString();
  EXPECT_EQ(a->State().committed_mib, 160u);
  t1->reset();
  EXPECT_EQ(a->State().committed_mib, 0u);
  EXPECT_TRUE(a->Admit("notepad for bob", 160).ok());
}

TEST(AdmissionTest, TheHostsFreeMemoryLessTheReserveAndReplicasBeingMadeMustHoldIt) {
  Host host;
  auto a = Made(Admission::Make(AdmissionOptions{8, 4000, 256}, host.fn()));
  host.free = 700;  // something else took memory since the start
  auto t1 = a->Admit("notepad for alice", 300);  // 700 - 256 = 444: fits
  ASSERT_TRUE(t1.ok());
  // Not started yet: its 300 MiB are still to come out of the host's 700.
  auto t2 = a->Admit("notepad for bob", 300);
  ASSERT_EQ(t2.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(t2.status().message().find("the host has 700 MiB free, of which 256 MiB are its reserve and 300 MiB go to "
                                       "replicas being made"),
            std::string::npos)
      << t2.status().ToString();
  EXPECT_EQ(a->State().host_free_mib, 144u);
  // Xen-like: once alice's domain exists, its memory is out of the host's free memory.
  (*t1)->Started();
  host.free = 400;
  EXPECT_EQ(a->State().host_free_mib, 144u);
  EXPECT_FALSE(a->Admit("notepad for bob", 300).ok());
  EXPECT_TRUE(a->Admit("a small service for bob", 144).ok());
}

TEST(HypervisorMemoryTest, MemInfoGivesTotalAndAvailable) {
  testing::TempDir t;
  std::ofstream(t / "meminfo") << "MemTotal:       24576000 kB\nMemFree:        1000 kB\nMemAvailable:   2048000 kB\n";
  auto m = ReadMemInfo(t / "meminfo");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->total_mib, 24000u);
  EXPECT_EQ(m->free_mib, 2000u);
  std::ofstream(t / "old") << "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
  EXPECT_EQ(ReadMemInfo(t / "old").status().code(), Status::Code::kCorruption);
  auto real = ReadMemInfo("/proc/meminfo");
  ASSERT_TRUE(real.ok()) << real.status().ToString();
  EXPECT_GT(real->total_mib, 0u);
  EXPECT_LE(real->free_mib, real->total_mib);
}

}  // namespace
}  // namespace slingshot
