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
// Thread-safety: reentrant; the caller keeps `vectors` and `ids` unchanged during the call. Runs its
// per-query work on OpenMP threads and its products on the BLAS's.
#pragma once

#include <cstdint>

namespace mnemo {

// From this many queries in one call, candidates are screened by sgemm.
inline constexpr int64_t kMinGemmQueries = 8;

// `count` vectors of `d` floats (row-major) with their ids; n queries; k results per query, ascending
// (distance, id), padded with (FLT_MAX, -1). k >= 1 is the caller's check.
void FlatL2Search(const float* vectors, const int64_t* ids, int64_t count, int d, int64_t n, const float* queries,
                  int k, float* distances, int64_t* labels);

}  // namespace mnemo
