// libFuzzer target: an event log segment or a bundle made of arbitrary
// bytes. Recovery and import must fail cleanly or succeed with only valid
// content; they must never crash.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "slingshot/store/bundle.h"
#include "slingshot/store/chunk_store.h"
#include "slingshot/store/event_log.h"
#include "slingshot/base/log.h"

using namespace slingshot;
namespace fs = std::filesystem;

namespace {
std::string Scratch() {
  static std::string dir = [] {
    std::string t = (fs::temp_directory_path() / "slingshot-fuzz-XXXXXX").string();
    if (!::mkdtemp(t.data())) std::abort();
    SetLogLevel(LogLevel::kNone);
    return t;
  }();
  return dir;
}
void Write(const std::string& path, const uint8_t* d, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(d), static_cast<std::streamsize>(n));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string dir = Scratch();
  if (data[0] % 2 == 0) {
    const std::string log = dir + "/log";
    fs::remove_all(log);
    fs::create_directories(log);
    Write(log + "/seg-00000000000000000001.log", data + 1, size - 1);
    auto l = EventLog::Open(log);
    if (l.ok()) {
      uint64_t expect = 1;
      Status st = (*l)->ReadFrom(0, [&](const LogRecord& r) {
        if (r.seq != expect++) __builtin_trap();  // records come back contiguous
        return true;
      });
      if (!st.ok()) __builtin_trap();  // what Open accepted must read back
    }
  } else {
    const std::string bundle = dir + "/b.tar.zst", store = dir + "/store";
    Write(bundle, data + 1, size - 1);
    fs::remove_all(store);
    ChunkStoreOptions o;
    o.mode = ChunkStoreOptions::Mode::kCache;
    auto s = ChunkStore::Open(store, o);
    if (!s.ok()) std::abort();
    (void)ImportBundle(bundle, s->get());
  }
  return 0;
}
