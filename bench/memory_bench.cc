// The memorizing layer's memory (memory/kv_ring.h) against FAISS (docs/PERFORMANCE.md, bench/memory-speed.sh):
// bytes per stored token and search time per query, at M = 1K .. 256K tokens in one lane, 4 heads of 32
// dimensions (the default model's layer), 128 queries per search (one window), k = 32.
// Prints one JSON line per (M, method); one thread. Usage: mnemo_memory_bench [MAX_M]
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include <omp.h>

#include "memory/kv_ring.h"
#include "util/blas_threads.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Keys with some structure (clusters), like attention keys: 256 centres plus noise.
// `draw` picks the points (same centres, other points).
std::vector<float> Keys(int64_t n, int64_t d, uint32_t seed, uint32_t draw = 0) {
  std::mt19937 crng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> centres(256 * d);
  for (float& x : centres) x = normal(crng);
  std::mt19937 rng(seed * 7919u + draw);
  std::vector<float> out(n * d);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = rng() % 256;
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = centres[c * d + j] + 0.5f * normal(rng);
  }
  return out;
}

// Recall@k: the fraction of each query's k true neighbours (truth, k ids per query) that `got` found.
template <typename Id>
double Recall(const std::vector<Id>& got, const std::vector<Id>& truth, int64_t k) {
  int64_t hit = 0;
  const int64_t queries = static_cast<int64_t>(truth.size()) / k;
  for (int64_t q = 0; q < queries; ++q) {
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < k; ++j) hit += got[q * k + i] == truth[q * k + j];
    }
  }
  return static_cast<double>(hit) / static_cast<double>(truth.size());
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t max_m = argc > 1 ? std::atoll(argv[1]) : 262144;
  // One thread for everyone (the memory searches beside a model that has the other cores).
  mnemo::SetBlasThreads(1);
  omp_set_num_threads(1);
  const int64_t H = 4, D = 32, n = 128, k = 32;
  for (int64_t M = 1024; M <= max_m; M *= 4) {
    // Per head: M keys; queries are fresh draws from the same distribution.
    std::vector<std::vector<float>> keys(H), values(H);
    for (int64_t h = 0; h < H; ++h) keys[h] = Keys(M, D, 1 + h), values[h] = Keys(M, D, 100 + h);
    std::vector<float> queries(H * n * D);
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<float> q = Keys(n, D, 1 + h);  // same centres, new noise draws below
      std::mt19937 rng(999 + h);
      std::normal_distribution<float> normal;
      for (int64_t i = 0; i < n * D; ++i) queries[h * n * D + i] = q[i] + 0.3f * normal(rng);
    }
    const int reps = M >= 65536 ? 3 : 10;
    std::vector<float> ko(H * n * k * D), vo(H * n * k * D);
    std::vector<int64_t> to(H * n * k);
    // The memory index (`mnemo memory index`): 1024 centroids per head from 65,536 other keys of the
    // same distribution (a model's training documents), nprobe 8.
    std::vector<float> centroids;
    {
      std::vector<float> train(H * 65536 * D);
      for (int64_t h = 0; h < H; ++h) {
        const std::vector<float> t = Keys(65536, D, 1 + h, 1);
        std::copy(t.begin(), t.end(), train.begin() + h * 65536 * D);
      }
      if (!mnemo::TrainKvCentroids(train.data(), H, 65536, D, 1024, 1, &centroids).ok()) return 1;
    }
    std::vector<int64_t> truth;
    for (int variant = 0; variant < 3; ++variant) {
      const bool fp16 = variant == 1, ivf = variant == 2;
      mnemo::KvRingOptions o;
      o.heads = H, o.head_dim = D, o.fp16 = fp16;
      if (ivf) o.centroids = centroids, o.lists = 1024, o.nprobe = 8, o.ivf_from = 1;
      std::unique_ptr<mnemo::KvRing> ring;
      if (!mnemo::KvRing::Create(o, &ring).ok()) return 1;
      // Append token by token in chunks of 1024: [H, chunk, D].
      for (int64_t at = 0; at < M; at += 1024) {
        const int64_t c = std::min<int64_t>(1024, M - at);
        std::vector<float> kc(H * c * D), vc(H * c * D);
        std::vector<int64_t> tags(c);
        for (int64_t h = 0; h < H; ++h) {
          std::copy(keys[h].begin() + at * D, keys[h].begin() + (at + c) * D, kc.begin() + h * c * D);
          std::copy(values[h].begin() + at * D, values[h].begin() + (at + c) * D, vc.begin() + h * c * D);
        }
        for (int64_t i = 0; i < c; ++i) tags[i] = at + i;
        if (!ring->Append(0, kc.data(), vc.data(), tags.data(), c).ok()) return 1;
      }
      const auto t0 = Clock::now();
      for (int r = 0; r < reps; ++r) {
        if (!ring->Search(0, queries.data(), n, k, ko.data(), vo.data(), to.data()).ok()) return 1;
      }
      const double s = Since(t0) / reps;
      if (variant == 0) truth = to;
      printf("{\"M\": %ld, \"method\": \"kv_ring %s\", \"bytes_per_token\": %ld, \"ms_per_window\": %.3f, "
             "\"us_per_query_head\": %.3f, \"recall_at_k\": %.4f}\n",
             static_cast<long>(M), ivf ? "ivf1024 nprobe 8 fp32" : fp16 ? "exact fp16" : "exact fp32",
             static_cast<long>(ring->bytes_per_token()), s * 1e3, s * 1e6 / (n * H), Recall(to, truth, k));
      fflush(stdout);
    }
    // FAISS per head: exact (IndexFlatIP) and IVF (nlist ~ 4 sqrt(M), nprobe 8), recall against exact.
    std::vector<faiss::Index::idx_t> exact_ids(H * n * k), ids(H * n * k);
    std::vector<float> dist(H * n * k);
    {
      std::vector<std::unique_ptr<faiss::IndexFlatIP>> flat(H);
      for (int64_t h = 0; h < H; ++h) flat[h] = std::make_unique<faiss::IndexFlatIP>(D), flat[h]->add(M, keys[h].data());
      const auto t0 = Clock::now();
      for (int r = 0; r < reps; ++r) {
        for (int64_t h = 0; h < H; ++h) {
          flat[h]->search(n, queries.data() + h * n * D, k, dist.data() + h * n * k, exact_ids.data() + h * n * k);
        }
      }
      const double s = Since(t0) / reps;
      printf("{\"M\": %ld, \"method\": \"faiss IndexFlatIP\", \"ms_per_window\": %.3f, \"us_per_query_head\": %.3f}\n",
             static_cast<long>(M), s * 1e3, s * 1e6 / (n * H));
      fflush(stdout);
    }
    if (M >= 4096) {
      const int64_t nlist = std::min<int64_t>(4096, 4 * static_cast<int64_t>(std::sqrt(static_cast<double>(M))));
      std::vector<std::unique_ptr<faiss::IndexFlatIP>> quant(H);
      std::vector<std::unique_ptr<faiss::IndexIVFFlat>> ivf(H);
      const auto tb = Clock::now();
      for (int64_t h = 0; h < H; ++h) {
        quant[h] = std::make_unique<faiss::IndexFlatIP>(D);
        ivf[h] = std::make_unique<faiss::IndexIVFFlat>(quant[h].get(), D, nlist, faiss::METRIC_INNER_PRODUCT);
        ivf[h]->train(M, keys[h].data());
        ivf[h]->add(M, keys[h].data());
        ivf[h]->nprobe = 8;
      }
      const double build = Since(tb);
      const auto t0 = Clock::now();
      for (int r = 0; r < reps; ++r) {
        for (int64_t h = 0; h < H; ++h) {
          ivf[h]->search(n, queries.data() + h * n * D, k, dist.data() + h * n * k, ids.data() + h * n * k);
        }
      }
      const double s = Since(t0) / reps;
      printf("{\"M\": %ld, \"method\": \"faiss IVF%ld,Flat nprobe 8\", \"ms_per_window\": %.3f, "
             "\"us_per_query_head\": %.3f, \"recall_at_k\": %.4f, \"build_s\": %.2f}\n",
             static_cast<long>(M), static_cast<long>(nlist), s * 1e3, s * 1e6 / (n * H), Recall(ids, exact_ids, k),
             build);
      fflush(stdout);
    }
  }
  return 0;
}
