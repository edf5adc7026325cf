// Flags shared by several commands: the kNN-LM flags of score, eval ppl and generate (--datastore, --state, --k,
// --lambda, --knn-temperature, --recompute, --nprobe, --skip-confidence, --no-knn, --gpu-index), the window
// flags, and --device of every command that runs the model for inference.
#pragma once

#include <string>
#include <vector>

#include "memory/fact_db.h"
#include "memory/fact_store.h"

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
  int gpu_index = -1;  // --gpu-index: search the base datastore's index on this GPU (-1: on the CPU).

  void Register(CLI::App* app);
  bool active() const { return (!datastore.empty() || !state.empty()) && !disabled; }
  // Checks what can be checked before anything is loaded: the knobs, and that --gpu-index names a GPU
  // this build can search on (InvalidArgument, so the CLI exits 2). Commands call it first.
  Status Validate() const;
  // Opens the datastore (or the state: datastore plus facts) and checks it was built with `model`.
  // No-op when inactive.
  Status Open(LanguageModel& model, std::unique_ptr<KnnMemory>* out) const;
  // Registers only the knobs (k, lambda, temperature, recompute, nprobe), for commands whose memory is
  // given otherwise.
  void RegisterKnobs(CLI::App* app);
};

// --device cpu|cuda|cuda:N: where the model runs (default cpu). Training (mnemo train) stays on the CPU.
struct DeviceFlag {
  std::string name = "cpu";

  void Register(CLI::App* app);
  // The device, or InvalidArgument naming the flag (unknown name; CUDA absent from this LibTorch or no GPU
  // visible). Commands resolve it before loading anything, so a bad device costs nothing and exits 2.
  Status Resolve(torch::Device* device) const;
};

// --gpu-index N: OK for -1 (not given) or a GPU this build can search on, else InvalidArgument naming the
// flag (a build without FAISS GPU support, no such GPU).
Status CheckGpuIndexFlag(int gpu_index);

// How the action log names a command-line user: "cli:<login name>" (the uid when it has none).
std::string CliActor();
// An action log entry for the command line (CliActor), `detail` a JSON object.
ActionRecord CliAction(const std::string& action, std::vector<std::string> ids = {}, const std::string& detail = "{}");
// Appends `action` to the state's action log after the action succeeded; a failure is reported on stderr
// (the action stands, so the command does not fail for it).
void LogCliAction(FactStore& store, const ActionRecord& action);

// --window, --stride, --batch-size of strided sliding-window passes (eval ppl, datastore build).
void RegisterWindowFlags(CLI::App* app, WindowOptions* window);

}  // namespace mnemo::cli
