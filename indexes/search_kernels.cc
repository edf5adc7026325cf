#include "indexes/search_kernels.h"

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <algorithm>

namespace mnemo {
namespace {

#if defined(__SSE2__)
// sums[g * 4 + j] = squared L2 distance from x to the (g * 4 + j)-th of 4 * kGroups consecutive d-vectors,
// computed lane by lane exactly as the scalar loop in ScanVectors: four vectors share the four lanes of
// an SSE register (a 4 x 4 transpose per four coordinates), and kGroups independent sums are in flight.
template <size_t kGroups>
inline void SquaredL2Lanes(const float* x, const float* vectors, size_t d, float* sums) {
  __m128 sum[kGroups];
  for (size_t g = 0; g < kGroups; ++g) sum[g] = _mm_setzero_ps();
  const size_t d4 = d & ~size_t{3};
  size_t i = 0;
  for (; i < d4; i += 4) {
    const __m128 x0 = _mm_set1_ps(x[i]), x1 = _mm_set1_ps(x[i + 1]), x2 = _mm_set1_ps(x[i + 2]),
                 x3 = _mm_set1_ps(x[i + 3]);
    for (size_t g = 0; g < kGroups; ++g) {
      const float* y = vectors + g * 4 * d + i;
      __m128 r0 = _mm_loadu_ps(y), r1 = _mm_loadu_ps(y + d), r2 = _mm_loadu_ps(y + 2 * d),
             r3 = _mm_loadu_ps(y + 3 * d);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r_j: coordinate i + j of the four vectors
      __m128 t = _mm_sub_ps(x0, r0);
      sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(t, t));
      t = _mm_sub_ps(x1, r1);
      sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(t, t));
      t = _mm_sub_ps(x2, r2);
      sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(t, t));
      t = _mm_sub_ps(x3, r3);
      sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(t, t));
    }
  }
  for (; i < d; ++i) {
    const __m128 xi = _mm_set1_ps(x[i]);
    for (size_t g = 0; g < kGroups; ++g) {
      const float* y = vectors + g * 4 * d + i;
      const __m128 t = _mm_sub_ps(xi, _mm_set_ps(LoadUnaligned(y + 3 * d), LoadUnaligned(y + 2 * d),
                                                 LoadUnaligned(y + d), LoadUnaligned(y)));
      sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(t, t));
    }
  }
  for (size_t g = 0; g < kGroups; ++g) _mm_storeu_ps(sums + 4 * g, sum[g]);
}
#endif

// A float's bits as an unsigned key that orders like the float (negative values flipped).
inline uint32_t OrderedBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits ^ ((bits >> 31) != 0 ? 0xFFFFFFFFu : 0x80000000u);
}

}  // namespace

// out[i] = {squared L2 distance from x to vectors[i], ids[i]}, computed exactly as FAISS's scalar
// fvec_L2sqr_ref (what Debian's baseline build of FAISS 1.7.3 runs for Flat and IVF-Flat): coordinates in
// order, each product rounded to float before it is added to a running float sum. This function is
// compiled for baseline x86-64, which has no fused multiply-add to change that.
void ScanVectors(const float* x, const float* vectors, const int64_t* ids, size_t count, size_t d,
                 Candidate* out) {
  size_t v = 0;
#if defined(__SSE2__)
  float sums[8];
  for (; v + 8 <= count; v += 8) {
    SquaredL2Lanes<2>(x, vectors + v * d, d, sums);
    for (size_t j = 0; j < 8; ++j) out[v + j] = {OrderableDistance(sums[j]), LoadUnaligned(ids + v + j)};
  }
  for (; v + 4 <= count; v += 4) {
    SquaredL2Lanes<1>(x, vectors + v * d, d, sums);
    for (size_t j = 0; j < 4; ++j) out[v + j] = {OrderableDistance(sums[j]), LoadUnaligned(ids + v + j)};
  }
#endif
  for (; v < count; ++v) {
    const float* y = vectors + v * d;
    float sum = 0;
    for (size_t i = 0; i < d; ++i) {
      const float t = x[i] - LoadUnaligned(y + i);
      sum += t * t;
    }
    out[v] = {OrderableDistance(sum), LoadUnaligned(ids + v)};
  }
}
// Sorts `items` by (distance, id). An LSD radix sort over the distance bits, 8 at a time (stable, passes
// where every key has the same byte skipped), then runs of equal distance, which are rare, by id. For a
// kNN-LM probe's ~1,000 to ~10,000 candidates this is several times cheaper than comparison sorting,
// whose branches on random distances mispredict about half the time.
void SortCandidates(std::vector<Candidate>* items, std::vector<Candidate>* scratch) {
  const size_t n = items->size();
  if (n < 64) {
    std::sort(items->begin(), items->end(), Closer);
    return;
  }
  scratch->resize(n);
  Candidate* from = items->data();
  Candidate* to = scratch->data();
  for (int shift = 0; shift < 32; shift += 8) {
    size_t counts[256] = {};
    for (size_t i = 0; i < n; ++i) ++counts[(OrderedBits(from[i].distance) >> shift) & 0xFF];
    if (counts[(OrderedBits(from[0].distance) >> shift) & 0xFF] == n) continue;
    size_t offset = 0;
    for (size_t& count : counts) {
      const size_t c = count;
      count = offset;
      offset += c;
    }
    for (size_t i = 0; i < n; ++i) to[counts[(OrderedBits(from[i].distance) >> shift) & 0xFF]++] = from[i];
    std::swap(from, to);
  }
  if (from != items->data()) std::copy(from, from + n, items->data());
  Candidate* data = items->data();
  for (size_t begin = 0; begin < n;) {
    size_t end = begin + 1;
    while (end < n && data[end].distance == data[begin].distance) ++end;
    if (end - begin > 1) {
      std::sort(data + begin, data + end, [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
    }
    begin = end;
  }
}

// Drops candidates that cannot be among the k best, cheaply, so that only about k are sorted when a probe
// scans many more codes than k (IVF1024 with 8 probes: ~9,000 per query at 1M entries). Distances are
// bucketed linearly between their minimum and maximum; the bucket function never decreases with the
// distance, so every candidate in a bucket past the one where the count reaches k is farther than all
// those kept, and the k best are kept exactly.
void KeepAtLeastBest(std::vector<Candidate>* items, size_t k) {
  constexpr size_t kBuckets = 1024;
  const size_t n = items->size();
  if (n <= 2 * k) return;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  for (const Candidate& c : *items) {
    lo = std::min(lo, c.distance);
    hi = std::max(hi, c.distance);
  }
  if (!(hi > lo) || !std::isfinite(hi - lo)) return;  // all equal, or an infinite distance: sort them all
  // In double: 1,023 / (hi - lo) overflows a float when the spread is under ~3e-36.
  const double scale = static_cast<double>(kBuckets - 1) / (static_cast<double>(hi) - lo);
  auto bucket = [&](float d) {
    return std::min(static_cast<size_t>((static_cast<double>(d) - lo) * scale), kBuckets - 1);
  };
  uint32_t counts[kBuckets] = {};
  for (const Candidate& c : *items) ++counts[bucket(c.distance)];
  size_t last = 0, seen = 0;
  while (seen + counts[last] < k) seen += counts[last++];
  items->erase(std::remove_if(items->begin(), items->end(),
                              [&](const Candidate& c) { return bucket(c.distance) > last; }),
               items->end());
}

}  // namespace mnemo
