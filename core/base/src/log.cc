#include "slingshot/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <string>

namespace slingshot {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
    case LogLevel::kNone: break;
  }
  return "";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level = level; }
LogLevel GetLogLevel() { return g_level; }

void Log(LogLevel level, std::string_view message) {
  if (level < g_level.load(std::memory_order_relaxed) || level == LogLevel::kNone) return;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char head[64];
  std::snprintf(head, sizeof(head), "%02d:%02d:%02d.%03ld %-5s ", t.tm_hour, t.tm_min, t.tm_sec,
                ts.tv_nsec / 1000000, LevelName(level));
  std::string line(head);
  line.append(message);
  line.push_back('\n');
  [[maybe_unused]] ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace slingshot
