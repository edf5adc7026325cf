// FlatL2Search: exact k-nearest-neighbour search of an L2 Flat index at the speed of a matrix product, with
// the distances of FAISS's exact path.
//
// FAISS 1.7.3 computes Flat distances either pairwise (fvec_L2sqr per query and vector, the whole index
// read once per query) or, from 20 queries a call, as |x|^2 + |y|^2 - 2<x, y> through BLAS, whose rounding
// depends on where a vector falls in the GEMM's blocks: removing one vector can change the last bits of
// another's distance, which breaks VectorIndex's removal contract, so VectorIndex kept to the pairwise path
// (0.43-0.69x a Python peer's speed on kNN-LM scoring). This search has both properties:
//  1. Screening: for a block of queries, the products <x, y> of a block of vectors come from one sgemm,
//     and a vector stays a candidate while |x|^2 + |y|^2 - 2<x, y> is within 2 delta of the k-th smallest
//     such value seen so far. delta bounds the difference between that value and the exact distance below
//     (floating-point error analysis: (4d + 16) u (|q| + max|x|)^2, twice what the analysis needs), so no
//     vector of the exact k best is ever dropped, whatever the GEMM's blocking or fused multiply-adds.
//  2. Exact ranking: each remaining candidate's distance is computed as FAISS's scalar fvec_L2sqr_ref does
//     (ScanVectors), and the k best by (distance, id) are returned.
// The result depends only on the stored (vector, id) pairs: the same as a search of only those vectors,
// bit for bit, and the same whatever the batch a query comes in. Fewer than kMinGemmQueries queries skip
// the screening (a matrix-vector product would read the index once per query anyway); queries or vectors
// that are not finite are ranked exactly, without screening.
//
// With a FlatProjection of the same vectors, screening costs a fraction of the full product: the vectors'
// coordinates on their top principal directions give a lower bound on every distance (below), and only
// vectors whose bound is within the k-th best exact distance seen so far (plus both error margins) are
// ranked exactly. The result is the same, bit for bit.
//
// Thread-safety: reentrant; the caller keeps `vectors`, `ids` and the projection unchanged during the call.
// Runs its per-query work on OpenMP threads and its products on the BLAS's.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace mnemo {

// From this many queries in one call, candidates are screened by sgemm.
inline constexpr int64_t kMinGemmQueries = 8;

// The vectors of a Flat index on their p top principal directions (PCA of up to 65,536 of them, in double),
// for lower bounds on L2 distances: with x' = x - mean, h(x) = B^T x' (B: d x p, orthonormal columns) and
// t(x) = |x' - B h(x)| (the length of what the directions leave out),
//   |q - x|^2 = |h(q) - h(x)|^2 + |t-part of q - t-part of x|^2 >= |h(q) - h(x)|^2 + (t(q) - t(x))^2.
// On kNN-LM keys (d 128) 32 directions hold about 92% of the variance (docs/PERFORMANCE.md). Immutable once built; rebuilt by its owner when the vectors change.
struct FlatProjection {
  int d = 0;
  int p = 0;
  int64_t count = 0;
  std::vector<double> mean;    // d
  std::vector<double> basis;   // d x p, row-major: basis[i * p + j] = coordinate i of direction j
  // In blocks of kLanes vectors (the last one padded), coordinate-major within a block:
  // heads[(row / kLanes) * p * kLanes + j * kLanes + row % kLanes] = h(row)_j, rounded to float.
  static constexpr int kLanes = 16;
  static constexpr int kMaxDirections = 256;
  std::vector<float> heads;
  std::vector<float> head_norms;  // |h(x)|^2 in float, from the rounded h(x); +infinity for the padding
  std::vector<float> tails;       // t(x), rounded to float
  float max_centered = 0;      // max |x - mean|
  float max_length = 0;        // max |x|

  // nullptr when there are fewer than 2 * p vectors, d < 2 * p, p > kMaxDirections or a vector is not
  // finite. p = 0 picks the default: d / 4 (a multiple of 4, at least 8, at most kMaxDirections).
  static std::unique_ptr<const FlatProjection> Build(const float* vectors, int64_t count, int d, int p = 0);
};

// Indexes with at least this many vectors are worth projecting (VectorIndex builds one on the first search).
inline constexpr int64_t kMinProjectedCount = 16384;

// `count` vectors of `d` floats (row-major) with their ids; n queries; k results per query, ascending
// (distance, id), padded with (FLT_MAX, -1). k >= 1 is the caller's check.
// `projection`, when given, must be FlatProjection::Build of these very vectors (same count and order).
void FlatL2Search(const float* vectors, const int64_t* ids, int64_t count, int d, int64_t n, const float* queries,
                  int k, float* distances, int64_t* labels, const FlatProjection* projection = nullptr);

}  // namespace mnemo
