#include "retriever/state_service.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include "lm/memory_scorer.h"
#include "memory/datastore_shards.h"

namespace mnemo {
namespace {

std::string Absolute(const std::string& path) {
  if (path.empty()) return path;
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(path, ec);
  return ec ? std::filesystem::absolute(path).string() : p.string();
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// Facts-memory documents written per transaction (their pairs are held in memory until then).
constexpr size_t kFactDocumentsPerWrite = 256;

}  // namespace

Status StateService::Create(const std::string& dir, const std::string& model_dir, const std::string& datastore_dir,
                            StateConfig* config) {
  std::unique_ptr<LanguageModel> model;
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(model_dir, &model));
  return Create(dir, *model, datastore_dir, config);
}

Status StateService::Create(const std::string& dir, LanguageModel& model, const std::string& datastore_dir,
                            StateConfig* config_out) {
  StateConfig config;
  config.model_path = Absolute(model.dir);
  config.datastore_path = Absolute(datastore_dir);
  config.model_fingerprint = ModelFingerprint(model.net);
  config.dim = static_cast<int>(model.config.n_embd);
  config.created_at_ms = NowMs();
  if (!config.datastore_path.empty()) {
    // Fail now, not at the first start, when the datastore belongs to another model.
    DatastoreOpenOptions ds;
    ds.expected_model_fingerprint = config.model_fingerprint;
    if (IsShardedDatastore(config.datastore_path)) {  // every shard is checked against shards.json
      std::unique_ptr<ShardedDatastore> sharded;
      MNEMO_RETURN_IF_ERROR(ShardedDatastore::Open(config.datastore_path, ds, nullptr, &sharded));
    } else {
      std::unique_ptr<Datastore> datastore;
      MNEMO_RETURN_IF_ERROR(Datastore::Open(config.datastore_path, ds, &datastore));
    }
  }
  MNEMO_RETURN_IF_ERROR(CreateStateDir(dir, config));
  std::unique_ptr<FactStore> store;
  FactStoreOptions options;
  options.expected_model_fingerprint = config.model_fingerprint;
  MNEMO_RETURN_IF_ERROR(FactStore::Open(dir, options, &store));  // creates the database
  MNEMO_RETURN_IF_ERROR(store->Close());
  if (config_out != nullptr) *config_out = config;
  return Status::OK();
}

Status StateService::Open(const std::string& dir, const StateOptions& options, std::unique_ptr<StateService>* out) {
  StateConfig config;
  MNEMO_RETURN_IF_ERROR(ReadStateConfig(dir, &config));
  std::unique_ptr<LanguageModel> model;
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(config.model_path, &model, options.device));
  const std::string fingerprint = ModelFingerprint(model->net);
  if (fingerprint != config.model_fingerprint) {
    return Status::InvalidArgument(config.model_path + ": model changed since the state was made " +
                                   "(fingerprint differs); its facts' keys no longer match it");
  }
  std::unique_ptr<StateService> service;
  MNEMO_RETURN_IF_ERROR(OpenStore(dir, model.get(), fingerprint, options, &service));
  service->owned_model_ = std::move(model);
  *out = std::move(service);
  return Status::OK();
}

Status StateService::OpenWithModel(const std::string& dir, LanguageModel* model, const StateOptions& options,
                                   std::unique_ptr<StateService>* out) {
  return OpenStore(dir, model, ModelFingerprint(model->net), options, out);
}

Status StateService::OpenStore(const std::string& dir, LanguageModel* model, const std::string& fingerprint,
                               const StateOptions& options, std::unique_ptr<StateService>* out) {
  std::unique_ptr<StateService> service(new StateService());
  service->model_ = model;
  service->encode_threads_ = options.encode_threads;
  FactStoreOptions store_options = options.store;
  store_options.expected_model_fingerprint = fingerprint;
  MNEMO_RETURN_IF_ERROR(FactStore::Open(dir, store_options, &service->store_));
  if (service->store_->dim() != model->config.n_embd) {
    return Status::InvalidArgument(dir + ": key dimension " + std::to_string(service->store_->dim()) +
                                   " does not match the model's n_embd " + std::to_string(model->config.n_embd));
  }
  service->dir_ = dir;
  if (model->config.has_memory()) {
    LayerMemoriesOptions memory_options;
    memory_options.heads = model->config.n_head;
    memory_options.head_dim = model->config.head_dim();
    // Large memories search by IVF where the model has a memory index (`mnemo memory index`).
    if (options.memory_ivf_from > 0) {
      Status index = LoadMemoryIndex(model->dir, model->config, &memory_options.centroids, &memory_options.lists);
      if (!index.ok() && !index.IsNotFound()) return index;
    }
    memory_options.nprobe = options.memory_nprobe;
    memory_options.ivf_from = std::max<int64_t>(1, options.memory_ivf_from);
    memory_options.keep_snapshots = !options.store.read_only_check;  // a checking open leaves the files alone
    MNEMO_RETURN_IF_ERROR(LayerMemories::Open(MemoriesDbPath(dir), memory_options, &service->memories_));
    MNEMO_RETURN_IF_ERROR(service->SyncFactsMemory());
    LayerMemories* memories = service->memories_.get();
    service->store_->SetDeleteListener([memories](const std::vector<FactRecord>& deleted) {
      for (const FactRecord& f : deleted) {
        int64_t documents = 0;
        MNEMO_RETURN_IF_ERROR(memories->DeleteFactDocuments(f.id, &documents));
      }
      return Status::OK();
    });
  }
  *out = std::move(service);
  return Status::OK();
}

Status StateService::AddFacts(const std::vector<FactText>& facts, std::vector<int64_t>* ids, int copies,
                              const ActionRecord* action) {
  if (copies < 1) return Status::InvalidArgument("copies must be at least 1");
  std::vector<NewFact> encoded;
  FactEncodeOptions encode;
  encode.threads = encode_threads_;
  MNEMO_RETURN_IF_ERROR(EncodeFacts(*model_, facts, encode, &encoded));
  if (copies > 1) {
    std::vector<NewFact> repeated;
    repeated.reserve(encoded.size() * copies);
    for (const NewFact& f : encoded) {
      for (int c = 0; c < copies; ++c) repeated.push_back(f);
    }
    encoded = std::move(repeated);
  }
  MNEMO_RETURN_IF_ERROR(store_->Add(encoded, ids, action));
  if (memories_ == nullptr) return Status::OK();
  // The facts are committed; a failure here is repaired by the next Open (SyncFactsMemory). The documents
  // go in kFactDocumentsPerWrite to a transaction (bounding the pairs held at once); copies of a text reuse
  // its pairs.
  for (size_t begin = 0; begin < ids->size(); begin += kFactDocumentsPerWrite) {
    const size_t end = std::min(ids->size(), begin + kFactDocumentsPerWrite);
    std::vector<NewMemoryDocument> docs(end - begin);
    for (size_t i = begin; i < end; ++i) {
      NewMemoryDocument& doc = docs[i - begin];
      if (i % static_cast<size_t>(copies) != 0 && i > begin) {
        doc = docs[i - begin - 1];
        continue;
      }
      doc.text = facts[i / static_cast<size_t>(copies)].text;
      MNEMO_RETURN_IF_ERROR(DocumentPairs(doc.text, &doc.tokens, &doc.keys, &doc.values));
    }
    MNEMO_RETURN_IF_ERROR(memories_->AddFactDocuments({ids->begin() + begin, ids->begin() + end}, &docs));
  }
  return Status::OK();
}

Status StateService::SyncFactsMemory() {
  int64_t memory = 0;
  MNEMO_RETURN_IF_ERROR(memories_->FactsMemory(/*create=*/false, &memory));
  std::set<int64_t> have;
  if (memory != 0) {
    std::vector<std::pair<int64_t, int64_t>> docs;
    MNEMO_RETURN_IF_ERROR(memories_->FactDocuments(&docs));
    for (const auto& [doc, fact_id] : docs) {
      FactRecord f;
      Status s = store_->Get(fact_id, false, &f);
      if (s.ok()) {
        have.insert(fact_id);
        continue;
      }
      if (!s.IsNotFound()) return s;
      int64_t deleted = 0;
      MNEMO_RETURN_IF_ERROR(memories_->DeleteFactDocuments(fact_id, &deleted));
    }
  }
  ListOptions list;
  list.limit = 10000;
  for (;;) {
    std::vector<FactRecord> page;
    int64_t next = 0;
    MNEMO_RETURN_IF_ERROR(store_->List(list, &page, &next));
    std::vector<int64_t> missing;
    std::vector<NewMemoryDocument> docs;
    for (size_t i = 0; i < page.size(); ++i) {
      const FactRecord& f = page[i];
      if (have.count(f.id) == 0) {
        missing.push_back(f.id);
        docs.emplace_back();
        docs.back().text = f.text;
        MNEMO_RETURN_IF_ERROR(DocumentPairs(f.text, &docs.back().tokens, &docs.back().keys, &docs.back().values));
      }
      if (docs.size() == kFactDocumentsPerWrite || (i + 1 == page.size() && !docs.empty())) {
        MNEMO_RETURN_IF_ERROR(memories_->AddFactDocuments(missing, &docs));
        missing.clear(), docs.clear();
      }
    }
    if (next == 0) break;
    list.after_id = next;
  }
  return Status::OK();
}

Status StateService::VerifyDeleted(int64_t fact_id, const std::string* text, const KnnOptions& knn,
                                   DeletionVerdict* out) const {
  MNEMO_RETURN_IF_ERROR(mnemo::VerifyDeleted(*model_, *store_, fact_id, text, knn, out));
  if (memories_ == nullptr) return Status::OK();
  // The facts memory: no document of the fact may remain.
  std::vector<std::pair<int64_t, int64_t>> docs;
  MNEMO_RETURN_IF_ERROR(memories_->FactDocuments(&docs));
  out->facts_memory_documents = 0;
  for (const auto& [doc, fact] : docs) out->facts_memory_documents += fact == fact_id;
  if (out->facts_memory_documents > 0) {
    out->passed = false;
    out->reason += std::string(out->reason.empty() ? "" : "; ") + std::to_string(out->facts_memory_documents) +
                   " documents of the fact remain in the facts memory";
  }
  return Status::OK();
}

}  // namespace mnemo
