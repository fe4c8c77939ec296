// Minimal leveled logging to stderr: "<time> <level> <message>".
// Thread-safe: each message is written with one write(2).
#ifndef SLINGSHOT_BASE_LOG_H_
#define SLINGSHOT_BASE_LOG_H_

#include <string_view>

namespace slingshot {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kNone = 4 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void Log(LogLevel level, std::string_view message);
inline void LogInfo(std::string_view m) { Log(LogLevel::kInfo, m); }
inline void LogWarning(std::string_view m) { Log(LogLevel::kWarning, m); }
inline void LogError(std::string_view m) { Log(LogLevel::kError, m); }

}  // namespace slingshot

#endif  // SLINGSHOT_BASE_LOG_H_
