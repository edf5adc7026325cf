// StateService: a state directory opened together with the model it names. It is the one place that
//   - creates a state for a model (mnemo init, the audit's scratch states), checking that the base
//     datastore was built with that model;
//   - opens a state with its model and checks the model's fingerprint against the state's, once;
//   - adds fact texts: encodes them with the model, then commits the entries (encode-then-commit);
//   - verifies a deletion (the store's traces plus the model probe).
// api/ (CLI and server) and eval/ (the audit) only translate to and from these calls.
//
// Thread-safety: as FactStore for the store; AddFacts and VerifyDeleted only read the model, so they may
// run beside scoring and beside each other.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lm/checkpoint.h"
#include "memory/fact_store.h"
#include "memory/layer_memories.h"
#include "retriever/deletion_verifier.h"
#include "retriever/fact_encoder.h"

namespace mnemo {

struct StateOptions {
  torch::Device device = torch::kCPU;  // Where the model runs (ParseDevice, lm/device.h).
  // The fact store's options. Its expected_model_fingerprint is set by StateService, never by callers.
  FactStoreOptions store;
  // The memories' IVF search (memory/layer_memories.h), used where the model has a memory index.
  int64_t memory_nprobe = 8;
  int64_t memory_ivf_from = 16384;  // 0: exact search always (the index is not loaded)
  // AddFacts' encoding threads (FactEncodeOptions::threads). The server keeps 1 (its workers already run
  // requests side by side); `mnemo facts add` gives one per core for a large file.
  int encode_threads = 1;
};

// Evidence that a document deleted from a memory left no trace (StateService::VerifyMemoryDocumentDeleted).
struct MemoryDeletionVerdict {
  bool passed = false;
  std::string reason;              // why it failed; empty when passed
  LayerMemories::Traces traces;    // tombstone, row, ring tokens, ring == rebuild from the database
  // Probe evidence (the text was given): its pairs recomputed with the model.
  bool probed = false;
  int64_t probe_tokens = 0;        // tokens of the text scored with the memory
  int64_t keys_held = 0;           // of its keys, those the ring holds beyond what live documents hold
  int64_t files_with_content = 0;  // state files holding its text or a key's bytes that no live document holds
  double max_abs_logprob_diff = 0; // its log-probs with the served memory vs one rebuilt from the database
  double mean_logprob_memory = 0;  // its mean log-prob with the memory now
  double mean_logprob_base = 0;    // ... and with no memory
};

class StateService {
 public:
  // Creates `dir` for the model at `model_dir` and the base datastore at `datastore_dir` (may be empty):
  // InvalidArgument when the datastore was built with another model or `dir` already holds a state.
  // Writes state.json and the empty fact database; *config (may be null) receives what was written.
  static Status Create(const std::string& dir, const std::string& model_dir, const std::string& datastore_dir,
                       StateConfig* config);
  // The same for a model already loaded (its `dir` is recorded as the model path).
  static Status Create(const std::string& dir, LanguageModel& model, const std::string& datastore_dir,
                       StateConfig* config);

  // Opens the state and loads the model its state.json names on options.device; InvalidArgument when the
  // model changed since the state was made (its facts' keys would no longer match it).
  static Status Open(const std::string& dir, const StateOptions& options, std::unique_ptr<StateService>* out);
  // Opens the state for a model the caller holds (it must outlive the service); InvalidArgument when it is
  // not the state's model.
  static Status OpenWithModel(const std::string& dir, LanguageModel* model, const StateOptions& options,
                              std::unique_ptr<StateService>* out);

  LanguageModel& model() const { return *model_; }
  FactStore& store() const { return *store_; }
  // Hands the store to the caller (which then owns it, for searching); the service must not be used
  // afterwards, and the store no longer updates the facts memory.
  std::unique_ptr<FactStore> ReleaseStore() {
    store_->SetDeleteListener(nullptr);
    return std::move(store_);
  }

  // Encodes the texts with the model and adds them in one transaction; *ids in input order. With a
  // memory layer, each fact is then also read into the facts memory (LayerMemories::FactsMemory), and the
  // store's deletes remove it from there (FactStore::SetDeleteListener); Open reconciles the two after a
  // crash between them (documents of deleted facts go, live facts without one are read). With
  // copies > 1 each text is stored that many times, as separate facts (the audit's repeated canaries).
  // InvalidArgument (nothing added) as EncodeFacts and FactStore::Add.
  // With `action`, the action log records the add with the facts (FactStore::Add).
  Status AddFacts(const std::vector<FactText>& facts, std::vector<int64_t>* ids, int copies = 1,
                  const ActionRecord* action = nullptr);

  // Evidence that a deleted fact left no trace (deletion_verifier.h). `text` may be null.
  Status VerifyDeleted(int64_t fact_id, const std::string* text, const KnnOptions& knn, DeletionVerdict* out) const;

  // The memorizing layer's memories; null when the model has no memory layer.
  LayerMemories* memories() const { return memories_.get(); }
  // FailedPrecondition when the model has no memory layer (so no memories).
  Status RequireMemories() const;
  // Reads `text` into memory `memory_id`: its tokens' pairs at the memorizing layer, computed window by
  // window as lm/memory_scorer.h ReadIntoMemory does (the sequence [<|endoftext|>] + tokens; the
  // document's own pairs are stored, one per token), then appended (LayerMemories::AddDocument).
  Status ReadDocument(int64_t memory_id, const std::string& text, const std::string& metadata_json,
                      MemoryDocument* out, int64_t* evicted);
  // The tokens ReadDocument stores for `text` and their pairs [heads, n, head_dim] (verification, audits).
  Status DocumentPairs(const std::string& text, std::vector<int32_t>* tokens, std::vector<float>* keys,
                       std::vector<float>* values) const;
  // NotFound when the document was never deleted from that memory; `text` may be null.
  Status VerifyMemoryDocumentDeleted(int64_t memory_id, int64_t document_id, const std::string* text,
                                     MemoryDeletionVerdict* out) const;

  // Writes the store's snapshot (FactStore::Close); the service stays usable.
  Status Close() { return store_->Close(); }

 private:
  StateService() = default;
  Status SyncFactsMemory();
  static Status OpenStore(const std::string& dir, LanguageModel* model, const std::string& fingerprint,
                          const StateOptions& options, std::unique_ptr<StateService>* out);

  std::unique_ptr<LanguageModel> owned_model_;  // Set when Open loaded the model.
  LanguageModel* model_ = nullptr;
  std::unique_ptr<FactStore> store_;
  std::unique_ptr<LayerMemories> memories_;
  std::string dir_;
  int encode_threads_ = 1;
};

}  // namespace mnemo
