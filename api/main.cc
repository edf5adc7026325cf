// mnemo: a server for memory-augmented language models. One binary, many subcommands.
#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "api/cli.h"
#include "memory/mpi_shards.h"
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

// The value of --state (else --datastore) on the command line, "" when neither: all a shard rank needs.
std::string StateArgument(int argc, char** argv) {
  std::string datastore;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--state" && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--state=", 0) == 0) return a.substr(8);
    if (a == "--datastore" && i + 1 < argc) datastore = argv[i + 1];
    if (a.rfind("--datastore=", 0) == 0) datastore = a.substr(12);
  }
  return datastore;
}

int Fail(const Status& status) {
  fprintf(stderr, "mnemo: %s\n", status.ToString().c_str());
  return status.IsInvalidArgument() ? 2 : 1;
}

}  // namespace mnemo::cli

// Rank 0 of an MPI job stops the shard ranks before it returns. A shard that does not acknowledge the stop
// (stalled, dead) would hang MPI_Finalize: the job is ended instead.
int StopShardsAndReturn(mnemo::MpiSession* mpi, int rc) {
  if (mpi != nullptr && !mnemo::StopShards()) {
    fprintf(stderr, "mnemo: a shard rank did not stop; ending the job\n");
    mpi->Abort(rc == 0 ? 1 : rc);
  }
  return rc;
}

int main(int argc, char** argv) {
  mnemo::RunWithBestBlasKernels(argv);
  // --gpu-index on Flat datastores through LibTorch where FAISS has no GPU support (torch_flat_search.h).
  mnemo::RegisterTorchFlatSearch();
  mnemo::KeepFreedTensorBuffers();  // util/heap_tuning.h
  // Under mpirun (memory/mpi_shards.h): ranks 1..N serve one shard each of the --state's datastore until rank
  // 0, which runs the command, stops them.
  std::unique_ptr<mnemo::MpiSession> mpi;
  if (mnemo::LaunchedByMpirun()) {
    if (mnemo::Status s = mnemo::MpiSession::Start(&argc, &argv, &mpi); !s.ok()) return mnemo::cli::Fail(s);
    if (mpi->rank() > 0) {
      const mnemo::Status s = mnemo::ServeShard(mnemo::cli::StateArgument(argc, argv), mpi->rank());
      if (!s.ok()) fprintf(stderr, "mnemo: rank %d: %s\n", mpi->rank(), s.ToString().c_str());
      return s.ok() ? 0 : 1;
    }
  }
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
  int shard_timeout_ms = 10000;
  app.add_option("--shard-timeout-ms", shard_timeout_ms,
                 "Under mpirun: a datastore shard that has not answered a search by then is down, and kNN requests "
                 "fail (HTTP 503) until it answers")
      ->capture_default_str()->check(CLI::Range(1, 86400000));
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
    return StopShardsAndReturn(mpi.get(), app.exit(e) == 0 ? 0 : 2);
  }
  if (mpi != nullptr) {
    mnemo::MpiShardsOptions shard_options;
    shard_options.timeout_ms = shard_timeout_ms;
    mnemo::SetProcessShardOpener([shard_options](const std::string& dir, const mnemo::ShardSetManifest& manifest,
                                                 const std::string& state_dir, bool read_only,
                                                 std::unique_ptr<mnemo::DatastoreShards>* out) {
      return mnemo::OpenMpiShards(dir, manifest, state_dir, read_only, shard_options, out);
    });
  }
  mnemo::cli::SetThreadsFlag(threads);
  torch::set_num_threads(threads > 0 ? threads : 1);
  int rc = 1;
  if (!selected) {
    fprintf(stderr, "%s\nmnemo: a command is required\n", app.help().c_str());
    rc = 2;
  } else {
    try {
      rc = selected();
    } catch (const c10::Error& e) {
      fprintf(stderr, "mnemo: internal error in LibTorch: %s\n", e.what_without_backtrace());
    } catch (const std::exception& e) {
      fprintf(stderr, "mnemo: internal error: %s\n", e.what());
    }
  }
  return StopShardsAndReturn(mpi.get(), rc);
}
