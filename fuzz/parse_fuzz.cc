// util/parse.h (ParseInt64, ParseInt64List: flags, URL path ids, query parameters) and util/hash.h (FNV-1a,
// CRC32: the checksums every file format here relies on).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "util/hash.h"
#include "util/parse.h"

namespace {

// What a strict decimal integer looks like: an optional '-', then one or more digits.
bool LooksDecimal(const std::string& s) {
  const size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
  return s.size() > start && std::all_of(s.begin() + start, s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint8_t mode = in.ConsumeIntegral<uint8_t>();
  int64_t min = INT64_MIN, max = INT64_MAX;
  if (mode & 1) {
    const int64_t a = in.ConsumeIntegral<int64_t>(), b = in.ConsumeIntegral<int64_t>();
    min = std::min(a, b);
    max = std::max(a, b);
  }
  const std::string text = in.ConsumeRemainingBytesAsString();

  int64_t v = 0;
  const mnemo::Status s = mnemo::ParseInt64(text, min, max, &v);
  if (s.ok()) {
    FUZZ_CHECK(v >= min && v <= max);
    FUZZ_CHECK(LooksDecimal(text));
    errno = 0;
    char* end = nullptr;
    const long long expected = std::strtoll(text.c_str(), &end, 10);
    FUZZ_CHECK(errno == 0 && end == text.c_str() + text.size() && expected == v);
  } else {
    FUZZ_CHECK(s.IsInvalidArgument());
  }

  std::vector<int64_t> list;
  const mnemo::Status ls = mnemo::ParseInt64List(text, min, max, &list);
  if (ls.ok()) {
    FUZZ_CHECK(list.size() == static_cast<size_t>(std::count(text.begin(), text.end(), ',')) + 1);
    for (int64_t x : list) FUZZ_CHECK(x >= min && x <= max);
  } else {
    FUZZ_CHECK(ls.IsInvalidArgument());
  }

  // Hashes continued over a split equal the hash of the whole.
  const size_t cut = text.empty() ? 0 : mode % (text.size() + 1);
  FUZZ_CHECK(mnemo::Fnv1a64(text.data() + cut, text.size() - cut, mnemo::Fnv1a64(text.data(), cut)) ==
             mnemo::Fnv1a64(text));
  FUZZ_CHECK(mnemo::Crc32(text.data() + cut, text.size() - cut, mnemo::Crc32(text.data(), cut)) ==
             mnemo::Crc32(text.data(), text.size()));
  return 0;
}
