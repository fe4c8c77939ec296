#include "slingshot/net/wire.h"

#include <cstring>

#include "slingshot/base/coding.h"
#include "slingshot/base/crc32c.h"

namespace slingshot::wire {
namespace {

constexpr char kMagic[4] = {'S', 'S', 'W', 'P'};
constexpr size_t kMaxText = 4096;  // software names, error messages, ref names
constexpr size_t kMaxName = 256;   // service, replica, host and phase names
constexpr size_t kMaxPem = 16384;  // one certificate or key

// One encoder and one decoder per message; the overloads are the catalogue's
// codec.
void Put(Encoder& e, const Hello& m) {
  e.U16(m.min_version);
  e.U16(m.max_version);
  e.Str(m.software);
}
void Put(Encoder& e, const Error& m) {
  e.U16(static_cast<uint16_t>(m.code));
  e.Str(m.message.size() > kMaxText ? m.message.substr(0, kMaxText) : m.message);
}
void Put(Encoder& e, const GetChunks& m) {
  e.U32(static_cast<uint32_t>(m.ids.size()));
  for (const auto& id : m.ids) e.Id(id);
}
void Put(Encoder& e, const ChunkData& m) {
  e.Id(m.id);
  e.U8(m.present ? 1 : 0);
  e.U32(static_cast<uint32_t>(m.value.size()));
  e.Raw(m.value.data(), m.value.size());
}
void Put(Encoder& e, const GetObject& m) { e.Id(m.id); }
void Put(Encoder& e, const ObjectData& m) {
  e.Id(m.id);
  e.U32(static_cast<uint32_t>(m.bytes.size()));
  e.Raw(m.bytes.data(), m.bytes.size());
}
void Put(Encoder& e, const GetRef& m) { e.Str(m.name); }
void Put(Encoder& e, const RefData& m) {
  e.Str(m.name);
  e.U8(m.kind);
  e.Id(m.object);
}
void Put(Encoder& e, const GetWorkingSet& m) { e.Id(m.table); }
void Put(Encoder& e, const WorkingSet& m) {
  e.Id(m.table);
  e.U32(static_cast<uint32_t>(m.ids.size()));
  for (const auto& id : m.ids) e.Id(id);
}

void Put(Encoder& e, const Attach& m) {
  e.Str(m.service);
  e.U8(m.take_over ? 1 : 0);
}
void Put(Encoder& e, const HandOver& m) { e.Str(m.device); }
void Put(Encoder& e, const PutWorkingSet& m) { Put(e, WorkingSet{m.table, m.ids}); }
void Put(Encoder& e, const Attached& m) {
  e.Str(m.service);
  e.Str(m.replica);
  e.U16(m.width);
  e.U16(m.height);
  e.U64(m.consumed_seq);
}
void Put(Encoder& e, const Input& m) {
  e.U64(m.seq);
  e.U16(m.type);
  e.U32(static_cast<uint32_t>(m.payload.size()));
  e.Raw(m.payload.data(), m.payload.size());
}
void Put(Encoder& e, const Consumed& m) { e.U64(m.seq); }
void Put(Encoder& e, const Screen& m) {
  e.U8(m.full ? 1 : 0);
  e.U32(static_cast<uint32_t>(m.rects.size()));
  for (const auto& r : m.rects) {
    e.U16(r.x);
    e.U16(r.y);
    e.U16(r.w);
    e.U16(r.h);
    e.U8(r.codec);
    e.U32(static_cast<uint32_t>(r.data.size()));
    e.Raw(r.data.data(), r.data.size());
  }
}
void Put(Encoder&, const Repaint&) {}
void Put(Encoder&, const Leave&) {}
void Put(Encoder& e, const Checkpointed& m) {
  e.U64(m.epoch);
  e.U64(m.seq);
}
void Put(Encoder& e, const GetCapability& m) {
  e.Str(m.service);
  e.U32(m.valid_seconds);
}
void Put(Encoder& e, const Capability& m) {
  e.Str(m.service);
  e.Str(m.cert_pem);
  e.Str(m.key_pem);
  e.U64(static_cast<uint64_t>(m.not_after));
  if (!m.signed_manifest.empty()) {
    e.U32(static_cast<uint32_t>(m.signed_manifest.size()));
    e.Raw(m.signed_manifest.data(), m.signed_manifest.size());
  }
}
void Put(Encoder& e, const Instantiate& m) {
  e.Str(m.service);
  e.Str(m.home_host);
  e.U16(m.home_port);
  e.Str(m.ca_pem);
  e.U32(static_cast<uint32_t>(m.manifest_key.size()));
  e.Raw(m.manifest_key.data(), m.manifest_key.size());
  e.Str(m.cert_pem);
  e.Str(m.key_pem);
  e.Str(m.stick_dir);
  if (!m.signed_manifest.empty()) {
    e.U32(static_cast<uint32_t>(m.signed_manifest.size()));
    e.Raw(m.signed_manifest.data(), m.signed_manifest.size());
  }
}
void Put(Encoder& e, const Progress& m) {
  e.Str(m.phase);
  e.U64(m.done);
  e.U64(m.total);
  e.U64(m.from_cache);
  e.U64(m.from_stick);
  e.U64(m.from_home);
}
void Put(Encoder& e, const Pair& m) {
  e.Str(m.device);
  e.U32(static_cast<uint32_t>(m.proof.size()));
  e.Raw(m.proof.data(), m.proof.size());
}
void Put(Encoder& e, const Paired& m) {
  e.Str(m.cert_pem);
  e.Str(m.ca_pem);
  e.U32(static_cast<uint32_t>(m.manifest_key.size()));
  e.Raw(m.manifest_key.data(), m.manifest_key.size());
  e.Str(m.home_address);
  e.U32(static_cast<uint32_t>(m.proof.size()));
  e.Raw(m.proof.data(), m.proof.size());
}
void Put(Encoder&, const GetStatus&) {}
void Put(Encoder& e, const AgentStatus& m) {
  e.Str(m.name);
  e.U32(static_cast<uint32_t>(m.replicas.size()));
  for (const auto& r : m.replicas) {
    e.Str(r.service);
    e.Str(r.client);
    e.U64(r.consumed_seq);
    e.U64(static_cast<uint64_t>(r.expires));
  }
  e.U64(m.cache_bytes);
  e.U64(m.from_cache);
  e.U64(m.from_stick);
  e.U64(m.from_home);
  e.U32(m.capacity.max_replicas);
  e.U64(m.capacity.budget_mib);
  e.U64(m.capacity.committed_mib);
  e.U64(m.capacity.host_free_mib);
}

// A u32 count of 32-byte ids, bounded by max and by the bytes left.
std::vector<ChunkId> Ids(Decoder& d, uint32_t max, const char* field) {
  uint32_t n = d.U32();
  std::vector<ChunkId> ids;
  if (n > max) {
    d.Fail(std::string(field) + " holds " + std::to_string(n) + " ids, more than the limit of " +
           std::to_string(max));
    return ids;
  }
  if (size_t(n) * ChunkId::kSize > d.remaining()) {
    d.Fail(std::string(field) + " claims " + std::to_string(n) + " ids but the frame is shorter");
    return ids;
  }
  ids.reserve(n);
  for (uint32_t i = 0; i < n; ++i) ids.push_back(d.Id());
  return ids;
}

Bytes Blob(Decoder& d, size_t max, const char* field) {
  uint32_t n = d.U32();
  if (n > max || n > d.remaining()) {
    d.Fail(std::string(field) + " claims " + std::to_string(n) + " bytes, more than the frame holds");
    return {};
  }
  ByteView v = d.Raw(n);
  return Bytes(v.begin(), v.end());
}

Message Get(Decoder& d, MessageType t) {
  switch (t) {
    case MessageType::kHello: {
      Hello m;
      m.min_version = d.U16();
      m.max_version = d.U16();
      m.software = d.Str(kMaxText, "software");
      return m;
    }
    case MessageType::kError: {
      Error m;
      uint16_t code = d.U16();
      if (code == 0 || code > static_cast<uint16_t>(Status::Code::kUnavailable)) code = uint16_t(Status::Code::kIOError);
      m.code = static_cast<Status::Code>(code);
      m.message = d.Str(kMaxText, "message");
      return m;
    }
    case MessageType::kGetChunks: {
      GetChunks m;
      m.ids = Ids(d, kMaxBatch, "chunk request");
      if (d.ok() && m.ids.empty()) d.Fail("chunk request names no chunks");
      return m;
    }
    case MessageType::kChunkData: {
      ChunkData m;
      m.id = d.Id();
      uint8_t present = d.U8();
      if (present > 1) d.Fail("chunk presence flag is " + std::to_string(present));
      m.present = present == 1;
      m.value = Blob(d, kMaxChunkSize + 64, "chunk value");
      if (!m.present && !m.value.empty()) d.Fail("an absent chunk carries a value");
      return m;
    }
    case MessageType::kGetObject: return GetObject{d.Id()};
    case MessageType::kObjectData: {
      ObjectData m;
      m.id = d.Id();
      m.bytes = Blob(d, kMaxWirePayload, "object");
      return m;
    }
    case MessageType::kGetRef: return GetRef{d.Str(kMaxText, "ref name")};
    case MessageType::kRefData: {
      RefData m;
      m.name = d.Str(kMaxText, "ref name");
      m.kind = d.U8();
      m.object = d.Id();
      return m;
    }
    case MessageType::kGetWorkingSet: return GetWorkingSet{d.Id()};
    case MessageType::kWorkingSet: {
      WorkingSet m;
      m.table = d.Id();
      m.ids = Ids(d, kMaxWorkingSet, "working set");
      return m;
    }
    case MessageType::kAttach: {
      Attach m;
      m.service = d.Str(kMaxName, "service");
      if (d.remaining() > 0) {  // absent from older clients
        uint8_t t = d.U8();
        if (t > 1) d.Fail("take-over flag is " + std::to_string(t));
        m.take_over = t == 1;
      }
      return m;
    }
    case MessageType::kHandOver: return HandOver{d.Str(kMaxName, "device")};
    case MessageType::kPutWorkingSet: {
      PutWorkingSet m;
      m.table = d.Id();
      m.ids = Ids(d, kMaxWorkingSet, "working set");
      if (d.ok() && m.ids.empty()) d.Fail("a working set to store names no chunks");
      return m;
    }
    case MessageType::kAttached: {
      Attached m;
      m.service = d.Str(kMaxName, "service");
      m.replica = d.Str(kMaxName, "replica");
      m.width = d.U16();
      m.height = d.U16();
      m.consumed_seq = d.U64();
      if (m.width == 0 || m.height == 0 || m.width > kMaxScreenSide || m.height > kMaxScreenSide) {
        d.Fail("screen size " + std::to_string(m.width) + "x" + std::to_string(m.height) + " is out of range");
      }
      return m;
    }
    case MessageType::kInput: {
      Input m;
      m.seq = d.U64();
      m.type = d.U16();
      m.payload = Blob(d, kMaxInputPayload, "input");
      if (d.ok() && m.seq == 0) d.Fail("input seq 0 (seqs start at 1)");
      return m;
    }
    case MessageType::kConsumed: return Consumed{d.U64()};
    case MessageType::kScreen: {
      Screen m;
      uint8_t full = d.U8();
      if (full > 1) d.Fail("screen full flag is " + std::to_string(full));
      m.full = full == 1;
      uint32_t n = d.U32();
      if (n > kMaxScreenRects || size_t(n) * 13 > d.remaining()) {
        d.Fail("screen update claims " + std::to_string(n) + " rectangles");
        return m;
      }
      m.rects.resize(n);
      for (auto& r : m.rects) {
        r.x = d.U16();
        r.y = d.U16();
        r.w = d.U16();
        r.h = d.U16();
        r.codec = d.U8();
        r.data = Blob(d, kMaxWirePayload, "rectangle");
        if (!d.ok()) break;
        if (r.w == 0 || r.h == 0 || uint32_t(r.x) + r.w > kMaxScreenSide || uint32_t(r.y) + r.h > kMaxScreenSide) {
          d.Fail("screen rectangle out of range");
        } else if (r.codec > 1) {
          d.Fail("screen rectangle codec " + std::to_string(r.codec) + " is unknown");
        } else if (r.codec == 0 && r.data.size() != size_t(r.w) * r.h * 4) {
          d.Fail("raw rectangle holds " + std::to_string(r.data.size()) + " bytes, not w*h*4");
        }
      }
      return m;
    }
    case MessageType::kRepaint: return Repaint{};
    case MessageType::kLeave: return Leave{};
    case MessageType::kCheckpointed: {
      Checkpointed m;
      m.epoch = d.U64();
      m.seq = d.U64();
      return m;
    }
    case MessageType::kGetCapability: {
      GetCapability m;
      m.service = d.Str(kMaxName, "service");
      m.valid_seconds = d.U32();
      return m;
    }
    case MessageType::kCapability: {
      Capability m;
      m.service = d.Str(kMaxName, "service");
      m.cert_pem = d.Str(kMaxPem, "certificate");
      m.key_pem = d.Str(kMaxPem, "key");
      m.not_after = static_cast<int64_t>(d.U64());
      if (d.remaining() > 0) m.signed_manifest = Blob(d, kMaxCarriedManifest, "signed manifest");
      return m;
    }
    case MessageType::kInstantiate: {
      Instantiate m;
      m.service = d.Str(kMaxName, "service");
      m.home_host = d.Str(kMaxName, "home host");
      m.home_port = d.U16();
      m.ca_pem = d.Str(kMaxPem, "CA certificate");
      m.manifest_key = Blob(d, 64, "manifest key");
      m.cert_pem = d.Str(kMaxPem, "capability certificate");
      m.key_pem = d.Str(kMaxPem, "capability key");
      m.stick_dir = d.Str(kMaxText, "stick directory");
      if (d.remaining() > 0) m.signed_manifest = Blob(d, kMaxCarriedManifest, "signed manifest");
      return m;
    }
    case MessageType::kProgress: {
      Progress m;
      m.phase = d.Str(kMaxName, "phase");
      m.done = d.U64();
      m.total = d.U64();
      m.from_cache = d.U64();
      m.from_stick = d.U64();
      m.from_home = d.U64();
      return m;
    }
    case MessageType::kGetStatus: return GetStatus{};
    case MessageType::kAgentStatus: {
      AgentStatus m;
      m.name = d.Str(kMaxName, "name");
      uint32_t n = d.U32();
      if (n > 4096 || size_t(n) * 24 > d.remaining()) {
        d.Fail("status claims " + std::to_string(n) + " replicas");
        return m;
      }
      m.replicas.resize(n);
      for (auto& r : m.replicas) {
        r.service = d.Str(kMaxName, "service");
        r.client = d.Str(kMaxName, "client");
        r.consumed_seq = d.U64();
        r.expires = static_cast<int64_t>(d.U64());
      }
      m.cache_bytes = d.U64();
      m.from_cache = d.U64();
      m.from_stick = d.U64();
      m.from_home = d.U64();
      if (d.remaining() > 0) {  // absent from older agents
        m.capacity.max_replicas = d.U32();
        m.capacity.budget_mib = d.U64();
        m.capacity.committed_mib = d.U64();
        m.capacity.host_free_mib = d.U64();
      }
      return m;
    }
    case MessageType::kPair: {
      Pair m;
      m.device = d.Str(kMaxName, "device name");
      m.proof = Blob(d, kPairProofSize, "pairing proof");
      if (d.ok() && m.proof.size() != kPairProofSize) d.Fail("pairing proof is not " + std::to_string(kPairProofSize) + " bytes");
      return m;
    }
    case MessageType::kPaired: {
      Paired m;
      m.cert_pem = d.Str(kMaxPem, "certificate");
      m.ca_pem = d.Str(kMaxPem, "CA certificate");
      m.manifest_key = Blob(d, 64, "manifest key");
      m.home_address = d.Str(kMaxName, "home address");
      m.proof = Blob(d, kPairProofSize, "pairing proof");
      if (d.ok() && m.proof.size() != kPairProofSize) d.Fail("pairing proof is not " + std::to_string(kPairProofSize) + " bytes");
      return m;
    }
  }
  d.Fail("message type " + std::to_string(static_cast<unsigned>(t)) + " is not in this side's catalogue");
  return Error{};
}

// The variant's alternatives in MessageType order.
constexpr MessageType kTypes[] = {
    MessageType::kHello,     MessageType::kError,      MessageType::kGetChunks,
    MessageType::kChunkData, MessageType::kGetObject,  MessageType::kObjectData,
    MessageType::kGetRef,    MessageType::kRefData,    MessageType::kGetWorkingSet,
    MessageType::kWorkingSet, MessageType::kAttach,     MessageType::kAttached,
    MessageType::kInput,      MessageType::kConsumed,   MessageType::kScreen,
    MessageType::kRepaint,    MessageType::kCheckpointed, MessageType::kGetCapability,
    MessageType::kCapability, MessageType::kInstantiate, MessageType::kProgress,
    MessageType::kGetStatus,  MessageType::kAgentStatus, MessageType::kPair,
    MessageType::kPaired,     MessageType::kHandOver,   MessageType::kPutWorkingSet, MessageType::kLeave};
static_assert(std::size(kTypes) == std::variant_size_v<Message>);

}  // namespace

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHello: return "Hello";
    case MessageType::kError: return "Error";
    case MessageType::kGetChunks: return "GetChunks";
    case MessageType::kChunkData: return "ChunkData";
    case MessageType::kGetObject: return "GetObject";
    case MessageType::kObjectData: return "ObjectData";
    case MessageType::kGetRef: return "GetRef";
    case MessageType::kRefData: return "RefData";
    case MessageType::kGetWorkingSet: return "GetWorkingSet";
    case MessageType::kWorkingSet: return "WorkingSet";
    case MessageType::kAttach: return "Attach";
    case MessageType::kHandOver: return "HandOver";
    case MessageType::kAttached: return "Attached";
    case MessageType::kInput: return "Input";
    case MessageType::kConsumed: return "Consumed";
    case MessageType::kScreen: return "Screen";
    case MessageType::kRepaint: return "Repaint";
    case MessageType::kCheckpointed: return "Checkpointed";
    case MessageType::kGetCapability: return "GetCapability";
    case MessageType::kCapability: return "Capability";
    case MessageType::kInstantiate: return "Instantiate";
    case MessageType::kProgress: return "Progress";
    case MessageType::kGetStatus: return "GetStatus";
    case MessageType::kAgentStatus: return "AgentStatus";
    case MessageType::kPair: return "Pair";
    case MessageType::kPaired: return "Paired";
    case MessageType::kPutWorkingSet: return "PutWorkingSet";
    case MessageType::kLeave: return "Leave";
  }
  return "unknown";
}

Status Hello::Check(std::string_view peer) const {
  if (min_version <= kVersion && kVersion <= max_version) return Status::OK();
  return Status::Unsupported(std::string(peer) + " (" + software + ") speaks wire protocol versions " +
                             std::to_string(min_version) + " to " + std::to_string(max_version) +
                             " and this side speaks version " + std::to_string(kVersion) +
                             ": install the same Slingshot release on both sides");
}

Status Error::ToStatus(std::string_view peer) const {
  std::string msg(peer);
  msg += " answered: ";
  msg += message;
  return Status::FromCode(code == Status::Code::kOk ? Status::Code::kIOError : code, std::move(msg));
}

MessageType TypeOf(const Message& m) { return kTypes[m.index()]; }

Bytes EncodeFrame(uint32_t request, const Message& m) {
  Bytes out(kHeaderSize);
  Encoder e(&out);
  std::visit([&](const auto& msg) { Put(e, msg); }, m);
  uint32_t length = static_cast<uint32_t>(out.size() - kHeaderSize);
  uint8_t* h = out.data();
  std::memcpy(h, kMagic, 4);
  PutU16(h + 4, kVersion);
  PutU16(h + 6, static_cast<uint16_t>(TypeOf(m)));
  PutU32(h + 8, request);
  PutU32(h + 12, length);
  PutU32(h + 16, crc32c::Value(out.data() + kHeaderSize, length));
  PutU32(h + 20, crc32c::Value(h, 20));
  return out;
}

Result<FrameHeader> DecodeHeader(ByteView header) {
  if (header.size() != kHeaderSize) {
    return Status::Corruption("frame header is " + std::to_string(header.size()) + " bytes, not " +
                              std::to_string(kHeaderSize));
  }
  const uint8_t* h = header.data();
  if (std::memcmp(h, kMagic, 4) != 0) {
    return Status::Corruption("not a Slingshot frame (bad magic): the peer is not speaking the Slingshot protocol");
  }
  if (GetU32(h + 20) != crc32c::Value(h, 20)) return Status::Corruption("frame header fails its checksum");
  FrameHeader f;
  f.version = GetU16(h + 4);
  f.type = static_cast<MessageType>(GetU16(h + 6));
  f.request = GetU32(h + 8);
  f.length = GetU32(h + 12);
  f.payload_crc = GetU32(h + 16);
  if (f.version != kVersion) {
    return Status::Unsupported("the peer speaks wire protocol version " + std::to_string(f.version) +
                               " and this side speaks version " + std::to_string(kVersion) +
                               ": install the same Slingshot release on both sides");
  }
  if (f.length > kMaxWirePayload) {
    return Status::Corruption("frame claims a payload of " + std::to_string(f.length) +
                              " bytes, over the limit of " + std::to_string(kMaxWirePayload));
  }
  return f;
}

Result<Message> DecodePayload(const FrameHeader& h, ByteView payload) {
  if (payload.size() != h.length) return Status::Corruption("frame payload is shorter than its header says");
  if (crc32c::Value(payload.data(), payload.size()) != h.payload_crc) {
    return Status::Corruption(std::string(MessageTypeName(h.type)) + " frame fails its payload checksum");
  }
  std::string what = std::string(MessageTypeName(h.type)) + " message";
  Decoder d(payload, what);
  Message m = Get(d, h.type);
  SLINGSHOT_RETURN_IF_ERROR(d.Finish());
  return m;
}

}  // namespace slingshot::wire
