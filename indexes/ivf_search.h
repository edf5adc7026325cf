// IvfSearch: the search of a trained FAISS IVF index with squared L2 distances, done here instead of by
// IndexIVF::search_preassigned, because the kNN-LM's operating point (k up to 1,024 over a few lists) is
// where FAISS 1.7.3 as Debian builds it is slowest. Two kinds are handled:
//  - IVF-PQ (IndexIVFPQ, residual encoding, 8-bit codes): per probed list, the residual's M x 256
//    distance table is computed (AVX2 with FMA, or baseline, as the CPU allows) instead of read from FAISS's
//    precomputed terms (4 bytes x nlist x M x 256: 128 MB for IVF4096,PQ32, read from memory on every
//    probe, and no longer built); each code's distance is the sum of its M table entries. The distances
//    are those of FAISS's table-less path (use_precomputed_table = 0) up to rounding, and can differ in the
//    last bits between CPU families (fused multiply-adds).
//  - IVF-Flat (IndexIVFFlat): each stored vector's distance is computed exactly as FAISS's scalar
//    fvec_L2sqr_ref does (coordinates in order, every product rounded before it is added), four vectors at
//    a time in SSE lanes, so the results are bit for bit those of FAISS's IVF-Flat and Flat searches.
// For both, every scanned entry is a candidate in a flat buffer, pruned by a linear bucketing of the
// distances and radix-sorted once; FAISS keeps a k-entry heap, O(log k) per entry plus a heap sort, which
// costs more than the distances when a probe scans about k entries. Lists are probed by one BLAS product
// per block of queries (a matrix-vector product for a single query) with cached centroid norms.
//
// Results, per query: the k best (distance, id) pairs in ascending order of distance, then id, padded with
// (FLT_MAX, -1). The order is total, so the result depends only on which (list, code, id) entries exist,
// not on their order inside a list: removing entries leaves the others' results exactly as they were.
//
// Thread-safety: Search is const and reentrant; the caller holds the index's lock (shared is enough) so
// the inverted lists do not change during a call. The searcher reads the index's quantizer and codebooks
// at construction, which must not change afterwards (they do not once an index is trained).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace faiss {
struct IndexIVF;
}  // namespace faiss

namespace mnemo {

class IvfSearch {
 public:
  // A searcher for `index`, or null when this path does not handle it (not trained, not L2, neither
  // IVF-Flat nor IVF-PQ with residual 8-bit codes, a coarse quantizer other than a flat L2 one); callers
  // then use FAISS's search. `index` must outlive the searcher.
  static std::unique_ptr<IvfSearch> Create(const faiss::IndexIVF& index);

  // n queries (n * d floats); writes k results per query to distances[i*k..] and ids[i*k..]. nprobe is
  // capped at nlist. k >= 1 and nprobe >= 1 are the caller's checks.
  void Search(int64_t n, const float* queries, int k, size_t nprobe, float* distances, int64_t* ids) const;

 private:
  explicit IvfSearch(const faiss::IndexIVF& index, bool pq);

  // Writes the nprobe nearest lists of each query, nearest first (ties by list number), to probes[i*nprobe..].
  void Probe(int64_t n, const float* queries, size_t nprobe, int64_t* probes) const;
  // out[q * nlist + l] = <query q, centroid l> for n queries, by BLAS.
  void CentroidProducts(int64_t n, const float* queries, float* out) const;
  // One query over its nprobe probed lists; k results to distances[0..k) and ids[0..k).
  struct Buffers;  // per-thread scratch space
  void SearchOne(const float* query, const int64_t* probes, size_t nprobe, int k, Buffers* buffers,
                 float* distances, int64_t* ids) const;

  const faiss::IndexIVF& index_;
  bool pq_;                        // IVF-PQ; else IVF-Flat
  const float* centroids_;         // nlist x d, the coarse quantizer's
  int d_ = 0;
  size_t nlist_ = 0;
  size_t m_ = 0;                   // PQ: subquantizers
  size_t dsub_ = 0;                // PQ: d / m
  std::vector<float> codebook_t_;  // PQ: [m][dsub][256], centroid coordinates contiguous over the 256 codes
  std::vector<float> centroid_norms_;  // |c|^2 of each coarse centroid
  // The distance-table kernel for this CPU (see the .cc).
  void (*distance_table_)(const float* residual, const float* codebook_t, size_t m, size_t dsub, float* table);
};

}  // namespace mnemo
