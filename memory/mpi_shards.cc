#include "memory/mpi_shards.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "util/file_util.h"

#ifdef MNEMO_HAVE_MPI
#include "memory/mpi_wire.h"
#endif

namespace mnemo {

bool LaunchedByMpirun() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  return size != nullptr && std::atoi(size) > 1;
}

#ifndef MNEMO_HAVE_MPI

namespace {
Status NoMpi() {
  return Status::FailedPrecondition("this build has no Open MPI: install libopenmpi-dev (scripts/install-deps.sh) "
                                    "and rebuild to serve shards in several processes");
}
}  // namespace

bool HaveMpi() { return false; }
Status MpiSession::Start(int*, char***, std::unique_ptr<MpiSession>*) { return NoMpi(); }
MpiSession::~MpiSession() = default;
void MpiSession::Abort(int code) { std::_Exit(code); }
Status OpenMpiShards(const std::string&, const ShardSetManifest&, const std::string&, bool, const MpiShardsOptions&,
                     std::unique_ptr<DatastoreShards>*) {
  return NoMpi();
}
std::vector<ShardHealth> ShardsHealth(const DatastoreShards&) { return {}; }
Status ServeShard(const std::string&, int) { return NoMpi(); }
bool StopShards() { return true; }

#else  // MNEMO_HAVE_MPI (the shard ranks' side is mpi_shard_server.cc)

namespace {

using namespace mpi_wire;  // NOLINT: this file speaks the wire format

// Every MpiShards of the process (a command may open a state more than once) takes turns for the ranks,
// with sequence numbers unique in the process, so no exchange takes another's reply.
std::mutex exchange_mu;
int64_t last_seq = 0;  // guarded by exchange_mu
// Each MpiShards opened for a state names it to the shard ranks by a slot number unique in the process
// (guarded by exchange_mu): every search and fact request carries it, so each state reaches its own facts.
int64_t last_slot = 0;

// What rank 0 knows of one shard rank, shared by every MpiShards of the process (a command may open a
// state more than once): whether it answers, and the request it has not answered yet. Guarded by
// exchange_mu. A pending send's buffer lives here, never freed while MPI may still read it.
struct RankLink {
  bool up = true;
  std::string host, problem;
  MPI_Request send = MPI_REQUEST_NULL;
  std::string send_buf;     // alive while `send` is pending
  int64_t waiting_seq = 0;  // a request whose reply has not come (0: none)
};
std::map<int, RankLink> links;  // by rank

// Bytes that fit one MPI message (counts are int); searches are cut into messages below this.
constexpr size_t kMaxMessage = size_t{1} << 30;

class MpiShards : public DatastoreShards {
 public:
  MpiShards(const std::string& dir, const ShardSetManifest& manifest, const std::string& manifest_text,
            const std::string& state_dir, bool read_only, const MpiShardsOptions& options)
      : dir_(dir), dim_(manifest.dim), shards_(static_cast<int>(manifest.shards.size())),
        manifest_text_(manifest_text), state_dir_(state_dir), read_only_(read_only), options_(options) {
    if (!state_dir_.empty()) {
      std::lock_guard<std::mutex> lock(exchange_mu);
      slot_ = ++last_slot;
    }
  }
  // Every rank that answers closes this state's share of the facts (a down rank keeps it until the job ends).
  ~MpiShards() override {
    if (slot_ == 0) return;
    for (int s = 0; s < shards_; ++s) {
      std::vector<std::string> replies;
      Exchange({s}, {Header(kRelease, 0, 0, 0, 0, 0, 0, slot_)}, &replies, false).ok();
    }
  }

  // Every rank must serve this very set: it compares our shards.json with its own. With a state, each
  // opens the state's share of the facts under our slot.
  Status Hello() {
    Writer w;
    w.buf() = Header(kHello, 0, 0, 0, 0, 0, read_only_ ? 1 : 0, slot_);
    const int64_t pid = ::getpid();
    w.Put(pid);
    const std::string host = HostName();
    w.Put(static_cast<int64_t>(host.size()));
    w.PutBytes(host.data(), host.size());
    w.Put(static_cast<int64_t>(state_dir_.size()));
    w.PutBytes(state_dir_.data(), state_dir_.size());
    w.PutBytes(manifest_text_.data(), manifest_text_.size());
    std::vector<std::string> replies;
    MNEMO_RETURN_IF_ERROR(ExchangeAll(w.buf(), &replies, /*hello=*/true));
    std::lock_guard<std::mutex> lock(exchange_mu);
    for (int s = 0; s < shards_; ++s) {
      Reader r(replies[s]);
      int64_t size = 0, facts = 0;
      if (!r.Get(&size) || !r.Get(&facts)) return Status::Internal("shard " + std::to_string(s) + ": short hello");
      if ((facts != 0) != (slot_ > 0)) return Status::Internal("shard " + std::to_string(s) + ": wrong facts in hello");
      std::string name(r.left(), '\0');
      r.GetBytes(name.data(), name.size());
      Link(s).host = name;
    }
    Snapshot();
    return Status::OK();
  }

  int count() const override { return shards_; }
  bool holds_facts() const override { return slot_ > 0; }
  Status FactCall(int shard, const std::string& request, std::string* reply) const override {
    std::vector<std::string> replies;
    MNEMO_RETURN_IF_ERROR(Exchange({shard}, {Header(kFacts, 0, 0, 0, 0, 0, 0, slot_) + request}, &replies, false));
    *reply = std::move(replies[0]);
    return Status::OK();
  }

  Status Sizes(std::vector<int64_t>* sizes) const override {
    std::vector<std::string> replies;
    MNEMO_RETURN_IF_ERROR(ExchangeAll(Header(kSizes, 0), &replies));
    sizes->clear();
    for (const std::string& reply : replies) {
      int64_t size = 0;
      Reader r(reply);
      if (!r.Get(&size)) return Status::Internal("short sizes reply");
      sizes->push_back(size);
    }
    return Status::OK();
  }

  Status SearchAll(const float* queries, int64_t n, int k, int nprobe, bool exact,
                   std::vector<ShardSearchResult>* out) const override {
    const size_t nk = static_cast<size_t>(n) * k;
    out->assign(shards_, ShardSearchResult());
    for (ShardSearchResult& res : *out) {
      res.neighbors.assign(nk, Neighbor());
      res.exact.assign(exact ? nk : 0, 0.0f);
      if (slot_ > 0) {
        res.facts.assign(nk, Neighbor());
        res.fact_exact.assign(exact ? nk : 0, 0.0f);
      }
    }
    // Queries per message: requests and replies stay under kMaxMessage.
    const size_t per_query = std::max(static_cast<size_t>(dim_) * sizeof(float), static_cast<size_t>(k) * 40);
    const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(kMaxMessage / per_query));
    for (int64_t q0 = 0; q0 < n; q0 += chunk) {
      const int64_t m = std::min(chunk, n - q0);
      std::string request = Header(kSearch, 0, m, k, nprobe, exact ? 1 : 0, 0, slot_);
      request.append(reinterpret_cast<const char*>(queries + q0 * dim_), static_cast<size_t>(m) * dim_ * sizeof(float));
      std::vector<std::string> replies;
      MNEMO_RETURN_IF_ERROR(ExchangeAll(request, &replies));
      const size_t mk = static_cast<size_t>(m) * k, at = static_cast<size_t>(q0) * k;
      for (int s = 0; s < shards_; ++s) {
        Reader r(replies[s]);
        ShardSearchResult& res = (*out)[s];
        bool ok = GetNeighbors(&r, mk, &res.neighbors[at]) && (!exact || r.GetBytes(res.exact.data() + at, mk * 4));
        if (slot_ > 0) {
          ok = ok && GetNeighbors(&r, mk, &res.facts[at]) && (!exact || r.GetBytes(res.fact_exact.data() + at, mk * 4));
        }
        if (!ok || r.left() != 0) return Status::Internal(Name(s) + ": malformed search reply");
      }
    }
    return Status::OK();
  }

  Status Successors(int shard, const float* query, const std::vector<int64_t>& entries,
                    std::vector<Neighbor>* out) const override {
    return EntriesOp(kSuccessors, shard, query, entries, out);
  }
  Status Entries(int shard, const float* query, const std::vector<int64_t>& entries,
                 std::vector<Neighbor>* out) const override {
    return EntriesOp(kEntries, shard, query, entries, out);
  }

  // Never waits for a search in flight: then it reports what the last exchange found.
  std::vector<ShardHealth> Health() const {
    std::unique_lock<std::mutex> lock(exchange_mu, std::try_to_lock);
    if (lock.owns_lock()) {
      Revive();
      Snapshot();
    }
    std::lock_guard<std::mutex> h(health_mu_);
    return health_;
  }

 private:
  static int RankOf(int shard) { return shard + 1; }
  // Callers hold exchange_mu.
  RankLink& Link(int shard) const { return links[RankOf(shard)]; }

  Status EntriesOp(int64_t op, int shard, const float* query, const std::vector<int64_t>& entries,
                   std::vector<Neighbor>* out) const {
    std::string request = Header(op, 0, 1, 0, 0, 0, static_cast<int64_t>(entries.size()));
    request.append(reinterpret_cast<const char*>(query), dim_ * sizeof(float));
    request.append(reinterpret_cast<const char*>(entries.data()), entries.size() * sizeof(int64_t));
    std::vector<std::string> replies;
    MNEMO_RETURN_IF_ERROR(Exchange({shard}, {request}, &replies, false));
    Reader r(replies[0]);
    int64_t count = 0;
    if (!r.Get(&count) || count < 0 || r.left() != static_cast<size_t>(count) * 16) {
      return Status::Internal(Name(shard) + ": malformed entries reply");
    }
    for (int64_t i = 0; i < count; ++i) {
      Neighbor nb;
      r.Get(&nb.entry);
      r.Get(&nb.token);
      r.Get(&nb.distance);
      out->push_back(nb);
    }
    return Status::OK();
  }

  Status ExchangeAll(const std::string& request, std::vector<std::string>* replies, bool hello = false) const {
    std::vector<int> all;
    for (int s = 0; s < shards_; ++s) all.push_back(s);
    return Exchange(all, std::vector<std::string>(all.size(), request), replies, hello);
  }

  // Callers hold exchange_mu.
  void Snapshot() const {
    std::lock_guard<std::mutex> h(health_mu_);
    health_.clear();
    for (int s = 0; s < shards_; ++s) {
      const RankLink& l = Link(s);
      health_.push_back({s, RankOf(s), l.up, l.host, l.problem});
    }
  }

  // A down rank that has since answered (it was stalled) is up again; callers hold exchange_mu.
  void Revive() const {
    for (auto& [rank, l] : links) {
      if (l.up) continue;
      if (l.send != MPI_REQUEST_NULL) {
        int done = 0;
        MPI_Test(&l.send, &done, MPI_STATUS_IGNORE);
      }
      std::string reply;
      while (TryReceive(rank, kReplyTag, &reply)) {
        int64_t seq = 0;
        if (Reader(reply).Get(&seq) && seq == l.waiting_seq) l.waiting_seq = 0;
      }
      if (l.send == MPI_REQUEST_NULL && l.waiting_seq == 0) {
        l.up = true;
        l.problem.clear();
        l.send_buf.clear();
      }
    }
  }

  // Callers hold exchange_mu.
  std::string Name(int s) const {
    const RankLink& l = Link(s);
    return "shard " + std::to_string(s) + " (rank " + std::to_string(RankOf(s)) +
           (l.host.empty() ? "" : " on " + l.host) + ", " + dir_ + "/shard-" + std::to_string(s) + ")";
  }

  // Sends requests[i] to shard which[i] (the header's seq is filled in here) and waits for every reply
  // until the deadline; replies[i] is the payload after (seq, code).
  Status Exchange(const std::vector<int>& which, std::vector<std::string> requests, std::vector<std::string>* replies,
                  bool hello) const {
    std::lock_guard<std::mutex> lock(exchange_mu);
    struct SnapshotAtEnd {
      const MpiShards* self;
      ~SnapshotAtEnd() { self->Snapshot(); }
    } snapshot_at_end{this};
    Revive();
    for (int s : which) {
      if (!Link(s).up) return Status::Unavailable(Name(s) + " is down: " + Link(s).problem);
    }
    for (const std::string& r : requests) {
      if (r.size() > kMaxMessage) return Status::InvalidArgument("a shard request over 1 GiB");
    }
    const int64_t seq = ++last_seq;
    for (size_t i = 0; i < which.size(); ++i) {
      RankLink& l = Link(which[i]);
      std::memcpy(requests[i].data() + sizeof(int64_t), &seq, sizeof(seq));
      l.send_buf = std::move(requests[i]);
      MPI_Isend(l.send_buf.data(), static_cast<int>(l.send_buf.size()), MPI_BYTE, RankOf(which[i]), kRequestTag,
                MPI_COMM_WORLD, &l.send);
      l.waiting_seq = seq;
    }
    replies->assign(which.size(), std::string());
    const int timeout_ms = hello ? std::max(options_.timeout_ms, 600000) : options_.timeout_ms;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    size_t pending = which.size();
    int polls = 0;
    std::string reply;
    while (pending > 0) {
      bool progress = false;
      for (size_t i = 0; i < which.size(); ++i) {
        RankLink& l = Link(which[i]);
        if (l.send != MPI_REQUEST_NULL) {
          int done = 0;
          MPI_Test(&l.send, &done, MPI_STATUS_IGNORE);
        }
        while (l.waiting_seq != 0 && TryReceive(RankOf(which[i]), kReplyTag, &reply)) {
          int64_t got = 0;
          if (!Reader(reply).Get(&got) || got != seq) continue;  // a late answer to an abandoned request
          l.waiting_seq = 0;
          (*replies)[i] = std::move(reply);
          --pending;
          progress = true;
        }
      }
      if (pending == 0) break;
      if (Clock::now() > deadline) {
        std::string down;
        for (size_t i = 0; i < which.size(); ++i) {
          RankLink& l = Link(which[i]);
          if (l.waiting_seq == 0) {  // it answered, so it has the request: its send completes now
            if (l.send != MPI_REQUEST_NULL) MPI_Wait(&l.send, MPI_STATUS_IGNORE);
            l.send_buf.clear();
            continue;
          }
          l.up = false;
          l.problem = "did not answer within " + std::to_string(timeout_ms) + " ms";
          down += (down.empty() ? "" : "; ") + Name(which[i]) + " " + l.problem;
        }
        return Status::Unavailable(down + " (kNN requests fail until it answers; restarting the job recovers it)");
      }
      if (!progress) Nap(&polls, kAnswerNapUs);
    }
    // Sends of answered requests are complete (the shard received them); free their buffers.
    for (int s : which) {
      RankLink& l = Link(s);
      if (l.send != MPI_REQUEST_NULL) MPI_Wait(&l.send, MPI_STATUS_IGNORE);
      l.send_buf.clear();
    }
    for (size_t i = 0; i < which.size(); ++i) {
      Reader r((*replies)[i]);
      int64_t got = 0, code = 0;
      r.Get(&got);
      if (!r.Get(&code)) return Status::Internal(Name(which[i]) + ": short reply");
      const size_t header = 2 * sizeof(int64_t);
      std::string payload = (*replies)[i].substr(header);
      if (code != 0) {
        Status st = FromCode(code, Name(which[i]) + ": " + payload);
        return st.ok() ? Status::Internal(payload) : st;
      }
      (*replies)[i] = std::move(payload);
    }
    return Status::OK();
  }

  std::string dir_;
  int dim_;
  int shards_;
  std::string manifest_text_;  // shards.json as rank 0 read it
  std::string state_dir_;      // the state whose facts the shards hold, or empty
  bool read_only_ = false;     // the ranks open its shares without writing
  int64_t slot_ = 0;           // its slot (0: none)
  MpiShardsOptions options_;
  mutable std::mutex health_mu_;  // guards health_ (taken inside exchange_mu, never the other way)
  mutable std::vector<ShardHealth> health_;
};

std::mutex session_mu;
bool session_started = false;

}  // namespace

bool HaveMpi() { return true; }

Status MpiSession::Start(int* argc, char*** argv, std::unique_ptr<MpiSession>* out) {
  std::lock_guard<std::mutex> lock(session_mu);
  if (session_started) return Status::FailedPrecondition("MPI was already started in this process");
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
    return Status::Internal("MPI_Init_thread failed");
  }
  session_started = true;
  if (provided < MPI_THREAD_SERIALIZED) {
    return Status::FailedPrecondition("this MPI does not allow calls from several threads one at a time "
                                      "(MPI_THREAD_SERIALIZED)");
  }
  // A failed call returns (and its peer times out and is reported down) instead of ending the job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  SetHostName(std::string(name, static_cast<size_t>(len)));
  std::unique_ptr<MpiSession> s(new MpiSession());
  MPI_Comm_rank(MPI_COMM_WORLD, &s->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &s->size_);
  *out = std::move(s);
  return Status::OK();
}

MpiSession::~MpiSession() { MPI_Finalize(); }

void MpiSession::Abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

Status OpenMpiShards(const std::string& dir, const ShardSetManifest& manifest, const std::string& state_dir,
                     bool read_only, const MpiShardsOptions& options, std::unique_ptr<DatastoreShards>* out) {
  MNEMO_RETURN_IF_ERROR(CheckJobSize(dir, manifest));
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(dir + "/shards.json", &text));
  std::unique_ptr<MpiShards> shards(new MpiShards(dir, manifest, text, state_dir, read_only, options));
  MNEMO_RETURN_IF_ERROR(shards->Hello());
  *out = std::move(shards);
  return Status::OK();
}

std::vector<ShardHealth> ShardsHealth(const DatastoreShards& shards) {
  const auto* mpi = dynamic_cast<const MpiShards*>(&shards);
  return mpi == nullptr ? std::vector<ShardHealth>() : mpi->Health();
}


bool StopShards() {
  std::lock_guard<std::mutex> lock(exchange_mu);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  static const std::string stop = Header(kStop, -1);  // may still be read by a send when this returns
  std::vector<MPI_Request> sends(static_cast<size_t>(size), MPI_REQUEST_NULL);
  for (int r = 1; r < size; ++r) {
    MPI_Isend(stop.data(), static_cast<int>(stop.size()), MPI_BYTE, r, kRequestTag, MPI_COMM_WORLD, &sends[r]);
  }
  // Every rank acknowledges (seq -1); answers to abandoned requests still in flight are dropped.
  std::vector<bool> acked(static_cast<size_t>(size), false);
  int left = size - 1, polls = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  std::string reply;
  while (left > 0 && Clock::now() < deadline) {
    int from = 0;
    bool got = false;
    while (TryReceive(MPI_ANY_SOURCE, kReplyTag, &reply, &from)) {
      got = true;
      int64_t seq = 0;
      if (Reader(reply).Get(&seq) && seq == -1 && !acked[from]) {
        acked[from] = true;
        --left;
      }
    }
    for (int r = 1; r < size; ++r) {
      if (sends[r] == MPI_REQUEST_NULL) continue;
      int done = 0;
      MPI_Test(&sends[r], &done, MPI_STATUS_IGNORE);
    }
    if (!got) Nap(&polls, kAnswerNapUs);
  }
  return left == 0;
}

#endif  // MNEMO_HAVE_MPI

}  // namespace mnemo
