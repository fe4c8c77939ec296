// Retention and garbage collection of checkpoints (core/replica/retention.h)
// on a real transactional store: 500 checkpoints of a guest whose memory
// keeps changing, collected as the daemon does, stay within (K + 1)
// checkpoints' bytes; a manifest a live capability holds survives.
#include "slingshot/replica/retention.h"

#include <gtest/gtest.h>

#include <set>

#include "slingshot/base/keys.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "test_util.h"

namespace slingshot {
namespace {

using testing::TempDir;

// A guest's memory: 32 chunks of 64 KiB of random bytes; each checkpoint
// rewrites 8 of them (a quarter).
class Guest {
 public:
  Bytes Next() {
    for (int i = 0; i < 8; ++i) {
      size_t at = ((round_ * 8 + i) % kChunks) * kChunk;
      Bytes fresh = testing::RandomBytes(kChunk, ++seed_);
      std::copy(fresh.begin(), fresh.end(), memory_.begin() + at);
    }
    ++round_;
    return memory_;
  }
  static constexpr size_t kChunk = 64 << 10, kChunks = 32;

 private:
  Bytes memory_ = testing::RandomBytes(kChunk * kChunks, 1);
  uint64_t seed_ = 1;
  size_t round_ = 0;
};

Result<ChunkId> Checkpoint(ChunkStore* store, const SigningKey& key, uint64_t epoch, ByteView memory,
                           const std::string& service = "notepad") {
  MemoryImageWriter w(store, ChunkerOptions{});
  SLINGSHOT_RETURN_IF_ERROR(w.Write(memory));
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkList list, w.Finish());
  Manifest m;
  m.service_id = service;
  m.service_type = "rfb";
  m.epoch = epoch;
  m.last_seq = epoch * 10;
  SLINGSHOT_ASSIGN_OR_RETURN(m.memory_list, store->PutObject(list.Encode()));
  m.memory_size = list.total_size;
  SLINGSHOT_ASSIGN_OR_RETURN(ChunkId id, store->PutObject(SignManifest(m, key)));
  SLINGSHOT_RETURN_IF_ERROR(store->SetRef(Ref{"manifest/" + service, ObjectKind::kManifest, id}));
  SLINGSHOT_RETURN_IF_ERROR(RecordCheckpoint(store, service, epoch, id));
  return id;
}

TEST(RetentionTest, FiveHundredCheckpointsStayWithinKPlusOneCheckpoints) {
  TempDir t;
  ChunkStoreOptions o;
  o.compression_level = 0;
  auto store = ChunkStore::Open(t.path(), o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto key = SigningKey::Generate();
  ASSERT_TRUE(key.ok());
  Guest guest;
  const RetentionPolicy policy{3};
  const uint64_t one = Guest::kChunk * Guest::kChunks;  // one checkpoint's bytes
  uint64_t most = 0;
  ChunkId held;  // a manifest a live capability was granted, 100 epochs back
  for (uint64_t epoch = 1; epoch <= 500; ++epoch) {
    auto id = Checkpoint(store->get(), *key, epoch, guest.Next());
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    if (epoch == 300) held = *id;
    std::vector<ChunkId> live;
    if (epoch >= 300 && epoch < 400) live.push_back(held);
    auto r = ApplyRetention(store->get(), policy, live);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    if (epoch > 3) {
      EXPECT_EQ(r->kept_checkpoints, epoch >= 303 && epoch < 400 ? 4u : 3u) << epoch;
    }
    auto st = (*store)->Stats();
    ASSERT_TRUE(st.ok());
    // Without the held one: the newest K share 3/4 of their chunks.
    if (epoch < 300 || epoch >= 400) most = std::max(most, st->pack_file_bytes);
  }
  RecordProperty("most_pack_bytes", std::to_string(most));
  RecordProperty("one_checkpoint_bytes", std::to_string(one));
  EXPECT_LE(most, (policy.keep_checkpoints + 1) * one * 11 / 10) << "store grew past (K + 1) checkpoints + 10%";
  // The held manifest is gone once its capability is, with its chunks.
  EXPECT_TRUE((*store)->GetObject(held).status().IsNotFound());
  auto refs = (*store)->ListRefs();
  ASSERT_TRUE(refs.ok());
  size_t history = 0;
  for (const auto& r : *refs) history += r.name.rfind("history/notepad/", 0) == 0;
  EXPECT_EQ(history, 3u);
  // What is kept restores: every chunk of the current checkpoint is there.
  auto cur = (*store)->GetRef("manifest/notepad");
  ASSERT_TRUE(cur.ok());
  auto m = DecodeSignedManifestUnverified(*(*store)->GetObject(cur->object));
  ASSERT_TRUE(m.ok());
  auto list = ChunkList::Decode(*(*store)->GetObject(m->memory_list));
  ASSERT_TRUE(list.ok());
  for (const auto& e : list->entries) EXPECT_TRUE((*store)->Get(e.id).ok());
}

TEST(RetentionTest, AManifestALiveCapabilityHoldsSurvivesAndUnusedWorkingSetsGo) {
  TempDir t;
  auto store = ChunkStore::Open(t.path(), {});
  ASSERT_TRUE(store.ok());
  auto key = SigningKey::Generate();
  Guest guest;
  auto first = Checkpoint(store->get(), *key, 1, guest.Next());
  ASSERT_TRUE(first.ok());
  // A working set of a table nothing uses any more.
  ChunkId stale = ChunkId::Of(AsBytes("old table"));
  ASSERT_TRUE((*store)->SetRef(Ref{"working-set/" + stale.ToHex(), ObjectKind::kWorkingSet,
                                   *(*store)->PutObject(AsBytes("SSWS-not-really"))}).ok());
  for (uint64_t e = 2; e <= 4; ++e) ASSERT_TRUE(Checkpoint(store->get(), *key, e, guest.Next()).ok());
  auto r = ApplyRetention(store->get(), RetentionPolicy{1}, {*first});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kept_checkpoints, 2u);  // the newest and the held one
  EXPECT_EQ(r->dropped_checkpoints, 2u);
  EXPECT_EQ(r->dropped_working_sets, 1u);
  EXPECT_GT(r->gc.swept_chunks, 0u);
  EXPECT_LT(r->stored_bytes_after, r->stored_bytes_before);
  EXPECT_TRUE((*store)->GetObject(*first).ok());
  EXPECT_TRUE((*store)->GetRef(HistoryRef("notepad", 1)).ok());
  EXPECT_TRUE((*store)->GetRef(HistoryRef("notepad", 2)).status().IsNotFound());
}

// The chunks a checkpoint's memory list names.
std::set<ChunkId> MemoryChunks(ChunkStore* store, const ChunkId& manifest) {
  std::set<ChunkId> ids;
  auto m = DecodeSignedManifestUnverified(*store->GetObject(manifest));
  auto list = ChunkList::Decode(*store->GetObject(m->memory_list));
  for (const auto& e : list->entries) ids.insert(e.id);
  return ids;
}

uint64_t ObjectBytes(ChunkStore* store, const ChunkId& id) { return store->GetObject(id)->size(); }

// Two services whose memories share their first half, and a ref of no
// service: each service's bytes count the shared chunks, its own bytes do
// not, and its own bytes are exactly what dropping it frees.
TEST(RetentionTest, UsagePerServiceCountsSharedChunksOnceAndOwnBytesAreWhatDroppingFrees) {
  TempDir t;
  ChunkStoreOptions o;
  o.compression_level = 0;
  auto opened = ChunkStore::Open(t.path(), o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ChunkStore* store = opened->get();
  auto key = SigningKey::Generate();
  ASSERT_TRUE(key.ok());
  const size_t half = Guest::kChunk * Guest::kChunks / 2;
  Bytes a = testing::RandomBytes(2 * half, 7), b = a;
  Bytes other = testing::RandomBytes(half, 8);
  std::copy(other.begin(), other.end(), b.begin() + half);
  auto ma = Checkpoint(store, *key, 1, a, "notepad");
  auto mb = Checkpoint(store, *key, 1, b, "editor");
  ASSERT_TRUE(ma.ok() && mb.ok());
  ASSERT_TRUE(store->SetRef(Ref{"disk/imported", ObjectKind::kChunkList,
                                DecodeSignedManifestUnverified(*store->GetObject(*ma))->memory_list}).ok());

  auto usage = MeasureUsage(store);
  ASSERT_TRUE(usage.ok()) << usage.status().ToString();
  ASSERT_EQ(usage->size(), 3u);
  const ServiceUsage& editor = (*usage)[0];
  const ServiceUsage& notepad = (*usage)[1];
  EXPECT_EQ(editor.service, "editor");
  EXPECT_EQ(notepad.service, "notepad");
  EXPECT_EQ((*usage)[2].service, "");  // the refs of no service, last
  EXPECT_EQ(editor.checkpoints, 1u);

  const std::set<ChunkId> ca = MemoryChunks(store, *ma), cb = MemoryChunks(store, *mb);
  uint64_t shared = 0, only_b = 0, all_b = 0;
  for (const auto& id : cb) {
    const uint64_t size = store->SizeOf(id)->stored;
    all_b += size;
    (ca.count(id) ? shared : only_b) += size;
  }
  ASSERT_GT(shared, 0u);
  ASSERT_GT(only_b, 0u);
  const ChunkId list_b = DecodeSignedManifestUnverified(*store->GetObject(*mb))->memory_list;
  const uint64_t objects_b = ObjectBytes(store, *mb) + ObjectBytes(store, list_b);
  EXPECT_EQ(editor.chunks, cb.size());
  EXPECT_EQ(editor.bytes, all_b + objects_b);
  EXPECT_EQ(editor.own_bytes, only_b + objects_b);
  // notepad's chunks are all reached by "disk/imported" too: only its
  // manifest is its own.
  EXPECT_EQ(notepad.own_bytes, ObjectBytes(store, *ma));

  // Dropping editor frees exactly its own bytes.
  auto before = store->Stats();
  ASSERT_TRUE(store->DeleteRef("manifest/editor").ok());
  ASSERT_TRUE(store->DeleteRef(HistoryRef("editor", 1)).ok());
  auto gc = CollectGarbage(store);
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  auto after = store->Stats();
  EXPECT_EQ(before->stored_bytes - after->stored_bytes + objects_b, editor.own_bytes);
  EXPECT_EQ(gc->swept_objects, 2u);
}

}  // namespace
}  // namespace slingshot
