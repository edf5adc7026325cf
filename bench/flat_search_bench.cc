// Exact Flat L2 search, one run, ratios: FAISS 1.7.3's pairwise path (what VectorIndex used for Flat, calls
// of at most 16 queries so distances stay exact), FAISS's BLAS path (one call per batch; inexact distances,
// what a Python peer's faiss.IndexFlatL2 runs), FlatL2Search (indexes/flat_search.h) screened by sgemm
// over all d dimensions, and FlatL2Search with a FlatProjection (bounds from p principal directions).
// Usage: mnemo_flat_search_bench [VECTORS=165644|KEYS.f16] [DIM=128] [QUERIES=1024] [BATCH=64] [K=64] [P=0]
// Data: Gaussian vectors, queries are stored vectors plus noise; or, with a datastore's keys.f16 (fp16,
// DIM per key), its last QUERIES keys are the queries and the others the vectors (real kNN-LM keys).
// P: the projection's directions (0: FlatProjection's default).
#include <faiss/IndexFlat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "indexes/flat_search.h"
#include "util/half.h"

int main(int argc, char** argv) {
  const std::string source = argc > 1 ? argv[1] : "165644";
  const int d = argc > 2 ? std::atoi(argv[2]) : 128;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 1024;
  const int64_t batch = argc > 4 ? std::atoll(argv[4]) : 64;
  const int k = argc > 5 ? std::atoi(argv[5]) : 64;
  const int p = argc > 6 ? std::atoi(argv[6]) : 0;
  std::vector<float> xb, xq(n * d);
  int64_t count = 0;
  if (source.find_first_not_of("0123456789") == std::string::npos) {
    count = std::atoll(source.c_str());
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    xb.resize(count * d);
    for (float& v : xb) v = normal(rng);
    for (int64_t q = 0; q < n; ++q) {
      const int64_t row = static_cast<int64_t>(rng() % count);
      for (int i = 0; i < d; ++i) xq[q * d + i] = xb[row * d + i] + 0.3f * normal(rng);
    }
  } else {
    std::ifstream in(source, std::ios::binary | std::ios::ate);
    const int64_t total = static_cast<int64_t>(in.tellg()) / (2 * d);
    if (!in || total <= n) {
      std::fprintf(stderr, "%s: cannot read more than %lld keys of dimension %d\n", source.c_str(),
                   static_cast<long long>(n), d);
      return 1;
    }
    std::vector<uint16_t> halves(total * d);
    in.seekg(0);
    in.read(reinterpret_cast<char*>(halves.data()), static_cast<std::streamsize>(halves.size() * 2));
    count = total - n;
    xb.resize(count * d);
    for (int64_t i = 0; i < count * d; ++i) xb[i] = mnemo::HalfToFloat(halves[i]);
    for (int64_t i = 0; i < n * d; ++i) xq[i] = mnemo::HalfToFloat(halves[count * d + i]);
  }
  std::vector<int64_t> ids(count);
  for (int64_t i = 0; i < count; ++i) ids[i] = i;
  faiss::IndexFlatL2 flat(d);
  flat.add(count, xb.data());
  std::vector<float> dist(n * k), dist2(n * k), dist3(n * k);
  std::vector<int64_t> lab(n * k), lab2(n * k), lab3(n * k);
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
  std::unique_ptr<const mnemo::FlatProjection> projection;
  const double build = time([&] { projection = mnemo::FlatProjection::Build(xb.data(), count, d, p); });
  if (projection == nullptr) {
    std::fprintf(stderr, "these vectors cannot be projected on %d directions\n", p);
    return 1;
  }
  const double projected = time([&] {
    for (int64_t b = 0; b < n; b += batch)
      mnemo::FlatL2Search(xb.data(), ids.data(), count, d, std::min(batch, n - b), &xq[b * d], k, &dist3[b * k],
                          &lab3[b * k], projection.get());
  });
  int64_t same = 0, same_projected = 0;
  for (int64_t i = 0; i < n * k; ++i) {
    same += lab[i] == lab2[i] && dist[i] == dist2[i];
    same_projected += lab[i] == lab3[i] && dist[i] == dist3[i];
  }
  std::printf("{\"vectors\": %lld, \"dim\": %d, \"queries\": %lld, \"batch\": %lld, \"k\": %d, \"directions\": %d,\n"
              " \"queries_per_second\": {\"faiss_pairwise\": %.1f, \"faiss_blas\": %.1f, \"flat_l2_search\": %.1f,"
              " \"flat_l2_search_projected\": %.1f},\n"
              " \"projection_build_seconds\": %.3f,\n"
              " \"results_equal_to_pairwise\": {\"flat_l2_search\": %.6f, \"projected\": %.6f}}\n",
              static_cast<long long>(count), d, static_cast<long long>(n), static_cast<long long>(batch), k,
              projection->p, n / pairwise, n / blas, n / ours, n / projected, build,
              static_cast<double>(same) / (n * k), static_cast<double>(same_projected) / (n * k));
  return 0;
}
