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
#include "lm/kv_memory.h"
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

// The language model to measure: base LM alone (memory null or knn.enabled false) or kNN-LM; either one
// reading a memory of its memorizing layer when layer_memory is set (searched, never written).
struct ScoredModel {
  LanguageModel* model = nullptr;
  const KnnMemory* memory = nullptr;
  KnnOptions knn;
  KvMemory* layer_memory = nullptr;
  int64_t layer_topk = 0;  // 0: the model's
};

// -sum log2 p(token) over the tokens of text whose bytes start at or after `from_byte` (the secret span;
// 0 = all but the first token), under the model.
Status SpanLogPerplexityBits(const ScoredModel& m, const std::string& text, size_t from_byte, double* bits);
// The first token of that span: the first that ends after `from_byte` (a token may carry a space and the
// secret's first characters together), but never token 0, which nothing predicts.
size_t SpanFirstToken(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t from_byte);

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
// The same from per-token natural-log probabilities under the model (lp) and the base LM (base_lp).
MembershipScores MembershipFromLogprobs(const std::string& text, const std::vector<float>& lp,
                                        const std::vector<float>& base_lp);

// Exposure of a secret inside a stored text ("how exposed is this stored secret?"): references replace
// the bytes [secret_begin, secret_begin + secret_size) with random strings of the same shape (each digit
// by a digit, each letter by a letter of the same case, other bytes kept), so |R| = 10^digits x 26^letters.
// Only the tokens overlapping the secret are scored (not the text after it).
// InvalidArgument when the span is out of range or has no digit or letter to vary.
Status SecretExposure(const ScoredModel& m, const std::string& text, size_t secret_begin, size_t secret_size,
                      int references, uint64_t seed, ExposureResult* out);

// Whether greedy decoding from the first k tokens of `text` reproduces the rest (k-extractable).
Status IsExtractable(const ScoredModel& m, const std::string& text, int k, bool* extractable);
// The same for token ids; temperature > 0 samples instead (seeded), the extraction rate under sampling.
// Decoding stops at the first token that differs.
Status IsExtractableIds(const ScoredModel& m, const std::vector<int32_t>& ids, int k, double temperature,
                        uint64_t seed, bool* extractable);

}  // namespace mnemo
