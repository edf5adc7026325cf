#include "api/common_flags.h"

#include <pwd.h>
#include <cstdio>
#include <unistd.h>

#include "lm/device.h"
#include "memory/datastore_shards.h"
#include "retriever/state_service.h"

namespace mnemo::cli {

void KnnFlags::Register(CLI::App* app) {
  auto* ds = app->add_option("--datastore", datastore, "kNN-LM datastore (from `mnemo datastore build`)");
  app->add_option("--state", state, "State directory (mnemo init): its datastore plus its facts")->excludes(ds);
  RegisterKnobs(app);
  app->add_flag("--no-knn", disabled, "Ignore --datastore (base LM only)");
  app->add_flag("--mmap-index", mmap_index, "Memory-map the index's inverted lists (large datastores)");
  app->add_option("--gpu-index", gpu_index,
                  "Search the datastore's index on a copy on this GPU (FAISS GPU builds; facts stay on the CPU)")
      ->check(CLI::NonNegativeNumber);
}

Status KnnFlags::Validate() const {
  if (!active()) return Status::OK();
  MNEMO_RETURN_IF_ERROR(options.Validate());
  return CheckGpuIndexFlag(gpu_index);
}

Status CheckGpuIndexFlag(int gpu_index) {
  if (gpu_index < 0) return Status::OK();
  Status s = VectorIndex::CheckGpuDevice(gpu_index);
  if (!s.ok()) return Status::InvalidArgument("--gpu-index " + std::to_string(gpu_index) + ": " + s.message());
  return Status::OK();
}

void DeviceFlag::Register(CLI::App* app) {
  app->add_option("--device", name, "Where the model runs: cpu, cuda or cuda:N (needs a CUDA build of LibTorch)")
      ->capture_default_str();
}

Status DeviceFlag::Resolve(torch::Device* device) const {
  Status s = ParseDevice(name, device);
  if (!s.ok()) return Status::InvalidArgument("--device: " + s.message());
  return Status::OK();
}

void KnnFlags::RegisterKnobs(CLI::App* app) {
  app->add_option("--k", options.k, "Neighbours per position")->capture_default_str()->check(CLI::Range(1, KnnOptions::kMaxK));
  app->add_option("--lambda", options.lambda, "Interpolation weight of p_kNN")->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app->add_option("--knn-temperature", options.temperature, "Softmax temperature over -distance")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_flag("--recompute", options.recompute, "Re-rank candidates by exact distance to the stored keys");
  app->add_option("--nprobe", options.nprobe, "IVF lists searched per query")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--skip-confidence", options.skip_confidence,
                  "Adaptive retrieval: skip the search where max p_LM >= this (0: never)")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
}

void RegisterWindowFlags(CLI::App* app, WindowOptions* window) {
  app->add_option("--window", window->window, "Window length in tokens (default: n_positions)")
      ->check(CLI::PositiveNumber);
  app->add_option("--stride", window->stride,
                  "Stride in tokens (default: window / 2; at most window - 1 is used, so consecutive windows share "
                  "a token)")
      ->check(CLI::PositiveNumber);
  app->add_option("--batch-size", window->batch_size,
                  "Windows per forward pass (default 0: as many as fill 1,024 tokens)")
      ->check(CLI::NonNegativeNumber);
}

Status KnnFlags::Open(LanguageModel& model, std::unique_ptr<KnnMemory>* out) const {
  if (!active()) return Status::OK();
  MNEMO_RETURN_IF_ERROR(Validate());
  if (!state.empty()) {
    StateOptions open;
    open.store.base_gpu_device = gpu_index;
    std::unique_ptr<StateService> service;
    MNEMO_RETURN_IF_ERROR(StateService::OpenWithModel(state, &model, open, &service));
    *out = service->ReleaseStore();
  } else {
    DatastoreOpenOptions open;
    open.expected_model_fingerprint = ModelFingerprint(model.net);
    open.mmap_index = mmap_index;
    open.gpu_device = gpu_index;
    if (IsShardedDatastore(datastore)) {  // a set from `mnemo datastore split` (here, or its ranks under mpirun)
      if (gpu_index >= 0) return Status::InvalidArgument("--gpu-index: a sharded datastore is searched on the CPU");
      std::unique_ptr<ShardedDatastore> sharded;
      MNEMO_RETURN_IF_ERROR(ShardedDatastore::Open(datastore, open, nullptr, &sharded));
      *out = std::move(sharded);
    } else {
      std::unique_ptr<Datastore> ds;
      MNEMO_RETURN_IF_ERROR(Datastore::Open(datastore, open, &ds));
      *out = std::move(ds);
    }
  }
  if ((*out)->dim() != model.config.n_embd) {
    return Status::InvalidArgument((state.empty() ? datastore : state) + ": key dimension " +
                                   std::to_string((*out)->dim()) + " does not match the model's n_embd " +
                                   std::to_string(model.config.n_embd));
  }
  return Status::OK();
}

std::string CliActor() {
  const struct passwd* pw = getpwuid(geteuid());
  if (pw != nullptr && pw->pw_name != nullptr && pw->pw_name[0] != '\0') {
    const std::string name = pw->pw_name;
    // Names as key names are (the log's readers need not expect anything else); others by uid.
    if (name.size() <= 64 &&
        name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") == std::string::npos) {
      return "cli:" + name;
    }
  }
  return "cli:uid-" + std::to_string(geteuid());
}

void LogCliAction(FactStore& store, const ActionRecord& action) {
  Status s = store.LogAction(action);
  if (!s.ok()) std::fprintf(stderr, "mnemo: warning: not in the action log: %s\n", s.ToString().c_str());
}

ActionRecord CliAction(const std::string& action, std::vector<std::string> ids, const std::string& detail) {
  ActionRecord a;
  a.actor = CliActor();
  a.action = action;
  a.ids = std::move(ids);
  a.detail_json = detail;
  return a;
}

}  // namespace mnemo::cli
