#include "api/api_keys.h"

#include <sstream>

#include "util/file_util.h"

namespace mnemo {
namespace {

// Equal-length comparison whose time depends only on the lengths.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kRead: return "read";
    case Role::kAdmin: return "admin";
    default: return "none";
  }
}

Status ApiKeys::Load(const std::string& path, ApiKeys* out) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  ApiKeys keys;
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string role, key, name, extra;
    if (!(fields >> role)) continue;  // blank or comment
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (!(fields >> key)) return Status::InvalidArgument(where + "expected \"<role> <key> [<name>]\"");
    fields >> name;
    if (fields >> extra) return Status::InvalidArgument(where + "expected \"<role> <key> [<name>]\", found more");
    Role r = role == "read" ? Role::kRead : role == "admin" ? Role::kAdmin : Role::kNone;
    if (r == Role::kNone) return Status::InvalidArgument(where + "unknown role \"" + role + "\" (read or admin)");
    if (key.size() < 16) return Status::InvalidArgument(where + "keys must be at least 16 characters");
    if (name.empty()) name = role + "-" + std::to_string(number);
    if (name.size() > 64 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") !=
                                std::string::npos) {
      return Status::InvalidArgument(where + "a key's name has letters, digits and ._@- only, at most 64 of them");
    }
    if (name == key) return Status::InvalidArgument(where + "a key's name must not be the key (names are logged)");
    for (const Key& k : keys.keys_) {
      if (k.name == name) return Status::InvalidArgument(where + "the name \"" + name + "\" is used twice");
    }
    keys.keys_.push_back({r, key, name});
  }
  if (keys.keys_.empty()) return Status::InvalidArgument(path + ": no keys");
  *out = std::move(keys);
  return Status::OK();
}

Role ApiKeys::Authenticate(const std::string& presented, std::string* name) const {
  Role found = Role::kNone;
  const std::string* found_name = nullptr;
  // Every key is compared (no early exit), so timing does not tell which one matched.
  for (const Key& k : keys_) {
    if (ConstantTimeEquals(presented, k.key) && k.role > found) {
      found = k.role;
      found_name = &k.name;
    }
  }
  if (name != nullptr) *name = found_name != nullptr ? *found_name : "";
  return found;
}

}  // namespace mnemo
