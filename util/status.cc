#include "util/status.h"

namespace mnemo {

std::string Status::ToString() const {
  const char* kind = "OK";
  switch (code_) {
    case Code::kOk: return "OK";
    case Code::kNotFound: kind = "Not found"; break;
    case Code::kCorruption: kind = "Corruption"; break;
    case Code::kInvalidArgument: kind = "Invalid argument"; break;
    case Code::kIOError: kind = "IO error"; break;
    case Code::kFailedPrecondition: kind = "Failed precondition"; break;
    case Code::kCancelled: kind = "Cancelled"; break;
    case Code::kInternal: kind = "Internal error"; break;
    case Code::kUnavailable: kind = "Unavailable"; break;
  }
  return std::string(kind) + ": " + message_;
}

}  // namespace mnemo
