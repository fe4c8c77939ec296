// A QMP (QEMU Machine Protocol) client over a unix socket. JSON is parsed
// with nlohmann/json. Not thread-safe: the owner serializes calls.
#ifndef SLINGSHOT_HYPERVISOR_QMP_H_
#define SLINGSHOT_HYPERVISOR_QMP_H_

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "slingshot/base/file_util.h"
#include "slingshot/base/status.h"

namespace slingshot {

class QmpClient {
 public:
  // Connects (retrying while the socket does not exist yet and alive()
  // says QEMU still runs), reads the greeting and negotiates capabilities.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                    int timeout_ms,
                                                    const std::function<bool()>& alive);

  // Runs one command. With fd >= 0 the descriptor travels with the command
  // (SCM_RIGHTS), as getfd expects. A QMP error becomes IOError with QEMU's
  // class and description.
  Result<nlohmann::json> Execute(const std::string& command,
                                 const nlohmann::json& arguments = nlohmann::json::object(),
                                 int fd = -1, int timeout_ms = 30000);

  // Asynchronous events received so far, oldest first; clears the list.
  std::vector<nlohmann::json> TakeEvents();

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<nlohmann::json> ReadMessage(int timeout_ms);
  Status Send(const std::string& line, int fd);

  UniqueFd fd_;
  std::string buffer_;
  std::vector<nlohmann::json> events_;
};

}  // namespace slingshot

#endif  // SLINGSHOT_HYPERVISOR_QMP_H_
