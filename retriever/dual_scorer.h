// Dual scoring: base-LM and kNN-LM log-probabilities of a token sequence in one pass of the model, so the
// two can be compared position by position (eval ppl, score, POST /v1/score).
//
// Thread-safety: reads the model and the memory; safe to run concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "lm/checkpoint.h"
#include "lm/scorer.h"
#include "retriever/knn_lm.h"

namespace mnemo {

struct DualScores {
  std::vector<float> lm, knn;  // log p of ids[1..n-1]; knn is empty without a memory.
  KnnStats stats;
  double seconds = 0;
  // Where the searches ran (after the passes or beside them; with kAuto, what the measurement chose).
  WindowOptions::Placement placement = WindowOptions::Placement::kAfter;
};

// What else one score reads or obeys.
struct ScoreControls {
  // The memorizing layer's memory, searched (never written) in every window (lm/scorer.h SpanRequest::memory;
  // windows then run one at a time). With it, `lm` is the model reading that memory. Null: none.
  KvMemory* layer_memory = nullptr;
  int64_t layer_topk = 0;  // 0: the model's
  // Polled before each window's span: once true, the score stops with Status::Cancelled (within one batch
  // of windows).
  const std::atomic<bool>* cancel = nullptr;
};

// ids.size() >= 2. `memory` may be null (base LM only).
Status ScoreBoth(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                 const std::vector<int32_t>& ids, const WindowOptions& window, DualScores* out,
                 const ScoreControls& controls = ScoreControls());

// ScoreBoth for many sequences. Those that fit the context window run together in right-padded batches
// of at most `batch_tokens` padded tokens, with one memory search per batch (causal attention: padding
// cannot change earlier positions); longer ones go through ScoreBoth. The result for a sequence depends
// only on the sequences batched with it, so scoring the same list twice gives identical numbers.
// `first_targets` (may be null): for sequence i only targets ids[first_targets[i]..] are scored (the
// positions before cost no memory search); the entries for earlier targets are 0.
Status ScoreBothBatch(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                      const std::vector<std::vector<int32_t>>& sequences, std::vector<DualScores>* out,
                      const std::vector<size_t>* first_targets = nullptr, int64_t batch_tokens = 4096);

}  // namespace mnemo
