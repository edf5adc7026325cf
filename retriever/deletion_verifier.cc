#include "retriever/deletion_verifier.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "lm/scorer.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

bool FileContains(const std::string& path, const std::string& needle) {
  std::string data;
  if (!ReadFileToString(path, &data).ok()) return false;
  return data.find(needle) != std::string::npos;
}

}  // namespace

std::string DeletionVerdict::ToJson() const {
  nlohmann::ordered_json j;
  j["fact_id"] = fact_id;
  j["verdict"] = passed ? "deleted" : "NOT deleted";
  j["passed"] = passed;
  if (!reason.empty()) j["reason"] = reason;
  j["structural"] = {{"tombstone", tombstone},       {"deleted_seq", deleted_seq},
                     {"entries", entries},           {"in_database", in_database},
                     {"in_segment", in_segment},     {"snapshots_checked", snapshots_checked},
                     {"snapshots_holding", snapshots_holding}};
  if (probed) {
    j["probe"] = {{"text_in_database_files", text_in_database_files},
                  {"probes", probes},
                  {"neighbors_compared", neighbors_compared},
                  {"neighbors_differing_from_rebuilt", neighbors_differing},
                  {"neighbors_from_deleted_fact", neighbors_from_fact},
                  {"max_abs_logprob_diff_vs_rebuilt", max_abs_logprob_diff},
                  {"mean_logprob_knn_lm", mean_logprob_live},
                  {"mean_logprob_base_lm", mean_logprob_base_lm}};
  } else {
    j["probe"] = "skipped: give the fact's text to probe with its prefixes (mnemo keeps no copy of it)";
  }
  return j.dump(2);
}

Status VerifyDeleted(LanguageModel& model, const FactStore& store, int64_t fact_id, const std::string* text,
                     const KnnOptions& knn, DeletionVerdict* out) {
  DeletionVerdict v;
  v.fact_id = fact_id;
  FactRecord live;
  Status got = store.Get(fact_id, false, &live);
  if (got.ok()) {
    return Status::FailedPrecondition("fact " + std::to_string(fact_id) + " is still stored; delete it first");
  }
  if (!got.IsNotFound()) return got;
  Tombstone t;
  Status s = store.GetTombstone(fact_id, &t);
  if (s.IsNotFound()) return Status::NotFound("fact " + std::to_string(fact_id) + " was never added");
  MNEMO_RETURN_IF_ERROR(s);
  v.tombstone = true;
  v.deleted_seq = t.deleted_seq;
  v.entries = t.entries;
  v.in_segment = store.SegmentHoldsFact(fact_id, t.entries);
  for (const std::string& path : store.SnapshotPaths()) {
    std::unique_ptr<VectorIndex> snapshot;
    MNEMO_RETURN_IF_ERROR(VectorIndex::Load(path, LoadOptions(), &snapshot));
    ++v.snapshots_checked;
    for (int64_t p = 0; p < t.entries; ++p) {
      if (snapshot->Contains(FactEntryId(fact_id, p))) {
        ++v.snapshots_holding;
        break;
      }
    }
  }

  if (text != nullptr) {
    v.probed = true;
    const std::string db = FactDbPath(store.dir());
    v.text_in_database_files = FileContains(db, *text) || FileContains(db + "-wal", *text);
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

  if (v.in_segment) {
    v.reason = "entries of the fact are still in the live index";
  } else if (v.snapshots_holding > 0) {
    v.reason = "a snapshot file still holds entries of the fact";
  } else if (v.probed && v.text_in_database_files) {
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
