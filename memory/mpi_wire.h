// The messages between rank 0 (mpi_shards.cc) and the shard ranks (mpi_shard_server.cc) of
// memory/mpi_shards.h: ops, tags, headers, replies, polling with naps, and what both sides share.
// Internal to memory/, and only for sources built with MNEMO_HAVE_MPI (memory/CMakeLists.txt).
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "memory/datastore_shards.h"
#include "memory/knn_memory.h"
#include "util/byte_io.h"
#include "util/status.h"

namespace mnemo::mpi_wire {

enum Op : int64_t { kHello = 1, kSizes = 2, kSearch = 3, kSuccessors = 4, kEntries = 5, kStop = 6, kFacts = 7, kRelease = 8 };
constexpr int kRequestTag = 7001, kReplyTag = 7002;
constexpr int kHeaderWords = 8;  // op, seq, n, k, nprobe, exact (hello: read-only), count, state slot (0: none)

using Clock = std::chrono::steady_clock;

// Between polls: yield for the first ones (an answer is usually close), then nap 10 us more each poll up
// to `cap_us`. Rank 0 waits for answers with a short cap (kAnswerNapUs: a shard's search takes from a
// fraction of a millisecond, and the nap is added to every exchange); an idle shard rank with a longer
// one (kIdleNapUs: about 5,000 wake-ups a second, a fraction of a percent of a core). An audit under
// mpirun made thousands of small exchanges 7x slower with naps growing to 1 ms.
constexpr int kAnswerNapUs = 20, kIdleNapUs = 200;
void Nap(int* polls, int cap_us);


using Writer = ByteWriter;
using Reader = ByteReader;

// A request header (kHeaderWords int64); the seq is filled in when it is sent.
std::string Header(int64_t op, int64_t seq, int64_t n = 0, int64_t k = 0, int64_t nprobe = 0, int64_t exact = 0,
                   int64_t count = 0, int64_t slot = 0);
// The Status of a reply's code and message.
Status FromCode(int64_t code, const std::string& message);
// A reply: seq, status code, then the payload (or the error's message).
std::string ErrorReply(int64_t seq, const Status& s);

// This process's host (MPI_Get_processor_name), set once at MpiSession::Start.
const std::string& HostName();
void SetHostName(const std::string& name);

// Receives a message of `tag` from `source` if one is waiting.
bool TryReceive(int source, int tag, std::string* out, int* from = nullptr);

// n neighbours as three arrays (entries, tokens, distances): what a search reply carries per answer.
void PutNeighbors(Writer* w, const std::vector<Neighbor>& nbs);
bool GetNeighbors(Reader* r, size_t n, Neighbor* out);

// The job has one rank per shard besides rank 0.
Status CheckJobSize(const std::string& dir, const ShardSetManifest& manifest);

}  // namespace mnemo::mpi_wire
