#include "retriever/datastore_builder.h"

#include <chrono>

#include "util/progress.h"

namespace mnemo {

std::string KnnKeyLayerName(const GptConfig& config) {
  return "h." + std::to_string(config.n_layer - 1) + ".ln_2 (last block's FFN input after layer norm)";
}

Status BuildDatastore(LanguageModel& model, const std::string& text, const std::string& source,
                      const std::string& out_dir, const DatastoreBuildOptions& options, DatastoreBuildReport* report) {
  std::vector<int32_t> ids = model.tokenizer->Encode(text);
  if (ids.size() < 2) return Status::InvalidArgument(source + ": needs at least two tokens to make an entry");
  if (options.max_entries > 0 && static_cast<int64_t>(ids.size()) > options.max_entries + 1) {
    ids.resize(options.max_entries + 1);
  }
  const int dim = static_cast<int>(model.config.n_embd);
  std::unique_ptr<DatastoreWriter> writer;
  MNEMO_RETURN_IF_ERROR(DatastoreWriter::Create(out_dir, dim, &writer));

  auto start = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(ids.size()) - 1;
  ProgressBar bar("datastore " + source, total, "entries", options.finish.progress);
  SpanRequest request;
  request.logprobs = false;
  request.knn_keys = true;
  std::vector<int32_t> values;
  MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model.net, ids, options.window, request, [&](const ScoredSpan& span) {
    torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
    values.assign(ids.begin() + span.first_target, ids.begin() + span.first_target + span.count);
    MNEMO_RETURN_IF_ERROR(writer->Append(span.count, keys.data_ptr<float>(), values.data()));
    bar.Update(writer->count(), writer->count(), "entries");
    return Status::OK();
  }));
  bar.Finish();
  auto mid = std::chrono::steady_clock::now();

  DatastoreManifest manifest;
  manifest.model_fingerprint = ModelFingerprint(model.net);
  manifest.key_layer = KnnKeyLayerName(model.config);
  manifest.source = source;
  manifest.source_tokens = static_cast<int64_t>(ids.size());
  MNEMO_RETURN_IF_ERROR(writer->Finish(manifest, options.finish));
  auto end = std::chrono::steady_clock::now();
  report->entries = writer->count();
  report->forward_seconds = std::chrono::duration<double>(mid - start).count();
  report->index_seconds = std::chrono::duration<double>(end - mid).count();
  return Status::OK();
}

}  // namespace mnemo
