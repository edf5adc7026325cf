// Serving a sharded datastore (datastore_shards.h) across processes and machines with Open MPI.
//
//   mpirun -np N+1 [--enable-recovery] mnemo <command> --state S ...     (the same command line as one process)
//
// Rank 0 runs the command (the HTTP front and the LM for `serve`; `eval ppl`, `score`, ... offline) with a
// FactStore whose base is a ShardedDatastore over MpiShards; rank r in 1..N opens shard r-1 of the state's
// datastore and answers rank 0 until it is told to stop. mnemo writes no transport: mpirun launches the
// ranks (a hostfile or SLURM for several machines) and MPI moves the bytes.
//
// Protocol (tags kRequest and kReply, MPI_BYTE messages, one request in flight per shard): a request is a
// header of 8 int64 (op, seq, n, k, nprobe, exact, count, 0) and a payload (queries, or a query and
// entries, or for kFacts a request of fact_shard.h); a reply is (seq, status code, payload or message). Rank 0 sends a search to every shard at
// once, then polls for the replies up to a deadline (MpiShardsOptions::timeout_ms): a shard that has not
// answered by then is marked down and that request, and every kNN request after it, fails with
// Status::Unavailable (HTTP 503) naming the shard, never an answer from the other shards alone. A down
// shard that answers later (it was stalled, not dead) is up again from the next request. With mpirun
// --enable-recovery a shard that dies leaves the other ranks running and is reported down the same way;
// without it Open MPI ends the job. Restarting the job recovers every shard's state (the base shards are
// read-only datastores; each shard's share of the facts, fact_shard.h, is synced with rank 0's catalogue
// when the state opens).
//
// Waiting processes sleep between polls (MPI_Iprobe, then naps up to 20 us waiting for an answer, 200 us
// idle) rather than spin, so idle shard ranks cost next to no CPU on a machine they share.
//
// Thread-safety: MpiShards serializes its exchanges (MPI_THREAD_SERIALIZED); callers may share it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "memory/datastore_shards.h"
#include "util/status.h"

namespace mnemo {

// Whether this process was started by mpirun in a job of more than one process (OMPI_COMM_WORLD_SIZE).
bool LaunchedByMpirun();
// Whether this build has Open MPI (else the functions below return FailedPrecondition saying so).
bool HaveMpi();

// MPI_Init_thread on construction, MPI_Finalize (or MPI_Abort when a shard is down) when destroyed.
class MpiSession {
 public:
  static Status Start(int* argc, char*** argv, std::unique_ptr<MpiSession>* out);
  ~MpiSession();
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ends the job with `code` without waiting for other ranks (MPI_Abort).
  [[noreturn]] void Abort(int code);

 private:
  MpiSession() = default;
  int rank_ = 0, size_ = 1;
};

struct MpiShardsOptions {
  int timeout_ms = 10000;  // a shard that has not answered by then is down (503)
};

struct ShardHealth {
  int shard = 0, rank = 0;
  bool up = true;
  std::string host;      // where the rank runs (MPI_Get_processor_name)
  std::string problem;   // why it is down
};

// Rank 0: the shards of the set, reached in ranks 1..N (which must be running ServeShard). Says hello to
// each: every rank must have opened its shard and checked it against the set (CheckShard), else the error
// names the rank and what it found.
// With a `state_dir`, every rank also opens that state's share of the facts (FactShardDir) for these
// shards, and closes it when they are destroyed: states opened one after the other, or side by side (an
// audit's scratch copy beside the live state), each reach their own facts on the same ranks.
// With `read_only` the ranks open the share without writing anything (fsck without --repair).
Status OpenMpiShards(const std::string& dir, const ShardSetManifest& manifest, const std::string& state_dir,
                     bool read_only, const MpiShardsOptions& options, std::unique_ptr<DatastoreShards>* out);
// The health of the shards of an MpiShards (empty for other DatastoreShards).
std::vector<ShardHealth> ShardsHealth(const DatastoreShards& shards);

// Rank r >= 1 of a job whose rank 0 runs a command on `path` (a state directory, or a sharded datastore
// itself): opens shard r-1 of the datastore (and, for a state, its share of the facts: FactShardDir) and
// answers until rank 0 says stop. An error opening the
// shard is sent to rank 0 in answer to whatever it asks, and returned here when it says stop.
Status ServeShard(const std::string& path, int rank);
// Rank 0, at exit: tells every shard rank to stop. True when all were up (so MPI_Finalize will not hang).
bool StopShards();

}  // namespace mnemo
