#include "indexes/flat_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "indexes/search_kernels.h"


namespace mnemo {
namespace {

// Queries and vectors per sgemm: a 256 x 2,048 block of products is 2 MB, read back while still in cache.
constexpr int64_t kQueryBlock = 256;
constexpr int64_t kBaseBlock = 2048;
// Vectors ranked exactly between two prunings (the unscreened path), as in IvfSearch.
constexpr size_t kScanChunk = size_t{1} << 16;

// |x|^2 in float, coordinates in order.
float SquaredNorm(const float* x, int d) {
  float sum = 0;
  for (int i = 0; i < d; ++i) sum += x[i] * x[i];
  return sum;
}

// The k best of `candidates` (exact distances, real ids) to distances[0..k) and labels[0..k), padded.
void Emit(std::vector<Candidate>* candidates, std::vector<Candidate>* scratch, int k, float* distances,
          int64_t* labels) {
  SortCandidates(candidates, scratch);
  const size_t kept = std::min(candidates->size(), static_cast<size_t>(k));
  for (size_t j = 0; j < kept; ++j) {
    distances[j] = (*candidates)[j].distance;
    labels[j] = (*candidates)[j].id;
  }
  std::fill(distances + kept, distances + k, std::numeric_limits<float>::max());
  std::fill(labels + kept, labels + k, int64_t{-1});
}

// Every vector's exact distance to `query`, pruned as it goes: IvfSearch's scan of one list.
void SearchUnscreened(const float* vectors, const int64_t* ids, int64_t count, int d, const float* query, int k,
                      std::vector<Candidate>* candidates, std::vector<Candidate>* scratch, float* distances,
                      int64_t* labels) {
  candidates->clear();
  const size_t prune_above = std::max(4 * static_cast<size_t>(k), 2 * kScanChunk);
  for (int64_t begin = 0; begin < count; begin += static_cast<int64_t>(kScanChunk)) {
    const size_t chunk = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(kScanChunk), count - begin));
    const size_t first = candidates->size();
    candidates->resize(first + chunk);
    ScanVectors(query, vectors + begin * d, ids + begin, chunk, static_cast<size_t>(d), candidates->data() + first);
    if (candidates->size() > prune_above) KeepAtLeastBest(candidates, static_cast<size_t>(k));
  }
  KeepAtLeastBest(candidates, static_cast<size_t>(k));
  Emit(candidates, scratch, k, distances, labels);
}

// One query's screening state: the rows still candidates, with their screening values.
struct Screen {
  bool unscreened = false;  // a non-finite query, or one whose error bound is not finite
  float norm = 0;           // |q|^2
  float slack = 0;          // 2 delta
  float threshold = std::numeric_limits<float>::infinity();
  std::vector<Candidate> rows;  // {screening value, row}
};

// Keeps the rows whose screening value is within slack of the k-th smallest.
void Tighten(Screen* s, int k) {
  std::vector<Candidate>& rows = s->rows;
  if (rows.size() <= static_cast<size_t>(k)) return;
  auto by_value = [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; };
  std::nth_element(rows.begin(), rows.begin() + (k - 1), rows.end(), by_value);
  s->threshold = std::min(s->threshold, rows[k - 1].distance + s->slack);
  const float threshold = s->threshold;
  rows.erase(std::remove_if(rows.begin(), rows.end(), [threshold](const Candidate& c) { return c.distance > threshold; }),
             rows.end());
}


// (x - mean) for rows [first, first + rows) of `vectors`, in double, row-major, to `out`.
void Centered(const float* vectors, int64_t first, int64_t rows, int d, const std::vector<double>& mean,
              std::vector<double>* out) {
  out->resize(static_cast<size_t>(rows * d));
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < d; ++i) (*out)[r * d + i] = static_cast<double>(vectors[(first + r) * d + i]) - mean[i];
  }
}

// heads[r * p + j] = <centered row r, direction j>: the p x rows product basis^T * centered, in double.
void Project(const std::vector<double>& centered, int64_t rows, int d, int p, const std::vector<double>& basis,
             double* heads) {
  const int m = p, n = static_cast<int>(rows), kk = d;
  const double one = 1, zero = 0;
  dgemm_("N", "N", &m, &n, &kk, &one, basis.data(), &m, centered.data(), &kk, &zero, heads, &m);
}

}  // namespace

std::unique_ptr<const FlatProjection> FlatProjection::Build(const float* vectors, int64_t count, int d, int p) {
  if (p <= 0) p = std::min(kMaxDirections, std::max(8, (d / 4 + 3) / 4 * 4));
  if (p > kMaxDirections || count < 2 * p || d < 2 * p) return nullptr;
  for (int64_t i = 0; i < count * d; ++i) {
    if (!std::isfinite(vectors[i])) return nullptr;
  }
  auto out = std::make_unique<FlatProjection>();
  out->d = d, out->p = p, out->count = count;
  // The mean and covariance of an even sample of at most 65,536 vectors (the directions only need to be
  // good, not exact: any orthonormal basis gives valid bounds).
  const int64_t step = std::max<int64_t>(1, count / 65536);
  std::vector<double> sum(d, 0.0);
  int64_t sampled = 0;
  for (int64_t r = 0; r < count; r += step, ++sampled) {
    for (int i = 0; i < d; ++i) sum[i] += vectors[r * d + i];
  }
  out->mean.resize(d);
  for (int i = 0; i < d; ++i) out->mean[i] = sum[i] / static_cast<double>(sampled);
  std::vector<double> covariance(static_cast<size_t>(d) * d, 0.0), chunk;
  std::vector<float> gathered;
  constexpr int64_t kChunk = 1024;
  for (int64_t r = 0; r < count; r += step * kChunk) {
    const int64_t rows = std::min<int64_t>(kChunk, (count - r + step - 1) / step);
    gathered.resize(static_cast<size_t>(rows * d));
    for (int64_t j = 0; j < rows; ++j) std::copy_n(vectors + (r + j * step) * d, d, gathered.begin() + j * d);
    Centered(gathered.data(), 0, rows, d, out->mean, &chunk);
    const int dd = d, n = static_cast<int>(rows);
    const double one = 1;
    dgemm_("N", "T", &dd, &dd, &n, &one, chunk.data(), &dd, chunk.data(), &dd, &one, covariance.data(), &dd);
  }
  // Eigenvectors, ascending eigenvalues: the last p columns are the top directions.
  std::vector<double> eigenvalues(d);
  int info = 0, lwork = -1;
  double query = 0;
  const int dd = d;
  dsyev_("V", "U", &dd, covariance.data(), &dd, eigenvalues.data(), &query, &lwork, &info);
  lwork = std::max(1, static_cast<int>(query));
  std::vector<double> work(lwork);
  dsyev_("V", "U", &dd, covariance.data(), &dd, eigenvalues.data(), work.data(), &lwork, &info);
  if (info != 0) return nullptr;
  out->basis.resize(static_cast<size_t>(d) * p);
  for (int j = 0; j < p; ++j) {
    for (int i = 0; i < d; ++i) out->basis[i * p + j] = covariance[static_cast<size_t>(d - 1 - j) * d + i];
  }
  // Every vector's head, head norm and tail, in blocks of kLanes vectors; the padding of the last block has
  // an infinite head norm (its bound is never finite) and is never reported.
  const int64_t padded = (count + kLanes - 1) / kLanes * kLanes;
  out->heads.assign(static_cast<size_t>(padded * p), 0.0f);
  out->head_norms.assign(padded, std::numeric_limits<float>::infinity());
  out->tails.assign(padded, 0.0f);
  double max_centered = 0, max_length = 0;
  std::vector<double> heads;
  for (int64_t r = 0; r < count; r += kChunk) {
    const int64_t rows = std::min(kChunk, count - r);
    Centered(vectors, r, rows, d, out->mean, &chunk);
    heads.resize(static_cast<size_t>(rows * p));
    Project(chunk, rows, d, p, out->basis, heads.data());
    for (int64_t j = 0; j < rows; ++j) {
      double centered = 0, length = 0, head = 0;
      for (int i = 0; i < d; ++i) {
        centered += chunk[j * d + i] * chunk[j * d + i];
        length += static_cast<double>(vectors[(r + j) * d + i]) * vectors[(r + j) * d + i];
      }
      const int64_t row = r + j;
      float* h = &out->heads[(row / kLanes) * p * kLanes + row % kLanes];
      float head_norm = 0;
      for (int i = 0; i < p; ++i) {
        h[i * kLanes] = static_cast<float>(heads[j * p + i]);
        head += heads[j * p + i] * heads[j * p + i];
        head_norm += h[i * kLanes] * h[i * kLanes];
      }
      out->head_norms[r + j] = head_norm;
      out->tails[r + j] = static_cast<float>(std::sqrt(std::max(0.0, centered - head)));
      max_centered = std::max(max_centered, centered);
      max_length = std::max(max_length, length);
    }
  }
  // Rounded up, so that the error margins built from them stay bounds.
  out->max_centered = std::nextafter(static_cast<float>(std::sqrt(max_centered)), INFINITY);
  out->max_length = std::nextafter(static_cast<float>(std::sqrt(max_length)), INFINITY);
  return out;
}

namespace {

// A vector is kept while its bound is within kBoundRatio times the k-th smallest bound seen so far (plus the
// margins). That is a heuristic, not a proof: the proof comes at the end, when the k-th best exact distance
// tau is known and every vector with a bound up to tau (plus the margins) must have been kept. For a query
// where that fails (tau beyond the last threshold), every vector's bound is computed again and compared
// with tau. The ratio trades vectors kept against such second passes (docs/PERFORMANCE.md).
constexpr float kBoundRatio = 1.5f;

// One query's projected screening state.
struct Bounded {
  float head_norm = 0;  // |h(q)|^2
  float tail = 0;       // t(q)
  float slack = 0;      // both error margins
  float threshold = std::numeric_limits<float>::infinity();
  std::vector<Candidate> rows;  // {lower bound, row}
  size_t prune_above = 0;       // rows that trigger the next PruneBounds
};

// Lowers the threshold to kBoundRatio times the k-th smallest bound (plus the slack) and drops the rows
// above it.
void PruneBounds(Bounded* s, int k) {
  std::vector<Candidate>& rows = s->rows;
  if (rows.size() < static_cast<size_t>(k)) return;
  auto by_value = [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; };
  std::nth_element(rows.begin(), rows.begin() + (k - 1), rows.end(), by_value);
  s->threshold = std::min(s->threshold, kBoundRatio * std::max(rows[k - 1].distance, 0.0f) + s->slack);
  const float threshold = s->threshold;
  rows.erase(std::remove_if(rows.begin(), rows.end(), [threshold](const Candidate& c) { return c.distance > threshold; }),
             rows.end());
}

constexpr int kLanes = FlatProjection::kLanes;
// Queries bounded together: their accumulators stay in registers while a block of heads is read once.
constexpr int kGroup = 4;

// Sixteen floats, one block's lanes: GCC's generic vectors, one zmm register on AVX-512, two ymm on AVX2, four
// xmm on the baseline.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int LaneMask __attribute__((vector_size(kLanes * sizeof(int))));

// Blocks bounded together: each query coordinate read serves 2 x kLanes vectors.
constexpr int kPair = 2;

// Compares one block's bounds (acc[g] = <h(x), h(q_g)>) with each query's threshold and appends the rows
// that pass. Inlined into each BoundBlocks clone.
__attribute__((always_inline)) inline void EmitBlock(int64_t b, const Lanes* acc, const float* norms,
                                                     const float* tails, int64_t count, const float* q_norms,
                                                     const float* q_tails, const float* thresholds,
                                                     std::vector<Candidate>* const* out) {
  Lanes x_norms, x_tails;
  std::memcpy(&x_norms, norms + b * kLanes, sizeof(x_norms));
  std::memcpy(&x_tails, tails + b * kLanes, sizeof(x_tails));
  for (int g = 0; g < kGroup; ++g) {
    const Lanes t = q_tails[g] - x_tails;
    const Lanes bound = q_norms[g] + x_norms - 2.0f * acc[g] + t * t;
    const LaneMask pass = bound <= thresholds[g];
    // Whether any lane passed: the mask's words ORed (extracting lane by lane costs more than the bound).
    uint64_t words[sizeof(pass) / sizeof(uint64_t)];
    std::memcpy(words, &pass, sizeof(pass));
    uint64_t hit = 0;
    for (uint64_t w : words) hit |= w;
    if (hit == 0) continue;
    for (int l = 0; l < kLanes; ++l) {
      const int64_t row = b * kLanes + l;
      if (pass[l] != 0 && row < count) out[g]->push_back({bound[l], row});
    }
  }
}

// The bounds of vector blocks [b0, b1) for kGroup queries: q_heads (kGroup x p), q_norms, q_tails and
// thresholds per query; the rows whose bound is within a query's threshold are appended to out[g]. Compiled
// for AVX-512, AVX2 + FMA and the x86-64 baseline (the loader picks one); fused multiply-adds round
// differently, which the margins allow for.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void BoundBlocks(const float* heads, const float* norms, const float* tails, int64_t b0, int64_t b1, int p,
                 int64_t count, const float* q_heads, const float* q_norms, const float* q_tails,
                 const float* thresholds, std::vector<Candidate>* const* out) {
  int64_t b = b0;
  for (; b + kPair <= b1; b += kPair) {
    const float* h0 = heads + b * p * kLanes;
    const float* h1 = h0 + p * kLanes;
    Lanes acc0[kGroup] = {}, acc1[kGroup] = {};
    for (int j = 0; j < p; ++j) {
      Lanes x0, x1;
      std::memcpy(&x0, h0 + j * kLanes, sizeof(x0));
      std::memcpy(&x1, h1 + j * kLanes, sizeof(x1));
      for (int g = 0; g < kGroup; ++g) {
        const float qj = q_heads[g * p + j];
        acc0[g] += qj * x0;
        acc1[g] += qj * x1;
      }
    }
    EmitBlock(b, acc0, norms, tails, count, q_norms, q_tails, thresholds, out);
    EmitBlock(b + 1, acc1, norms, tails, count, q_norms, q_tails, thresholds, out);
  }
  for (; b < b1; ++b) {
    const float* h0 = heads + b * p * kLanes;
    Lanes acc0[kGroup] = {};
    for (int j = 0; j < p; ++j) {
      Lanes x0;
      std::memcpy(&x0, h0 + j * kLanes, sizeof(x0));
      for (int g = 0; g < kGroup; ++g) acc0[g] += q_heads[g * p + j] * x0;
    }
    EmitBlock(b, acc0, norms, tails, count, q_norms, q_tails, thresholds, out);
  }
}

// The exact k best of a screened query into `candidates` ({distance, id}), as ranking every vector would
// give them. `head` is h(query).
void RankBounded(Bounded* s, const float* query, const float* head, const FlatProjection& proj,
                 const float* vectors, const int64_t* ids, int k, std::vector<Candidate>* candidates) {
  const int d = proj.d, p = proj.p;
  PruneBounds(s, k);
  std::vector<Candidate>& rows = s->rows;
  auto by_value = [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; };
  auto rank = [&](int64_t row) {
    Candidate ranked;
    ScanVectors(query, vectors + row * d, ids + row, 1, static_cast<size_t>(d), &ranked);
    return ranked;
  };
  // tau: the k-th best exact distance among the 2k smallest bounds, an upper bound on the true k-th
  // (count > k, and PruneBounds never leaves fewer than k rows).
  const size_t first = std::min(rows.size(), 2 * static_cast<size_t>(k));
  if (first < rows.size()) std::nth_element(rows.begin(), rows.begin() + (first - 1), rows.end(), by_value);
  candidates->resize(first);
  std::vector<float> distances(first);
  for (size_t c = 0; c < first; ++c) (*candidates)[c] = rank(rows[c].id), distances[c] = (*candidates)[c].distance;
  std::nth_element(distances.begin(), distances.begin() + (k - 1), distances.end());
  const float tau = distances[k - 1];
  // Every vector whose exact distance could be <= tau has a bound <= tau + slack. If that is within the
  // threshold every row had to pass, they are all in `rows`; if not, a second pass finds them.
  const float needed = tau + s->slack;
  if (needed <= s->threshold) {
    for (size_t c = first; c < rows.size(); ++c) {
      if (rows[c].distance > needed) continue;
      const Candidate ranked = rank(rows[c].id);
      if (ranked.distance <= tau) candidates->push_back(ranked);
    }
    return;
  }
  candidates->clear();
  for (int64_t row = 0; row < proj.count; ++row) {
    const float* h = &proj.heads[(row / kLanes) * p * kLanes + row % kLanes];
    float dot = 0;
    for (int j = 0; j < p; ++j) dot += head[j] * h[j * kLanes];
    const float t = s->tail - proj.tails[row];
    const float bound = s->head_norm + proj.head_norms[row] - 2.0f * dot + t * t;
    if (bound > needed) continue;
    const Candidate ranked = rank(row);
    if (ranked.distance <= tau) candidates->push_back(ranked);
  }
}

// FlatL2Search with a projection (flat_search.h). Queries are split into tasks (run on
// OpenMP threads); a task reads the heads in chunks that stay in cache, bounds its queries kGroup at a time,
// prunes, then ranks exactly what each query kept.
void SearchProjected(const float* vectors, const int64_t* ids, int64_t count, int d, int64_t n,
                     const float* queries, int k, float* distances, int64_t* labels, const FlatProjection& proj,
                     const std::function<void()>& keep_error) {
  const int p = proj.p;
  // Margins (u = 2^-24), twice what the analysis needs, as in the unprojected screen:
  //  - the bound as computed against the bound in exact arithmetic: rounding h and t to float, the
  //    three-term head distance (gamma_(p+2), in any order of summation, fused or not), the tail term and
  //    three additions, below (2p + 24) u (|q - mean| + max |x - mean|)^2;
  //  - the exact path's distance against the true one: gamma_(d+3) (|q| + max |x|)^2.
  const float unit = std::ldexp(1.0f, -24);
  const float bound_factor = 2.0f * (2.0f * static_cast<float>(p) + 24.0f) * unit;
  const float exact_factor = 2.0f * (static_cast<float>(d) + 3.0f) * 1.01f * unit;
  const size_t prune_above = std::max<size_t>(4 * static_cast<size_t>(k), 256);
  // Every query's head, norms and margins.
  std::vector<double> centered, projected(static_cast<size_t>(n * p));
  Centered(queries, 0, n, d, proj.mean, &centered);
  Project(centered, n, d, p, proj.basis, projected.data());
  std::vector<float> q_heads(static_cast<size_t>(n * p));
  std::vector<Bounded> screens(static_cast<size_t>(n));
  std::vector<char> unscreened(static_cast<size_t>(n));
  for (int64_t q = 0; q < n; ++q) {
    Bounded& s = screens[q];
    double centered_norm = 0, head = 0;
    for (int i = 0; i < d; ++i) centered_norm += centered[q * d + i] * centered[q * d + i];
    float head_norm = 0;
    for (int j = 0; j < p; ++j) {
      const double h = projected[q * p + j];
      q_heads[q * p + j] = static_cast<float>(h);
      head += h * h;
      head_norm += q_heads[q * p + j] * q_heads[q * p + j];
    }
    s.head_norm = head_norm;
    s.tail = static_cast<float>(std::sqrt(std::max(0.0, centered_norm - head)));
    s.prune_above = prune_above;
    const float length = SquaredNorm(queries + q * d, d);
    const float reach = static_cast<float>(std::sqrt(centered_norm)) + proj.max_centered;
    const float exact_reach = std::sqrt(length) + proj.max_length;
    s.slack = bound_factor * reach * reach + exact_factor * exact_reach * exact_reach;
    // Past ~1e37 a product could overflow to infinity and the bounds mean nothing: rank exactly.
    unscreened[q] = !std::isfinite(length) || !std::isfinite(centered_norm) || !(reach * reach < 1e37f) ||
                    !(exact_reach * exact_reach < 1e37f);
  }
  // Tasks of at most 64 queries (each reads every head once), at least one per thread when there are
  // enough queries, in whole groups.
#if defined(_OPENMP)
  const int64_t threads = std::max(1, omp_get_max_threads());
#else
  const int64_t threads = 1;
#endif
  const int64_t per_thread = (n + threads - 1) / threads;
  const int64_t task_queries = (std::clamp<int64_t>(per_thread, 4 * kGroup, 64) + kGroup - 1) / kGroup * kGroup;
  constexpr int64_t kChunkBlocks = 2048 / kLanes;  // 2,048 vectors: 256 KB of heads at p = 32
  const int64_t blocks = (count + kLanes - 1) / kLanes;
  const int64_t tasks = (n + task_queries - 1) / task_queries;
#pragma omp parallel if (tasks > 1)
  {
    std::vector<Candidate> candidates, scratch, discard;
    std::vector<int64_t> screened;
    float g_heads[kGroup * FlatProjection::kMaxDirections], g_norms[kGroup], g_tails[kGroup], g_thresholds[kGroup];
    std::vector<Candidate>* g_out[kGroup];
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      try {
        const int64_t q0 = task * task_queries, q1 = std::min(n, q0 + task_queries);
        screened.clear();
        for (int64_t q = q0; q < q1; ++q) {
          if (!unscreened[q]) screened.push_back(q);
        }
        for (int64_t c0 = 0; c0 < blocks && !screened.empty(); c0 += kChunkBlocks) {
          const int64_t c1 = std::min(blocks, c0 + kChunkBlocks);
          for (size_t i = 0; i < screened.size(); i += kGroup) {
            for (int g = 0; g < kGroup; ++g) {
              if (i + g < screened.size()) {
                Bounded& s = screens[screened[i + g]];
                std::copy_n(&q_heads[screened[i + g] * p], p, g_heads + g * p);
                g_norms[g] = s.head_norm, g_tails[g] = s.tail, g_thresholds[g] = s.threshold;
                g_out[g] = &s.rows;
              } else {  // a short group: a copy of its first query whose bounds never pass
                std::copy_n(g_heads, p, g_heads + g * p);
                g_norms[g] = g_norms[0], g_tails[g] = g_tails[0];
                g_thresholds[g] = -std::numeric_limits<float>::infinity();
                g_out[g] = &discard;
              }
            }
            BoundBlocks(proj.heads.data(), proj.head_norms.data(), proj.tails.data(), c0, c1, p, count, g_heads,
                        g_norms, g_tails, g_thresholds, g_out);
          }
          for (int64_t q : screened) {
            Bounded& s = screens[q];
            if (s.rows.size() <= s.prune_above) continue;
            PruneBounds(&s, k);
            // Amortized: the next pruning waits until the rows have at least doubled.
            s.prune_above = std::max(prune_above, 2 * s.rows.size());
          }
        }
        for (int64_t q = q0; q < q1; ++q) {
          const float* query = queries + q * d;
          if (unscreened[q]) {
            SearchUnscreened(vectors, ids, count, d, query, k, &candidates, &scratch, distances + q * k,
                             labels + q * k);
            continue;
          }
          RankBounded(&screens[q], query, &q_heads[q * p], proj, vectors, ids, k, &candidates);
          Emit(&candidates, &scratch, k, distances + q * k, labels + q * k);
          std::vector<Candidate>().swap(screens[q].rows);
        }
      } catch (...) {
        keep_error();
      }
    }
  }
}

}  // namespace

void FlatL2Search(const float* vectors, const int64_t* ids, int64_t count, int d, int64_t n, const float* queries,
                  int k, float* distances, int64_t* labels, const FlatProjection* projection) {
  // An exception (bad_alloc) must not leave an OpenMP region, which would terminate the process: the first
  // one is kept and rethrown after it, as FAISS's own search does.
  std::exception_ptr error;
  auto keep_error = [&error] {
#pragma omp critical(mnemo_flat_search_error)
    if (error == nullptr) error = std::current_exception();
  };

  if (projection != nullptr && n >= kMinGemmQueries && count > k && projection->count == count &&
      projection->d == d) {
    SearchProjected(vectors, ids, count, d, n, queries, k, distances, labels, *projection, keep_error);
    if (error != nullptr) std::rethrow_exception(error);
    return;
  }
  std::vector<float> norms;
  float max_norm = 0;
  bool screen = n >= kMinGemmQueries && count > k;
  if (screen) {
    norms.resize(static_cast<size_t>(count));
#pragma omp parallel for reduction(max : max_norm) schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      norms[i] = SquaredNorm(vectors + i * d, d);
      max_norm = std::max(max_norm, norms[i]);  // NaN never wins std::max(a, NaN): checked below
    }
    for (int64_t i = 0; i < count && screen; ++i) screen = std::isfinite(norms[i]);
  }
  if (!screen) {
#pragma omp parallel if (n > 1)
    {
      std::vector<Candidate> candidates, scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t q = 0; q < n; ++q) {
        try {
          SearchUnscreened(vectors, ids, count, d, queries + q * d, k, &candidates, &scratch, distances + q * k,
                           labels + q * k);
        } catch (...) {
          keep_error();
        }
      }
    }
    if (error != nullptr) std::rethrow_exception(error);
    return;
  }

  // delta, the bound on |screening value - exact distance| for query q and any stored x, from the standard
  // bounds (gamma_m = m u / (1 - m u), u = 2^-24): |q|^2, |x|^2 and <q, x> each within gamma_d of their sum
  // of absolute terms, so the screening value within (gamma_d + 2u)(|q| + |x|)^2 of the true distance; the
  // exact path's sum of rounded squared differences within gamma_(d+3)(|q| + |x|)^2. Their sum is below
  // (2d + 8) u (|q| + |x|)^2; twice that is used, and the slack is 2 delta.
  const float unit = std::ldexp(1.0f, -24);
  const float factor = 2.0f * (2.0f * static_cast<float>(d) + 8.0f) * unit;
  const float max_length = std::sqrt(max_norm);
  const int dim = d;
  const float one = 1, zero = 0;
  std::vector<float> products(static_cast<size_t>(kQueryBlock * kBaseBlock));
  std::vector<Screen> screens(static_cast<size_t>(std::min(n, kQueryBlock)));
  const size_t prune_above = std::max<size_t>(4 * static_cast<size_t>(k), 4 * kBaseBlock);
  for (int64_t qb = 0; qb < n; qb += kQueryBlock) {
    const int64_t block = std::min(kQueryBlock, n - qb);
    for (int64_t q = 0; q < block; ++q) {
      Screen& s = screens[q];
      s.rows.clear();
      s.threshold = std::numeric_limits<float>::infinity();
      s.norm = SquaredNorm(queries + (qb + q) * d, d);
      const float reach = std::sqrt(s.norm) + max_length;
      s.slack = 2.0f * factor * reach * reach;
      // Past ~1e37 a product could overflow to infinity and the bound means nothing: rank exactly.
      s.unscreened = !std::isfinite(s.norm) || !(reach * reach < 1e37f);
    }
    for (int64_t base = 0; base < count; base += kBaseBlock) {
      const int rows = static_cast<int>(std::min(kBaseBlock, count - base)), cols = static_cast<int>(block);
      // products[q * rows + j] = <x_(base + j), query qb + q>
      sgemm_("T", "N", &rows, &cols, &dim, &one, vectors + base * d, &dim, queries + qb * d, &dim, &zero,
             products.data(), &rows);
#pragma omp parallel for schedule(static) if (block > 1)
      for (int64_t q = 0; q < block; ++q) {
        Screen& s = screens[q];
        if (s.unscreened) continue;
        try {
          const float* p = products.data() + q * rows;
          const float* x_norms = norms.data() + base;
          const float threshold = s.threshold, q_norm = s.norm;
          for (int j = 0; j < rows; ++j) {
            const float value = q_norm + x_norms[j] - 2.0f * p[j];
            if (value <= threshold) s.rows.push_back({value, base + j});
          }
          if (s.rows.size() > prune_above) Tighten(&s, k);
        } catch (...) {
          keep_error();
        }
      }
      if (error != nullptr) std::rethrow_exception(error);
    }
    // Exact ranking of what screening kept.
#pragma omp parallel if (block > 1)
    {
      std::vector<Candidate> candidates, scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t q = 0; q < block; ++q) {
        Screen& s = screens[q];
        const float* query = queries + (qb + q) * d;
        float* out_distances = distances + (qb + q) * k;
        int64_t* out_labels = labels + (qb + q) * k;
        try {
          if (s.unscreened) {
            SearchUnscreened(vectors, ids, count, d, query, k, &candidates, &scratch, out_distances, out_labels);
            continue;
          }
          Tighten(&s, k);
          candidates.resize(s.rows.size());
          for (size_t c = 0; c < s.rows.size(); ++c) {
            const int64_t row = s.rows[c].id;
            ScanVectors(query, vectors + row * d, ids + row, 1, static_cast<size_t>(d), &candidates[c]);
          }
          Emit(&candidates, &scratch, k, out_distances, out_labels);
        } catch (...) {
          keep_error();
        }
      }
    }
    if (error != nullptr) std::rethrow_exception(error);
  }
}

}  // namespace mnemo
