// Flags shared by several commands: the kNN-LM flags of score, eval ppl and generate (--datastore, --state, --k,
// --lambda, --knn-temperature, --recompute, --nprobe, --skip-confidence, --no-knn) and the window flags.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "lm/checkpoint.h"
#include "lm/scorer.h"
#include "memory/datastore.h"
#include "memory/fact_store.h"
#include "retriever/knn_lm.h"

namespace mnemo::cli {

struct KnnFlags {
  std::string datastore;
  std::string state;  // A state directory (mnemo init): its datastore plus its facts.
  KnnOptions options;
  bool disabled = false;
  bool mmap_index = false;

  void Register(CLI::App* app);
  bool active() const { return (!datastore.empty() || !state.empty()) && !disabled; }
  // Opens the datastore (or the state: datastore plus facts) and checks it was built with `model`.
  // No-op when inactive.
  Status Open(LanguageModel& model, std::unique_ptr<KnnMemory>* out) const;
  // Registers only the knobs (k, lambda, temperature, recompute, nprobe), for commands whose memory is
  // given otherwise.
  void RegisterKnobs(CLI::App* app);
};

// The model a state names, checked against the state's fingerprint.
Status LoadStateModel(const FactStore& store, std::unique_ptr<LanguageModel>* model);

// --window, --stride, --batch-size of strided sliding-window passes (eval ppl, datastore build).
void RegisterWindowFlags(CLI::App* app, WindowOptions* window);

}  // namespace mnemo::cli
