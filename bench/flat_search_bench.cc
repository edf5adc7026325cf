// Exact Flat L2 search, one run, ratios: FAISS 1.7.3's pairwise path (what VectorIndex used for Flat, calls
// of at most 16 queries so distances stay exact), FAISS's BLAS path (one call per batch; inexact distances,
// what a Python peer's faiss.IndexFlatL2 runs), and FlatL2Search (indexes/flat_search.h).
// Usage: mnemo_flat_search_bench [VECTORS=165644] [DIM=128] [QUERIES=1024] [BATCH=64] [K=64]
// Data: Gaussian vectors; queries are stored vectors plus noise (neighbours close, as in a kNN-LM).
#include <faiss/IndexFlat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "indexes/flat_search.h"

int main(int argc, char** argv) {
  const int64_t count = argc > 1 ? std::atoll(argv[1]) : 165644;
  const int d = argc > 2 ? std::atoi(argv[2]) : 128;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 1024;
  const int64_t batch = argc > 4 ? std::atoll(argv[4]) : 64;
  const int k = argc > 5 ? std::atoi(argv[5]) : 64;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> xb(count * d), xq(n * d);
  for (float& v : xb) v = normal(rng);
  for (int64_t q = 0; q < n; ++q) {
    const int64_t row = static_cast<int64_t>(rng() % count);
    for (int i = 0; i < d; ++i) xq[q * d + i] = xb[row * d + i] + 0.3f * normal(rng);
  }
  std::vector<int64_t> ids(count);
  for (int64_t i = 0; i < count; ++i) ids[i] = i;
  faiss::IndexFlatL2 flat(d);
  flat.add(count, xb.data());
  std::vector<float> dist(n * k), dist2(n * k);
  std::vector<int64_t> lab(n * k), lab2(n * k);
  using Clock = std::chrono::steady_clock;
  auto time = [&](auto&& fn) {
    const auto a = Clock::now();
    fn();
    return std::chrono::duration<double>(Clock::now() - a).count();
  };
  const double pairwise = time([&] {
    for (int64_t b = 0; b < n; b += 16) flat.search(std::min<int64_t>(16, n - b), &xq[b * d], k, &dist[b * k], &lab[b * k]);
  });
  const double blas = time([&] {
    for (int64_t b = 0; b < n; b += batch)
      flat.search(std::min(batch, n - b), &xq[b * d], k, &dist2[b * k], &lab2[b * k]);
  });
  const double ours = time([&] {
    for (int64_t b = 0; b < n; b += batch)
      mnemo::FlatL2Search(xb.data(), ids.data(), count, d, std::min(batch, n - b), &xq[b * d], k, &dist2[b * k],
                          &lab2[b * k]);
  });
  int64_t same = 0;
  for (int64_t i = 0; i < n * k; ++i) same += lab[i] == lab2[i] && dist[i] == dist2[i];
  std::printf("{\"vectors\": %lld, \"dim\": %d, \"queries\": %lld, \"batch\": %lld, \"k\": %d,\n"
              " \"queries_per_second\": {\"faiss_pairwise\": %.1f, \"faiss_blas\": %.1f, \"flat_l2_search\": %.1f},\n"
              " \"results_equal_to_pairwise\": %.6f}\n",
              static_cast<long long>(count), d, static_cast<long long>(n), static_cast<long long>(batch), k,
              n / pairwise, n / blas, n / ours, static_cast<double>(same) / (n * k));
  return 0;
}
