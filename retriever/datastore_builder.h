// Builds a kNN-LM datastore from text: runs the model over it with strided sliding windows (so every
// entry's context is as long as the window allows) and stores, for every target token, the key of its
// context (the last block's feed-forward input after layer norm) and the token itself.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lm/checkpoint.h"
#include "lm/scorer.h"
#include "memory/datastore.h"

namespace mnemo {

struct DatastoreBuildOptions {
  WindowOptions window;             // Defaults: n_positions windows, stride n_positions / 2.
  DatastoreFinishOptions finish;    // Index spec, training sample, progress.
  int64_t max_entries = 0;          // >0: stop after this many entries (benchmarks, quick trials).
};

struct DatastoreBuildReport {
  int64_t entries = 0;
  int64_t documents = 0;
  double forward_seconds = 0;       // Running the model and writing keys/values.
  double index_seconds = 0;         // Training the index and adding the keys.
};

// One document of a datastore build. A documents file (--documents) is UTF-8 JSON Lines: per non-blank line
// an object with a string "text", optionally "id" (a string or an integer; the line number when absent),
// "metadata" (any JSON value, kept in the provenance until the document is deleted) and "train" (true:
// the document may train the index's centroids, and deleting it later needs retraining).
struct DatastoreDocumentInput {
  std::string id;
  std::string text;
  std::string metadata_json;  // "" when none
  bool train = false;
};

// InvalidArgument naming the file and line for a malformed line or a repeated id; NotFound for a
// missing file.
Status ReadDatastoreDocuments(const std::string& path, std::vector<DatastoreDocumentInput>* out);
// A text file as documents: one per non-blank line (ids are line numbers) or the whole file as one.
Status ReadTextDocuments(const std::string& path, bool per_line, std::vector<DatastoreDocumentInput>* out);

// The name of the key tap recorded in manifests.
std::string KnnKeyLayerName(const GptConfig& config);

Status BuildDatastore(LanguageModel& model, const std::string& text, const std::string& source,
                      const std::string& out_dir, const DatastoreBuildOptions& options, DatastoreBuildReport* report);

// Builds a datastore with provenance: each document is scored on its own (its windows never see another
// document, so no entry depends on another document's text) and its entries recorded as its range. With
// `train_text` non-null, the keys of that text (run through the model the same way, not stored) train
// the IVF/PQ structures: no stored document then shapes them, and every deletion is exact without
// retraining (memory/datastore.h).
Status BuildDatastoreFromDocuments(LanguageModel& model, const std::vector<DatastoreDocumentInput>& documents,
                                   const std::string& source, const std::string* train_text,
                                   const std::string& train_source, const std::string& out_dir,
                                   const DatastoreBuildOptions& options, DatastoreBuildReport* report);

}  // namespace mnemo
