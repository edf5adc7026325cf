#include "indexes/flat_search.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <vector>

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

}  // namespace

void FlatL2Search(const float* vectors, const int64_t* ids, int64_t count, int d, int64_t n, const float* queries,
                  int k, float* distances, int64_t* labels) {
  // An exception (bad_alloc) must not leave an OpenMP region, which would terminate the process: the first
  // one is kept and rethrown after it, as FAISS's own search does.
  std::exception_ptr error;
  auto keep_error = [&error] {
#pragma omp critical(mnemo_flat_search_error)
    if (error == nullptr) error = std::current_exception();
  };

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
