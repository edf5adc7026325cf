// Deletion verification: evidence that a deleted fact left no trace in the serving memory.
//
// Structural checks (always; FactStore::FindTraces in memory/): the fact has a tombstone, no row in the
// database, no entry in the live segment, and no snapshot file holds any of its entries. Probe checks (when the caller supplies the
// fact's text; mnemo keeps no copy of a deleted fact, not even a hash, which would let anyone holding
// the state test guesses of a short secret): the fact's own prefixes are run through the model and
// searched in the live memory and in a memory freshly rebuilt from the database (a state in which the
// fact was never added); neighbours (ids and distances) and the interpolated log-probabilities of the
// fact's tokens must be bit-for-bit identical, and no neighbour may belong to the deleted fact.
//
// Thread-safety: reads the model and the store; safe beside searches and writes (the rebuild takes a
// consistent copy of the database).
#pragma once

#include <cstdint>
#include <string>

#include "lm/checkpoint.h"
#include "memory/fact_store.h"
#include "retriever/knn_lm.h"

namespace mnemo {

struct DeletionVerdict {
  bool passed = false;
  std::string reason;   // Why it failed, empty when passed.
  FactTraces traces;    // Structural evidence (FactStore::FindTraces).
  // Probe evidence (probed = the text was given).
  bool probed = false;
  int64_t probes = 0;                   // Prefixes searched.
  int64_t neighbors_compared = 0;
  int64_t neighbors_differing = 0;      // Live vs rebuilt, id or distance.
  int64_t neighbors_from_fact = 0;      // Live neighbours carrying the deleted fact's id.
  double max_abs_logprob_diff = 0;      // Interpolated log-probs, live vs rebuilt.
  double mean_logprob_live = 0;         // Mean kNN-LM log-prob of the fact's tokens now.
  double mean_logprob_base_lm = 0;      // The same under the base LM alone.
  // Documents of the fact in the state's facts memory (models with a memory layer; -1: none checked).
  int64_t facts_memory_documents = -1;
};

// Evidence that a document deleted from a base datastore left no trace (Datastore::FindDocumentTraces,
// plus, with its text, a scan of every file in the datastore's directory for its keys).
struct DocumentDeletionVerdict {
  bool passed = false;
  std::string reason;
  DocumentTraces traces;
  bool probed = false;
  int64_t keys_probed = 0;          // Its keys, recomputed with the model as the build computed them.
  int64_t keys_shared_with_live = 0;  // Of those, keys a live entry also has (a shared opening context).
  int64_t files_scanned = 0;
  int64_t key_rows_found = 0;       // Occurrences of the others (fp16 or fp32 rows) in any file.
};

// NotFound for an id the datastore never had, FailedPrecondition when it is not deleted. `text` may be null
// (structural checks only; `model` may then be null too); with it, `model` must be the datastore's.
Status VerifyDocumentDeleted(LanguageModel* model, const Datastore& datastore, const std::string& id,
                             const std::string* text, DocumentDeletionVerdict* out);

// NotFound when `fact_id` never existed; FailedPrecondition when it is still stored. `text` may be null.
Status VerifyDeleted(LanguageModel& model, const FactStore& store, int64_t fact_id, const std::string* text,
                     const KnnOptions& knn, DeletionVerdict* out);

}  // namespace mnemo
