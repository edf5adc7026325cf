#include "retriever/deletion_verifier.h"

#include <cmath>

#include "lm/scorer.h"

namespace mnemo {

Status VerifyDeleted(LanguageModel& model, const FactStore& store, int64_t fact_id, const std::string* text,
                     const KnnOptions& knn, DeletionVerdict* out) {
  DeletionVerdict v;
  MNEMO_RETURN_IF_ERROR(store.FindTraces(fact_id, text, &v.traces));

  if (text != nullptr) {
    v.probed = true;
    std::vector<int32_t> ids = model.tokenizer->Encode(*text);
    if (ids.size() < 2) return Status::InvalidArgument("the fact's text must have at least 2 tokens");
    std::unique_ptr<KnnMemory> rebuilt;
    MNEMO_RETURN_IF_ERROR(store.RebuildFromDatabase(&rebuilt));
    KnnLm live_lm(store), rebuilt_lm(*rebuilt);
    KnnOptions options = knn;
    options.enabled = true;
    options.skip_confidence = 0;  // probe every position
    SpanRequest request;
    request.knn_keys = true;
    double sum_live = 0, sum_base = 0;
    MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model.net, ids, WindowOptions(), request, [&](const ScoredSpan& span) {
      torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
      std::vector<Neighbor> a, b;
      MNEMO_RETURN_IF_ERROR(live_lm.Search(keys.data_ptr<float>(), span.count, options, &a));
      MNEMO_RETURN_IF_ERROR(rebuilt_lm.Search(keys.data_ptr<float>(), span.count, options, &b));
      for (size_t i = 0; i < a.size(); ++i) {
        ++v.neighbors_compared;
        if (a[i].entry != b[i].entry || a[i].distance != b[i].distance || a[i].weight != b[i].weight) {
          ++v.neighbors_differing;
        }
        if (IsFactEntry(a[i].entry) && FactIdOfEntry(a[i].entry) == fact_id) ++v.neighbors_from_fact;
      }
      const int32_t* targets = ids.data() + span.first_target;
      std::vector<float> live_lp, rebuilt_lp;
      MNEMO_RETURN_IF_ERROR(live_lm.ScoreTargets(span.knn_keys, span.logprobs, targets, options, &live_lp, nullptr));
      MNEMO_RETURN_IF_ERROR(rebuilt_lm.ScoreTargets(span.knn_keys, span.logprobs, targets, options, &rebuilt_lp, nullptr));
      auto acc = span.logprobs.accessor<float, 2>();
      for (int64_t r = 0; r < span.count; ++r) {
        v.max_abs_logprob_diff = std::max(v.max_abs_logprob_diff, std::fabs(double(live_lp[r]) - rebuilt_lp[r]));
        sum_live += live_lp[r];
        sum_base += acc[r][targets[r]];
      }
      v.probes += span.count;
      return Status::OK();
    }));
    v.mean_logprob_live = sum_live / v.probes;
    v.mean_logprob_base_lm = sum_base / v.probes;
  }

  if (v.traces.in_segment) {
    v.reason = "entries of the fact are still in the live index";
  } else if (v.traces.snapshots_holding > 0) {
    v.reason = "a snapshot file still holds entries of the fact";
  } else if (v.traces.text_in_database_files) {
    v.reason = "the fact's text is still present in the database files";
  } else if (v.probed && v.neighbors_from_fact > 0) {
    v.reason = "searches still return entries of the fact";
  } else if (v.probed && (v.neighbors_differing > 0 || v.max_abs_logprob_diff != 0)) {
    v.reason = "the live memory differs from one rebuilt without the fact";
  }
  v.passed = v.reason.empty();
  *out = v;
  return Status::OK();
}

}  // namespace mnemo
