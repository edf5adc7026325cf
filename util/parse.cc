#include "util/parse.h"

#include <charconv>
#include <string>

namespace mnemo {

Status ParseInt64(std::string_view text, int64_t min, int64_t max, int64_t* out) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != end) {
    return Status::InvalidArgument("\"" + std::string(text.substr(0, 64)) + (text.size() > 64 ? "...": "") +
                                   "\" is not an integer");
  }
  if (ec == std::errc::result_out_of_range || v < min || v > max) {
    return Status::InvalidArgument(std::string(text.substr(0, 64)) + (text.size() > 64 ? "..." : "") +
                                   " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  *out = v;
  return Status::OK();
}

Status ParseInt64List(std::string_view text, int64_t min, int64_t max, std::vector<int64_t>* out) {
  std::vector<int64_t> values;
  size_t at = 0;
  while (true) {
    const size_t comma = std::min(text.find(',', at), text.size());
    int64_t v = 0;
    MNEMO_RETURN_IF_ERROR(ParseInt64(text.substr(at, comma - at), min, max, &v));
    values.push_back(v);
    if (comma == text.size()) break;
    at = comma + 1;
  }
  *out = std::move(values);
  return Status::OK();
}

}  // namespace mnemo
