// Sampler: picks the next token from a distribution with temperature, top-k and top-p (nucleus)
// filtering. Randomness comes from the caller's std::mt19937_64, so a seed reproduces a generation
// exactly on any machine (torch's generators are not used here).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>

namespace mnemo {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax).
  int64_t top_k = 0;         // 0: no top-k filter.
  double top_p = 1.0;        // 1: no nucleus filter.
};

// `logprobs`: 1-D float tensor of log-probabilities (or logits) over the vocabulary.
int32_t SampleToken(const torch::Tensor& logprobs, const SamplingOptions& options, std::mt19937_64& rng);

}  // namespace mnemo
