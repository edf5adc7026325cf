#include "lm/sampler.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <vector>

namespace mnemo {
namespace {

// The candidates a sampled token usually comes from: the top 64 hold nearly all of the mass of a trained
// model's distribution, so the walk below rarely needs the rest sorted.
constexpr int64_t kSortedHead = 64;

}  // namespace

int32_t SampleToken(const torch::Tensor& logprobs, const SamplingOptions& options, std::mt19937_64& rng) {
  torch::Tensor lp = logprobs.to(torch::kFloat32).contiguous();
  const float* v = lp.data_ptr<float>();
  const int64_t n = lp.numel();
  if (options.temperature <= 0.0) return static_cast<int32_t>(std::max_element(v, v + n) - v);

  // Candidates by decreasing probability, ties broken by id (a total order, so the result does not depend
  // on how they are sorted). Only the head is sorted up front: sorting the whole vocabulary for every
  // token was most of a batched decoding step (perf); the tail is sorted only when the walk reaches it.
  auto by_prob = [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  const int64_t keep_k = options.top_k > 0 && options.top_k < n ? options.top_k : n;
  const int64_t head = std::min(keep_k, std::max(kSortedHead, keep_k < n ? keep_k : int64_t{0}));
  // The head: the `head` best by that order, found through the head-th largest value (a selection over
  // plain floats), then ids above it and, of those equal to it, the lowest ids.
  std::vector<float> values(v, v + n);
  std::nth_element(values.begin(), values.begin() + (head - 1), values.end(), std::greater<float>());
  const float threshold = values[static_cast<size_t>(head - 1)];
  std::vector<int32_t> order;
  order.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    if (v[i] > threshold) order.push_back(i);
  }
  for (int32_t i = 0; i < n && static_cast<int64_t>(order.size()) < head; ++i) {
    if (v[i] == threshold) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), by_prob);
  int64_t keep = keep_k;
  if (keep > head) {
    // The tail in id order, sorted only as far as the walk gets (in chunks that grow 4x).
    std::vector<bool> in_head(static_cast<size_t>(n), false);
    for (int32_t id : order) in_head[static_cast<size_t>(id)] = true;
    for (int32_t i = 0; i < n; ++i) {
      if (!in_head[static_cast<size_t>(i)]) order.push_back(i);
    }
  }
  std::vector<double> p(keep);
  const double inv_t = 1.0 / options.temperature;
  const double top = v[order[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((v[order[i]] - top) * inv_t);
  int64_t sorted_end = head;  // order[0, sorted_end) is in final order
  auto sorted_through = [&](int64_t i) {
    while (i >= sorted_end) {
      const int64_t next = std::min(keep, sorted_end * 4);
      if (next < keep) std::nth_element(order.begin() + sorted_end, order.begin() + next, order.end(), by_prob);
      std::sort(order.begin() + sorted_end, order.begin() + next, by_prob);
      for (int64_t j = sorted_end; j < next; ++j) p[j] = std::exp((v[order[j]] - top) * inv_t);
      sorted_end = next;
    }
  };
  if (options.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    int64_t cut = 0;
    while (cut < keep && mass < options.top_p * total) {
      sorted_through(cut);
      mass += p[cut++];
    }
    keep = std::max<int64_t>(1, cut);
    total = mass;
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double r = uniform(rng), acc = 0;
  for (int64_t i = 0; i < std::min(keep, sorted_end); ++i) {
    acc += p[i];
    if (r < acc) return order[i];
  }
  // Past the sorted head (a flat distribution: random weights, a high temperature): the token where the
  // mass in probability order crosses r, found without sorting the rest. Split order[lo, hi) around a
  // pivot by the same total order; if r falls in the mass of the part before the pivot, go there, else
  // past it (a selection weighted by mass, linear on average, where the walk sorted chunk after chunk).
  int64_t lo = sorted_end, hi = keep;
  if (lo >= hi) return order[keep - 1];
  std::vector<double> weight_of(static_cast<size_t>(n), 0.0);
  for (int64_t i = lo; i < hi; ++i) weight_of[static_cast<size_t>(order[i])] = p[i];
  while (hi - lo > 32) {
    const int32_t pivot = order[lo + (hi - lo) / 2];
    // [lo, m): before the pivot; the pivot moved to m; (m, hi): after it.
    const auto mid = std::partition(order.begin() + lo, order.begin() + hi, [&](int32_t a) { return by_prob(a, pivot); });
    std::iter_swap(mid, std::find(mid, order.begin() + hi, pivot));
    const int64_t m = mid - order.begin();
    double upper = 0;
    for (int64_t i = lo; i < m; ++i) upper += weight_of[static_cast<size_t>(order[i])];
    if (r < acc + upper) {
      hi = m;
      continue;
    }
    acc += upper + weight_of[static_cast<size_t>(pivot)];
    if (r < acc) return pivot;
    lo = m + 1;
  }
  std::sort(order.begin() + lo, order.begin() + hi, by_prob);
  for (int64_t i = lo; i < hi; ++i) {
    acc += weight_of[static_cast<size_t>(order[i])];
    if (r < acc) return order[i];
  }
  return order[hi - 1];
}

}  // namespace mnemo
