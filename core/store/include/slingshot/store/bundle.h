// Bundles: a store's refs with every object and chunk they reach, as one
// file to carry (export/import, portable-storage packs). DESIGN.md §4.
//
// File format: a POSIX ustar archive (written by libarchive) compressed as
// a single zstd frame with a content checksum, i.e. a plain .tar.zst that
// `tar --zstd -tvf` lists, then a zstd skippable frame (which zstd tools
// skip) holding "SSBT", a version, and the length and CRC-32C of every byte
// before it: a flip anywhere in the file is caught, even in bits that the
// zstd format tells decoders to ignore. Entries, in this order:
//   SLINGSHOT-BUNDLE   index: sealed frame (coding.h), magic "SSBN", v1:
//                      u32 ref count, refs { str name, u8 kind, id },
//                      u64 object count, u64 chunk count
//   objects/<hex id>   object bytes, sorted by id
//   chunks/<hex id>    uncompressed chunk bytes, sorted by id
// Every entry has mode 0644, owner 0:0, no owner names and mtime 0, so the
// same refs over the same content give a byte-identical file.
//
// Import checks everything before it trusts anything: the zstd checksum,
// the index, each object's and chunk's hash against its name, every
// manifest's signature (when a trusted key is given), and that each ref's
// whole graph is present. Refs are set only when all of that holds; a bad
// bundle sets no ref (chunks already stored are correct by construction,
// and garbage collection removes them).
#ifndef SLINGSHOT_STORE_BUNDLE_H_
#define SLINGSHOT_STORE_BUNDLE_H_

#include <string>
#include <vector>

#include "slingshot/store/chunk_store.h"
#include "slingshot/base/keys.h"

namespace slingshot {

struct BundleStats {
  uint64_t refs = 0;
  uint64_t objects = 0;
  uint64_t chunks = 0;
  uint64_t chunk_bytes = 0;  // uncompressed
  uint64_t file_bytes = 0;
};

struct BundleExportOptions {
  std::vector<std::string> refs;  // empty = every ref
  int zstd_level = 3;
};

// Writes the bundle to path atomically (temp file, fsync, rename).
Result<BundleStats> ExportBundle(ChunkStore* store, const std::string& path,
                                 const BundleExportOptions& options = {});

struct BundleImportOptions {
  // When set, every manifest must be signed by this key.
  const PublicKey* trusted_key = nullptr;
};

Result<BundleStats> ImportBundle(const std::string& path, ChunkStore* store,
                                 const BundleImportOptions& options = {});

}  // namespace slingshot

#endif  // SLINGSHOT_STORE_BUNDLE_H_
