#include "indexes/ivf_search.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <typeinfo>

#include "indexes/search_kernels.h"

// The distance-table loop is compiled twice, for baseline x86-64 and for AVX2 with fused multiply-add, and
// the CPU's features pick one when a searcher is made. (GCC's target_clones("arch=...") dispatches on the
// CPU model it knows, and ran the baseline clone on this project's build machine, family 6 model 207.)
// The two can differ in the last bits.
#if defined(__GNUC__) && defined(__x86_64__)
#define MNEMO_HAVE_AVX2_KERNELS 1
#define MNEMO_AVX2_FMA __attribute__((target("avx2,fma")))
#endif

namespace mnemo {
namespace {

constexpr size_t kCodes = 256;  // 8-bit PQ codes

// Queries whose centroid scores one BLAS call computes: at most 256, and at most 16 MB of scores (4 MB at
// nlist 4,096), so a huge nlist does not need a huge buffer.
int64_t ProbeBlock(size_t nlist) {
  constexpr size_t kScoreBudget = size_t{1} << 22;  // floats
  return static_cast<int64_t>(std::clamp<size_t>(kScoreBudget / nlist, 1, 256));
}

// Codes scanned between two prunings of a query's candidates (KeepAtLeastBest), so its buffer stays
// O(k + this) whatever the lists' lengths, as FAISS's k-entry heap does.
constexpr size_t kScanChunk = size_t{1} << 16;


// out[i] = sum over c of (query[c] - columns[c * n + i])^2, for i < n: the squared distances from the query
// to n points stored coordinate-major, so the inner loop runs over points and vectorizes. Inlined into
// each multi-versioned caller, so it is compiled for that caller's instruction set.
inline __attribute__((always_inline)) void SquaredDistancesColumnMajor(const float* __restrict query,
                                                                       const float* __restrict columns,
                                                                       size_t dims, size_t n,
                                                                       float* __restrict out) {
  std::fill(out, out + n, 0.0f);
  for (size_t c = 0; c < dims; ++c) {
    const float q = query[c];
    const float* column = columns + c * n;
    for (size_t i = 0; i < n; ++i) {
      const float diff = q - column[i];
      out[i] += diff * diff;
    }
  }
}

// The same for kDims known at compile time (the sub-vector lengths of the usual PQ shapes): each output is
// summed in a register, with the same additions in the same order as the loop above.
template <size_t kDims>
inline __attribute__((always_inline)) void SquaredDistancesColumnMajorFixed(const float* __restrict query,
                                                                            const float* __restrict columns,
                                                                            size_t n, float* __restrict out) {
  for (size_t i = 0; i < n; ++i) {
    float sum = 0;
    for (size_t c = 0; c < kDims; ++c) {
      const float diff = query[c] - columns[c * n + i];
      sum += diff * diff;
    }
    out[i] = sum;
  }
}

// table[m][j] = squared distance from the m-th sub-vector of `residual` to PQ centroid j of subquantizer m.
inline __attribute__((always_inline)) void DistanceTableBody(const float* residual, const float* codebook_t,
                                                             size_t m, size_t dsub, float* table) {
  for (size_t s = 0; s < m; ++s) {
    const float* sub = residual + s * dsub;
    const float* columns = codebook_t + s * dsub * kCodes;
    float* out = table + s * kCodes;
    switch (dsub) {
      case 2: SquaredDistancesColumnMajorFixed<2>(sub, columns, kCodes, out); break;
      case 4: SquaredDistancesColumnMajorFixed<4>(sub, columns, kCodes, out); break;
      case 8: SquaredDistancesColumnMajorFixed<8>(sub, columns, kCodes, out); break;
      default: SquaredDistancesColumnMajor(sub, columns, dsub, kCodes, out); break;
    }
  }
}

void DistanceTableBaseline(const float* residual, const float* codebook_t, size_t m, size_t dsub,
                           float* table) {
  DistanceTableBody(residual, codebook_t, m, dsub, table);
}


#if MNEMO_HAVE_AVX2_KERNELS
MNEMO_AVX2_FMA void DistanceTableAvx2(const float* residual, const float* codebook_t, size_t m, size_t dsub,
                                      float* table) {
  DistanceTableBody(residual, codebook_t, m, dsub, table);
}

#endif

// out[i] = {sum over s of table[s][codes[i * m + s]], ids[i]}: four running sums, so consecutive lookups do
// not wait on one another's additions.
void ScanCodes(const float* table, const uint8_t* codes, const int64_t* ids, size_t count, size_t m,
               Candidate* out) {
  size_t i = 0;
  // Two codes at a time: eight independent sums in flight.
  for (; i + 2 <= count; i += 2) {
    const uint8_t* a = codes + i * m;
    const uint8_t* b = a + m;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    size_t s = 0;
    for (; s + 4 <= m; s += 4) {
      const float* t = table + s * kCodes;
      a0 += t[a[s]];
      b0 += t[b[s]];
      a1 += t[kCodes + a[s + 1]];
      b1 += t[kCodes + b[s + 1]];
      a2 += t[2 * kCodes + a[s + 2]];
      b2 += t[2 * kCodes + b[s + 2]];
      a3 += t[3 * kCodes + a[s + 3]];
      b3 += t[3 * kCodes + b[s + 3]];
    }
    for (; s < m; ++s) {
      a0 += table[s * kCodes + a[s]];
      b0 += table[s * kCodes + b[s]];
    }
    out[i] = {OrderableDistance((a0 + a1) + (a2 + a3)), LoadUnaligned(ids + i)};
    out[i + 1] = {OrderableDistance((b0 + b1) + (b2 + b3)), LoadUnaligned(ids + i + 1)};
  }
  for (; i < count; ++i) {
    const uint8_t* a = codes + i * m;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t s = 0;
    for (; s + 4 <= m; s += 4) {
      const float* t = table + s * kCodes;
      a0 += t[a[s]];
      a1 += t[kCodes + a[s + 1]];
      a2 += t[2 * kCodes + a[s + 2]];
      a3 += t[3 * kCodes + a[s + 3]];
    }
    for (; s < m; ++s) a0 += table[s * kCodes + a[s]];
    out[i] = {OrderableDistance((a0 + a1) + (a2 + a3)), LoadUnaligned(ids + i)};
  }
}

}  // namespace

std::unique_ptr<IvfSearch> IvfSearch::Create(const faiss::IndexIVF& index) {
  const auto* quantizer = dynamic_cast<const faiss::IndexFlat*>(index.quantizer);
  if (!index.is_trained || index.metric_type != faiss::METRIC_L2 || quantizer == nullptr ||
      quantizer->metric_type != faiss::METRIC_L2 || quantizer->ntotal != static_cast<int64_t>(index.nlist) ||
      quantizer->d != index.d || index.invlists == nullptr || index.invlists->code_size != index.code_size) {
    return nullptr;
  }
  if (const auto* ivfpq = dynamic_cast<const faiss::IndexIVFPQ*>(&index)) {
    const faiss::ProductQuantizer& pq = ivfpq->pq;
    if (typeid(index) != typeid(faiss::IndexIVFPQ) || !ivfpq->by_residual || pq.nbits != 8 ||
        pq.ksub != kCodes || index.code_size != pq.M || pq.d != static_cast<size_t>(index.d) ||
        pq.centroids.size() != pq.M * pq.ksub * pq.dsub) {
      return nullptr;
    }
    return std::unique_ptr<IvfSearch>(new IvfSearch(index, /*pq=*/true));
  }
  if (typeid(index) == typeid(faiss::IndexIVFFlat) && index.code_size == sizeof(float) * index.d) {
    return std::unique_ptr<IvfSearch>(new IvfSearch(index, /*pq=*/false));
  }
  return nullptr;
}

IvfSearch::IvfSearch(const faiss::IndexIVF& index, bool pq)
    : index_(index),
      pq_(pq),
      centroids_(static_cast<const faiss::IndexFlat*>(index.quantizer)->get_xb()),
      d_(index.d),
      nlist_(index.nlist),
      distance_table_(DistanceTableBaseline) {
#if MNEMO_HAVE_AVX2_KERNELS
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) distance_table_ = DistanceTableAvx2;
#endif
  if (pq_) {
    const faiss::ProductQuantizer& product_quantizer = static_cast<const faiss::IndexIVFPQ&>(index).pq;
    m_ = product_quantizer.M;
    dsub_ = product_quantizer.dsub;
    // FAISS stores PQ centroids as [m][256][dsub].
    codebook_t_.resize(m_ * dsub_ * kCodes);
    for (size_t s = 0; s < m_; ++s) {
      for (size_t j = 0; j < kCodes; ++j) {
        for (size_t c = 0; c < dsub_; ++c) {
          codebook_t_[(s * dsub_ + c) * kCodes + j] = product_quantizer.centroids[(s * kCodes + j) * dsub_ + c];
        }
      }
    }
  }
  centroid_norms_.resize(nlist_);
  for (size_t l = 0; l < nlist_; ++l) {
    float norm = 0;
    for (int c = 0; c < d_; ++c) norm += centroids_[l * d_ + c] * centroids_[l * d_ + c];
    centroid_norms_[l] = norm;
  }
}

void IvfSearch::CentroidProducts(int64_t n, const float* queries, float* out) const {
  const float one = 1, zero = 0;
  const int d = d_, nlist = static_cast<int>(nlist_), count = static_cast<int>(n), inc = 1;
  if (n == 1) {
    // A matrix-vector product: OpenBLAS 0.3.21's sgemm would first copy all the centroids into its
    // packed layout (2 MB at nlist 4,096), which costs more than the product.
    sgemv_("T", &d, &nlist, &one, centroids_, &d, queries, &inc, &zero, out, &inc);
  } else {
    sgemm_("T", "N", &nlist, &count, &d, &one, centroids_, &d, queries, &d, &zero, out, &nlist);
  }
}

void IvfSearch::Probe(int64_t n, const float* queries, size_t nprobe, int64_t* probes) const {
  const int64_t block = ProbeBlock(nlist_);
  std::vector<float> products(static_cast<size_t>(std::min(n, block)) * nlist_);
  std::vector<Candidate> best;
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t count = std::min(block, n - begin);
    CentroidProducts(count, queries + begin * d_, products.data());
    for (int64_t q = 0; q < count; ++q) {
      // |q - c|^2 - |q|^2 = |c|^2 - 2 <q, c>: the same order of lists, one product per list.
      const float* product = products.data() + q * nlist_;
      best.clear();
      if (nprobe <= 32) {
        // A sorted run of the best so far: most lists lose to its last element with one comparison.
        for (size_t l = 0; l < nlist_; ++l) {
          const Candidate c{centroid_norms_[l] - 2 * product[l], static_cast<int64_t>(l)};
          if (best.size() == nprobe && !Closer(c, best.back())) continue;
          best.insert(std::upper_bound(best.begin(), best.end(), c, Closer), c);
          if (best.size() > nprobe) best.pop_back();
        }
      } else {
        for (size_t l = 0; l < nlist_; ++l) {
          best.push_back({centroid_norms_[l] - 2 * product[l], static_cast<int64_t>(l)});
        }
        std::partial_sort(best.begin(), best.begin() + nprobe, best.end(), Closer);
      }
      for (size_t p = 0; p < nprobe; ++p) probes[(begin + q) * nprobe + p] = best[p].id;
    }
  }
}

struct IvfSearch::Buffers {
  std::vector<float> residual;
  std::vector<float> table;
  std::vector<Candidate> candidates, scratch;
};

void IvfSearch::Search(int64_t n, const float* queries, int k, size_t nprobe, float* distances,
                         int64_t* ids) const {
  nprobe = std::min(nprobe, nlist_);
  std::vector<int64_t> probes(static_cast<size_t>(n) * nprobe);
  Probe(n, queries, nprobe, probes.data());
  // An exception (bad_alloc) must not leave an OpenMP region, which would terminate the process: the
  // first one is kept and rethrown after it, as FAISS's own search does.
  std::exception_ptr error;
#pragma omp parallel if (n > 1)
  {
    Buffers buffers;
#pragma omp for schedule(dynamic, 4)
    for (int64_t q = 0; q < n; ++q) {
      try {
        SearchOne(queries + q * d_, probes.data() + q * nprobe, nprobe, k, &buffers, distances + q * k,
                  ids + q * k);
      } catch (...) {
#pragma omp critical(mnemo_ivf_search_error)
        if (error == nullptr) error = std::current_exception();
      }
    }
  }
  if (error != nullptr) std::rethrow_exception(error);
}

void IvfSearch::SearchOne(const float* query, const int64_t* probes, size_t nprobe, int k, Buffers* buffers,
                            float* distances, int64_t* ids) const {
  const faiss::InvertedLists& lists = *index_.invlists;
  std::vector<Candidate>& candidates = buffers->candidates;
  if (pq_) {
    buffers->residual.resize(d_);
    buffers->table.resize(m_ * kCodes);
  }
  const size_t prune_above = std::max(4 * static_cast<size_t>(k), 2 * kScanChunk);
  candidates.clear();
  for (size_t p = 0; p < nprobe; ++p) {
    const int64_t list = probes[p];
    const size_t size = lists.list_size(list);
    if (size == 0) continue;
    if (pq_) {
      const float* centroid = centroids_ + list * d_;
      for (int c = 0; c < d_; ++c) buffers->residual[c] = query[c] - centroid[c];
      distance_table_(buffers->residual.data(), codebook_t_.data(), m_, dsub_, buffers->table.data());
    }
    faiss::InvertedLists::ScopedCodes codes(&lists, list);
    faiss::InvertedLists::ScopedIds list_ids(&lists, list);
    for (size_t begin = 0; begin < size; begin += kScanChunk) {
      const size_t count = std::min(kScanChunk, size - begin);
      const size_t first = candidates.size();
      candidates.resize(first + count);
      const uint8_t* chunk = codes.get() + begin * index_.code_size;
      if (pq_) {
        ScanCodes(buffers->table.data(), chunk, list_ids.get() + begin, count, m_, candidates.data() + first);
      } else {
        ScanVectors(query, reinterpret_cast<const float*>(chunk), list_ids.get() + begin, count,
                    static_cast<size_t>(d_), candidates.data() + first);
      }
      if (candidates.size() > prune_above) KeepAtLeastBest(&candidates, static_cast<size_t>(k));
    }
  }
  KeepAtLeastBest(&candidates, static_cast<size_t>(k));
  SortCandidates(&candidates, &buffers->scratch);
  const size_t kept = std::min(candidates.size(), static_cast<size_t>(k));
  for (size_t j = 0; j < kept; ++j) {
    distances[j] = candidates[j].distance;
    ids[j] = candidates[j].id;
  }
  std::fill(distances + kept, distances + k, std::numeric_limits<float>::max());
  std::fill(ids + kept, ids + k, int64_t{-1});
}

}  // namespace mnemo
