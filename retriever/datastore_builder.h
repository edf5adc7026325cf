// Builds a kNN-LM datastore from text: runs the model over it with strided sliding windows (so every
// entry's context is as long as the window allows) and stores, for every target token, the key of its
// context (the last block's feed-forward input after layer norm) and the token itself.
#pragma once

#include <cstdint>
#include <string>

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
  double forward_seconds = 0;       // Running the model and writing keys/values.
  double index_seconds = 0;         // Training the index and adding the keys.
};

// The name of the key tap recorded in manifests.
std::string KnnKeyLayerName(const GptConfig& config);

Status BuildDatastore(LanguageModel& model, const std::string& text, const std::string& source,
                      const std::string& out_dir, const DatastoreBuildOptions& options, DatastoreBuildReport* report);

}  // namespace mnemo
