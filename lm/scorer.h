// Scoring: log p(x_i | x_<i) for every token of a text, and strided sliding-window perplexity for
// texts longer than the context window (the Hugging Face recipe: windows of W tokens advancing by
// S, each scoring only the tokens not scored before, so every token after the first window sees at
// least W - S tokens of context). A window's first token has no context inside it, so windows always
// share at least one token: S = W (non-overlapping chunks, which the Hugging Face recipe handles by
// silently not scoring each chunk's first token) advances by W - 1, and every token still gets scored.
//
// Thread-safety: functions only read the model; callers serialise training against them.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "lm/gpt.h"
#include "util/status.h"

namespace mnemo {

// InvalidArgument unless ids has 1..n_positions tokens, all inside the vocabulary.
Status CheckScorable(const GptConfig& config, const std::vector<int32_t>& ids);

// Natural-log probabilities of ids[1..n-1] given their prefixes (result has n-1 entries).
// ids.size() must be in [1, n_positions]; longer input is an InvalidArgument error.
Status ScoreIds(Gpt& net, const std::vector<int32_t>& ids, std::vector<float>* logprobs);

constexpr int64_t kScoringBatchTokens = 1024;

struct WindowOptions {
  int64_t window = 0;      // 0: the model's n_positions; at least 2.
  int64_t stride = 0;      // 0: window / 2; at most window (window - 1 is used for window).
  // Windows scored together; 0: as many as fill kScoringBatchTokens (8 of the default model's 128-token
  // windows, 1 of GPT-2's 1,024: larger passes only spill the cache and map fresh pages).
  int64_t batch_size = 0;
  // Where ForEachScoredBatch runs the callback (a costly one: the kNN-LM's searches):
  //  kAfter: on the calling thread after each batch's forward pass, with `callback_threads` OpenMP threads
  //    (0: the caller's setting), so a parallel search gets every core;
  //  kBeside: on a second thread while the model computes the next batch (two batches in flight), with the
  //    caller's OpenMP threads, and OpenBLAS gives the model that many cores fewer (it busy-waits on every
  //    core otherwise);
  //  kAuto: kAfter for the first two batches (the second is timed), kBeside for the third (timed from the
  //    callback's start until it and the next forward pass are both done), then whichever cost less per
  //    batch for the rest. Neither always wins: on 2 cores an exact search over a large Flat datastore runs
  //    best after the pass on both cores, an IVF-PQ search best beside it (docs/PERFORMANCE.md).
  // The callback still sees the batches in order, never concurrently with itself, and must not run the model.
  enum class Placement { kAfter, kBeside, kAuto };
  Placement placement = Placement::kAfter;
  int callback_threads = 0;
};

// The windows that cover ids[1..n-1]: window [begin, end) scores its last `score_count` tokens, always
// fewer than end - begin (its first token is context). InvalidArgument for a window under 2 tokens or
// over n_positions, or a stride over the window.
struct Window {
  int64_t begin, end, score_count;
};
Status PlanWindows(int64_t num_tokens, int64_t n_positions, const WindowOptions& options,
                   std::vector<Window>* windows);

// The scored part of one window: predictions for targets ids[first_target, first_target + count).
// Row r predicts ids[first_target + r] from the context ending at ids[first_target + r - 1].
struct ScoredSpan {
  int64_t first_target = 0;
  int64_t count = 0;
  torch::Tensor logprobs;  // [count, vocab] natural-log distributions (when requested)
  torch::Tensor knn_keys;  // [count, n_embd] kNN-LM keys of the contexts (when requested)
};

struct SpanRequest {
  bool logprobs = true;
  bool knn_keys = false;
  // A memory the memorizing layer searches (read-only: nothing is appended) in every window, e.g. a
  // served memory of documents. Set: windows run one at a time, each reading lane memory.first_lane.
  KvMemory* memory = nullptr;
  int64_t memory_topk = 0;  // 0: the model's
};

// Runs the model over `ids` window by window (PlanWindows; equal-length windows batched) and calls `fn`
// for each window's scored span, in order. Every target in [1, n) is covered exactly once. Stops at the
// first non-OK Status from `fn` and returns it (with the callback beside the model, after at most one more
// model batch, whose spans `fn` never sees).
Status ForEachScoredSpan(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                         const SpanRequest& request, const std::function<Status(const ScoredSpan&)>& fn);

// The same, but `fn` gets each model batch's spans at once (in order): one search for all their positions
// instead of one per window.
// `placed`, when given, gets where the callback ran last (kAfter or kBeside).
Status ForEachScoredBatch(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                          const SpanRequest& request,
                          const std::function<Status(const std::vector<ScoredSpan>&)>& fn,
                          WindowOptions::Placement* placed = nullptr);

// Log-probabilities of ids[1..n-1] for a sequence of any length, via PlanWindows.
Status ScoreLongSequence(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                         std::vector<float>* logprobs);

struct PerplexityReport {
  int64_t tokens = 0;  // Scored tokens.
  int64_t bytes = 0;   // UTF-8 bytes of the text the scored tokens cover.
  double nll = 0;      // Summed negative log-likelihood, nats.
  double perplexity() const;      // exp(nll / tokens); 0 when nothing was scored
  double bits_per_byte() const;   // 0 when bytes is 0
  // The report of these per-token log-probabilities (natural log) covering `bytes` bytes of text.
  static PerplexityReport FromLogprobs(const std::vector<float>& logprobs, int64_t bytes = 0);
};

}  // namespace mnemo
