// Model-side leakage measures over a (kNN-)LM: canaries with random slots, the log-perplexity of a
// span, exposure of a canary against sampled references, membership-inference scores of a text, and
// k-prefix extraction. The statistics behind them are in roc.h and exposure.h.
//
// Thread-safety: reads the model and the memory; safe beside serving.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "lm/checkpoint.h"
#include "retriever/knn_lm.h"

namespace mnemo {

// A canary format such as "the access code of {name} is {digits:6}": {name} takes one of `names`,
// {digits:N} N random decimal digits (the secret; |R| = 10^N).
struct CanaryFormat {
  std::string pattern = "the access code of {name} is {digits:6}";
  std::vector<std::string> names = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"};
  // The text with `name` and `secret`, and the byte offset where the secret starts (*secret_at).
  std::string Render(const std::string& name, const std::string& secret, size_t* secret_at) const;
  int secret_digits() const;
  std::string RandomSecret(std::mt19937_64& rng) const;
};

// The language model to measure: base LM alone (memory null or knn.enabled false) or kNN-LM.
struct ScoredModel {
  LanguageModel* model = nullptr;
  const KnnMemory* memory = nullptr;
  KnnOptions knn;
};

// -sum log2 p(token) over the tokens of text whose bytes start at or after `from_byte` (the secret span;
// 0 = all but the first token), under the model.
Status SpanLogPerplexityBits(const ScoredModel& m, const std::string& text, size_t from_byte, double* bits);

struct ExposureResult {
  double canary_bits = 0;  // log-perplexity of the secret given the prefix
  double rank_exposure = 0, extrapolated_exposure = 0;
};

// Exposure of `secret` in `format` for `name` against `references` random secrets (seeded).
Status CanaryExposure(const ScoredModel& m, const CanaryFormat& format, const std::string& name,
                      const std::string& secret, int references, uint64_t seed, ExposureResult* out);

// Membership-inference scores of a text (higher = "more likely stored"): -LOSS (mean log-prob), zlib
// ratio (log-prob bits over zlib-compressed bits), reference ratio (kNN-LM minus base LM log-prob, i.e.
// against lambda = 0), Min-K% (mean of the lowest 20% token log-probs).
struct MembershipScores {
  double loss = 0, zlib = 0, reference = 0, min_k = 0;
};
Status ScoreMembership(const ScoredModel& m, const std::string& text, MembershipScores* out);

// Whether greedy decoding from the first k tokens of `text` reproduces the rest (k-extractable).
Status IsExtractable(const ScoredModel& m, const std::string& text, int k, bool* extractable);

}  // namespace mnemo
