// Helpers shared by the unit tests: temp directories, deterministic data,
// bit flips in files.
#ifndef SLINGSHOT_TESTS_UNIT_TEST_UTIL_H_
#define SLINGSHOT_TESTS_UNIT_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>

#include "slingshot/base/chunk_id.h"

namespace slingshot::testing {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "slingshot-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline Bytes RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  for (; i < n; ++i) b[i] = static_cast<uint8_t>(rng());
  return b;
}

// Text-like, compressible bytes.
inline Bytes TextBytes(size_t n, uint64_t seed) {
  static const char* kWords[] = {"slingshot ", "replica ", "surrogate ", "checkpoint ", "chunk ", "home ", "log "};
  std::mt19937_64 rng(seed);
  Bytes b;
  b.reserve(n);
  while (b.size() < n) {
    const char* w = kWords[rng() % 7];
    for (const char* c = w; *c && b.size() < n; ++c) b.push_back(static_cast<uint8_t>(*c));
  }
  return b;
}

inline Bytes ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void WriteFile(const std::string& path, ByteView data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

inline void FlipBit(const std::string& path, uint64_t bit) {
  Bytes b = ReadFile(path);
  ASSERT_LT(bit / 8, b.size());
  b[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  WriteFile(path, b);
}

// Runs fn in a forked child and returns its exit code (-1 if it died of a
// signal). For tests that change process-wide state (rlimits) or crash.
inline int RunInChild(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  if (pid < 0) return -2;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Crash test harness. Runs write(ack) in a child, which calls ack(v) after
// each durable step; once `after` acks have reached the parent, the child is
// killed with SIGKILL mid-stream. Returns the last value acknowledged (acks
// already in the pipe when it died count: they were acknowledged), or
// nullopt if the child stopped on its own (its write failed).
inline std::optional<uint64_t> KillDuringWrites(
    const std::function<void(const std::function<void(uint64_t)>& ack)>& write, uint64_t after) {
  int fds[2];
  if (::pipe(fds) != 0) return std::nullopt;
  pid_t pid = ::fork();
  if (pid < 0) return std::nullopt;
  if (pid == 0) {
    ::close(fds[0]);
    write([&](uint64_t v) {
      if (::write(fds[1], &v, sizeof(v)) != sizeof(v)) ::_exit(5);
    });
    ::_exit(4);  // write() must not return: it writes until killed
  }
  ::close(fds[1]);
  uint64_t acks = 0, last = 0, v;
  bool ok = true;
  while (acks < after) {
    if (::read(fds[0], &v, sizeof(v)) != static_cast<ssize_t>(sizeof(v))) {
      ok = false;  // the child ended early
      break;
    }
    last = v;
    ++acks;
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  while (::read(fds[0], &v, sizeof(v)) == static_cast<ssize_t>(sizeof(v))) last = v;
  ::close(fds[0]);
  if (!ok || !WIFSIGNALED(status)) return std::nullopt;
  return last;
}

// Offset of needle in haystack, or npos.
inline size_t Find(ByteView hay, ByteView needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end());
  return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

}  // namespace slingshot::testing

#endif  // SLINGSHOT_TESTS_UNIT_TEST_UTIL_H_
