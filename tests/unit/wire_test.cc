// The wire catalogue and frames, and the home CA's certificates.
#include "slingshot/net/wire.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/net/tls.h"
#include "test_util.h"

namespace slingshot::testing {
namespace {

using namespace wire;

Result<Message> RoundTrip(uint32_t request, const Message& m, FrameHeader* header = nullptr) {
  Bytes f = EncodeFrame(request, m);
  SLINGSHOT_ASSIGN_OR_RETURN(FrameHeader h, DecodeHeader(ByteView(f).first(kHeaderSize)));
  if (header) *header = h;
  return DecodePayload(h, ByteView(f).subspan(kHeaderSize));
}

TEST(WireTest, EveryMessageRoundTrips) {
  ChunkId a = ChunkId::Of(AsBytes("a")), b = ChunkId::Of(AsBytes("b"));
  std::vector<Message> all = {
      Hello{1, 1, "slingshot-home 0.3.0"},
      Error{Status::Code::kPermissionDenied, "no"},
      GetChunks{{a, b}},
      ChunkData{a, true, Bytes{1, 2, 3}},
      ChunkData{b, false, {}},
      GetObject{a},
      ObjectData{a, Bytes(1000, 7)},
      GetRef{"disk/notepad"},
      RefData{"disk/notepad", 1, b},
      GetWorkingSet{a},
      WorkingSet{a, {b, a}},
      Attach{"notepad", false},
      Attach{"notepad", true},
      Attached{"notepad", "home", 640, 400, 17},
      Input{18, 1, Bytes{4, 1, 0, 0, 0, 0, 0, 0x61}},
      Consumed{18},
      Screen{true, {ScreenRect{1, 2, 2, 1, 0, Bytes(8, 9)}, ScreenRect{0, 0, 640, 400, 1, Bytes{1, 2}}}},
      Repaint{},
      Checkpointed{3, 18},
      GetCapability{"notepad", 600},
      wire::Capability{"notepad", "-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----", 1800000000, {}},
      wire::Capability{"notepad", "cert", "key", 1800000000, Bytes(700, 3)},
      Instantiate{"notepad", "10.0.0.1", 7390, "ca", Bytes(32, 1), "cert", "key", "/media/stick", {}},
      Instantiate{"notepad", "10.0.0.1", 7390, "ca", Bytes(32, 1), "cert", "key", "", Bytes(700, 3)},
      Progress{"memory", 10, 20, 1, 2, 3},
      GetStatus{},
      AgentStatus{"cafe", {ReplicaStatus{"notepad", "alice", 18, 1800000000}}, 1 << 20, 1, 2, 3, {8, 1536, 320, 900}},
      Pair{"alice-laptop", Bytes(kPairProofSize, 5)},
      Paired{"cert", "ca", Bytes(32, 1), "10.0.0.1:7390", Bytes(kPairProofSize, 6)},
      HandOver{"alice-tablet"},
      PutWorkingSet{a, {b, a}},
      Leave{},
  };
  for (const auto& m : all) {
    FrameHeader h;
    auto r = RoundTrip(99, m, &h);
    ASSERT_TRUE(r.ok()) << MessageTypeName(TypeOf(m)) << ": " << r.status().ToString();
    EXPECT_EQ(h.request, 99u);
    EXPECT_EQ(h.version, kVersion);
    EXPECT_EQ(TypeOf(*r), TypeOf(m));
    EXPECT_EQ(EncodeFrame(99, *r), EncodeFrame(99, m)) << MessageTypeName(TypeOf(m));
  }
  auto e = RoundTrip(1, Error{Status::Code::kNotFound, "gone"});
  EXPECT_TRUE(std::get<Error>(*e).ToStatus("home").IsNotFound());
}

// An older agent's status ends before the capacity: it decodes, with none.
TEST(WireTest, AStatusWithoutCapacityDecodesWithZeros) {
  Bytes f = EncodeFrame(3, AgentStatus{"cafe", {}, 5, 1, 2, 3, {8, 1536, 320, 900}});
  auto h = DecodeHeader(ByteView(f).first(kHeaderSize));
  ASSERT_TRUE(h.ok());
  ByteView older = ByteView(f).subspan(kHeaderSize, h->length - 28);  // u32 + 3 x u64
  h->length = static_cast<uint32_t>(older.size());
  h->payload_crc = crc32c::Value(older.data(), older.size());
  auto m = DecodePayload(*h, older);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const auto& s = std::get<AgentStatus>(*m);
  EXPECT_EQ(s.from_home, 3u);
  EXPECT_EQ(s.capacity.max_replicas, 0u);
  EXPECT_EQ(s.capacity.budget_mib, 0u);
  // Cut inside the capacity: refused, not read past the end.
  ByteView cut = ByteView(f).subspan(kHeaderSize, h->length + 4);
  h->length = static_cast<uint32_t>(cut.size());
  h->payload_crc = crc32c::Value(cut.data(), cut.size());
  EXPECT_FALSE(DecodePayload(*h, cut).ok());
}

// The signed manifest a capability carries to the agent is bounded, and
// one that claims more bytes than it holds is refused.
TEST(WireTest, ACarriedManifestIsBounded) {
  auto carried = RoundTrip(5, Instantiate{"notepad", "h", 1, "ca", Bytes(32, 1), "c", "k", "", Bytes(900, 4)});
  ASSERT_TRUE(carried.ok()) << carried.status().ToString();
  EXPECT_EQ(std::get<Instantiate>(*carried).signed_manifest, Bytes(900, 4));
  auto big = RoundTrip(5, wire::Capability{"notepad", "c", "k", 1, Bytes(kMaxCarriedManifest + 1, 4)});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("signed manifest"), std::string::npos) << big.status().ToString();
  Bytes f = EncodeFrame(5, wire::Capability{"notepad", "c", "k", 1, Bytes(16, 4)});
  PutU32(f.data() + f.size() - 20, 17);  // the blob's length, one more than it holds
  auto h = DecodeHeader(ByteView(f).first(kHeaderSize));
  ASSERT_TRUE(h.ok());
  ByteView payload = ByteView(f).subspan(kHeaderSize);
  h->payload_crc = crc32c::Value(payload.data(), payload.size());
  EXPECT_FALSE(DecodePayload(*h, payload).ok());
}

TEST(WireTest, BadHeadersAreRefusedWithTheReason) {
  Bytes f = EncodeFrame(1, GetChunks{{ChunkId::Of(AsBytes("a"))}});
  ByteView h = ByteView(f).first(kHeaderSize);
  ASSERT_TRUE(DecodeHeader(h).ok());

  Bytes magic(f.begin(), f.begin() + kHeaderSize);
  magic[0] = 'X';
  EXPECT_NE(DecodeHeader(magic).status().message().find("magic"), std::string::npos);

  Bytes crc(f.begin(), f.begin() + kHeaderSize);
  crc[9] ^= 1;  // the request id, under the header CRC
  EXPECT_NE(DecodeHeader(crc).status().message().find("checksum"), std::string::npos);

  Bytes version(f.begin(), f.begin() + kHeaderSize);
  PutU16(version.data() + 4, 7);
  PutU32(version.data() + 20, crc32c::Value(version.data(), 20));
  auto v = DecodeHeader(version);
  EXPECT_EQ(v.status().code(), Status::Code::kUnsupported);
  EXPECT_NE(v.status().message().find("version 7"), std::string::npos);

  Bytes huge(f.begin(), f.begin() + kHeaderSize);
  PutU32(huge.data() + 12, kMaxWirePayload + 1);
  PutU32(huge.data() + 20, crc32c::Value(huge.data(), 20));
  EXPECT_NE(DecodeHeader(huge).status().message().find("over the limit"), std::string::npos);
  EXPECT_FALSE(DecodeHeader(ByteView(f).first(10)).ok());
}

TEST(WireTest, BadPayloadsAreRefusedAndLengthsAreBounded) {
  FrameHeader h;
  h.type = MessageType::kGetChunks;
  auto decode = [&](const Bytes& body) {
    h.length = static_cast<uint32_t>(body.size());
    h.payload_crc = crc32c::Value(body.data(), body.size());
    return DecodePayload(h, body);
  };
  // A count that claims more ids than the frame holds, or than a batch may.
  Bytes body;
  Encoder e(&body);
  e.U32(1000);
  e.Id(ChunkId::Of(AsBytes("a")));
  EXPECT_TRUE(decode(body).status().IsCorruption());
  body.clear();
  e.U32(kMaxBatch + 1);
  EXPECT_NE(decode(body).status().message().find("limit"), std::string::npos);
  body.clear();
  e.U32(0);
  EXPECT_NE(decode(body).status().message().find("no chunks"), std::string::npos);
  // Trailing bytes are an error, not ignored.
  body.clear();
  e.U32(1);
  e.Id(ChunkId::Of(AsBytes("a")));
  e.U8(0);
  EXPECT_TRUE(decode(body).status().IsCorruption());
  // An absent chunk with a value, a bad flag.
  h.type = MessageType::kChunkData;
  body.clear();
  e.Id(ChunkId::Of(AsBytes("a")));
  e.U8(0);
  e.U32(1);
  e.U8(9);
  EXPECT_NE(decode(body).status().message().find("absent chunk carries a value"), std::string::npos);
  // A bad payload checksum, and a type nobody knows.
  Bytes ok = EncodeFrame(1, GetRef{"x"});
  auto hdr = DecodeHeader(ByteView(ok).first(kHeaderSize));
  ok.back() ^= 1;
  EXPECT_NE(DecodePayload(*hdr, ByteView(ok).subspan(kHeaderSize)).status().message().find("checksum"),
            std::string::npos);
  h.type = static_cast<MessageType>(999);
  EXPECT_NE(decode(Bytes{}).status().message().find("catalogue"), std::string::npos);
}

TEST(WireTest, SessionMessagesAreBounded) {
  auto refused = [](const Message& m, const std::string& why) {
    auto r = RoundTrip(0, m);
    EXPECT_TRUE(r.status().IsCorruption()) << MessageTypeName(TypeOf(m)) << " was not refused";
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().ToString();
  };
  refused(Input{0, 1, {}}, "seq 0");
  refused(Input{1, 1, Bytes(kMaxInputPayload + 1)}, "input claims");
  refused(Attached{"s", "home", 0, 400, 0}, "screen size");
  refused(Attached{"s", "home", 640, 9000, 0}, "screen size");
  refused(Screen{false, {ScreenRect{0, 0, 2, 2, 0, Bytes(15)}}}, "not w*h*4");
  refused(Screen{false, {ScreenRect{8190, 0, 4, 1, 0, Bytes(16)}}}, "out of range");
  refused(Screen{false, {ScreenRect{0, 0, 1, 1, 7, Bytes(4)}}}, "codec 7");
  // A rectangle count that the frame cannot hold.
  Bytes f = EncodeFrame(0, Screen{false, {}});
  FrameHeader h = *DecodeHeader(ByteView(f).first(kHeaderSize));
  Bytes payload(f.begin() + kHeaderSize, f.end());
  PutU32(&payload[1], 1000000);
  h.payload_crc = crc32c::Value(payload.data(), payload.size());
  auto r = DecodePayload(h, payload);
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("rectangles"), std::string::npos) << r.status().ToString();
}

TEST(WireTest, HelloVersionRangesMustIncludeOurs) {
  EXPECT_TRUE((Hello{1, 3, "newer"}).Check("peer").ok());
  Status old = Hello{0, 0, "ancient 0.1"}.Check("home h (1.2.3.4:7390)");
  EXPECT_EQ(old.code(), Status::Code::kUnsupported);
  EXPECT_NE(old.message().find("versions 0 to 0"), std::string::npos) << old.ToString();
  EXPECT_NE(old.message().find("ancient 0.1"), std::string::npos);
  EXPECT_FALSE((Hello{2, 5, "future"}).Check("peer").ok());
}

TEST(TlsTest, TheHomeCaIssuesCertificatesWithRoleAndValidity) {
  auto ca = CertificateAuthority::Create("home CA", 3600);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  auto c = ca->Issue("alice-laptop", Role::kClient, 86400);
  ASSERT_TRUE(c.ok());
  auto info = InspectCertificate(c->cert_pem);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "alice-laptop");
  EXPECT_EQ(info->role, Role::kClient);
  EXPECT_NEAR(double(info->not_after - info->not_before), 86400 + 300, 5);
  EXPECT_EQ(info->fingerprint.size(), 16u);
  auto expired = ca->Issue("old", Role::kClient, -10);
  ASSERT_TRUE(expired.ok());
  EXPECT_LT(InspectCertificate(expired->cert_pem)->not_after, time(nullptr));
  EXPECT_FALSE(ca->Issue("", Role::kClient, 10).ok());
  EXPECT_TRUE(InspectCertificate("not a certificate").status().IsCorruption());
}

TEST(TlsTest, CredentialsSaveWithAPrivateKeyAndLoadRefusesAnExposedOne) {
  TempDir dir;
  auto ca = CertificateAuthority::Create("home CA", 3600);
  ASSERT_TRUE(ca.ok());
  ASSERT_TRUE(ca->Save(dir / "ca").ok());
  EXPECT_EQ(ca->Save(dir / "ca").code(), Status::Code::kAlreadyExists);
  auto loaded = CertificateAuthority::Load(dir / "ca");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->cert_pem(), ca->cert_pem());

  auto c = loaded->Issue("hotspot", Role::kSurrogate, 60);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->Save(dir / "creds").ok());
  struct stat sb;
  ASSERT_EQ(stat((dir / "creds/key.pem").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  auto back = TlsCredentials::Load(dir / "creds");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->cert_pem, c->cert_pem);
  chmod((dir / "creds/key.pem").c_str(), 0644);
  auto exposed = TlsCredentials::Load(dir / "creds");
  EXPECT_EQ(exposed.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(exposed.status().message().find("chmod 600"), std::string::npos);
  EXPECT_TRUE(TlsCredentials::Load(dir / "nothing").status().IsNotFound());
}

}  // namespace
}  // namespace slingshot::testing
