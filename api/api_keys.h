// API keys for the HTTP server: a file of "<role> <key> [<name>]" lines (roles `read` and `admin`, '#'
// starts a comment). The name (letters, digits and ._@-, at most 64 characters; "<role>-<line>" when
// absent) is how the action log names who acted: the log never holds a key. `read` may complete, score and tokenize; `admin` may also manage facts, run audits and see the
// text of neighbouring facts. Keys are compared in constant time so response timing does not reveal how
// much of a guessed key was right.
//
// Thread-safety: immutable after Load; Authenticate may run on any thread.
#pragma once

#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

enum class Role { kNone = 0, kRead = 1, kAdmin = 2 };

const char* RoleName(Role role);

class ApiKeys {
 public:
  // InvalidArgument naming the line for an unknown role, a missing key or a key shorter than 16 bytes.
  static Status Load(const std::string& path, ApiKeys* out);
  // The role of `presented`, kNone when it matches no key; *name (may be null) receives the key's name
  // (empty for kNone).
  Role Authenticate(const std::string& presented, std::string* name = nullptr) const;
  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }

 private:
  struct Key {
    Role role;
    std::string key, name;
  };
  std::vector<Key> keys_;
};

}  // namespace mnemo
