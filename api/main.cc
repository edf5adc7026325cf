// mnemo: a server for memory-augmented language models. One binary, many subcommands.
#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "api/cli.h"
#include "retriever/torch_flat_search.h"
#include "util/blas_kernels.h"
#include "util/heap_tuning.h"

namespace mnemo::cli {
namespace {
int threads_flag = 0;
}  // namespace

void SetThreadsFlag(int threads) { threads_flag = threads; }
int ThreadsFlag() { return threads_flag; }

std::string DumpJson(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

int Fail(const Status& status) {
  fprintf(stderr, "mnemo: %s\n", status.ToString().c_str());
  return status.IsInvalidArgument() ? 2 : 1;
}

}  // namespace mnemo::cli

int main(int argc, char** argv) {
  mnemo::RunWithBestBlasKernels(argv);
  // --gpu-index on Flat datastores through LibTorch where FAISS has no GPU support (torch_flat_search.h).
  mnemo::RegisterTorchFlatSearch();
  mnemo::KeepFreedTensorBuffers();  // util/heap_tuning.h
  CLI::App app{"mnemo: a language model with explicit, editable memory (kNN-LM, facts, leakage audits)"};
  app.require_subcommand(0, 1);  // Unknown words then fail as "not expected", not as "subcommand required".
  app.set_version_flag("--version", "mnemo 0.1.0");
  // 0 (automatic): one OpenMP thread for LibTorch's element-wise ops, because OpenBLAS already runs each
  // matrix product on every core, and a second OpenMP team spinning beside OpenBLAS's threads made datastore
  // building 2.8x slower on 2 cores (docs/PERFORMANCE.md); commands whose searches are worth every core give
  // them every core between forward passes (batch scoring with a datastore). N: N threads for both.
  int threads = 0;
  app.add_option("--threads", threads,
                 "OpenMP threads for LibTorch element-wise ops and kNN searches (0: automatic, 1 for LibTorch and "
                 "every core for batch scoring's searches)")
      ->capture_default_str()->check(CLI::Range(0, 1024));
  mnemo::cli::Command selected;
  mnemo::cli::RegisterLmCommands(app, &selected);
  mnemo::cli::RegisterDatastoreCommands(app, &selected);
  mnemo::cli::RegisterInferenceCommands(app, &selected);
  mnemo::cli::RegisterFactCommands(app, &selected);
  mnemo::cli::RegisterServeCommand(app, &selected);
  mnemo::cli::RegisterAuditCommands(app, &selected);
  mnemo::cli::RegisterMemoryCommands(app, &selected);
  mnemo::cli::RegisterLogCommand(app, &selected);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message; usage errors all exit 2 (as Fail() does for invalid arguments).
    return app.exit(e) == 0 ? 0 : 2;
  }
  mnemo::cli::SetThreadsFlag(threads);
  torch::set_num_threads(threads > 0 ? threads : 1);
  if (!selected) {
    fprintf(stderr, "%s\nmnemo: a command is required\n", app.help().c_str());
    return 2;
  }
  try {
    return selected();
  } catch (const c10::Error& e) {
    fprintf(stderr, "mnemo: internal error in LibTorch: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    fprintf(stderr, "mnemo: internal error: %s\n", e.what());
  }
  return 1;
}
