#include "retriever/deletion_verifier.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "lm/scorer.h"
#include "util/file_util.h"
#include "util/half.h"

namespace mnemo {

Status VerifyDeleted(LanguageModel& model, const FactStore& store, int64_t fact_id, const std::string* text,
                     const KnnOptions& knn, DeletionVerdict* out) {
  DeletionVerdict v;
  MNEMO_RETURN_IF_ERROR(store.FindTraces(fact_id, text, &v.traces));

  if (text != nullptr) {
    v.probed = true;
    std::vector<int32_t> ids = model.tokenizer->Encode(*text);
    if (ids.size() < 2) return Status::InvalidArgument("the fact's text must have at least 2 tokens");
    // The rebuild and every probe see one state of the store: writes wait until the comparison is done.
    MNEMO_RETURN_IF_ERROR(store.WithWritesPaused([&]() -> Status {
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
      return Status::OK();
    }));
  }

  if (v.traces.in_segment) {
    v.reason = "entries of the fact are still in the live index";
  } else if (v.traces.on_shard) {
    v.reason = "a shard still holds entries of the fact (it was placed on shard " + std::to_string(v.traces.shard) + ")";
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

namespace {

// Occurrences of any of `rows` (each `width` bytes) in `data`, at every `step`-byte offset. Rows are
// indexed by their first 8 bytes.
int64_t CountRows(const std::string& data, const std::vector<std::string>& rows, size_t width, size_t step) {
  std::unordered_multimap<uint64_t, const std::string*> by_prefix;
  for (const std::string& r : rows) {
    uint64_t prefix;
    std::memcpy(&prefix, r.data(), 8);
    if (prefix != 0) by_prefix.emplace(prefix, &r);  // an all-zero prefix would match every hole
  }
  int64_t found = 0;
  for (size_t off = 0; off + width <= data.size(); off += step) {
    uint64_t prefix;
    std::memcpy(&prefix, data.data() + off, 8);
    auto [begin, end] = by_prefix.equal_range(prefix);
    for (auto it = begin; it != end; ++it) {
      if (std::memcmp(it->second->data(), data.data() + off, width) == 0) {
        ++found;
        break;
      }
    }
  }
  return found;
}

}  // namespace

Status VerifyDocumentDeleted(LanguageModel* model, const Datastore& datastore, const std::string& id,
                             const std::string* text, DocumentDeletionVerdict* out) {
  DocumentDeletionVerdict v;
  MNEMO_RETURN_IF_ERROR(datastore.FindDocumentTraces(id, &v.traces));
  if (text != nullptr) {
    if (model == nullptr) return Status::InvalidArgument("probing a deletion with the text needs the model");
    v.probed = true;
    std::vector<int32_t> ids = model->tokenizer->Encode(*text);
    std::vector<std::string> half_rows, float_rows;
    const int dim = datastore.dim();
    SpanRequest request;
    request.logprobs = false;
    request.knn_keys = true;
    if (ids.size() >= 2) {
      WindowOptions windows;  // those of the build, so the keys are the stored ones bit for bit
      windows.window = datastore.manifest().window;
      windows.stride = datastore.manifest().stride;
      MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model->net, ids, windows, request, [&](const ScoredSpan& span) {
        torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
        const float* k = keys.data_ptr<float>();
        for (int64_t r = 0; r < span.count; ++r) {
          std::string h(dim * 2, '\0'), f(dim * 4, '\0');
          for (int d = 0; d < dim; ++d) {
            const uint16_t half = FloatToHalf(k[r * dim + d]);
            const float rounded = HalfToFloat(half);  // the index holds the fp16-rounded key
            std::memcpy(&h[d * 2], &half, 2);
            std::memcpy(&f[d * 4], &rounded, 4);
          }
          half_rows.push_back(std::move(h));
          float_rows.push_back(std::move(f));
        }
        return Status::OK();
      }));
    }
    // A context another live document shares (the same opening tokens) has the same key; those keys are
    // not the deleted document's to remove.
    {
      std::unordered_map<std::string, size_t> index;
      for (size_t i = 0; i < half_rows.size(); ++i) index.emplace(half_rows[i], i);
      std::vector<bool> shared(half_rows.size(), false);
      const auto deleted = datastore.DeletedRanges();
      size_t next_hole = 0;
      std::string row(dim * 2, '\0');
      for (int64_t i = 0; i < datastore.slots(); ++i) {
        while (next_hole < deleted.size() && deleted[next_hole].first + deleted[next_hole].second <= i) ++next_hole;
        if (next_hole < deleted.size() && i >= deleted[next_hole].first) continue;
        std::memcpy(row.data(), datastore.key(i), row.size());
        auto it = index.find(row);
        if (it != index.end()) shared[it->second] = true;
      }
      std::vector<std::string> h, f;
      for (size_t i = 0; i < half_rows.size(); ++i) {
        if (shared[i]) {
          ++v.keys_shared_with_live;
        } else {
          h.push_back(std::move(half_rows[i]));
          f.push_back(std::move(float_rows[i]));
        }
      }
      v.keys_probed = static_cast<int64_t>(half_rows.size());
      half_rows = std::move(h);
      float_rows = std::move(f);
    }
    for (const auto& entry : std::filesystem::directory_iterator(datastore.dir())) {
      if (!entry.is_regular_file()) continue;
      std::string data;
      MNEMO_RETURN_IF_ERROR(ReadFileToString(entry.path().string(), &data));
      ++v.files_scanned;
      if (half_rows.empty()) continue;
      v.key_rows_found += CountRows(data, half_rows, dim * 2, 2) + CountRows(data, float_rows, dim * 4, 4);
    }
  }
  const DocumentTraces& t = v.traces;
  if (!t.tombstone) {
    v.reason = "documents.jsonl has no tombstone for the document";
  } else if (t.metadata_kept) {
    v.reason = "documents.jsonl still holds the document's metadata";
  } else if (t.index_entries > 0) {
    v.reason = "the index still holds entries of the document";
  } else if (t.nonzero_key_bytes > 0 || t.nonzero_value_bytes > 0) {
    v.reason = "keys.f16 or values.i32 still hold bytes of the document's entries";
  } else if (!t.stray_files.empty()) {
    v.reason = "unfinished temporary files remain: " + t.stray_files[0];
  } else if (v.key_rows_found > 0) {
    v.reason = "a file in the datastore still holds a key of the document";
  }
  v.passed = v.reason.empty();
  *out = v;
  return Status::OK();
}

}  // namespace mnemo
