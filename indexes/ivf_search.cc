#include "indexes/ivf_search.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/invlists/InvertedLists.h>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <typeinfo>

// The distance-table loop is compiled twice, for baseline x86-64 and for AVX2 with fused multiply-add, and
// the CPU's features pick one when a searcher is made. (GCC's target_clones("arch=...") dispatches on the
// CPU model it knows, and ran the baseline clone on this project's build machine, family 6 model 207.)
// The two can differ in the last bits.
#if defined(__GNUC__) && defined(__x86_64__)
#define MNEMO_HAVE_AVX2_KERNELS 1
#define MNEMO_AVX2_FMA __attribute__((target("avx2,fma")))
#endif

// The BLAS FAISS links (Fortran interface, as FAISS declares it).
extern "C" {
int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
           const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
           const int* ldc);
int sgemv_(const char* trans, const int* m, const int* n, const float* alpha, const float* a, const int* lda,
           const float* x, const int* incx, const float* beta, float* y, const int* incy);
}

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

struct Candidate {
  float distance;
  int64_t id;
};

bool Closer(const Candidate& a, const Candidate& b) {
  return a.distance < b.distance || (a.distance == b.distance && a.id < b.id);
}

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

// The inverted lists of a memory-mapped index (LoadOptions::mmap) point into the file, where FAISS's layout
// puts each list's codes and ids at any byte offset: their floats and ids are read with memcpy, a plain load
// that, unlike a dereference, promises no alignment (fuzz/index_file_fuzz, docs/FUZZING.md).
template <typename T>
inline T LoadUnaligned(const T* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A candidate's distance: NaN (from a non-finite query) becomes +infinity, so that candidates stay ordered.
inline float finish(float distance) {
  return std::isnan(distance) ? std::numeric_limits<float>::infinity() : distance;
}

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
    out[i] = {finish((a0 + a1) + (a2 + a3)), LoadUnaligned(ids + i)};
    out[i + 1] = {finish((b0 + b1) + (b2 + b3)), LoadUnaligned(ids + i + 1)};
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
    out[i] = {finish((a0 + a1) + (a2 + a3)), LoadUnaligned(ids + i)};
  }
}

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
    for (size_t j = 0; j < 8; ++j) out[v + j] = {finish(sums[j]), LoadUnaligned(ids + v + j)};
  }
  for (; v + 4 <= count; v += 4) {
    SquaredL2Lanes<1>(x, vectors + v * d, d, sums);
    for (size_t j = 0; j < 4; ++j) out[v + j] = {finish(sums[j]), LoadUnaligned(ids + v + j)};
  }
#endif
  for (; v < count; ++v) {
    const float* y = vectors + v * d;
    float sum = 0;
    for (size_t i = 0; i < d; ++i) {
      const float t = x[i] - LoadUnaligned(y + i);
      sum += t * t;
    }
    out[v] = {finish(sum), LoadUnaligned(ids + v)};
  }
}

// A float's bits as an unsigned key that orders like the float (negative values flipped).
inline uint32_t OrderedBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits ^ ((bits >> 31) != 0 ? 0xFFFFFFFFu : 0x80000000u);
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
