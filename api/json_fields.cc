#include "api/json_fields.h"

#include <cmath>

namespace mnemo::api {
namespace {

Status WrongType(const char* name, const char* want) {
  return Status::InvalidArgument(std::string(name) + ": must be " + want);
}

}  // namespace

Status OptionalInt(const Json& body, const char* name, int64_t min, int64_t max, int64_t* out, bool* present) {
  if (present != nullptr) *present = false;
  if (!body.contains(name) || body[name].is_null()) return Status::OK();
  const Json& v = body[name];
  if (!v.is_number_integer()) return WrongType(name, "an integer");
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
  if (x < min || x > max) {
    return Status::InvalidArgument(std::string(name) + ": must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  *out = x;
  if (present != nullptr) *present = true;
  return Status::OK();
}

Status OptionalNumber(const Json& body, const char* name, double min, double max, double* out, bool* present) {
  if (present != nullptr) *present = false;
  if (!body.contains(name) || body[name].is_null()) return Status::OK();
  const Json& v = body[name];
  if (!v.is_number()) return WrongType(name, "a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    return Status::InvalidArgument(std::string(name) + ": must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  *out = x;
  if (present != nullptr) *present = true;
  return Status::OK();
}

Status OptionalBool(const Json& body, const char* name, bool* out, bool* present) {
  if (present != nullptr) *present = false;
  if (!body.contains(name) || body[name].is_null()) return Status::OK();
  if (!body[name].is_boolean()) return WrongType(name, "true or false");
  *out = body[name].get<bool>();
  if (present != nullptr) *present = true;
  return Status::OK();
}

Status OptionalString(const Json& body, const char* name, std::string* out, bool* present) {
  if (present != nullptr) *present = false;
  if (!body.contains(name) || body[name].is_null()) return Status::OK();
  if (!body[name].is_string()) return WrongType(name, "a string");
  *out = body[name].get<std::string>();
  if (present != nullptr) *present = true;
  return Status::OK();
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace mnemo::api
