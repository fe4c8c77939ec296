// libFuzzer target: every decoder of untrusted bytes must return an error or
// a well-formed value, never crash, hang or read out of bounds (built with
// ASan+UBSan). The first input byte picks the decoder.
#include <cstddef>
#include <cstdint>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/service/rfb.h"
#include "slingshot/vm/vm_stream.h"
#include "slingshot/net/wire.h"
#include "slingshot/store/working_set.h"

using namespace slingshot;

namespace {
// What a decoder accepts must be self-consistent.
void CheckTable(const Result<DiskTable>& t) {
  if (t.ok() && t->ids.size() != (t->image_size + t->chunk_size - 1) / t->chunk_size) __builtin_trap();
}
void CheckList(const Result<ChunkList>& l) {
  if (!l.ok()) return;
  uint64_t sum = 0;
  for (auto& e : l->entries) sum += e.size;
  if (sum != l->total_size) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ByteView in(data + 1, size - 1);
  static const PublicKey key = SigningKey::Generate().value().public_key();
  switch (data[0] % 15) {
    case 0:
      CheckTable(DiskTable::Decode(in));
      break;
    case 1:
      CheckList(ChunkList::Decode(in));
      break;
    case 2:
      (void)DecodeSignedManifestUnverified(in);
      (void)VerifyManifest(in, key);
      break;
    case 3:
      (void)Manifest::Decode(in);
      break;
    case 4: {
      // A chunk value claimed for the id of its own payload bytes.
      auto r = ChunkStore::DecodeValue(ChunkId::Of(in), in);
      if (r.ok() && ChunkId::Of(*r) != ChunkId::Of(in)) __builtin_trap();
      break;
    }
    case 5:
      (void)OpenFrame(in, {'S', 'S', 'D', 'T'}, 1, 1 << 20, "fuzz");
      break;
    // The same parsers behind a valid frame: the fuzzed bytes become the
    // body and are sealed with a correct CRC, so the parsing past the
    // checksum is exercised too.
    case 6:
      CheckTable(DiskTable::Decode(SealFrame({'S', 'S', 'D', 'T'}, 1, in)));
      break;
    case 7:
      CheckList(ChunkList::Decode(SealFrame({'S', 'S', 'C', 'L'}, 1, in)));
      break;
    case 8:
      (void)Manifest::Decode(SealFrame({'S', 'S', 'M', 'F'}, 1, in));
      break;
    case 9:
      (void)VerifyManifest(SealFrame({'S', 'S', 'M', 'S'}, 1, in), key);
      break;
    case 10: {
      // A VM stream fed in uneven pieces: whatever it hands on must add up
      // to what it claims once it reports complete.
      uint64_t payload = 0;
      VmStreamReader r([](const VmStreamHeader&) { return Status::OK(); },
                       [&](ByteView b) { payload += b.size(); return Status::OK(); });
      size_t step = 1 + in.size() % 7;
      for (size_t off = 0; off < in.size(); off += step) {
        if (!r.Feed(in.subspan(off, std::min(step, in.size() - off))).ok()) break;
      }
      if (r.Finish().ok() && payload > r.bytes_read()) __builtin_trap();
      break;
    }
    case 11: {
      // A wire frame as a peer would send it: header, then payload.
      if (in.size() < wire::kHeaderSize) break;
      auto h = wire::DecodeHeader(in.first(wire::kHeaderSize));
      if (!h.ok()) break;
      auto m = wire::DecodePayload(*h, in.subspan(wire::kHeaderSize));
      // What decodes must encode back to a frame that decodes the same way.
      if (m.ok()) {
        Bytes again = wire::EncodeFrame(h->request, *m);
        auto h2 = wire::DecodeHeader(ByteView(again).first(wire::kHeaderSize));
        if (!h2.ok() || h2->type != h->type || !wire::DecodePayload(*h2, ByteView(again).subspan(wire::kHeaderSize)).ok()) {
          __builtin_trap();
        }
      }
      break;
    }
    case 12: {
      // A payload behind a correct header and CRC for the type in the first
      // two bytes, so the message decoders themselves are exercised.
      if (in.size() < 2) break;
      ByteView body = in.subspan(2);
      wire::FrameHeader h;
      h.type = static_cast<wire::MessageType>(in[0] % 25);  // every type, and one past
      h.length = static_cast<uint32_t>(body.size());
      h.payload_crc = crc32c::Value(body.data(), body.size());
      (void)wire::DecodePayload(h, body);
      break;
    }
    case 13: {
      auto ws = WorkingSetRecord::Decode(SealFrame({'S', 'S', 'W', 'S'}, 1, in));
      if (ws.ok()) {
        for (const auto& id : ws->ids) {
          if (id.IsNull()) __builtin_trap();
        }
      }
      break;
    }
    case 14: {
      // A logged input as a replica host receives it.
      if (in.empty()) break;
      Status st = rfb::CheckInput(in[0] % 5, in.subspan(1));
      if (st.ok() && in.size() - 1 > 8 + rfb::kMaxCutText) __builtin_trap();
      break;
    }
  }
  return 0;
}
