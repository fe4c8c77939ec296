// The wire protocol between Slingshot's programs (DESIGN.md §3, §6): frames
// and the one catalogue of messages. Frames travel inside TLS 1.3
// (transport.h); this file knows nothing about sockets.
//
// Frame, version 1 (little-endian), a 24-byte header then the payload:
//   magic        4 bytes  "SSWP"
//   version      u16      1
//   type         u16      MessageType (below)
//   request      u32      chosen by the requester, echoed by every reply
//   length       u32      payload bytes, <= kMaxWirePayload
//   payload_crc  u32      CRC-32C of the payload
//   header_crc   u32      CRC-32C of the preceding 20 bytes
// A reader checks the header CRC before it believes the length, and the
// payload CRC before it decodes. A frame of another version is answered with
// an Error naming both versions, then the connection is closed: a peer that
// speaks another version would not understand anything else we said.
//
// Requests and replies: a requester may send many requests before reading
// replies (pipelining); a server answers them in the order received. Most
// requests get one reply; GetChunks gets one ChunkData per id, in order.
// Any request may instead get an Error.
//
// Every message is one struct in the Message variant: the catalogue. Adding a
// message means adding a struct, a MessageType and its codec in wire.cc, and
// nothing else.
#ifndef SLINGSHOT_NET_WIRE_H_
#define SLINGSHOT_NET_WIRE_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/status.h"

namespace slingshot::wire {

constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderSize = 24;
// The largest payload: one chunk value (kMaxChunkSize plus its header) and
// its id, with room to spare. Objects (tables, lists) are capped by it too.
constexpr uint32_t kMaxWirePayload = kMaxChunkSize + 4096;
// Ids per GetChunks request.
constexpr uint32_t kMaxBatch = 1024;
// Ids in a WorkingSet reply (a 64 GiB disk of 64 KiB chunks, all touched, is
// 1 Mi ids: 32 MiB, over the frame cap, so the set is truncated at this many).
constexpr uint32_t kMaxWorkingSet = kMaxWirePayload / ChunkId::kSize - 16;

enum class MessageType : uint16_t {
  kHello = 1,          // both ways, first: who I am, what I speak
  kError = 2,          // a reply: the request failed, and why
  kGetChunks = 3,      // ids -> one ChunkData each
  kChunkData = 4,      // one chunk's stored value, or absent
  kGetObject = 5,      // object id -> ObjectData
  kObjectData = 6,
  kGetRef = 7,         // ref name -> RefData
  kRefData = 8,
  kGetWorkingSet = 9,  // disk table id -> WorkingSet
  kWorkingSet = 10,
  // Replica sessions (replica.h): a client attached to a replica, both ways
  // at once (full duplex, no request/reply pairing; request is 0).
  kAttach = 11,        // client -> replica host: attach to a service's replica
  kAttached = 12,      // replica host -> client: screen size, what it has consumed
  kInput = 13,         // client -> replica: one logged input, in seq order
  kConsumed = 14,      // replica -> client: every input <= seq is consumed
  kScreen = 15,        // replica -> client: one screen update
  kRepaint = 16,       // client -> replica: send the whole screen
  kCheckpointed = 17,  // home -> client: a published checkpoint covers inputs <= seq
  // Capabilities and instantiation.
  kGetCapability = 18,  // client -> home: a capability for a surrogate
  kCapability = 19,
  kInstantiate = 20,    // client -> agent: make a replica; Progress*, then Attached
  kProgress = 21,
  kGetStatus = 22,      // anyone -> agent
  kAgentStatus = 23,
  // Pairing over the network (pairing.h): a client that holds a pairing
  // code but no credentials yet, and the home's pairing listener.
  kPair = 24,           // client -> home: proof that it knows the code
  kPaired = 25,         // home -> client: its certificate and the home's proof
  kHandOver = 26,       // home -> client: another device takes the service over
  // A surrogate -> home: the order a replica first read a table's chunks
  // (its RAM's, when served on demand); the reply is a WorkingSet with the
  // table and no ids.
  kPutWorkingSet = 27,
  // Client -> replica host, in a session: the user is done with this
  // replica; a surrogate destroys it at once instead of holding it for the
  // client to attach again.
  kLeave = 28,
};
const char* MessageTypeName(MessageType t);

struct Hello {
  uint16_t min_version = kVersion;
  uint16_t max_version = kVersion;
  std::string software;  // "slingshot-home 0.3.0"
  // Unsupported (naming both sides' versions) unless the peer's range
  // includes kVersion.
  Status Check(std::string_view peer) const;
};

struct Error {
  Status::Code code = Status::Code::kIOError;
  std::string message;
  Status ToStatus(std::string_view peer) const;
};

struct GetChunks {
  std::vector<ChunkId> ids;  // 1..kMaxBatch
};

struct ChunkData {
  ChunkId id;
  bool present = false;
  Bytes value;  // the stored value (chunk_store.h format); unverified until decoded
};

struct GetObject {
  ChunkId id;
};

struct ObjectData {
  ChunkId id;
  Bytes bytes;  // unverified until hashed
};

struct GetRef {
  std::string name;
};

struct RefData {
  std::string name;
  uint8_t kind = 0;  // ObjectKind
  ChunkId object;
};

struct GetWorkingSet {
  ChunkId table;
};

struct WorkingSet {
  ChunkId table;
  std::vector<ChunkId> ids;  // first-read order; may be empty
};

struct PutWorkingSet {
  ChunkId table;
  std::vector<ChunkId> ids;  // first-read order, 1..kMaxWorkingSet, chunks of the table
};

// The largest logged input (an RFB cut-text message, say).
constexpr uint32_t kMaxInputPayload = 64u << 10;
// Rectangles in one Screen message.
constexpr uint32_t kMaxScreenRects = 4096;
// Screen sizes a replica may report.
constexpr uint32_t kMaxScreenSide = 8192;

struct Attach {
  std::string service;
  // Another device of the same user holds the service: take it over (the
  // holder is sent HandOver, the home checkpoints, and this client's log
  // starts afresh after the checkpoint's seq, which Attached reports).
  bool take_over = false;
};
struct Attached {
  std::string service;
  std::string replica;        // "home" or the surrogate's name
  uint16_t width = 0, height = 0;
  uint64_t consumed_seq = 0;  // inputs <= this are in the replica's state
};
struct Input {
  uint64_t seq = 0;
  uint16_t type = 0;  // the ServiceAdapter's input type
  Bytes payload;      // <= kMaxInputPayload
};
struct Consumed {
  uint64_t seq = 0;
};
// Pixels are 32-bit little-endian 0x00RRGGBB, row-major.
struct ScreenRect {
  uint16_t x = 0, y = 0, w = 0, h = 0;
  uint8_t codec = 0;  // 0: raw pixels, 1: one zstd frame of them
  Bytes data;
};
struct Screen {
  bool full = false;  // a whole-screen repaint
  std::vector<ScreenRect> rects;
};
struct Repaint {};
struct Checkpointed {
  uint64_t epoch = 0;
  uint64_t seq = 0;
};
struct GetCapability {
  std::string service;
  uint32_t valid_seconds = 0;
};
// A short-lived certificate from the home CA, role "surrogate", that names
// the service and the client (tls.h IssueCapability), and its key.
struct Capability {
  std::string service;
  std::string cert_pem;
  std::string key_pem;
  int64_t not_after = 0;  // unix seconds
  // Trailing, absent from older homes: the service's current signed
  // manifest, already granted to this capability, for the client to hand
  // the agent (which then need not ask home for it). Empty: none.
  Bytes signed_manifest;
};
// The largest signed manifest that travels in a Capability or Instantiate.
constexpr uint32_t kMaxCarriedManifest = 64u << 10;
struct Instantiate {
  std::string service;
  std::string home_host;
  uint16_t home_port = 0;
  std::string ca_pem;       // the home CA: pins the home, checks the capability
  Bytes manifest_key;       // the home's Ed25519 manifest key (32 bytes)
  std::string cert_pem;     // the capability
  std::string key_pem;
  std::string stick_dir;    // portable storage plugged into the surrogate ("" = none)
  // Trailing, absent from older clients: the Capability's signed manifest
  // (verified by the agent all the same). Empty: the agent asks home.
  Bytes signed_manifest;
};
struct Progress {
  std::string phase;        // "manifest", "files", "restore" or "boot", "ready"
  uint64_t done = 0, total = 0;  // bytes of this phase
  uint64_t from_cache = 0, from_stick = 0, from_home = 0;  // bytes so far by source
};
struct GetStatus {};
struct ReplicaStatus {
  std::string service;
  std::string client;
  uint64_t consumed_seq = 0;
  int64_t expires = 0;  // the capability's not_after
};
// What a surrogate can still host (admission.h). Trailing on the wire:
// absent (all zero) from older agents.
struct AgentCapacity {
  uint32_t max_replicas = 0;
  uint64_t budget_mib = 0;     // memory for replicas in all
  uint64_t committed_mib = 0;  // of it, what admitted replicas hold
  uint64_t host_free_mib = 0;  // the host's free memory now, less its reserve
};
struct AgentStatus {
  std::string name;
  std::vector<ReplicaStatus> replicas;
  uint64_t cache_bytes = 0;
  uint64_t from_cache = 0, from_stick = 0, from_home = 0;
  AgentCapacity capacity;
};

// Proofs are HMAC-SHA256 under the pairing code over the TLS session's
// channel binding (pairing.h): a man in the middle has two sessions, and
// cannot make a proof for either without the code.
constexpr size_t kPairProofSize = 32;
struct Pair {
  std::string device;  // how the client calls itself (shown at home; the home names the certificate)
  Bytes proof;         // kPairProofSize bytes
};
struct Paired {
  std::string cert_pem;      // the client's certificate, for the key of its TLS session
  std::string ca_pem;        // the home CA
  Bytes manifest_key;        // the home's Ed25519 manifest key (32 bytes)
  std::string home_address;  // where the client reaches the home daemon ("host:port")
  Bytes proof;               // kPairProofSize bytes, over everything above too
};

// The session's holder is asked to stop: take no more input, let the home
// consume what it has logged (Consumed reaches its last seq), then close.
struct HandOver {
  std::string device;  // who takes over
};
struct Leave {};

using Message = std::variant<Hello, Error, GetChunks, ChunkData, GetObject, ObjectData, GetRef,
                             RefData, GetWorkingSet, WorkingSet, Attach, Attached, Input, Consumed,
                             Screen, Repaint, Checkpointed, GetCapability, Capability, Instantiate,
                             Progress, GetStatus, AgentStatus, Pair, Paired, HandOver, PutWorkingSet, Leave>;

MessageType TypeOf(const Message& m);

struct FrameHeader {
  uint16_t version = kVersion;
  MessageType type{};
  uint32_t request = 0;
  uint32_t length = 0;
  uint32_t payload_crc = 0;
};

// A whole frame: header and payload.
Bytes EncodeFrame(uint32_t request, const Message& m);

// Checks a 24-byte header. Corruption for a bad magic, CRC or length;
// Unsupported (naming both versions) for another version.
Result<FrameHeader> DecodeHeader(ByteView header);

// Checks the payload's CRC and decodes it as h.type. Corruption for a bad
// CRC, an unknown type or a malformed body (saying which field).
Result<Message> DecodePayload(const FrameHeader& h, ByteView payload);

}  // namespace slingshot::wire

#endif  // SLINGSHOT_NET_WIRE_H_
