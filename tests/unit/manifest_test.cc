// Ed25519 keys and signed manifests.
#include "slingshot/store/manifest.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "slingshot/base/coding.h"
#include "test_util.h"

namespace slingshot {
namespace {

Manifest Sample() {
  Manifest m;
  m.service_id = "notepad";
  m.service_type = "rfb";
  m.epoch = 7;
  m.last_seq = 1234;
  m.created_ns = 1700000000123456789;
  m.vm = {256, 1, "console=ttyS0 quiet", "qemu", "{\"machine\":\"q35\"}"};
  m.disk_table = ChunkId::Of(AsBytes("table"));
  m.disk_size = 1ull << 30;
  m.memory_list = ChunkId::Of(AsBytes("list"));
  m.memory_size = 90ull << 20;
  return m;
}

TEST(ManifestTest, SignVerifyRoundTrip) {
  auto key = SigningKey::Generate();
  ASSERT_TRUE(key.ok());
  Bytes s = SignManifest(Sample(), *key);
  auto m = VerifyManifest(s, key->public_key());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m, Sample());
  EXPECT_EQ(*DecodeSignedManifestUnverified(s), Sample());
}

TEST(ManifestTest, OtherKeyIsRejected) {
  auto home = SigningKey::Generate(), other = SigningKey::Generate();
  Bytes forged = SignManifest(Sample(), *other);
  auto m = VerifyManifest(forged, home->public_key());
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsCorruption());
  EXPECT_NE(m.status().message().find("not by the trusted home key"), std::string::npos);
}

TEST(ManifestTest, EveryBitFlipIsDetected) {
  auto key = SigningKey::Generate();
  Bytes s = SignManifest(Sample(), *key);
  for (size_t bit = 0; bit < s.size() * 8; ++bit) {
    Bytes t = s;
    t[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    ASSERT_FALSE(VerifyManifest(t, key->public_key()).ok()) << "bit " << bit;
  }
}

TEST(ManifestTest, ValidEnvelopeWithForgedSignatureIsRejected) {
  // Re-seal the envelope so its CRC is right: only the signature can catch it.
  auto key = SigningKey::Generate();
  Bytes s = SignManifest(Sample(), *key);
  auto f = OpenFrame(s, {'S', 'S', 'M', 'S'}, 1, 1 << 24, "t");
  ASSERT_TRUE(f.ok());
  Bytes body(f->body.begin(), f->body.end());
  body[20] ^= 1;  // inside the manifest
  Bytes resealed = SealFrame({'S', 'S', 'M', 'S'}, 1, body);
  auto m = VerifyManifest(resealed, key->public_key());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("signature does not verify"), std::string::npos);
}

TEST(ManifestTest, BootFilesRoundTripAndOlderBodiesStillRead) {
  Manifest m = Sample();
  m.kernel = ChunkId::Of(AsBytes("kernel"));
  m.kernel_size = 8 << 20;
  m.initrd = ChunkId::Of(AsBytes("initrd"));
  m.initrd_size = 3 << 20;
  m.state_on_disk = true;
  auto back = Manifest::Decode(m.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);
  // Version 3 is version 4 without the service port; version 2 is version
  // 3 without the state_on_disk byte; version 1 is version 2 without the
  // four boot fields.
  Bytes v4 = m.Encode();
  auto f = OpenFrame(v4, {'S', 'S', 'M', 'F'}, 4, 1 << 24, "t");
  ASSERT_TRUE(f.ok());
  Bytes body3(f->body.begin(), f->body.end() - 2);
  auto v3 = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 3, body3));
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_TRUE(v3->state_on_disk);
  EXPECT_EQ(v3->service_port, kDefaultServicePort);
  Bytes body2(body3.begin(), body3.end() - 1);
  auto v2 = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 2, body2));
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_FALSE(v2->state_on_disk);
  EXPECT_EQ(v2->kernel, m.kernel);
  Bytes body1(body2.begin(), body2.end() - 2 * (ChunkId::kSize + 8));
  auto v1 = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 1, body1));
  ASSERT_TRUE(v1.ok()) << v1.status().ToString();
  EXPECT_TRUE(v1->kernel.IsNull());
  EXPECT_EQ(v1->memory_list, m.memory_list);
  // state_on_disk is a flag: any other byte is refused.
  Bytes bad = body3;
  bad.back() = 2;
  auto b = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 3, bad));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("state_on_disk"), std::string::npos) << b.status().ToString();
}

// A service may listen on any guest port (slingshot-home service create
// --service-port); the manifest carries it to the surrogate, which must not
// assume 5900.
TEST(ManifestTest, ServicePortTravelsInTheManifest) {
  Manifest m = Sample();
  m.service_port = 5901;
  auto back = Manifest::Decode(m.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->service_port, 5901);
  auto key = SigningKey::Generate();
  auto verified = VerifyManifest(SignManifest(m, *key), key->public_key());
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->service_port, 5901);
  // Port 0 is no port.
  Bytes body = m.Encode();
  auto f = OpenFrame(body, {'S', 'S', 'M', 'F'}, 4, 1 << 24, "t");
  ASSERT_TRUE(f.ok());
  Bytes zero(f->body.begin(), f->body.end());
  zero[zero.size() - 2] = 0;
  zero[zero.size() - 1] = 0;
  auto z = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 4, zero));
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.status().message().find("service port"), std::string::npos) << z.status().ToString();
}

// RAM kept apart travels as a RAM table (version 5); a manifest without one
// is still written as version 4, which older agents read; a table whose
// size is not the VM's memory is refused.
TEST(ManifestTest, RamTableTravelsAndAManifestWithoutOneStaysVersion4) {
  Manifest m = Sample();
  auto plain = OpenFrame(m.Encode(), {'S', 'S', 'M', 'F'}, 5, 1 << 24, "t");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->version, 4);
  m.ram_table = ChunkId::Of(AsBytes("ram"));
  m.ram_size = uint64_t{m.vm.memory_mib} << 20;
  Bytes v5 = m.Encode();
  auto f = OpenFrame(v5, {'S', 'S', 'M', 'F'}, 5, 1 << 24, "t");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->version, 5);
  auto back = Manifest::Decode(v5);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);
  auto key = SigningKey::Generate();
  auto verified = VerifyManifest(SignManifest(m, *key), key->public_key());
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->ram_table, m.ram_table);
  m.ram_size += 4096;
  auto wrong = Manifest::Decode(m.Encode());
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("RAM table"), std::string::npos) << wrong.status().ToString();
}

TEST(ManifestTest, LyingStringLengthIsRefused) {
  Bytes body;
  Encoder e(&body);
  e.U32(0x7FFFFFFF);  // service id "length"
  e.Raw("abc", 3);
  auto m = Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 1, body));
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsCorruption());
}

TEST(KeysTest, SaveLoadWithStrictPermissions) {
  testing::TempDir t;
  auto key = SigningKey::Generate();
  ASSERT_TRUE(key->Save(t / "home.key").ok());
  ASSERT_TRUE(key->public_key().Save(t / "home.pub").ok());
  struct stat sb;
  ASSERT_EQ(::stat((t / "home.key").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  EXPECT_EQ(key->Save(t / "home.key").code(), Status::Code::kAlreadyExists);
  auto loaded = SigningKey::Load(t / "home.key");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key(), key->public_key());
  auto pub = PublicKey::Load(t / "home.pub");
  ASSERT_TRUE(pub.ok());
  Bytes s = SignManifest(Sample(), *loaded);
  EXPECT_TRUE(VerifyManifest(s, *pub).ok());
  ::chmod((t / "home.key").c_str(), 0644);
  auto loose = SigningKey::Load(t / "home.key");
  ASSERT_FALSE(loose.ok());
  EXPECT_NE(loose.status().message().find("chmod 600"), std::string::npos);
}

TEST(KeysTest, GarbageKeyFilesAreRejected) {
  testing::TempDir t;
  testing::WriteFile(t / "bad.pub", AsBytes("-----BEGIN PUBLIC KEY-----\nnonsense\n"));
  EXPECT_TRUE(PublicKey::Load(t / "bad.pub").status().IsCorruption());
  EXPECT_TRUE(SigningKey::Load(t / "absent.key").status().IsNotFound());
}

}  // namespace
}  // namespace slingshot
