// The helpers of mpi_wire.h, shared by rank 0 and the shard ranks.
#ifdef MNEMO_HAVE_MPI
#include "memory/mpi_wire.h"

#include <algorithm>
#include <cstring>
#include <thread>

namespace mnemo::mpi_wire {

void Nap(int* polls, int cap_us) {
  ++*polls;
  if (*polls < 64) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(std::min(cap_us, 10 * (*polls - 63))));
  }
}

std::string Header(int64_t op, int64_t seq, int64_t n, int64_t k, int64_t nprobe, int64_t exact,
                   int64_t count, int64_t slot) {
  const int64_t h[kHeaderWords] = {op, seq, n, k, nprobe, exact, count, slot};
  return std::string(reinterpret_cast<const char*>(h), sizeof(h));
}

Status FromCode(int64_t code, const std::string& message) {
  switch (static_cast<Status::Code>(code)) {
    case Status::Code::kOk: return Status::OK();
    case Status::Code::kNotFound: return Status::NotFound(message);
    case Status::Code::kCorruption: return Status::Corruption(message);
    case Status::Code::kInvalidArgument: return Status::InvalidArgument(message);
    case Status::Code::kIOError: return Status::IOError(message);
    case Status::Code::kFailedPrecondition: return Status::FailedPrecondition(message);
    case Status::Code::kCancelled: return Status::Cancelled(message);
    case Status::Code::kUnavailable: return Status::Unavailable(message);
    default: return Status::Internal(message);
  }
}

std::string ErrorReply(int64_t seq, const Status& s) {
  Writer w;
  w.Put(seq);
  w.Put(static_cast<int64_t>(s.code()));
  w.PutBytes(s.message().data(), s.message().size());
  return w.buf();
}

namespace {
std::string host_name;
}  // namespace

const std::string& HostName() { return host_name; }
void SetHostName(const std::string& name) { host_name = name; }

bool TryReceive(int source, int tag, std::string* out, int* from) {
  int flag = 0;
  MPI_Status st;
  MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &st);
  if (!flag) return false;
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  out->resize(static_cast<size_t>(count));
  MPI_Recv(out->data(), count, MPI_BYTE, st.MPI_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (from != nullptr) *from = st.MPI_SOURCE;
  return true;
}

void PutNeighbors(Writer* w, const std::vector<Neighbor>& nbs) {
  const size_t n = nbs.size();
  std::vector<int64_t> entries(n);
  std::vector<int32_t> tokens(n);
  std::vector<float> distances(n);
  for (size_t i = 0; i < n; ++i) {
    entries[i] = nbs[i].entry;
    tokens[i] = nbs[i].token;
    distances[i] = nbs[i].distance;
  }
  w->PutBytes(entries.data(), n * 8);
  w->PutBytes(tokens.data(), n * 4);
  w->PutBytes(distances.data(), n * 4);
}

bool GetNeighbors(Reader* r, size_t n, Neighbor* out) {
  std::vector<int64_t> entries(n);
  std::vector<int32_t> tokens(n);
  std::vector<float> distances(n);
  if (!r->GetBytes(entries.data(), n * 8) || !r->GetBytes(tokens.data(), n * 4) || !r->GetBytes(distances.data(), n * 4)) {
    return false;
  }
  for (size_t i = 0; i < n; ++i) out[i] = {entries[i], tokens[i], distances[i], 0};
  return true;
}

Status CheckJobSize(const std::string& dir, const ShardSetManifest& manifest) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != static_cast<int>(manifest.shards.size()) + 1) {
    return Status::InvalidArgument(dir + " has " + std::to_string(manifest.shards.size()) + " shards: run mpirun -np " +
                                   std::to_string(manifest.shards.size() + 1) + " (rank 0 and one rank per shard), not -np " +
                                   std::to_string(size));
  }
  return Status::OK();
}

}  // namespace mnemo::mpi_wire

#endif  // MNEMO_HAVE_MPI
