#include "retriever/datastore_builder.h"

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "util/file_util.h"
#include "util/progress.h"

namespace mnemo {

std::string KnnKeyLayerName(const GptConfig& config) {
  return "h." + std::to_string(config.n_layer - 1) + ".ln_2 (last block's FFN input after layer norm)";
}

Status ReadDatastoreDocuments(const std::string& path, std::vector<DatastoreDocumentInput>* out) {
  if (!FileExists(path)) return Status::NotFound(path + ": no such file");
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  std::istringstream in(text);
  std::string line;
  int64_t number = 0;
  std::unordered_set<std::string> ids;
  out->clear();
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument(where + "not a JSON object");
    DatastoreDocumentInput d;
    if (!j.contains("text") || !j["text"].is_string()) return Status::InvalidArgument(where + "needs a string \"text\"");
    d.text = j["text"].get<std::string>();
    if (!j.contains("id")) {
      d.id = std::to_string(number);
    } else if (j["id"].is_string()) {
      d.id = j["id"].get<std::string>();
    } else if (j["id"].is_number_integer()) {
      d.id = std::to_string(j["id"].get<int64_t>());
    } else {
      return Status::InvalidArgument(where + "\"id\" must be a string or an integer");
    }
    if (d.id.empty() || d.id.size() > 256) return Status::InvalidArgument(where + "\"id\" must have 1 to 256 bytes");
    if (!ids.insert(d.id).second) return Status::InvalidArgument(where + "id " + j["id"].dump() + " is repeated");
    if (j.contains("metadata")) d.metadata_json = j["metadata"].dump();
    if (j.contains("train")) {
      if (!j["train"].is_boolean()) return Status::InvalidArgument(where + "\"train\" must be true or false");
      d.train = j["train"].get<bool>();
    }
    out->push_back(std::move(d));
  }
  if (out->empty()) return Status::InvalidArgument(path + ": no documents");
  return Status::OK();
}

Status ReadTextDocuments(const std::string& path, bool per_line, std::vector<DatastoreDocumentInput>* out) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  out->clear();
  if (!per_line) {
    DatastoreDocumentInput d;
    d.id = std::filesystem::path(path).filename().string();
    if (d.id.empty()) d.id = "1";
    d.text = std::move(text);
    out->push_back(std::move(d));
    return Status::OK();
  }
  std::istringstream in(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    DatastoreDocumentInput d;
    d.id = std::to_string(number);
    d.text = line;
    out->push_back(std::move(d));
  }
  if (out->empty()) return Status::InvalidArgument(path + ": no non-blank lines");
  return Status::OK();
}

Status BuildDatastore(LanguageModel& model, const std::string& text, const std::string& source,
                      const std::string& out_dir, const DatastoreBuildOptions& options, DatastoreBuildReport* report) {
  std::vector<DatastoreDocumentInput> documents(1);
  documents[0].id = std::filesystem::path(source).filename().string();
  if (documents[0].id.empty()) documents[0].id = "1";
  documents[0].text = text;
  return BuildDatastoreFromDocuments(model, documents, source, nullptr, "", out_dir, options, report);
}

Status BuildDatastoreFromDocuments(LanguageModel& model, const std::vector<DatastoreDocumentInput>& documents,
                                   const std::string& source, const std::string* train_text,
                                   const std::string& train_source, const std::string& out_dir,
                                   const DatastoreBuildOptions& options, DatastoreBuildReport* report) {
  std::vector<std::vector<int32_t>> ids(documents.size());
  int64_t total = 0, tokens = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    ids[i] = model.tokenizer->Encode(documents[i].text);
    tokens += static_cast<int64_t>(ids[i].size());
    total += std::max<int64_t>(0, static_cast<int64_t>(ids[i].size()) - 1);
  }
  if (options.max_entries > 0) total = std::min(total, options.max_entries);
  if (total < 1) return Status::InvalidArgument(source + ": needs at least two tokens to make an entry");
  std::vector<int32_t> train_ids;
  if (train_text != nullptr) {
    train_ids = model.tokenizer->Encode(*train_text);
    if (train_ids.size() < 2) return Status::InvalidArgument(train_source + ": needs at least two tokens");
  }
  const int dim = static_cast<int>(model.config.n_embd);
  std::unique_ptr<DatastoreWriter> writer;
  MNEMO_RETURN_IF_ERROR(DatastoreWriter::Create(out_dir, dim, &writer));

  auto start = std::chrono::steady_clock::now();
  ProgressBar bar("datastore " + source, total, "entries", options.finish.progress);
  SpanRequest request;
  request.logprobs = false;
  request.knn_keys = true;
  std::vector<int32_t> values;
  for (size_t i = 0; i < documents.size() && writer->count() < total; ++i) {
    std::vector<int32_t>& doc = ids[i];
    const int64_t room = total - writer->count();
    if (static_cast<int64_t>(doc.size()) - 1 > room) doc.resize(room + 1);  // --max-entries
    MNEMO_RETURN_IF_ERROR(writer->BeginDocument(documents[i].id, static_cast<int64_t>(doc.size()),
                                                documents[i].metadata_json, documents[i].train));
    if (doc.size() < 2) continue;
    MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model.net, doc, options.window, request, [&](const ScoredSpan& span) {
      torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
      values.assign(doc.begin() + span.first_target, doc.begin() + span.first_target + span.count);
      MNEMO_RETURN_IF_ERROR(writer->Append(span.count, keys.data_ptr<float>(), values.data()));
      bar.Update(writer->count(), writer->count(), "entries");
      return Status::OK();
    }));
  }
  bar.Finish();
  if (train_text != nullptr) {
    MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model.net, train_ids, options.window, request, [&](const ScoredSpan& span) {
      torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
      writer->AddTrainingKeys(span.count, keys.data_ptr<float>(), train_source);
      return Status::OK();
    }));
  }
  auto mid = std::chrono::steady_clock::now();

  DatastoreManifest manifest;
  manifest.model_fingerprint = ModelFingerprint(model.net);
  manifest.key_layer = KnnKeyLayerName(model.config);
  manifest.source = source;
  manifest.source_tokens = tokens;
  manifest.window = options.window.window;
  manifest.stride = options.window.stride;
  MNEMO_RETURN_IF_ERROR(writer->Finish(manifest, options.finish));
  auto end = std::chrono::steady_clock::now();
  report->entries = writer->count();
  report->documents = writer->documents();
  report->forward_seconds = std::chrono::duration<double>(mid - start).count();
  report->index_seconds = std::chrono::duration<double>(end - mid).count();
  return Status::OK();
}

}  // namespace mnemo
