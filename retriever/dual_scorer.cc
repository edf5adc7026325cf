#include "retriever/dual_scorer.h"

#include <chrono>

namespace mnemo {

Status ScoreBoth(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                 const std::vector<int32_t>& ids, const WindowOptions& window, DualScores* out) {
  if (ids.size() < 2) return Status::InvalidArgument("scoring needs at least 2 tokens");
  const size_t n = ids.size() - 1;
  out->lm.assign(n, 0.0f);
  out->knn.clear();
  if (memory != nullptr) out->knn.assign(n, 0.0f);
  std::unique_ptr<KnnLm> knn;
  if (memory != nullptr) knn = std::make_unique<KnnLm>(*memory);
  SpanRequest request;
  request.knn_keys = memory != nullptr;
  auto start = std::chrono::steady_clock::now();
  std::vector<float> combined;
  Status s = ForEachScoredSpan(model.net, ids, window, request, [&](const ScoredSpan& span) {
    const int32_t* targets = ids.data() + span.first_target;
    std::vector<int64_t> t(targets, targets + span.count);
    torch::Tensor picked =
        span.logprobs.gather(1, torch::tensor(t, torch::kLong).unsqueeze(1)).squeeze(1).contiguous();
    std::copy(picked.data_ptr<float>(), picked.data_ptr<float>() + span.count, out->lm.begin() + span.first_target - 1);
    if (memory == nullptr) return Status::OK();
    MNEMO_RETURN_IF_ERROR(knn->ScoreTargets(span.knn_keys, span.logprobs, targets, options, &combined, &out->stats));
    std::copy(combined.begin(), combined.end(), out->knn.begin() + span.first_target - 1);
    return Status::OK();
  });
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

}  // namespace mnemo
