// Generation: autoregressive decoding with a KV cache. When the context window fills up, the cache is
// rebuilt from the most recent half window (the model never sees positions beyond n_positions).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "lm/gpt.h"
#include "lm/sampler.h"
#include "util/status.h"

namespace mnemo {

// Rewrites the next-token log-distribution [V] given the context's kNN-LM key [n_embd]. This is how
// retrieval (retriever/) plugs into decoding without lm/ depending on it.
using DistributionHook =
    std::function<Status(const torch::Tensor& knn_key, const torch::Tensor& logprobs, torch::Tensor* out)>;

struct GenerateOptions {
  int64_t max_tokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
  int32_t stop_token = -1;  // Stop after emitting it (e.g. <|endoftext|>); -1: never.
  DistributionHook hook;    // Optional (kNN-LM).
  // The memorizing layer's memory (lm/gpt.h MemoryAccess; null: none). It must hold the tokens before the
  // prompt (lm/memory_scorer.h ReadIntoMemory). Every step searches it; when the window fills up and
  // restarts, the tokens that leave the window are appended (tags memory_first_tag + their index in
  // prompt + output), so memory and window never hold the same token.
  KvMemory* memory = nullptr;
  int64_t memory_topk = 0;   // 0: the model's
  int64_t memory_lane = 0;
  int64_t memory_first_tag = 0;
  // false: the memory is only read (a served memory other requests share); tokens that leave the window
  // are then dropped, not appended.
  bool memory_write = true;
  // Called at every step with the memorizing layer's retrievals for the position that predicts the next
  // token: tags and attention weights, [n_head, topk] each (lm/gpt.h MemoryAccess).
  std::function<void(const torch::Tensor& tags, const torch::Tensor& weights)> on_memory_hits;
};

// Called with each new token and its log-probability; return false to stop early.
using TokenCallback = std::function<bool(int32_t token, float logprob)>;

// Appends up to max_tokens sampled tokens to `output`. The prompt must be non-empty and fit the context.
Status Generate(Gpt& net, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                std::vector<int32_t>* output, const TokenCallback& on_token = nullptr);

}  // namespace mnemo
