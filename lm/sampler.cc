#include "lm/sampler.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace mnemo {

int32_t SampleToken(const torch::Tensor& logprobs, const SamplingOptions& options, std::mt19937_64& rng) {
  torch::Tensor lp = logprobs.to(torch::kFloat32).contiguous();
  const float* v = lp.data_ptr<float>();
  const int64_t n = lp.numel();
  if (options.temperature <= 0.0) return static_cast<int32_t>(std::max_element(v, v + n) - v);

  // Candidates sorted by decreasing probability; ties broken by id for determinism.
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = n;
  if (options.top_k > 0 && options.top_k < n) keep = options.top_k;
  auto by_prob = [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_prob);
  order.resize(keep);

  std::vector<double> p(keep);
  const double inv_t = 1.0 / options.temperature;
  const double top = v[order[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((v[order[i]] - top) * inv_t);
  if (options.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    int64_t cut = 0;
    while (cut < keep && mass < options.top_p * total) mass += p[cut++];
    keep = std::max<int64_t>(1, cut);
    total = mass;
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double r = uniform(rng), acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (r < acc) return order[i];
  }
  return order[keep - 1];
}

}  // namespace mnemo
