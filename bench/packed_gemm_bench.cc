// The packed kernel of batched decoding steps (util/packed_gemm.h) against the BLAS (cblas_sgemm: what
// LibTorch's products call, OpenBLAS 0.3.21 here), one run, ratios: y[M, N] = x[M, K] W[K, N] for a few
// rows against weights that do not stay in cache (enough copies of W to fill ~400 MB, each used once per
// round, as a model's layers are). GFLOP/s of each, at 1 and at THREADS threads.
// Usage: mnemo_packed_gemm_bench [K=768] [N=3072] [ROWS=1,8,16,64,256] [THREADS=2] [ROUNDS=3]
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "util/blas_threads.h"
#include "util/packed_gemm.h"

int main(int argc, char** argv) {
  const int64_t k = argc > 1 ? std::atoll(argv[1]) : 768, n = argc > 2 ? std::atoll(argv[2]) : 3072;
  std::vector<int64_t> row_counts;
  std::stringstream list(argc > 3 ? argv[3] : "1,8,16,64,256");
  for (std::string item; std::getline(list, item, ',');) row_counts.push_back(std::atoll(item.c_str()));
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2, rounds = argc > 5 ? std::atoi(argv[5]) : 3;
  if (!mnemo::PackedGemmSupported()) {
    std::fprintf(stderr, "this CPU has neither AVX-512 nor AVX2 with FMA: no packed kernel\n");
    return 1;
  }
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> w(static_cast<size_t>(k * n));
  for (float& v : w) v = normal(gen);
  const int64_t copies = std::max<int64_t>(1, 400'000'000 / (k * n * 4));
  std::vector<std::vector<float>> raw(static_cast<size_t>(copies), w);
  std::vector<std::unique_ptr<mnemo::PackedWeights>> packed;
  for (int64_t c = 0; c < copies; ++c) packed.push_back(mnemo::PackedWeights::Pack(w.data(), k, n));
  std::printf("W [%ld, %ld] x %ld copies, %d rounds\n", static_cast<long>(k), static_cast<long>(n),
              static_cast<long>(copies), rounds);
  std::printf("| rows | threads | packed GFLOP/s | BLAS GFLOP/s | packed / BLAS |\n|---|---|---|---|---|\n");
  for (int64_t m : row_counts) {
    std::vector<float> x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
    for (float& v : x) v = normal(gen);
    for (int t : {1, threads}) {
      mnemo::SetPackedGemmThreads(t);
      mnemo::SetBlasThreads(t);
      auto time = [&](auto&& fn) {
        fn(0);  // warm
        const auto start = std::chrono::steady_clock::now();
        for (int r = 0; r < rounds; ++r) {
          for (int64_t c = 0; c < copies; ++c) fn(c);
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      };
      const double ours = time([&](int64_t c) { mnemo::PackedGemmThreads(x.data(), m, *packed[c], nullptr, y.data()); });
      const double blas = time([&](int64_t c) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), 1.0f, x.data(), static_cast<int>(k), raw[c].data(), static_cast<int>(n), 0.0f,
                    y.data(), static_cast<int>(n));
      });
      const double flop = 2.0 * static_cast<double>(m * k * n) * static_cast<double>(copies * rounds);
      std::printf("| %ld | %d | %.1f | %.1f | %.2fx |\n", static_cast<long>(m), t, flop / ours / 1e9, flop / blas / 1e9,
                  blas / ours);
      if (threads == 1) break;
    }
  }
  return 0;
}
