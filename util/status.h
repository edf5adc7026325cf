// Status: the outcome of an operation that can fail for reasons outside the program's control
// (I/O, corrupt files, user input). Modelled on LevelDB's Status: expected failures are values,
// exceptions are reserved for programming errors.
//
// Thread-safety: a Status is an immutable value; copies may be used from any thread.
#pragma once

#include <string>
#include <utility>

namespace mnemo {

class [[nodiscard]] Status {
 public:
  enum class Code { kOk = 0, kNotFound, kCorruption, kInvalidArgument, kIOError, kFailedPrecondition, kCancelled,
                    kInternal, kUnavailable };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string msg) { return Status(Code::kNotFound, std::move(msg)); }
  static Status Corruption(std::string msg) { return Status(Code::kCorruption, std::move(msg)); }
  static Status InvalidArgument(std::string msg) { return Status(Code::kInvalidArgument, std::move(msg)); }
  static Status IOError(std::string msg) { return Status(Code::kIOError, std::move(msg)); }
  static Status FailedPrecondition(std::string msg) {
    return Status(Code::kFailedPrecondition, std::move(msg));
  }
  // The caller gave up (client disconnected, deadline passed).
  static Status Cancelled(std::string msg) { return Status(Code::kCancelled, std::move(msg)); }
  // A bug or a resource failure inside mnemo or a library it calls (an exception caught at a boundary:
  // LibTorch, FAISS, out of memory), not something the caller did or the file system said.
  static Status Internal(std::string msg) { return Status(Code::kInternal, std::move(msg)); }
  // A part of the service this needs is down or not answering (a datastore shard's process); the same
  // request may succeed once it is back.
  static Status Unavailable(std::string msg) { return Status(Code::kUnavailable, std::move(msg)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsCancelled() const { return code_ == Code::kCancelled; }
  bool IsUnavailable() const { return code_ == Code::kUnavailable; }
  bool IsFailedPrecondition() const { return code_ == Code::kFailedPrecondition; }
  bool IsInternal() const { return code_ == Code::kInternal; }

  // "Corruption: model.safetensors: header length 9999 exceeds file size 120".
  std::string ToString() const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Returns early from the enclosing function when `expr` yields a non-OK Status.
#define MNEMO_RETURN_IF_ERROR(expr)          \
  do {                                       \
    ::mnemo::Status _mnemo_status = (expr);  \
    if (!_mnemo_status.ok()) return _mnemo_status; \
  } while (0)

}  // namespace mnemo
