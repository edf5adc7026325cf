#include "retriever/dual_scorer.h"

#include <algorithm>
#include <chrono>

namespace mnemo {

Status ScoreBoth(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                 const std::vector<int32_t>& ids, const WindowOptions& window, DualScores* out,
                 const ScoreControls& controls) {
  if (ids.size() < 2) return Status::InvalidArgument("scoring needs at least 2 tokens");
  const size_t n = ids.size() - 1;
  out->lm.assign(n, 0.0f);
  out->knn.clear();
  if (memory != nullptr) out->knn.assign(n, 0.0f);
  std::unique_ptr<KnnLm> knn;
  if (memory != nullptr) knn = std::make_unique<KnnLm>(*memory);
  SpanRequest request;
  request.knn_keys = memory != nullptr;
  request.memory = controls.layer_memory;
  request.memory_topk = controls.layer_topk;
  auto start = std::chrono::steady_clock::now();
  std::vector<float> combined;
  std::vector<Neighbor> pointers;  // RetoMaton pointers from one batch's last position to the next batch's first
  int64_t scored = 0;
  // A batch's spans are searched together: one call for all their positions.
  std::vector<torch::Tensor> keys, logprobs;
  std::vector<int32_t> targets;
  Status s = ForEachScoredBatch(model.net, ids, window, request, [&](const std::vector<ScoredSpan>& spans) {
    if (controls.cancel != nullptr && controls.cancel->load()) {
      return Status::Cancelled("scoring stopped after " + std::to_string(scored) + " of " + std::to_string(n) +
                               " tokens");
    }
    keys.clear(), logprobs.clear(), targets.clear();
    for (const ScoredSpan& span : spans) {
      const int32_t* first = ids.data() + span.first_target;
      std::vector<int64_t> t(first, first + span.count);
      torch::Tensor picked =
          span.logprobs.gather(1, torch::tensor(t, torch::kLong).unsqueeze(1)).squeeze(1).contiguous();
      std::copy(picked.data_ptr<float>(), picked.data_ptr<float>() + span.count,
                out->lm.begin() + span.first_target - 1);
      scored += span.count;
      if (memory == nullptr) continue;
      keys.push_back(span.knn_keys);
      logprobs.push_back(span.logprobs);
      targets.insert(targets.end(), first, first + span.count);
    }
    if (memory == nullptr || targets.empty()) return Status::OK();
    MNEMO_RETURN_IF_ERROR(knn->ScoreTargetsFollowing(torch::cat(keys), torch::cat(logprobs), targets.data(), options,
                                                     &pointers, &combined, &out->stats));
    size_t row = 0;
    for (const ScoredSpan& span : spans) {
      std::copy(combined.begin() + row, combined.begin() + row + span.count, out->knn.begin() + span.first_target - 1);
      row += span.count;
    }
    return Status::OK();
  }, &out->placement);
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

Status ScoreBothBatch(LanguageModel& model, const KnnMemory* memory, const KnnOptions& options,
                      const std::vector<std::vector<int32_t>>& sequences, std::vector<DualScores>* out,
                      const std::vector<size_t>* first_targets, int64_t batch_tokens) {
  out->assign(sequences.size(), DualScores());
  if (first_targets != nullptr && first_targets->size() != sequences.size()) {
    return Status::InvalidArgument("first_targets must have one entry per sequence");
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    if (sequences[i].size() < 2) {
      return Status::InvalidArgument("sequence " + std::to_string(i) + ": scoring needs at least 2 tokens");
    }
  }
  auto first_of = [&](size_t i) { return first_targets == nullptr ? size_t{1} : std::max<size_t>(1, (*first_targets)[i]); };
  const int64_t context = model.config.n_positions;
  std::unique_ptr<KnnLm> knn;
  if (memory != nullptr) knn = std::make_unique<KnnLm>(*memory);
  torch::InferenceMode inference;
  size_t next = 0;
  while (next < sequences.size()) {
    const int64_t len0 = static_cast<int64_t>(sequences[next].size());
    if (len0 > context) {
      DualScores& d = (*out)[next];
      MNEMO_RETURN_IF_ERROR(ScoreBoth(model, memory, options, sequences[next], WindowOptions(), &d));
      for (size_t t = 1; t < first_of(next) && t <= d.lm.size(); ++t) {
        d.lm[t - 1] = 0;
        if (!d.knn.empty()) d.knn[t - 1] = 0;
      }
      ++next;
      continue;
    }
    // Consecutive sequences that fit, while longest x count stays within budget.
    size_t end = next + 1;
    int64_t longest = len0;
    while (end < sequences.size()) {
      const int64_t len = static_cast<int64_t>(sequences[end].size());
      const int64_t widest = std::max(longest, len);
      if (len > context || widest * static_cast<int64_t>(end + 1 - next) > batch_tokens) break;
      longest = widest;
      ++end;
    }
    const int64_t batch = static_cast<int64_t>(end - next);
    std::vector<int64_t> ids(static_cast<size_t>(batch * longest), 0), rows;
    std::vector<int32_t> targets;
    for (int64_t b = 0; b < batch; ++b) {
      const auto& t = sequences[next + b];
      std::copy(t.begin(), t.end(), ids.begin() + b * longest);
      for (size_t p = first_of(next + b) - 1; p + 1 < t.size(); ++p) {
        rows.push_back(b * longest + static_cast<int64_t>(p));
        targets.push_back(t[p + 1]);
      }
    }
    ForwardOptions forward;
    forward.want_knn_key = memory != nullptr;
    ForwardResult r = model.net->Forward(torch::tensor(ids, torch::kLong).view({batch, longest}), forward);
    const torch::Tensor index = torch::tensor(rows, torch::kLong);
    const torch::Tensor logprobs =
        torch::log_softmax(r.logits.reshape({batch * longest, -1}).index_select(0, index), -1).contiguous();
    torch::Tensor picked =
        logprobs.gather(1, torch::tensor(std::vector<int64_t>(targets.begin(), targets.end()), torch::kLong)
                               .unsqueeze(1)).squeeze(1).contiguous();
    const float* lm = picked.data_ptr<float>();
    std::vector<float> combined;
    KnnStats stats;
    if (memory != nullptr) {
      torch::Tensor keys = r.knn_key.reshape({batch * longest, -1}).index_select(0, index);
      MNEMO_RETURN_IF_ERROR(knn->ScoreTargets(keys, logprobs, targets.data(), options, &combined, &stats));
    }
    size_t row = 0;
    for (int64_t b = 0; b < batch; ++b) {
      DualScores& d = (*out)[next + b];
      const size_t n = sequences[next + b].size() - 1, skip = std::min(n, first_of(next + b) - 1);
      d.lm.assign(n, 0.0f);
      std::copy(lm + row, lm + row + (n - skip), d.lm.begin() + skip);
      if (memory != nullptr) {
        d.knn.assign(n, 0.0f);
        std::copy(combined.begin() + row, combined.begin() + row + (n - skip), d.knn.begin() + skip);
      }
      row += n - skip;
    }
    next = end;
  }
  return Status::OK();
}

}  // namespace mnemo
