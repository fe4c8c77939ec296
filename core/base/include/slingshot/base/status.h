// Status and Result<T>: how every core module reports errors.
//
// Errors are values across module boundaries (no exceptions leave core).
// A Status is either OK or carries a Code and a message meant for a human:
// it says what was wrong and, where it can, what to do about it.
//
//   kNotFound      the thing asked for does not exist (a chunk, a ref, a file).
//   kCorruption    stored or received bytes fail a check (magic, version,
//                  checksum, hash, a length that lies). Never "fixed" silently.
//   kInvalidArgument  the caller passed something unusable.
//   kIOError       the operating system refused (open, write, fsync, ENOSPC…).
//   kUnsupported   a format version or feature this build does not know.
//   kAlreadyExists refusing to overwrite (a key file, a store).
//   kResourceExhausted  a configured limit was reached (cache budget…).
//
// Thread-safety: Status and Result are values; distinct objects may be used
// from distinct threads freely.
#ifndef SLINGSHOT_BASE_STATUS_H_
#define SLINGSHOT_BASE_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace slingshot {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,
    kCorruption,
    kInvalidArgument,
    kIOError,
    kUnsupported,
    kAlreadyExists,
    kResourceExhausted,
    kPermissionDenied,  // the peer is not trusted or not allowed
    kUnavailable,       // a peer or service cannot be reached (or timed out)
  };

  Status() = default;
  static Status OK() { return Status(); }
  // For codes carried over the wire.
  static Status FromCode(Code code, std::string msg) { return Status(code, std::move(msg)); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status InvalidArgument(std::string msg) {
    return Status(Code::kInvalidArgument, std::move(msg));
  }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  // IOError from errno: "<context>: <strerror(err)>".
  static Status FromErrno(std::string_view context, int err);
  static Status Unsupported(std::string msg) { return Status(Code::kUnsupported, std::move(msg)); }
  static Status AlreadyExists(std::string msg) {
    return Status(Code::kAlreadyExists, std::move(msg));
  }
  static Status PermissionDenied(std::string msg) {
    return Status(Code::kPermissionDenied, std::move(msg));
  }
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }
  static Status ResourceExhausted(std::string msg) {
    return Status(Code::kResourceExhausted, std::move(msg));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }

  // "Corruption: <message>", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>" (no-op when OK).
  Status Annotate(std::string_view context) const;

 private:
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

const char* CodeName(Status::Code code);

// Result<T> holds either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
    // In a release build, never an error that reads as success.
    if (std::get<Status>(v_).ok()) v_ = Status::IOError("internal error: a result was built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace slingshot

// Propagation helpers for implementation files.
#define SLINGSHOT_RETURN_IF_ERROR(expr)          \
  do {                                           \
    ::slingshot::Status _st = (expr);            \
    if (!_st.ok()) return _st;                   \
  } while (0)

#define SLINGSHOT_CONCAT_INNER(a, b) a##b
#define SLINGSHOT_CONCAT(a, b) SLINGSHOT_CONCAT_INNER(a, b)
#define SLINGSHOT_ASSIGN_OR_RETURN(lhs, expr) \
  SLINGSHOT_ASSIGN_OR_RETURN_IMPL(SLINGSHOT_CONCAT(_res_, __LINE__), lhs, expr)
#define SLINGSHOT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

#endif  // SLINGSHOT_BASE_STATUS_H_
