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
    std::string role, key, extra;
    if (!(fields >> role)) continue;  // blank or comment
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (!(fields >> key)) return Status::InvalidArgument(where + "expected \"<role> <key>\"");
    if (fields >> extra) return Status::InvalidArgument(where + "expected \"<role> <key>\", found more");
    Role r = role == "read" ? Role::kRead : role == "admin" ? Role::kAdmin : Role::kNone;
    if (r == Role::kNone) return Status::InvalidArgument(where + "unknown role \"" + role + "\" (read or admin)");
    if (key.size() < 16) return Status::InvalidArgument(where + "keys must be at least 16 characters");
    keys.keys_.emplace_back(r, key);
  }
  if (keys.keys_.empty()) return Status::InvalidArgument(path + ": no keys");
  *out = std::move(keys);
  return Status::OK();
}

Role ApiKeys::Authenticate(const std::string& presented) const {
  Role found = Role::kNone;
  // Every key is compared (no early exit), so timing does not tell which one matched.
  for (const auto& [role, key] : keys_) {
    if (ConstantTimeEquals(presented, key) && role > found) found = role;
  }
  return found;
}

}  // namespace mnemo
