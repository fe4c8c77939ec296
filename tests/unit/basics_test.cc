// Status/Result, CRC-32C, chunk ids, sealed frames and the bounded decoder.
#include <gtest/gtest.h>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/base/status.h"
#include "test_util.h"

namespace slingshot {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  SLINGSHOT_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(StatusTest, ResultCarriesValueOrError) {
  auto ok = Quarter(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 2);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(bad.status().ToString(), "InvalidArgument: 3 is odd");
  EXPECT_EQ(bad.status().Annotate("quartering").message(), "quartering: 3 is odd");
  EXPECT_TRUE(Status::OK().Annotate("x").ok());
}

TEST(StatusTest, ErrnoStatusExplainsFullDisk) {
  Status st = Status::FromErrno("write log", ENOSPC);
  EXPECT_EQ(st.code(), Status::Code::kIOError);
  EXPECT_NE(st.message().find("disk is full"), std::string::npos);
}

TEST(Crc32cTest, MatchesRfc3720Vectors) {
  uint8_t buf[32];
  std::memset(buf, 0, sizeof(buf));
  EXPECT_EQ(crc32c::Value(buf, sizeof(buf)), 0x8A9136AAu);
  std::memset(buf, 0xff, sizeof(buf));
  EXPECT_EQ(crc32c::Value(buf, sizeof(buf)), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c::Value(buf, sizeof(buf)), 0x46DD794Eu);
  EXPECT_EQ(crc32c::Value("123456789", 9), 0xE3069283u);
}

TEST(Crc32cTest, ExtendEqualsWholeAtEverySplit) {
  Bytes data = testing::RandomBytes(257, 7);
  uint32_t whole = crc32c::Value(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t part = crc32c::Extend(crc32c::Value(data.data(), split), data.data() + split, data.size() - split);
    ASSERT_EQ(part, whole) << "split " << split;
  }
}

TEST(ChunkIdTest, Sha256KnownAnswerAndHex) {
  ChunkId id = ChunkId::Of(AsBytes("abc"));
  EXPECT_EQ(id.ToHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto back = ChunkId::FromHex(id.ToHex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, id);
  Sha256 s;
  s.Update(AsBytes("a"));
  s.Update(AsBytes("bc"));
  EXPECT_EQ(s.Finish(), id);
}

TEST(ChunkIdTest, RejectsMalformedHex) {
  EXPECT_FALSE(ChunkId::FromHex("abc").ok());
  std::string bad(64, 'a');
  bad[10] = 'g';
  EXPECT_FALSE(ChunkId::FromHex(bad).ok());
  EXPECT_FALSE(ChunkId::FromBytes(Bytes(31)).ok());
}

TEST(ChunkIdTest, IsAllZero) {
  Bytes z(65536, 0);
  EXPECT_TRUE(IsAllZero(z));
  for (size_t pos : {size_t{0}, size_t{31}, size_t{32}, size_t{65535}}) {
    Bytes b = z;
    b[pos] = 1;
    EXPECT_FALSE(IsAllZero(b)) << pos;
  }
  EXPECT_TRUE(IsAllZero({}));
}

constexpr Magic kTestMagic = {'T', 'E', 'S', 'T'};

TEST(SealedFrameTest, RoundTrip) {
  Bytes body = testing::RandomBytes(100, 1);
  Bytes f = SealFrame(kTestMagic, 1, body);
  auto o = OpenFrame(f, kTestMagic, 1, 1000, "test object");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->version, 1);
  EXPECT_TRUE(std::equal(o->body.begin(), o->body.end(), body.begin(), body.end()));
}

TEST(SealedFrameTest, EveryBitFlipIsDetected) {
  Bytes f = SealFrame(kTestMagic, 1, testing::RandomBytes(40, 2));
  for (size_t bit = 0; bit < f.size() * 8; ++bit) {
    Bytes g = f;
    g[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    auto o = OpenFrame(g, kTestMagic, 1, 1000, "test object");
    ASSERT_FALSE(o.ok()) << "bit " << bit;
  }
}

TEST(SealedFrameTest, LyingLengthIsRefused) {
  Bytes f = SealFrame(kTestMagic, 1, Bytes(10, 7));
  PutU32(f.data() + 8, 0xFFFFFFF0u);  // claims ~4 GiB
  auto o = OpenFrame(f, kTestMagic, 1, 1 << 20, "test object");
  ASSERT_FALSE(o.ok());
  EXPECT_TRUE(o.status().IsCorruption());
  EXPECT_NE(o.status().message().find("exceeds the limit"), std::string::npos);
  // Within the cap but not what the object holds.
  Bytes g = SealFrame(kTestMagic, 1, Bytes(10, 7));
  PutU32(g.data() + 8, 11);
  EXPECT_TRUE(OpenFrame(g, kTestMagic, 1, 1 << 20, "t").status().IsCorruption());
}

TEST(SealedFrameTest, NewerVersionIsUnsupported) {
  Bytes f = SealFrame(kTestMagic, 3, Bytes(4, 1));
  auto o = OpenFrame(f, kTestMagic, 2, 100, "test object");
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().code(), Status::Code::kUnsupported);
}

TEST(DecoderTest, BoundsEveryRead) {
  Bytes b;
  Encoder e(&b);
  e.U32(5);
  e.Str("hello");
  e.U64(42);
  Decoder d(b, "thing");
  EXPECT_EQ(d.U32(), 5u);
  EXPECT_EQ(d.Str(16, "name"), "hello");
  EXPECT_EQ(d.U64(), 42u);
  EXPECT_TRUE(d.Finish().ok());

  Decoder over(b, "thing");
  over.U32();
  over.Str(3, "name");  // longer than allowed
  EXPECT_TRUE(over.Finish().IsCorruption());

  Bytes lie;
  Encoder(&lie).U32(1000);  // a string length with no bytes behind it
  Decoder d2(lie, "thing");
  EXPECT_EQ(d2.Str(1 << 20, "name"), "");
  Status st = d2.Finish();
  EXPECT_TRUE(st.IsCorruption());
  EXPECT_NE(st.message().find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace slingshot
