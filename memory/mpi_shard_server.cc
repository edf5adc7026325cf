// The shard ranks' side of memory/mpi_shards.h: ServeShard. Built only with MNEMO_HAVE_MPI
// (memory/CMakeLists.txt); without it mpi_shards.cc says how to get Open MPI.
#ifdef MNEMO_HAVE_MPI
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "memory/fact_shard.h"
#include "memory/mpi_shards.h"
#include "memory/mpi_wire.h"
#include "memory/state_dir.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using namespace mpi_wire;  // NOLINT: this file speaks the wire format

// Rank 0 as a shard rank knows it from its hello: on the same machine, whether it still runs.
int64_t rank0_pid = 0;
std::string rank0_host;
auto rank0_checked = std::chrono::steady_clock::now();

// At most once a second: rank 0 ran on this machine and its process is gone (killed under mpirun
// --enable-recovery, which keeps the other ranks). Nobody will stop this rank then.
void ExitIfRank0Gone() {
  const auto now = std::chrono::steady_clock::now();
  if (rank0_pid <= 0 || now - rank0_checked < std::chrono::seconds(1)) return;
  rank0_checked = now;
  if (rank0_host == HostName() && ::kill(static_cast<pid_t>(rank0_pid), 0) != 0 && errno == ESRCH) {
    std::fprintf(stderr, "mnemo: rank 0 (pid %lld) is gone; this shard rank exits\n", static_cast<long long>(rank0_pid));
    std::_Exit(1);  // not MPI_Finalize: it would wait for rank 0 forever
  }
}

// The shard process's side of one request.
std::string Answer(const Datastore& shard, FactShard* facts, int64_t op, const int64_t* h, Reader& r) {
  if (h[7] > 0 && facts == nullptr) {
    return ErrorReply(h[1], Status::FailedPrecondition("state slot " + std::to_string(h[7]) + " is not open on this rank"));
  }
  const int64_t seq = h[1];
  Writer w;
  w.Put(seq);
  w.Put(int64_t{0});
  const int dim = shard.dim();
  switch (op) {
    case kSizes: {
      w.Put(shard.size());
      return w.buf();
    }
    case kSearch: {
      const int64_t n = h[2];
      const int k = static_cast<int>(h[3]), nprobe = static_cast<int>(h[4]);
      const bool exact = h[5] != 0;
      if (n < 0 || k < 1 || r.left() != static_cast<size_t>(n) * dim * sizeof(float)) {
        return ErrorReply(seq, Status::InvalidArgument("malformed search request"));
      }
      std::vector<float> queries(static_cast<size_t>(n) * dim);
      r.GetBytes(queries.data(), queries.size() * sizeof(float));
      ShardSearchResult res;
      Status s = SearchShard(shard, facts, queries.data(), n, k, nprobe, exact, &res);
      if (!s.ok()) return ErrorReply(seq, s);
      PutNeighbors(&w, res.neighbors);
      if (exact) w.PutBytes(res.exact.data(), res.exact.size() * 4);
      if (facts != nullptr) {
        PutNeighbors(&w, res.facts);
        if (exact) w.PutBytes(res.fact_exact.data(), res.fact_exact.size() * 4);
      }
      return w.buf();
    }
    case kSuccessors:
    case kEntries: {
      const int64_t count = h[6];
      if (count < 0 || r.left() != dim * sizeof(float) + static_cast<size_t>(count) * sizeof(int64_t)) {
        return ErrorReply(seq, Status::InvalidArgument("malformed entries request"));
      }
      std::vector<float> query(dim);
      std::vector<int64_t> entries(static_cast<size_t>(count));
      r.GetBytes(query.data(), dim * sizeof(float));
      r.GetBytes(entries.data(), entries.size() * sizeof(int64_t));
      std::vector<Neighbor> found;
      if (op == kEntries) {
        ShardEntries(shard, query.data(), entries, &found);
      } else {
        Status s = ShardSuccessors(shard, query.data(), entries, &found);
        if (!s.ok()) return ErrorReply(seq, s);
      }
      w.Put(static_cast<int64_t>(found.size()));
      for (const Neighbor& nb : found) {
        w.Put(nb.entry);
        w.Put(nb.token);
        w.Put(nb.distance);
      }
      return w.buf();
    }
    case kFacts: {
      if (facts == nullptr) return ErrorReply(seq, Status::FailedPrecondition("this shard rank holds no facts"));
      std::string request(r.left(), '\0'), reply;
      r.GetBytes(request.data(), request.size());
      Status s = facts->Handle(request, &reply);
      if (!s.ok()) return ErrorReply(seq, s);
      w.PutBytes(reply.data(), reply.size());
      return w.buf();
    }
    default:
      return ErrorReply(seq, Status::InvalidArgument("unknown request " + std::to_string(op)));
  }
}

// Sends a reply, serving nothing else until it is taken (rank 0 polls for it).
void Reply(const std::string& reply) {
  MPI_Request req;
  MPI_Isend(reply.data(), static_cast<int>(reply.size()), MPI_BYTE, 0, kReplyTag, MPI_COMM_WORLD, &req);
  int done = 0, polls = 0;
  while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) {
    ExitIfRank0Gone();
    Nap(&polls, kAnswerNapUs);
  }
}

// Opens the shard of `rank` of the datastore `path` names (a state's, or itself); *set_dir is the set.
Status OpenShard(const std::string& path, int rank, std::unique_ptr<Datastore>* out, std::string* set_dir,
                 ShardSetManifest* set, std::string* manifest_text) {
  if (path.empty()) {
    return Status::InvalidArgument("under mpirun, a command needs --state (or --datastore) naming a sharded datastore");
  }
  std::string dir = path, fingerprint;
  if (!IsShardedDatastore(path)) {
    StateConfig config;
    MNEMO_RETURN_IF_ERROR(ReadStateConfig(path, &config));
    dir = config.datastore_path;
    fingerprint = config.model_fingerprint;
    if (dir.empty() || !IsShardedDatastore(dir)) {
      return Status::FailedPrecondition(path + ": its base datastore is not sharded (" +
                                        (dir.empty() ? std::string("none") : dir) +
                                        "): run it without mpirun, or init a state with a datastore from "
                                        "`mnemo datastore split`");
    }
  }
  ShardSetManifest manifest;
  MNEMO_RETURN_IF_ERROR(ReadShardSetManifest(dir, &manifest));
  MNEMO_RETURN_IF_ERROR(ReadFileToString(dir + "/shards.json", manifest_text));
  if (fingerprint.empty()) fingerprint = manifest.model_fingerprint;
  MNEMO_RETURN_IF_ERROR(CheckJobSize(dir, manifest));
  const int s = rank - 1;
  DatastoreOpenOptions options;
  options.expected_model_fingerprint = fingerprint;
  options.mmap_index = true;
  std::unique_ptr<Datastore> shard;
  MNEMO_RETURN_IF_ERROR(Datastore::Open(dir + "/" + manifest.shards[s].dir, options, &shard));
  MNEMO_RETURN_IF_ERROR(CheckShard(*shard, manifest, s));
  *out = std::move(shard);
  *set_dir = dir;
  *set = manifest;
  return Status::OK();
}

}  // namespace

Status ServeShard(const std::string& path, int rank) {
  // Rank 0 decides when the job ends (it stops the shards at its exit); mpirun forwards Ctrl-C and
  // SIGTERM to every rank, and a shard that left first would look dead to rank 0.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  std::unique_ptr<Datastore> shard;
  std::string set_dir, manifest_text;
  ShardSetManifest set;
  const Status opened = OpenShard(path, rank, &shard, &set_dir, &set, &manifest_text);
  // The shares of the facts of the states rank 0 has open, by slot (MpiShards), and the set's trained
  // structures they are indexed with (loaded at the first).
  std::map<int64_t, std::unique_ptr<FactShard>> shares;
  std::unique_ptr<VectorIndex> trained;
  auto open_share = [&](int64_t slot, const std::string& state, bool read_only) -> Status {
    if (shares.count(slot) != 0) return Status::OK();
    if (state.empty()) return Status::InvalidArgument("a hello for facts names no state");
    if (trained == nullptr) MNEMO_RETURN_IF_ERROR(LoadTrained(set_dir, set, &trained));
    std::unique_ptr<FactShard> share;
    MNEMO_RETURN_IF_ERROR(FactShard::Open(FactShardDir(state, rank - 1), *trained, set.dim, read_only, &share));
    shares[slot] = std::move(share);
    return Status::OK();
  };
  int polls = 0;
  std::string request;
  for (;;) {
    if (!TryReceive(0, kRequestTag, &request)) {
      ExitIfRank0Gone();
      Nap(&polls, kIdleNapUs);
      continue;
    }
    polls = 0;
    Reader r(request);
    int64_t h[kHeaderWords];
    if (!r.GetBytes(h, sizeof(h))) continue;
    const int64_t op = h[0], seq = h[1];
    if (op == kStop) {
      Writer w;
      w.Put(seq);
      w.Put(int64_t{0});
      Reply(w.buf());
      return opened;
    }
    if (op == kHello) {
      int64_t host_size = 0, state_size = 0;
      std::string theirs, state;
      if (r.Get(&rank0_pid) && r.Get(&host_size) && host_size >= 0 && static_cast<size_t>(host_size) <= r.left()) {
        rank0_host.assign(static_cast<size_t>(host_size), '\0');
        r.GetBytes(rank0_host.data(), rank0_host.size());
        if (r.Get(&state_size) && state_size >= 0 && static_cast<size_t>(state_size) <= r.left()) {
          state.assign(static_cast<size_t>(state_size), '\0');
          r.GetBytes(state.data(), state.size());
        }
        theirs.assign(r.left(), '\0');
        r.GetBytes(theirs.data(), theirs.size());
      }
      if (!opened.ok()) {
        Reply(ErrorReply(seq, opened));
        continue;  // rank 0 reports it and stops the job
      }
      if (theirs != manifest_text) {  // entry numbers would be merged against another split
        Reply(ErrorReply(seq, Status::Corruption("rank " + std::to_string(rank) + " on " + HostName() +
                                                 " holds another shard set: its shards.json differs from rank 0's "
                                                 "(every host must hold the same split)")));
        continue;
      }
      if (h[7] > 0) {
        Status s = open_share(h[7], state, h[6] != 0);
        if (!s.ok()) {
          Reply(ErrorReply(seq, FromCode(static_cast<int64_t>(s.code()),
                                         "rank " + std::to_string(rank) + " on " + HostName() + ": " + s.message())));
          continue;
        }
      }
      Writer w;
      w.Put(seq);
      w.Put(int64_t{0});
      w.Put(shard->size());
      w.Put(static_cast<int64_t>(h[7] > 0));
      const std::string host = HostName();
      w.PutBytes(host.data(), host.size());
      Reply(w.buf());
      continue;
    }
    if (!opened.ok()) {
      Reply(ErrorReply(seq, opened));
      continue;
    }
    if (op == kRelease) {
      shares.erase(h[7]);
      Writer w;
      w.Put(seq);
      w.Put(int64_t{0});
      Reply(w.buf());
      continue;
    }
    auto share = shares.find(h[7]);
    Reply(Answer(*shard, share == shares.end() ? nullptr : share->second.get(), op, h, r));
  }
}

}  // namespace mnemo

#endif  // MNEMO_HAVE_MPI
