// Strict JSON request fields: a wrong type is an InvalidArgument naming the field, never silently coerced
// (a string "5" is not an integer, 1.5 is not an integer, true is not a number).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "util/status.h"

namespace mnemo::api {

using Json = nlohmann::ordered_json;

// Each reads body[name] when present and not null into *out (leaving *out untouched otherwise) and sets
// *present (may be null).
Status OptionalInt(const Json& body, const char* name, int64_t min, int64_t max, int64_t* out, bool* present = nullptr);
Status OptionalNumber(const Json& body, const char* name, double min, double max, double* out, bool* present = nullptr);
Status OptionalBool(const Json& body, const char* name, bool* out, bool* present = nullptr);
Status OptionalString(const Json& body, const char* name, std::string* out, bool* present = nullptr);

// One line of JSON; text that ends inside a UTF-8 sequence becomes U+FFFD instead of an exception.
std::string Dump(const Json& j);

}  // namespace mnemo::api
