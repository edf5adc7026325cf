// Integers read from mnemo's JSON files (manifest.json, documents.jsonl, state.json). nlohmann's get<int>()
// converts whatever number it finds: 4.5 becomes 4, 2^40 wraps, and 1e30 is undefined behaviour (a
// float-to-integer conversion out of range). JsonInt accepts only a JSON integer that fits T, and otherwise
// throws nlohmann::json's type_error or out_of_range, which the readers already report as Corruption.
// (Found by fuzz/datastore_manifest_fuzz; see docs/FUZZING.md.)
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace mnemo {

template <typename T>
T JsonInt(const nlohmann::json& j) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "JsonInt reads integers");
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<T>::max());
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (v <= kMax) return static_cast<T>(v);
  } else if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v >= 0 ? static_cast<uint64_t>(v) <= kMax
               : std::is_signed_v<T> && v >= static_cast<int64_t>(std::numeric_limits<T>::min())) {
      return static_cast<T>(v);
    }
  } else {
    throw nlohmann::json::type_error::create(302, std::string("type must be an integer, but is ") + j.type_name(), &j);
  }
  throw nlohmann::json::out_of_range::create(406, "integer " + j.dump() + " is out of range", &j);
}

// JsonInt of j[key] when j has the key, else `fallback` (as nlohmann's j.value(key, fallback)).
template <typename T>
T JsonIntOr(const nlohmann::json& j, const char* key, T fallback) {
  return j.contains(key) ? JsonInt<T>(j.at(key)) : fallback;
}

}  // namespace mnemo
