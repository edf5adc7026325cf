// The memorizing layer's cost against the model it sits in (docs/PERFORMANCE.md, "The memorizing layer"):
// one forward pass of a full window with the memory layer searching a memory of M tokens (exact, or IVF
// with 1,024 lists and nprobe 8) against the same pass with no memory, for the default model's shape and
// for GPT-2 small's (random weights: the cost does not depend on them). The memory holds keys drawn from
// the layer's own key distribution on random text (forward passes over random ids: 8,192 tokens, tiled
// with 10% Gaussian noise up to M), so IVF lists fill roughly as they would. Shapes: "default" (4 layers of
// 128, 4 heads, 128 positions, 4,096 tokens: the default model) and "gpt2-small" (12 x 768, 12 heads,
// 1,024 positions, 50,257 tokens), memory layer at 3/4 of the depth. Prints one JSON line per (shape, M,
// search). Usage: mnemo_memory_layer_bench [THREADS [default|gpt2-small]]
#include <malloc.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "lm/gpt.h"
#include "memory/kv_ring.h"
#include "util/blas_threads.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t layers, embd, heads, positions, memory_layer, vocab;
};

double TimeForward(mnemo::Gpt& net, const torch::Tensor& ids, mnemo::KvMemory* memory, int reps) {
  mnemo::ForwardOptions fo;
  fo.memory.memory = memory;
  fo.memory.write = false;  // the memory stays as filled
  net->Forward(ids, fo);    // warm-up
  const auto t0 = Clock::now();
  for (int r = 0; r < reps; ++r) net->Forward(ids, fo);
  return std::chrono::duration<double>(Clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // as the mnemo binary (api/main.cc)
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  torch::set_num_threads(threads);
  mnemo::SetBlasThreads(threads);
  torch::manual_seed(1);
  torch::InferenceMode inference;
  const std::string only = argc > 2 ? argv[2] : "";
  const Shape shapes[] = {{"default", 4, 128, 4, 128, 2, 4096}, {"gpt2-small", 12, 768, 12, 1024, 8, 50257}};
  for (const Shape& sh : shapes) {
    if (!only.empty() && only != sh.name) continue;
    mnemo::GptConfig c;
    c.vocab_size = sh.vocab;
    c.n_layer = sh.layers, c.n_embd = sh.embd, c.n_head = sh.heads, c.n_positions = sh.positions;
    c.memory_layer = sh.memory_layer, c.memory_topk = 32, c.memory_mode = "joint";
    mnemo::Gpt net(c);
    net->eval();
    const int64_t H = c.n_head, D = c.n_embd / c.n_head, T = c.n_positions;
    const torch::Tensor ids = torch::randint(0, c.vocab_size, {1, T}, torch::kLong);
    const int reps = sh.layers > 4 ? 2 : 20;
    const double base = TimeForward(net, ids, nullptr, reps);
    printf("{\"shape\": \"%s\", \"memory\": 0, \"search\": \"none\", \"ms_per_window\": %.2f, \"cost\": 1.0}\n", sh.name,
           base * 1e3);
    fflush(stdout);
    // Keys of the layer on random text, written into an unbounded ring, then tiled with noise for every M.
    const int64_t max_m = 65536, sampled = 8192;
    mnemo::KvRingOptions ko;
    ko.heads = H, ko.head_dim = D;
    std::unique_ptr<mnemo::KvRing> source;
    if (!mnemo::KvRing::Create(ko, &source).ok()) return 1;
    for (int64_t at = 0; at < sampled; at += T) {
      mnemo::ForwardOptions fo;
      fo.memory.memory = source.get();
      fo.want_logits = false;
      net->Forward(torch::randint(0, c.vocab_size, {1, T}, torch::kLong), fo);
    }
    const std::vector<float> sample = source->Keys(0);  // [H, sampled, D]
    const int64_t n = max_m;
    std::vector<float> keys(H * n * D);
    {
      torch::Tensor s = torch::from_blob(const_cast<float*>(sample.data()), {H, sampled, D});
      torch::Tensor tiled = s.repeat({1, n / sampled, 1});
      tiled = tiled + 0.1 * s.std() * torch::randn_like(tiled);
      std::memcpy(keys.data(), tiled.contiguous().data_ptr<float>(), keys.size() * sizeof(float));
    }
    std::vector<float> centroids;
    if (!mnemo::TrainKvCentroids(keys.data(), H, n, D, 1024, 1, &centroids).ok()) return 1;
    for (int64_t M : {16384, 65536}) {
      for (bool ivf : {false, true}) {
        mnemo::KvRingOptions o = ko;
        if (ivf) o.centroids = centroids, o.lists = 1024, o.nprobe = 8, o.ivf_from = 1;
        std::unique_ptr<mnemo::KvRing> ring;
        if (!mnemo::KvRing::Create(o, &ring).ok()) return 1;
        std::vector<float> k(H * M * D), v(H * M * D);
        for (int64_t h = 0; h < H; ++h) {
          std::copy(keys.begin() + h * n * D, keys.begin() + (h * n + M) * D, k.begin() + h * M * D);
          std::copy(keys.begin() + h * n * D, keys.begin() + (h * n + M) * D, v.begin() + h * M * D);
        }
        std::vector<int64_t> tags(M);
        for (int64_t i = 0; i < M; ++i) tags[i] = i;
        if (!ring->Append(0, k.data(), v.data(), tags.data(), M).ok()) return 1;
        const double s = TimeForward(net, ids, ring.get(), reps);
        printf("{\"shape\": \"%s\", \"memory\": %ld, \"search\": \"%s\", \"ms_per_window\": %.2f, \"cost\": %.3f}\n",
               sh.name, static_cast<long>(M), ivf ? "ivf1024 nprobe 8" : "exact", s * 1e3, s / base);
        fflush(stdout);
      }
    }
  }
  return 0;
}
