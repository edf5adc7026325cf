// Datastore provenance and document deletion (the protocol is described in datastore.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "memory/datastore.h"
#include "memory/json_int.h"
#include "util/file_util.h"
#include "util/half.h"
#include "util/hash.h"
#include "util/mapped_file.h"
#include "util/progress.h"

namespace mnemo {
namespace {

constexpr char kDocuments[] = "/documents.jsonl";
constexpr char kDocumentsFormat[] = "mnemo-datastore-documents";
constexpr int64_t kAddBatch = 65536;

// An id quoted as JSON for a message. Ids read from documents.jsonl are valid UTF-8, but one a caller
// passes in (a command line's --id, an HTTP path) need not be: its bad bytes are replaced (U+FFFD), as a
// strict dump() would throw instead (fuzz/regressions/routes/datastore-id-not-utf8).
std::string QuoteId(const std::string& id) {
  return nlohmann::json(id).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Fault injection for the crash tests: MNEMO_DATASTORE_CRASH_AT=<stage> kills the process with SIGKILL
// when a deletion reaches that stage ("committed", "index_saved", "punched").
void CrashPoint(const char* stage) {
  static const char* const at = std::getenv("MNEMO_DATASTORE_CRASH_AT");
  if (at != nullptr && std::strcmp(at, stage) == 0) ::raise(SIGKILL);
}

// CRC32 of a whole file, read in chunks (the keys of a large datastore do not fit a string).
Status FileCrc32(const std::string& path, uint32_t* crc) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  std::string buffer(8 << 20, '\0');
  uint32_t c = 0;
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      ::close(fd);
      return Status::IOError(path + ": read failed: " + std::strerror(errno));
    }
    if (got == 0) break;
    c = Crc32(buffer.data(), static_cast<size_t>(got), c);
  }
  ::close(fd);
  *crc = c;
  return Status::OK();
}

// Non-zero bytes of [offset, offset + length) of a file.
Status CountNonZero(const std::string& path, int64_t offset, int64_t length, int64_t* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  std::string buffer(1 << 20, '\0');
  int64_t count = 0;
  for (int64_t done = 0; done < length;) {
    const size_t want = static_cast<size_t>(std::min<int64_t>(length - done, static_cast<int64_t>(buffer.size())));
    const ssize_t got = ::pread(fd, buffer.data(), want, offset + done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      ::close(fd);
      return Status::IOError(path + ": short read");
    }
    for (ssize_t i = 0; i < got; ++i) count += buffer[i] != 0;
    done += got;
  }
  ::close(fd);
  *out = count;
  return Status::OK();
}

Status ParseDocuments(const std::string& text, const std::string& path, int64_t slots,
                      std::vector<DatastoreDocument>* out, int64_t* seq, bool* retrain) {
  std::istringstream in(text);
  std::string line;
  int64_t number = 0, next = 0;
  std::unordered_set<std::string> ids;
  out->clear();
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Status::Corruption(where + "not a JSON object");
    try {
      if (number == 1) {
        if (j.value("format", "") != kDocumentsFormat) return Status::Corruption(where + "not a documents file");
        *seq = JsonInt<int64_t>(j.at("deletions"));
        *retrain = j.value("retrain", false);
        continue;
      }
      DatastoreDocument d;
      d.id = j.at("id").get<std::string>();
      d.first = JsonInt<int64_t>(j.at("first"));
      d.count = JsonInt<int64_t>(j.at("count"));
      d.tokens = JsonIntOr(j, "tokens", int64_t{0});
      if (j.contains("metadata")) d.metadata_json = j.at("metadata").dump();
      d.train = j.value("train", false);
      d.deleted_seq = JsonIntOr(j, "deleted", int64_t{0});
      if (d.first != next || d.count < 0) return Status::Corruption(where + "entry ranges are not contiguous");
      // first == next <= slots here, so neither this nor next = first + count can overflow
      // (fuzz/regressions/datastore_open/documents-range-overflow).
      if (d.count > slots - d.first) {
        return Status::Corruption(where + "entries run past the datastore's " + std::to_string(slots) + " entries");
      }
      if (!ids.insert(d.id).second) return Status::Corruption(where + "repeated id " + QuoteId(d.id));
      next = d.first + d.count;
      out->push_back(std::move(d));
    } catch (const nlohmann::json::exception& e) {
      return Status::Corruption(where + "malformed: " + e.what());
    }
  }
  if (number == 0) return Status::Corruption(path + ": empty");
  if (next != slots) {
    return Status::Corruption(path + ": documents cover " + std::to_string(next) + " entries, the datastore has " +
                              std::to_string(slots));
  }
  return Status::OK();
}

}  // namespace

Status WriteDocumentsFile(const std::string& dir, const std::vector<DatastoreDocument>& documents, int64_t seq,
                          bool retrain) {
  std::string out;
  nlohmann::ordered_json header = {{"format", kDocumentsFormat}, {"deletions", seq}, {"retrain", retrain}};
  out += header.dump() + "\n";
  for (const DatastoreDocument& d : documents) {
    nlohmann::ordered_json j = {{"id", d.id}, {"first", d.first}, {"count", d.count}};
    if (d.deleted()) {
      j["deleted"] = d.deleted_seq;
    } else {
      j["tokens"] = d.tokens;
      if (!d.metadata_json.empty()) j["metadata"] = nlohmann::json::parse(d.metadata_json);
      if (d.train) j["train"] = true;
    }
    out += j.dump() + "\n";
  }
  return WriteFileAtomically(dir + kDocuments, out);
}

Status Datastore::LoadDocuments() {
  const std::string path = dir_ + kDocuments;
  std::string text;
  if (!ReadFileToString(path, &text).ok()) {
    return Status::Corruption(path + ": missing, but the manifest says the datastore has provenance");
  }
  MNEMO_RETURN_IF_ERROR(ParseDocuments(text, path, slots_, &documents_, &documents_seq_, &retrain_pending_));
  provenance_ = true;
  return Status::OK();
}

std::vector<DatastoreDocument> Datastore::Documents() const {
  std::shared_lock lock(mu_);
  return documents_;
}

Status Datastore::GetDocument(const std::string& id, DatastoreDocument* out) const {
  if (!provenance_) {
    return Status::FailedPrecondition(dir_ + ": built without provenance (rebuild it with `mnemo datastore build "
                                      "--documents FILE.jsonl` to delete documents)");
  }
  std::shared_lock lock(mu_);
  for (const DatastoreDocument& d : documents_) {
    if (d.id == id) {
      *out = d;
      return Status::OK();
    }
  }
  return Status::NotFound("no document " + QuoteId(id) + " in " + dir_);
}

std::vector<std::pair<int64_t, int64_t>> Datastore::DeletedRanges() const {
  std::shared_lock lock(mu_);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const DatastoreDocument& d : documents_) {
    if (d.deleted() && d.count > 0) out.emplace_back(d.first, d.count);
  }
  return out;
}

std::string Datastore::RetrainReason(const DatastoreDocument& doc) const {
  const std::string& pool = manifest_.training_pool;
  if (pool == "all") {
    return "the index's centroids were trained on a sample of all entries (the datastore was built without "
           "--train-text or documents marked \"train\"), so deleting any document changes what they would be";
  }
  if (pool == "marked" && doc.train) {
    return "document " + QuoteId(doc.id) + " is marked \"train\": the index's centroids were trained on it";
  }
  return "";
}

Status Datastore::LockExclusive() {
  if (lock_fd_ < 0) return Status::FailedPrecondition(dir_ + "/LOCK: cannot be opened (read-only datastore?)");
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::flock(lock_fd_, LOCK_SH);  // a failed conversion may have dropped the shared lock
    if (err == EWOULDBLOCK) {
      return Status::FailedPrecondition(dir_ + ": the datastore is open elsewhere (a server or another command); "
                                        "delete documents through the process that has it open, or stop it");
    }
    return Status::IOError(dir_ + "/LOCK: flock failed: " + std::strerror(err));
  }
  return Status::OK();
}

void Datastore::UnlockExclusive() {
  if (lock_fd_ >= 0) ::flock(lock_fd_, LOCK_SH);
}

Status Datastore::RollForward() {
  MNEMO_RETURN_IF_ERROR(LockExclusive());
  double index_seconds = 0;
  Status s = ApplyDeletions(retrain_pending_, false, &index_seconds);
  UnlockExclusive();
  return s;
}

Status Datastore::RetrainedIndex(bool progress, std::unique_ptr<VectorIndex>* out) const {
  // Exactly what DatastoreWriter::Finish does for a build from the live documents: the same pool rule,
  // sample and seed, then every live entry in order.
  std::vector<int64_t> pool, live;
  for (const DatastoreDocument& d : documents_) {
    if (d.deleted()) continue;
    for (int64_t i = d.first; i < d.first + d.count; ++i) {
      live.push_back(i);
      if (manifest_.training_pool == "all" || d.train) pool.push_back(i);
    }
  }
  if (manifest_.training_pool != "all" && manifest_.training_pool != "marked") {
    return Status::FailedPrecondition(dir_ + ": training pool " + manifest_.training_pool + " is not retrained");
  }
  std::unique_ptr<MappedFile> keys_file;
  MNEMO_RETURN_IF_ERROR(MappedFile::Open(dir_ + "/keys.f16", &keys_file));
  const auto* keys = reinterpret_cast<const uint16_t*>(keys_file->data());
  std::unique_ptr<VectorIndex> index;
  MNEMO_RETURN_IF_ERROR(VectorIndex::Create(dim_, manifest_.index_spec, Metric::kL2, &index));
  const std::vector<int64_t> rows = SampleTrainingRows(pool, manifest_.train_sample, manifest_.train_seed);
  std::vector<float> buffer(rows.size() * dim_);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int d = 0; d < dim_; ++d) buffer[i * dim_ + d] = HalfToFloat(keys[rows[i] * dim_ + d]);
  }
  ProgressBar bar("retrain index " + manifest_.index_spec, static_cast<int64_t>(live.size()), "entries", progress);
  MNEMO_RETURN_IF_ERROR(index->Train(static_cast<int64_t>(rows.size()), buffer.data()));
  for (size_t begin = 0; begin < live.size(); begin += kAddBatch) {
    const size_t n = std::min(live.size() - begin, static_cast<size_t>(kAddBatch));
    buffer.resize(n * dim_);
    for (size_t i = 0; i < n; ++i) {
      for (int d = 0; d < dim_; ++d) buffer[i * dim_ + d] = HalfToFloat(keys[live[begin + i] * dim_ + d]);
    }
    MNEMO_RETURN_IF_ERROR(index->Add(static_cast<int64_t>(n), buffer.data(), live.data() + begin));
    bar.Update(static_cast<int64_t>(begin + n), static_cast<int64_t>(begin + n), "entries");
  }
  *out = std::move(index);
  return Status::OK();
}

// Brings keys, values, index and manifest in line with documents_ (every tombstone; idempotent). Callers
// hold the exclusive flock.
Status Datastore::ApplyDeletions(bool retrain, bool progress, double* index_seconds) {
  const auto start = std::chrono::steady_clock::now();
  const std::string index_path = dir_ + "/index.faiss";
  std::unique_ptr<VectorIndex> index;
  if (retrain) {
    MNEMO_RETURN_IF_ERROR(RetrainedIndex(progress, &index));
  } else {
    LoadOptions load;
    load.expected_dim = dim_;
    MNEMO_RETURN_IF_ERROR(VectorIndex::Load(index_path, load, &index));
    std::vector<int64_t> ids;
    for (const DatastoreDocument& d : documents_) {
      for (int64_t i = d.first; d.deleted() && i < d.first + d.count; ++i) ids.push_back(i);
    }
    MNEMO_RETURN_IF_ERROR(index->Remove(ids.data(), static_cast<int64_t>(ids.size()), nullptr));
  }
  int64_t live = 0;
  for (const DatastoreDocument& d : documents_) live += d.deleted() ? 0 : d.count;
  if (index->size() != live) {
    return Status::Corruption(index_path + ": holds " + std::to_string(index->size()) + " entries after deletion, " +
                              std::to_string(live) + " expected");
  }
  MNEMO_RETURN_IF_ERROR(index->Save(index_path));
  CrashPoint("index_saved");
  if (options_.mmap_index) {
    LoadOptions load;
    load.expected_dim = dim_;
    load.mmap = true;
    load.verify_checksum = false;  // just written by this process
    MNEMO_RETURN_IF_ERROR(VectorIndex::Load(index_path, load, &index));
  }
  *index_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  {
    // Searches never see an index without the entries beside keys that still hold them, or the reverse.
    std::unique_lock lock(mu_);
    if (index_ != nullptr) retired_.push_back(std::move(index_));
    index_ = std::move(index);
    for (auto [suffix, width] : {std::pair{"/keys.f16", int64_t{dim_} * 2}, std::pair{"/values.i32", int64_t{4}}}) {
      const std::string path = dir_ + suffix;
      // Zeroes every deleted document's range, freeing its blocks where the file system can.
      std::unique_ptr<WritableFile> file;
      MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->OpenForUpdate(path, &file));
      for (const DatastoreDocument& d : documents_) {
        if (d.deleted()) MNEMO_RETURN_IF_ERROR(file->PunchHole(d.first * width, d.count * width));
      }
      MNEMO_RETURN_IF_ERROR(file->Sync());
      MNEMO_RETURN_IF_ERROR(file->Close());
    }
    manifest_.live = live;
    manifest_.deletions_applied = documents_seq_;
  }
  CrashPoint("punched");
  DatastoreManifest m = manifest();
  MNEMO_RETURN_IF_ERROR(FileCrc32(dir_ + "/keys.f16", &m.keys_crc32));
  MNEMO_RETURN_IF_ERROR(FileCrc32(dir_ + "/values.i32", &m.values_crc32));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir_ + "/manifest.json", m.ToJson()));
  std::unique_lock lock(mu_);
  manifest_ = m;
  return Status::OK();
}

Status Datastore::DeleteDocuments(const std::vector<std::string>& ids, const DocumentDeleteOptions& options,
                                  DocumentDeleteReport* report) {
  const auto start = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> one_at_a_time(delete_mu_);
  if (!provenance_) {
    return Status::FailedPrecondition(dir_ + ": built without provenance (rebuild it with `mnemo datastore build "
                                      "--documents FILE.jsonl` to delete documents)");
  }
  if (ids.empty()) return Status::InvalidArgument("no document ids to delete");
  std::unordered_map<std::string, size_t> position;
  for (size_t i = 0; i < documents_.size(); ++i) position[documents_[i].id] = i;
  std::unordered_set<std::string> seen;
  DocumentDeleteReport r;
  bool retrain = false;
  for (const std::string& id : ids) {
    if (!seen.insert(id).second) return Status::InvalidArgument("document id " + QuoteId(id) + " is repeated");
    auto it = position.find(id);
    if (it == position.end()) return Status::NotFound("no document " + QuoteId(id) + " in " + dir_);
    const DatastoreDocument& d = documents_[it->second];
    if (d.deleted()) {
      return Status::NotFound("document " + QuoteId(id) + " was already deleted (deletion " +
                              std::to_string(d.deleted_seq) + ")");
    }
    const std::string reason = RetrainReason(d);
    if (!reason.empty() && !options.retrain) {
      return Status::FailedPrecondition(
          "cannot delete " + QuoteId(id) + " exactly without retraining: " + reason +
          ". Pass --retrain (offline: trains the index again on the remaining pool and re-adds all " +
          std::to_string(manifest_.live) + " live entries), or build with --train-text to make deletions exact "
          "without retraining");
    }
    if (!reason.empty() && manifest_.shards > 0) {
      return Status::FailedPrecondition(
          "cannot delete " + QuoteId(id) + " from shard " + std::to_string(manifest_.shard) + " of " +
          std::to_string(manifest_.shards) + ": it needs retraining (" + reason + "), and every shard shares "
          "the whole datastore's trained structures. Delete it from the unsplit datastore with --retrain and "
          "split again");
    }
    retrain = retrain || !reason.empty();
    r.deleted.push_back(d);
    r.entries += d.count;
  }
  if (index_->gpu_device() >= 0) {
    return Status::FailedPrecondition(dir_ + ": documents cannot be deleted while the index is searched on a GPU");
  }
  MNEMO_RETURN_IF_ERROR(LockExclusive());
  // The commit point: documents.jsonl with the tombstones.
  std::vector<DatastoreDocument> next = documents_;
  const int64_t seq = documents_seq_ + 1;
  for (const std::string& id : ids) {
    DatastoreDocument& d = next[position[id]];
    d.deleted_seq = seq;
    d.metadata_json.clear();
    d.train = false;
  }
  Status s = WriteDocumentsFile(dir_, next, seq, retrain);
  if (!s.ok()) {
    UnlockExclusive();
    return s;
  }
  CrashPoint("committed");
  {
    std::unique_lock lock(mu_);
    documents_ = std::move(next);
    documents_seq_ = seq;
    retrain_pending_ = retrain;
  }
  s = ApplyDeletions(retrain, options.progress, &r.index_seconds);
  UnlockExclusive();
  if (!s.ok()) {
    return Status::IOError("deletion " + std::to_string(seq) + " committed but not applied to every file (" +
                           s.message() + "); the next open of the datastore finishes it");
  }
  r.seq = seq;
  r.retrained = retrain;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *report = std::move(r);
  return Status::OK();
}

Status Datastore::FindDocumentTraces(const std::string& id, DocumentTraces* out) const {
  DatastoreDocument d;
  MNEMO_RETURN_IF_ERROR(GetDocument(id, &d));
  if (!d.deleted()) return Status::FailedPrecondition("document " + QuoteId(id) + " is not deleted");
  DocumentTraces t;
  t.id = id;
  t.tombstone = true;
  t.deleted_seq = d.deleted_seq;
  t.entries = d.count;
  // What is on disk, not what this process remembers.
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(dir_ + kDocuments, &text));
  std::vector<DatastoreDocument> on_disk;
  int64_t seq = 0;
  bool retrain = false;
  MNEMO_RETURN_IF_ERROR(ParseDocuments(text, dir_ + kDocuments, slots_, &on_disk, &seq, &retrain));
  for (const DatastoreDocument& o : on_disk) {
    if (o.id == id) {
      t.tombstone = o.deleted();
      t.metadata_kept = !o.metadata_json.empty();
    }
  }
  {
    std::shared_lock lock(mu_);
    for (int64_t i = d.first; i < d.first + d.count; ++i) t.index_entries += index_->Contains(i);
  }
  MNEMO_RETURN_IF_ERROR(CountNonZero(dir_ + "/keys.f16", d.first * dim_ * 2, d.count * dim_ * 2, &t.nonzero_key_bytes));
  MNEMO_RETURN_IF_ERROR(CountNonZero(dir_ + "/values.i32", d.first * 4, d.count * 4, &t.nonzero_value_bytes));
  if (DIR* dir = ::opendir(dir_.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name.find(".tmp") != std::string::npos) t.stray_files.push_back(dir_ + "/" + name);
    }
    ::closedir(dir);
  }
  *out = t;
  return Status::OK();
}

}  // namespace mnemo
