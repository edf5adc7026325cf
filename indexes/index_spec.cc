#include "indexes/index_spec.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>

#include "indexes/auto_index.h"

namespace mnemo {
namespace {

constexpr char kSupportedForms[] =
    "supported forms are \"Flat\", \"IVF<nlist>,Flat\", \"IVF<nlist>,PQ<m>\" and \"IVF<nlist>,PQ<m>x<bits>\"";

// Consumes a positive decimal integer (no sign, no leading zero) from the front of `s`. Values past
// `max` are rejected here so that the caller never sees an overflowed number.
bool ConsumePositive(std::string_view* s, int64_t max, int64_t* out) {
  size_t i = 0;
  int64_t value = 0;
  while (i < s->size() && (*s)[i] >= '0' && (*s)[i] <= '9') {
    if (i == 0 && (*s)[i] == '0') return false;
    value = value * 10 + ((*s)[i] - '0');
    if (value > max) return false;
    ++i;
  }
  if (i == 0) return false;
  s->remove_prefix(i);
  *out = value;
  return true;
}

bool ConsumePrefix(std::string_view* s, std::string_view prefix) {
  if (s->substr(0, prefix.size()) != prefix) return false;
  s->remove_prefix(prefix.size());
  return true;
}

}  // namespace

std::string IndexSpec::ToString() const {
  switch (kind) {
    case Kind::kFlat:
      return "Flat";
    case Kind::kIvfFlat:
      return "IVF" + std::to_string(nlist) + ",Flat";
    case Kind::kIvfPq: {
      std::string s = "IVF" + std::to_string(nlist) + ",PQ" + std::to_string(pq_m);
      if (pq_bits != 8) s += "x" + std::to_string(pq_bits);
      return s;
    }
  }
  return "";
}

int64_t IndexSpec::MinTrainingVectors() const {
  if (kind == Kind::kFlat) return 0;
  int64_t n = nlist;
  if (kind == Kind::kIvfPq && (int64_t{1} << pq_bits) > n) n = int64_t{1} << pq_bits;
  return n;
}

Status ParseIndexSpec(const std::string& spec, int dim, IndexSpec* out) {
  if (dim < 1 || dim > kMaxIndexDim) {
    return Status::InvalidArgument("vector dimension " + std::to_string(dim) + " is outside [1, " +
                                   std::to_string(kMaxIndexDim) + "]");
  }
  auto unsupported = [&spec]() {
    return Status::InvalidArgument("unsupported index spec \"" + spec + "\": " + kSupportedForms);
  };
  IndexSpec parsed;
  std::string_view s(spec);
  if (s == "Flat") {
    *out = parsed;
    return Status::OK();
  }
  if (!ConsumePrefix(&s, "IVF")) return unsupported();
  if (!ConsumePositive(&s, kMaxIndexLists, &parsed.nlist)) {
    if (!s.empty() && s[0] >= '1' && s[0] <= '9') {
      return Status::InvalidArgument("index spec \"" + spec + "\": nlist must be at most " +
                                     std::to_string(kMaxIndexLists));
    }
    return unsupported();
  }
  if (!ConsumePrefix(&s, ",")) return unsupported();
  if (s == "Flat") {
    parsed.kind = IndexSpec::Kind::kIvfFlat;
    *out = parsed;
    return Status::OK();
  }
  if (!ConsumePrefix(&s, "PQ")) return unsupported();
  int64_t m = 0;
  int64_t bits = 8;  // FAISS's default: one byte per sub-quantizer code
  if (!ConsumePositive(&s, kMaxIndexDim, &m)) return unsupported();
  if (ConsumePrefix(&s, "x")) {
    if (!ConsumePositive(&s, 16, &bits)) {
      return Status::InvalidArgument("index spec \"" + spec + "\": PQ bits must be in [1, 16]");
    }
  }
  if (!s.empty()) return unsupported();
  if (dim % m != 0) {
    return Status::InvalidArgument("index spec \"" + spec + "\": PQ" + std::to_string(m) +
                                   " needs m to divide the vector dimension " + std::to_string(dim));
  }
  parsed.kind = IndexSpec::Kind::kIvfPq;
  parsed.pq_m = static_cast<int>(m);
  parsed.pq_bits = static_cast<int>(bits);
  *out = parsed;
  return Status::OK();
}

std::string AutoIndexSpec(int64_t count, int dim, int64_t train_sample) {
  if (count < kAutoExactBelow || dim < 4) return "Flat";
  const double target = 4.0 * std::sqrt(static_cast<double>(count));
  const int64_t trainable = std::min(count, train_sample);
  int64_t nlist = 64;
  while (nlist * 2 <= target * 1.5 && (nlist * 2) * 39 <= trainable) nlist *= 2;
  int m = dim / 4;
  while (dim % m != 0) --m;
  return "IVF" + std::to_string(nlist) + ",PQ" + std::to_string(m);
}

}  // namespace mnemo
