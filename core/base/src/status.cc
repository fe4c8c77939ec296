#include "slingshot/base/status.h"

#include <cstring>

namespace slingshot {

const char* CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "NotFound";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kInvalidArgument: return "InvalidArgument";
    case Status::Code::kIOError: return "IOError";
    case Status::Code::kUnsupported: return "Unsupported";
    case Status::Code::kAlreadyExists: return "AlreadyExists";
    case Status::Code::kResourceExhausted: return "ResourceExhausted";
    case Status::Code::kPermissionDenied: return "PermissionDenied";
    case Status::Code::kUnavailable: return "Unavailable";
  }
  return "Unknown";
}

Status Status::FromErrno(std::string_view context, int err) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  if (err == ENOSPC) msg += " (the disk is full: free space and retry; nothing acknowledged was lost)";
  return Status(Code::kIOError, std::move(msg));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  s += ": ";
  s += msg_;
  return s;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += msg_;
  return Status(code_, std::move(msg));
}

}  // namespace slingshot
