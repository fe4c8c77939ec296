// Writes a seed corpus of real objects for the fuzz targets: make_seeds DIR.
// Each file starts with the selector byte its target switches on.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "slingshot/store/bundle.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/base/coding.h"
#include "slingshot/store/disk_table.h"
#include "slingshot/store/event_log.h"
#include "slingshot/store/manifest.h"
#include "slingshot/store/memory_image.h"
#include "slingshot/service/rfb.h"
#include "slingshot/vm/vm_stream.h"
#include "slingshot/net/wire.h"
#include "slingshot/store/working_set.h"

using namespace slingshot;
namespace fs = std::filesystem;

namespace {
void Seed(const std::string& dir, const std::string& name, uint8_t selector, ByteView body) {
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.put(static_cast<char>(selector));
  f.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
}
Bytes Body(ByteView frame) { return Bytes(frame.begin() + 12, frame.end() - 4); }  // strip the seal
Bytes Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const std::string out = argv[1];
  const std::string dec = out + "/decoders", files = out + "/files", work = out + "/work";
  fs::create_directories(dec);
  fs::create_directories(files);
  fs::remove_all(work);
  auto key = SigningKey::Generate().value();

  DiskTable t;
  t.image_size = 3 * 65536 + 10;
  t.ids = {ChunkId::Of(AsBytes("a")), ChunkId(), ChunkId::Of(AsBytes("b")), ChunkId::Of(AsBytes("c"))};
  ChunkList l;
  l.entries = {{ChunkId::Of(AsBytes("x")), 100}, {ChunkId(), 4096}};
  l.total_size = 4196;
  Manifest m;
  m.service_id = "notepad";
  m.service_type = "rfb";
  m.epoch = 3;
  m.vm = {256, 1, "console=ttyS0", "qemu", "{}"};
  Bytes signed_m = SignManifest(m, key);
  Seed(dec, "table", 0, t.Encode());
  Seed(dec, "list", 1, l.Encode());
  Seed(dec, "signed", 2, signed_m);
  Seed(dec, "manifest", 3, m.Encode());
  Seed(dec, "value", 4, ChunkStore::EncodeValue(AsBytes("some chunk bytes, some chunk bytes"), 1));
  Seed(dec, "table-body", 6, Body(t.Encode()));
  Seed(dec, "list-body", 7, Body(l.Encode()));
  Seed(dec, "manifest-body", 8, Body(m.Encode()));
  Seed(dec, "signed-body", 9, Body(signed_m));
  {
    Bytes vs;
    VmStreamWriter w([&](ByteView b) { vs.insert(vs.end(), b.begin(), b.end()); return Status::OK(); });
    (void)w.Begin({"qemu", 128, 1, "{\"machine\":\"pc\"}"});
    (void)w.Write(AsBytes("QEVM save stream bytes"));
    (void)w.Finish();
    Seed(dec, "vm-stream", 10, vs);
  }
  Seed(dec, "wire-chunks", 11, wire::EncodeFrame(7, wire::GetChunks{{ChunkId::Of(AsBytes("a")), ChunkId::Of(AsBytes("b"))}}));
  Seed(dec, "wire-data", 11, wire::EncodeFrame(7, wire::ChunkData{ChunkId::Of(AsBytes("a")), true,
                                                                   ChunkStore::EncodeValue(AsBytes("a"), 1)}));
  Seed(dec, "wire-ws", 11, wire::EncodeFrame(9, wire::WorkingSet{ChunkId::Of(AsBytes("t")), {ChunkId::Of(AsBytes("a"))}}));
  {
    Bytes b = wire::EncodeFrame(1, wire::Hello{1, 1, "fuzz"});
    Bytes body(b.begin() + wire::kHeaderSize, b.end());
    body.insert(body.begin(), {1, 0});
    Seed(dec, "wire-hello-body", 12, body);
  }
  for (const wire::Message& m : std::vector<wire::Message>{
           wire::Attached{"notepad", "home", 640, 400, 7}, wire::Input{8, 1, Bytes{4, 1, 0, 0, 0, 0, 0, 97}},
           wire::Screen{false, {wire::ScreenRect{1, 2, 1, 1, 0, Bytes(4, 9)}}},
           wire::Instantiate{"notepad", "10.0.0.1", 7390, "ca", Bytes(32, 1), "cert", "key", ""},
           wire::AgentStatus{"cafe", {wire::ReplicaStatus{"notepad", "alice", 8, 1}}, 1, 2, 3, 4},
           wire::Pair{"laptop", Bytes(wire::kPairProofSize, 1)},
           wire::Paired{"cert", "ca", Bytes(32, 1), "10.0.0.1:7390", Bytes(wire::kPairProofSize, 2)}}) {
    Bytes b = wire::EncodeFrame(0, m);
    Bytes body(b.begin() + wire::kHeaderSize, b.end());
    uint16_t type = static_cast<uint16_t>(wire::TypeOf(m));
    body.insert(body.begin(), {static_cast<uint8_t>(type), 0});
    Seed(dec, std::string("wire-body-") + wire::MessageTypeName(wire::TypeOf(m)), 12, body);
  }
  Seed(dec, "rfb-key", 14, [] { Bytes b{1}; Bytes k = rfb::KeyEvent(true, 'a'); b.insert(b.end(), k.begin(), k.end()); return b; }());
  Seed(dec, "working-set", 13, Body(WorkingSetRecord{ChunkId::Of(AsBytes("t")), {ChunkId::Of(AsBytes("a"))}}.Encode()));

  // An NBD session: handshake, GO, a read, a write, a flush, a trim, disconnect.
  {
    const std::string nbd = out + "/nbd";
    fs::create_directories(nbd);
    Bytes s;
    auto be = [&](uint64_t v, int n) {
      for (int i = n - 1; i >= 0; --i) s.push_back(uint8_t(v >> (8 * i)));
    };
    be(3, 4);  // client flags: fixed newstyle, no zeroes
    auto opt = [&](uint32_t o, const std::string& name) {
      be(0x49484156454F5054ull, 8);
      be(o, 4);
      be(4 + name.size() + 2, 4);
      be(name.size(), 4);
      s.insert(s.end(), name.begin(), name.end());
      be(0, 2);
    };
    opt(6, "table");  // INFO
    opt(7, "table");  // GO
    auto req = [&](uint16_t type, uint64_t off, uint32_t len) {
      be(0x25609513, 4);
      be(0, 2);
      be(type, 2);
      be(42, 8);
      be(off, 8);
      be(len, 4);
    };
    req(0, 0, 4096);
    req(1, 65536, 8);
    s.insert(s.end(), 8, 'w');
    req(3, 0, 0);
    req(4, 0, 4096);
    req(0, 65530, 100);
    req(2, 0, 0);
    std::FILE* f = std::fopen((nbd + "/session").c_str(), "wb");
    std::fwrite(s.data(), 1, s.size(), f);
    std::fclose(f);
  }

  {
    auto log = EventLog::Open(work + "/log").value();
    for (int i = 0; i < 20; ++i) (void)log->Append(static_cast<uint16_t>(i % 3), AsBytes("key event " + std::to_string(i)));
  }
  Seed(files, "segment", 0, Slurp(work + "/log/seg-00000000000000000001.log"));
  {
    auto store = ChunkStore::Open(work + "/store", {}).value();
    Bytes img(3 * 65536, 7);
    std::ofstream(work + "/d.img", std::ios::binary).write(reinterpret_cast<const char*>(img.data()), img.size());
    auto imp = ImportDisk(work + "/d.img", store.get()).value();
    ChunkId tid = store->PutObject(imp.table.Encode()).value();
    (void)store->SetRef({"disk/seed", ObjectKind::kDiskTable, tid});
    (void)ExportBundle(store.get(), work + "/b.tar.zst");
  }
  Seed(files, "bundle", 1, Slurp(work + "/b.tar.zst"));
  fs::remove_all(work);
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
