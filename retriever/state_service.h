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
#include "retriever/deletion_verifier.h"
#include "retriever/fact_encoder.h"

namespace mnemo {

struct StateOptions {
  torch::Device device = torch::kCPU;  // Where the model runs (ParseDevice, lm/device.h).
  // The fact store's options. Its expected_model_fingerprint is set by StateService, never by callers.
  FactStoreOptions store;
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
  // Hands the store to the caller (which then owns it); the service must not be used afterwards.
  std::unique_ptr<FactStore> ReleaseStore() { return std::move(store_); }

  // Encodes the texts with the model and adds them in one transaction; *ids in input order. With
  // copies > 1 each text is stored that many times, as separate facts (the audit's repeated canaries).
  // InvalidArgument (nothing added) as EncodeFacts and FactStore::Add.
  Status AddFacts(const std::vector<FactText>& facts, std::vector<int64_t>* ids, int copies = 1);

  // Evidence that a deleted fact left no trace (deletion_verifier.h). `text` may be null.
  Status VerifyDeleted(int64_t fact_id, const std::string* text, const KnnOptions& knn, DeletionVerdict* out) const;

  // Writes the store's snapshot (FactStore::Close); the service stays usable.
  Status Close() { return store_->Close(); }

 private:
  StateService() = default;
  static Status OpenStore(const std::string& dir, LanguageModel* model, const std::string& fingerprint,
                          const StateOptions& options, std::unique_ptr<StateService>* out);

  std::unique_ptr<LanguageModel> owned_model_;  // Set when Open loaded the model.
  LanguageModel* model_ = nullptr;
  std::unique_ptr<FactStore> store_;
};

}  // namespace mnemo
