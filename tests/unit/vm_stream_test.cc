#include "slingshot/vm/vm_stream.h"

#include <gtest/gtest.h>

#include "slingshot/base/coding.h"
#include "test_util.h"

namespace slingshot::testing {
namespace {

Bytes Encode(const VmStreamHeader& h, ByteView payload, size_t piece) {
  Bytes out;
  VmStreamWriter w([&](ByteView b) {
    out.insert(out.end(), b.begin(), b.end());
    return Status::OK();
  });
  EXPECT_TRUE(w.Begin(h).ok());
  for (size_t off = 0; off < payload.size(); off += piece) {
    EXPECT_TRUE(w.Write(payload.subspan(off, std::min(piece, payload.size() - off))).ok());
  }
  EXPECT_TRUE(w.Finish().ok());
  EXPECT_EQ(w.bytes_written(), out.size());
  return out;
}

struct Decoded {
  Status status;
  VmStreamHeader header;
  Bytes payload;
  bool header_seen = false;
};

Decoded Decode(ByteView stream, size_t piece) {
  Decoded d;
  VmStreamReader r(
      [&](const VmStreamHeader& h) {
        d.header = h;
        d.header_seen = true;
        return Status::OK();
      },
      [&](ByteView b) {
        d.payload.insert(d.payload.end(), b.begin(), b.end());
        return Status::OK();
      });
  for (size_t off = 0; off < stream.size() && d.status.ok(); off += piece) {
    d.status = r.Feed(stream.subspan(off, std::min(piece, stream.size() - off)));
  }
  if (d.status.ok()) d.status = r.Finish();
  return d;
}

const VmStreamHeader kHeader{"qemu", 128, 2, R"({"machine":"pc"})"};

TEST(VmStreamTest, RoundTripsAnySplit) {
  Bytes payload = RandomBytes(3 * kVmStreamBlock + 12345, 1);
  for (size_t wpiece : {size_t{1000}, size_t{65536}, kVmStreamBlock, size_t{5 << 20}}) {
    Bytes s = Encode(kHeader, payload, wpiece);
    for (size_t rpiece : {size_t{1}, size_t{7}, size_t{4096}, s.size()}) {
      if (rpiece == 1 && wpiece != 65536) continue;  // byte-at-a-time once is enough
      Decoded d = Decode(s, rpiece);
      ASSERT_TRUE(d.status.ok()) << d.status.ToString();
      EXPECT_EQ(d.header.backend, "qemu");
      EXPECT_EQ(d.header.memory_mib, 128u);
      EXPECT_EQ(d.header.vcpus, 2u);
      EXPECT_EQ(d.header.config, kHeader.config);
      EXPECT_EQ(d.payload, payload);
    }
  }
  Decoded empty = Decode(Encode(kHeader, {}, 1), 3);
  EXPECT_TRUE(empty.status.ok());
  EXPECT_TRUE(empty.payload.empty());
}

TEST(VmStreamTest, BlocksFallAtFixedPayloadOffsets) {
  // However the payload arrives, the same payload gives the same stream:
  // what lets two checkpoints of an idle VM share their chunks.
  Bytes payload = RandomBytes(2 * kVmStreamBlock + 999, 2);
  EXPECT_EQ(Encode(kHeader, payload, 4096), Encode(kHeader, payload, 300001));
}

TEST(VmStreamTest, EveryFlippedBitIsCaughtBeforeOrAtTheEnd) {
  Bytes payload = RandomBytes(kVmStreamBlock + 5000, 3);
  Bytes good = Encode(kHeader, payload, 65536);
  for (size_t pos : {size_t{0}, size_t{5}, size_t{20}, size_t{60}, good.size() / 3,
                     good.size() / 2, good.size() - 45, good.size() - 20, good.size() - 1}) {
    Bytes bad = good;
    bad[pos] ^= 0x08;
    Decoded d = Decode(bad, 100000);
    EXPECT_FALSE(d.status.ok()) << "flip at " << pos;
    EXPECT_EQ(d.status.code(), Status::Code::kCorruption) << d.status.ToString();
  }
  // A flipped payload bit is caught by its block's checksum before the
  // block is handed on.
  Bytes bad = good;
  bad[good.size() / 2] ^= 1;
  Decoded d = Decode(bad, 100000);
  EXPECT_NE(d.status.message().find("fails its checksum"), std::string::npos) << d.status.ToString();
  EXPECT_LT(d.payload.size(), good.size() / 2);
}

TEST(VmStreamTest, TruncationAnywhereIsReported) {
  Bytes payload = RandomBytes(100000, 4);
  Bytes good = Encode(kHeader, payload, 4096);
  for (size_t len = 0; len < good.size(); len += good.size() / 37 + 1) {
    Decoded d = Decode(ByteView(good).subspan(0, len), 1000);
    ASSERT_FALSE(d.status.ok()) << len;
    EXPECT_NE(d.status.message().find("truncated"), std::string::npos) << d.status.ToString();
  }
  Decoded last = Decode(ByteView(good).subspan(0, good.size() - 1), 1000);
  EXPECT_FALSE(last.status.ok());
  // Trailing garbage after a complete stream is refused too.
  Bytes longer = good;
  longer.push_back(0);
  EXPECT_FALSE(Decode(longer, 1000).status.ok());
}

TEST(VmStreamTest, LyingLengthsAreBoundedBeforeUse) {
  Bytes good = Encode(kHeader, AsBytes("abc"), 10);
  Bytes huge_header = good;
  PutU32(huge_header.data() + 8, 0xfffffff0u);
  Decoded d = Decode(huge_header, 64);
  EXPECT_NE(d.status.message().find("limit 1 MiB"), std::string::npos) << d.status.ToString();
  EXPECT_FALSE(d.header_seen);

  // The first block's length field sits right after the header frame.
  size_t header_len = kFrameOverhead + GetU32(good.data() + 8);
  Bytes huge_block = good;
  PutU32(huge_block.data() + header_len, 0x7fffffffu);
  d = Decode(huge_block, 64);
  EXPECT_NE(d.status.message().find("limit 1 MiB"), std::string::npos) << d.status.ToString();

  EXPECT_NE(Decode(AsBytes("not a vm stream at all"), 5).status.message().find("bad magic"),
            std::string::npos);
}

TEST(VmStreamTest, HeaderCallbackCanRefuse) {
  Bytes good = Encode(kHeader, RandomBytes(5000, 5), 1000);
  size_t payload_calls = 0;
  VmStreamReader r([](const VmStreamHeader& h) {
    return Status::Unsupported("made by " + h.backend);
  }, [&](ByteView) { ++payload_calls; return Status::OK(); });
  Status s = r.Feed(good);
  EXPECT_EQ(s.code(), Status::Code::kUnsupported);
  EXPECT_EQ(payload_calls, 0u);
  EXPECT_FALSE(r.Feed(good).ok());
}

}  // namespace
}  // namespace slingshot::testing
