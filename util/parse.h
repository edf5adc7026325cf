// Strict integer parsing of outside text (flags, URL paths, query parameters): the whole text must be one
// decimal integer in range; no sign other than '-', no spaces, no trailing bytes, no silent wrap-around.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace mnemo {

// InvalidArgument (saying what the text is not) unless `text` is an integer in [min, max].
Status ParseInt64(std::string_view text, int64_t min, int64_t max, int64_t* out);

// "1,4,16" -> {1, 4, 16}, each in [min, max]; InvalidArgument for an empty list or item.
Status ParseInt64List(std::string_view text, int64_t min, int64_t max, std::vector<int64_t>* out);

}  // namespace mnemo
