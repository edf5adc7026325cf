// The index `mnemo datastore build --index auto` (its default) gives a datastore, by size.
#pragma once

#include <cstdint>
#include <string>

namespace mnemo {

// Below this many entries, Flat (exact). From here on IVF-PQ: its 8-bit codes are trained by k-means with
// 256 centroids, for which FAISS wants 39 x 256 = 9,984 points, and it already costs the kNN-LM less than
// exact search at every size measured from 10,000 entries up, at equal perplexity (docs/PERFORMANCE.md,
// "The default index").
constexpr int64_t kAutoExactBelow = 10000;

// "Flat" below kAutoExactBelow vectors; above, IVF-PQ with about 4 sqrt(count) lists (a power of two, at
// least 64, and at most min(count, train_sample) / 39 so that k-means has 39 training points per list,
// FAISS's minimum without a warning) and dim / 4 codes of 8 bits (the largest divisor of dim not above dim / 4
// when 4 does not divide it). Always a spec ParseIndexSpec accepts for `dim`.
std::string AutoIndexSpec(int64_t count, int dim, int64_t train_sample);

}  // namespace mnemo
