// Checkpoint manifests (DESIGN.md §4): what a replica is made from, signed
// by the home's Ed25519 key. A surrogate trusts chunks only through a
// manifest whose signature verifies with the home key it was given.
//
// Manifest body: sealed frame (coding.h), magic "SSMF", version 5:
//   str service_id (<= 256)  str service_type (<= 64, e.g. "rfb")
//   u64 epoch                u64 last_seq (last event the primary consumed)
//   i64 created_ns           u32 memory_mib  u32 vcpus
//   str kernel_cmdline (<= 4096)  str backend (<= 64)  str backend_config (<= 1 MiB)
//   id  disk_table (object id of a DiskTable)     u64 disk_size
//   id  memory_list (object id of a ChunkList)    u64 memory_size
//   id  kernel (object id of a ChunkList)  u64 kernel_size      (version 2)
//   id  initrd (ChunkList, or all zero)    u64 initrd_size      (version 2)
//   u8  state_on_disk (0 or 1)                                  (version 3)
//   u16 service_port (1..65535: the guest port its service       (version 4)
//       listens on; earlier versions mean 5900)
//   id  ram_table (object id of a DiskTable: the guest's main      (version 5)
//       memory by offset, when the memory image kept it apart; the
//       memory image is then device state only)
//   u64 ram_size (== memory_mib MiB)
// A manifest without a RAM table is written as version 4.
// The boot files travel with the checkpoint because a hypervisor restoring
// the VM elsewhere needs the same kernel and initrd it booted from.
// state_on_disk: the service keeps its whole state on its disk whenever it
// has consumed every input (the barrier), so a surrogate whose hypervisor
// cannot restore this memory image (another StreamFormat) may boot the
// guest from the checkpoint's disk instead and replay from last_seq.
// Version 1 bodies (no boot files), 2 (no state_on_disk), 3 (no
// service_port) and 4 (no RAM table) are still read.
// (str = u32 length + bytes; id = 32 bytes.) The memory chunk list is held
// by id rather than inline: the signature covers it just the same, and the
// manifest stays small enough to fetch first, before anything else.
//
// Signed manifest: sealed frame, magic "SSMS", version 1:
//   str manifest (the SSMF frame above, <= 4 MiB)
//   32 bytes signer public key, 64 bytes Ed25519 signature over
//   "slingshot manifest v1\0" || manifest.
#ifndef SLINGSHOT_STORE_MANIFEST_H_
#define SLINGSHOT_STORE_MANIFEST_H_

#include <string>

#include "slingshot/base/chunk_id.h"
#include "slingshot/base/keys.h"
#include "slingshot/base/status.h"

namespace slingshot {

// The guest port of a service whose manifest predates service_port.
constexpr uint16_t kDefaultServicePort = 5900;

struct VmConfig {
  uint32_t memory_mib = 0;
  uint32_t vcpus = 0;
  std::string kernel_cmdline;
  std::string backend;         // the save stream's format (Hypervisor::StreamFormat)
  std::string backend_config;  // its own configuration (e.g. libxl's JSON)
  friend bool operator==(const VmConfig&, const VmConfig&) = default;
};

struct Manifest {
  std::string service_id;
  std::string service_type;
  uint64_t epoch = 0;
  uint64_t last_seq = 0;
  int64_t created_ns = 0;
  VmConfig vm;
  ChunkId disk_table;
  uint64_t disk_size = 0;
  ChunkId memory_list;
  uint64_t memory_size = 0;
  ChunkId kernel;  // null in version 1 manifests
  uint64_t kernel_size = 0;
  ChunkId initrd;  // null if none
  uint64_t initrd_size = 0;
  bool state_on_disk = false;  // version 3; see above
  uint16_t service_port = kDefaultServicePort;  // version 4
  ChunkId ram_table;  // version 5; null: the memory image holds the RAM
  uint64_t ram_size = 0;
  friend bool operator==(const Manifest&, const Manifest&) = default;

  Bytes Encode() const;
  static Result<Manifest> Decode(ByteView bytes);
};

// The signed form, to store and send.
Bytes SignManifest(const Manifest& m, const SigningKey& key);

// Checks the envelope, that the signer is `trusted`, and the signature, then
// decodes. Corruption for any damage, a wrong signer or a bad signature.
Result<Manifest> VerifyManifest(ByteView signed_manifest, const PublicKey& trusted);

// Decodes without checking the signature: only for local bookkeeping of
// manifests that were verified on the way in (garbage collection,
// listings). Never use it to decide what to trust.
Result<Manifest> DecodeSignedManifestUnverified(ByteView signed_manifest);

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_MANIFEST_H_
