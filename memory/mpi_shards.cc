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

#include "memory/fact_shard.h"
#include "memory/state_dir.h"
#include "util/byte_io.h"
#include "util/file_util.h"

#ifdef MNEMO_HAVE_MPI
#include <mpi.h>
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

#else  // MNEMO_HAVE_MPI

namespace {

enum Op : int64_t { kHello = 1, kSizes = 2, kSearch = 3, kSuccessors = 4, kEntries = 5, kStop = 6, kFacts = 7, kRelease = 8 };
constexpr int kRequestTag = 7001, kReplyTag = 7002;
constexpr int kHeaderWords = 8;  // op, seq, n, k, nprobe, exact, count, state slot (0: none)

using Clock = std::chrono::steady_clock;

// Between polls: yield for the first ones (an answer is usually close), then nap 10 us more each poll up
// to `cap_us`. Rank 0 waits for answers with a short cap (kAnswerNapUs: a shard's search takes from a
// fraction of a millisecond, and the nap is added to every exchange); an idle shard rank with a longer
// one (kIdleNapUs: about 5,000 wake-ups a second, a fraction of a percent of a core). An audit under
// mpirun made thousands of small exchanges 7x slower with naps growing to 1 ms.
constexpr int kAnswerNapUs = 20, kIdleNapUs = 200;
void Nap(int* polls, int cap_us) {
  ++*polls;
  if (*polls < 64) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(std::min(cap_us, 10 * (*polls - 63))));
  }
}

using Writer = ByteWriter;
using Reader = ByteReader;

std::string Header(int64_t op, int64_t seq, int64_t n = 0, int64_t k = 0, int64_t nprobe = 0, int64_t exact = 0,
                   int64_t count = 0, int64_t slot = 0) {
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

// A reply: seq, status code, then the payload (or the error's message).
std::string ErrorReply(int64_t seq, const Status& s) {
  Writer w;
  w.Put(seq);
  w.Put(static_cast<int64_t>(s.code()));
  w.PutBytes(s.message().data(), s.message().size());
  return w.buf();
}

// Every MpiShards of the process (a command may open a state more than once) takes turns for the ranks,
// with sequence numbers unique in the process, so no exchange takes another's reply.
std::mutex exchange_mu;
int64_t last_seq = 0;  // guarded by exchange_mu
// Each MpiShards opened for a state names it to the shard ranks by a slot number unique in the process
// (guarded by exchange_mu): every search and fact request carries it, so each state reaches its own facts.
int64_t last_slot = 0;

std::string host_name;  // MPI_Get_processor_name, read once at MpiSession::Start

const std::string& HostName() { return host_name; }

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

// Receives a message of `tag` from `source` if one is waiting.
bool TryReceive(int source, int tag, std::string* out, int* from = nullptr) {
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

// n neighbours as three arrays (entries, tokens, distances): what a search reply carries per answer.
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

// The job has one rank per shard besides rank 0.
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
  host_name.assign(name, static_cast<size_t>(len));
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
