#include "slingshot/wire.h"

#include <cstring>

#include "slingshot/coding.h"
#include "slingshot/crc32c.h"

namespace slingshot::wire {
namespace {

constexpr char kMagic[4] = {'S', 'S', 'W', 'P'};
constexpr size_t kMaxText = 4096;  // software names, error messages, ref names

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
  }
  d.Fail("message type " + std::to_string(static_cast<unsigned>(t)) + " is not in this side's catalogue");
  return Error{};
}

// The variant's alternatives in MessageType order.
constexpr MessageType kTypes[] = {
    MessageType::kHello,     MessageType::kError,      MessageType::kGetChunks,
    MessageType::kChunkData, MessageType::kGetObject,  MessageType::kObjectData,
    MessageType::kGetRef,    MessageType::kRefData,    MessageType::kGetWorkingSet,
    MessageType::kWorkingSet};
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
