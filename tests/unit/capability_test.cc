// Roles, capabilities (net/capability.h, tls.h).
#include <gtest/gtest.h>

#include <ctime>

#include "slingshot/net/capability.h"
#include "slingshot/net/tls.h"

namespace slingshot {
namespace {

TEST(RoleTest, NamesRoundTripAndAnythingElseIsUnknown) {
  for (Role r : {Role::kHome, Role::kClient, Role::kSurrogate, Role::kAgent, Role::kPairing, Role::kCa}) {
    EXPECT_EQ(ParseRole(RoleName(r)), r) << RoleName(r);
  }
  EXPECT_EQ(ParseRole("Home"), Role::kUnknown);
  EXPECT_EQ(ParseRole(""), Role::kUnknown);
  EXPECT_EQ(ParseRole("surrogate "), Role::kUnknown);
  EXPECT_STREQ(RoleName(Role::kUnknown), "unknown");
}

TEST(CapabilityTest, ScopeRoundTrips) {
  Capability c{"notepad", "alice-laptop", 0, ""};
  EXPECT_EQ(c.Scope(), "service=notepad;client=alice-laptop");
  auto back = Capability::ParseScope(c.Scope());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->service, "notepad");
  EXPECT_EQ(back->client, "alice-laptop");
}

TEST(CapabilityTest, AnythingButTheExactFormIsRefused) {
  for (const char* bad : {"", "service=notepad", "client=alice;service=notepad", "service=;client=alice",
                          "service=notepad;client=", "service=a=b;client=alice", "service=notepad;client=al;ice",
                          "service=notepad;client=alice;service=mail", "service=note\npad;client=alice",
                          "Service=notepad;client=alice"}) {
    auto c = Capability::ParseScope(bad);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), Status::Code::kPermissionDenied) << bad;
    }
  }
  EXPECT_FALSE(Capability::ParseScope("service=" + std::string(65, 'x') + ";client=alice").ok());
}

class CapabilityCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Create("home", 86400);
    ASSERT_TRUE(ca.ok());
    ca_.emplace(std::move(*ca));
  }
  std::optional<CertificateAuthority> ca_;
};

TEST_F(CapabilityCaTest, AnIssuedCapabilityVerifiesWithItsScopeAndExpiry) {
  auto creds = ca_->IssueCapability(Capability{"notepad", "alice", 0, ""}, 600);
  ASSERT_TRUE(creds.ok()) << creds.status().ToString();
  auto cap = VerifyCapability(creds->cert_pem, ca_->cert_pem());
  ASSERT_TRUE(cap.ok()) << cap.status().ToString();
  EXPECT_EQ(cap->service, "notepad");
  EXPECT_EQ(cap->client, "alice");
  int64_t now = std::time(nullptr);
  EXPECT_GE(cap->not_after, now + 590);
  EXPECT_LE(cap->not_after, now + 610);
  auto info = InspectCertificate(creds->cert_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->role, Role::kSurrogate);
  EXPECT_EQ(info->common_name, "alice");
  EXPECT_EQ(cap->fingerprint, info->fingerprint);
}

TEST_F(CapabilityCaTest, AClientCertificateIsNoCapability) {
  auto creds = ca_->Issue("alice", Role::kClient, 600);
  ASSERT_TRUE(creds.ok());
  auto cap = VerifyCapability(creds->cert_pem, ca_->cert_pem());
  ASSERT_FALSE(cap.ok());
  EXPECT_EQ(cap.status().code(), Status::Code::kPermissionDenied);
  EXPECT_NE(cap.status().message().find("\"client\""), std::string::npos) << cap.status().ToString();
  // A surrogate certificate without a scope is none either.
  auto bare = ca_->Issue("hotspot", Role::kSurrogate, 600);
  ASSERT_TRUE(bare.ok());
  EXPECT_FALSE(VerifyCapability(bare->cert_pem, ca_->cert_pem()).ok());
}

TEST_F(CapabilityCaTest, ACapabilityOfAnotherCaOrExpiredIsRefused) {
  auto other = CertificateAuthority::Create("mallory", 86400);
  ASSERT_TRUE(other.ok());
  auto forged = other->IssueCapability(Capability{"notepad", "alice", 0, ""}, 600);
  ASSERT_TRUE(forged.ok());
  auto f = VerifyCapability(forged->cert_pem, ca_->cert_pem());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Status::Code::kPermissionDenied);
  auto expired = ca_->IssueCapability(Capability{"notepad", "alice", 0, ""}, -60);
  ASSERT_TRUE(expired.ok());
  auto e = VerifyCapability(expired->cert_pem, ca_->cert_pem());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("expired"), std::string::npos) << e.status().ToString();
}

TEST_F(CapabilityCaTest, AMalformedCapabilityIsNotIssued) {
  EXPECT_EQ(ca_->IssueCapability(Capability{"note;pad", "alice", 0, ""}, 600).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(ca_->IssueCapability(Capability{"notepad", "", 0, ""}, 600).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(ca_->Issue("x", Role::kUnknown, 600).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace slingshot
