// Dual scoring: base-LM and kNN-LM log-probabilities of a token sequence in one pass of the model, so the
// two can be compared position by position (eval ppl, score, POST /v1/score).
//
// Thread-safety: reads the model and the memory; safe to run concurrently.
#pragma once

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
};

// ids.size() >= 2. `memory` may be null (base LM only).
Status ScoreBoth(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                 const std::vector<int32_t>& ids, const WindowOptions& window, DualScores* out);

}  // namespace mnemo
