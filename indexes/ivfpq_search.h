// IvfPqSearch: the search of a trained faiss::IndexIVFPQ (squared L2, residual encoding, 8-bit codes), done
// here instead of by IndexIVF::search_preassigned, because the kNN-LM's operating point (k = 1024 over a
// few short lists) is where FAISS 1.7.3 as Debian builds it is slowest:
//  - its result heap costs O(log k) per scanned code plus a heap sort of k entries per query, while a
//    kNN-LM probe often scans about k codes in all; here every code is a candidate in a flat buffer,
//    radix-sorted once by distance;
//  - its per-list distance tables come from 4 bytes x nlist x M x 256 precomputed terms (128 MB for
//    IVF4096,PQ32) read from memory on every probe; here they are computed from the residual, which
//    costs M x 256 x dsub multiply-adds in cache and needs no table at all;
//  - Debian's libfaiss is built for baseline x86-64, so its small-vector kernels are scalar; the loops here
//    are compiled for AVX2 with FMA and for baseline, and the CPU's features pick one.
// The distances are those of FAISS's own table-less path (use_precomputed_table = 0): the squared distance
// from the query to each code's reconstruction, summed per subquantizer. Their last bits can differ from
// FAISS's, and from one CPU family to another (fused multiply-adds).
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
struct IndexIVFPQ;
}  // namespace faiss

namespace mnemo {

class IvfPqSearch {
 public:
  // A searcher for `index`, or null when this path does not handle it (not trained, not L2, no residual
  // encoding, codes other than 8 bits, a coarse quantizer other than a flat L2 one); callers then use
  // FAISS's search. `index` must outlive the searcher.
  static std::unique_ptr<IvfPqSearch> Create(const faiss::IndexIVFPQ& index);

  // n queries (n * d floats); writes k results per query to distances[i*k..] and ids[i*k..]. nprobe is
  // capped at nlist. k >= 1 and nprobe >= 1 are the caller's checks.
  void Search(int64_t n, const float* queries, int k, size_t nprobe, float* distances, int64_t* ids) const;

 private:
  explicit IvfPqSearch(const faiss::IndexIVFPQ& index);

  // Writes the nprobe nearest lists of each query, nearest first (ties by list number), to probes[i*nprobe..].
  void Probe(int64_t n, const float* queries, size_t nprobe, int64_t* probes) const;
  // out[q * nlist + l] = <query q, centroid l> for n queries, by BLAS.
  void CentroidProducts(int64_t n, const float* queries, float* out) const;
  // One query over its nprobe probed lists; k results to distances[0..k) and ids[0..k).
  struct Buffers;  // per-thread scratch space
  void SearchOne(const float* query, const int64_t* probes, size_t nprobe, int k, Buffers* buffers,
                 float* distances, int64_t* ids) const;

  const faiss::IndexIVFPQ& index_;
  const float* centroids_;         // nlist x d, the coarse quantizer's
  int d_ = 0;
  size_t nlist_ = 0;
  size_t m_ = 0;                   // subquantizers
  size_t dsub_ = 0;                // d / m
  std::vector<float> codebook_t_;  // [m][dsub][256]: PQ centroid coordinates, contiguous over the 256 codes
  std::vector<float> centroid_norms_;  // |c|^2 of each coarse centroid
  // The distance-table kernel for this CPU (see the .cc).
  void (*distance_table_)(const float* residual, const float* codebook_t, size_t m, size_t dsub, float* table);
};

}  // namespace mnemo
