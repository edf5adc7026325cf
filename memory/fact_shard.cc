#include "memory/fact_shard.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "indexes/vector_index.h"
#include "memory/datastore_shards.h"
#include "memory/fact_store_segment.h"
#include "memory/sqlite_db.h"
#include "memory/state_dir.h"
#include "util/byte_io.h"
#include "util/file_util.h"
#include "util/parse.h"

namespace mnemo {
namespace {

enum FactOp : int64_t { kPrepare = 1, kCommit = 2, kDrop = 3, kList = 4, kHolds = 5, kCheck = 6 };

constexpr char kSchema[] =
    "CREATE TABLE IF NOT EXISTS entries(id INTEGER PRIMARY KEY, pad BLOB, committed INTEGER NOT NULL, "
    "values_blob BLOB NOT NULL, keys BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)";

std::string DbPath(const std::string& dir) { return dir + "/entries.db"; }

// The index as of change `version` of the committed rows (written when the share closes).
std::string SnapshotPath(const std::string& dir, int64_t version) {
  return dir + "/segment-" + std::to_string(version) + ".idx";
}

std::vector<std::string> SnapshotFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("segment-", 0) == 0) out.push_back(e.path().string());
  }
  return out;
}

// Counts a change of the committed rows, in the caller's transaction.
Status BumpVersion(SqliteDb* db) {
  return db->Exec("INSERT INTO meta(key, value) VALUES('version', 1) "
                  "ON CONFLICT(key) DO UPDATE SET value = value + 1");
}

// Reads row `id` (values and keys) into *f; *found says whether there was one.
Status ReadRow(SqliteDb* db, int64_t id, FactRecord* f, bool* found) {
  Statement s(db);
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT values_blob, keys FROM entries WHERE id = ?"));
  s.BindInt(1, id);
  MNEMO_RETURN_IF_ERROR(s.Next(found));
  if (!*found) return Status::OK();
  std::vector<int32_t> values;
  f->id = id;
  if (!FromLittleEndian(s.Blob(0), &values) || !FromLittleEndian(s.Blob(1), &f->keys)) {
    return Status::Corruption(db->path() + ": row " + std::to_string(id) + " has malformed blobs");
  }
  // A FactRecord's tokens are the fact's; the values are tokens[1..], the first is not needed here.
  f->tokens.assign(1, 0);
  f->tokens.insert(f->tokens.end(), values.begin(), values.end());
  return Status::OK();
}

// The searchable facts, in id order (the order they are indexed in).
Status CommittedIds(SqliteDb* db, std::vector<int64_t>* out) {
  Statement s(db);
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT id FROM entries WHERE committed = 1 ORDER BY id"));
  for (bool row = true;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) return Status::OK();
    out->push_back(s.Int(0));
  }
}

Status Malformed(const char* what) { return Status::InvalidArgument(std::string("malformed fact shard ") + what); }

}  // namespace

std::string FactShardDir(const std::string& state_dir, int shard) {
  return state_dir + "/fact-shards/shard-" + std::to_string(shard);
}

FactShard::FactShard() = default;

FactShard::~FactShard() {
  // The index as of the rows' current version, so the next open loads it instead of encoding every
  // entry again; skipped when read-only, broken or already on disk. A failure only costs that.
  if (read_only_ || broken_ || db_ == nullptr || snapshot_version_ == version_) return;
  const std::string path = SnapshotPath(dir_, version_);
  Status s = segment_->index().Save(path);
  if (!s.ok()) {
    std::fprintf(stderr, "fact shard: index snapshot not written: %s\n", s.ToString().c_str());
    return;
  }
  for (const std::string& old : SnapshotFiles(dir_)) {
    if (old != path) RemoveFileDurably(old).ok();
  }
}

bool FactShard::LoadSnapshot(const std::vector<int64_t>& committed) {
  const std::string path = SnapshotPath(dir_, version_);
  if (!std::filesystem::exists(path)) return false;
  LoadOptions load;
  load.expected_dim = dim_;
  std::unique_ptr<VectorIndex> index;
  if (!VectorIndex::Load(path, load, &index).ok()) return false;
  if (index->TrainedFingerprint() != empty_->TrainedFingerprint()) return false;
  // The values and keys come from the rows; the snapshot must hold exactly their entries.
  std::unique_ptr<FactSegment> segment(new FactSegment(std::move(index), dim_));
  int64_t entries = 0;
  for (int64_t id : committed) {
    FactRecord f;
    bool found = false;
    if (!ReadRow(db_.get(), id, &f, &found).ok() || !found) return false;
    const int64_t n = static_cast<int64_t>(f.tokens.size()) - 1;
    if (!segment->index().Contains(FactEntryId(id, 0)) || !segment->index().Contains(FactEntryId(id, n - 1))) return false;
    entries += n;
    segment->RememberFact(f);
  }
  if (segment->index().size() != entries) return false;
  segment->SetEntryCount(entries);
  segment_ = std::move(segment);
  loaded_snapshot_ = true;
  return true;
}

Status FactShard::Open(const std::string& dir, const VectorIndex& trained, int dim, bool read_only,
                       std::unique_ptr<FactShard>* out) {
  std::unique_ptr<FactShard> f(new FactShard());
  f->dir_ = dir;
  f->dim_ = dim;
  f->read_only_ = read_only;
  MNEMO_RETURN_IF_ERROR(trained.CreateEmptyLike(&f->empty_));
  std::unique_ptr<VectorIndex> index;
  MNEMO_RETURN_IF_ERROR(f->empty_->CreateEmptyLike(&index));
  f->segment_.reset(new FactSegment(std::move(index), dim));
  const bool exists = std::filesystem::exists(DbPath(dir));
  if (read_only && !exists) {
    *out = std::move(f);
    return Status::OK();
  }
  if (!read_only) {
    MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
    MNEMO_RETURN_IF_ERROR(StateLock::Acquire(dir, &f->lock_));
  }
  MNEMO_RETURN_IF_ERROR(SqliteDb::Open(DbPath(dir), &f->db_, read_only));
  SqliteDb* db = f->db_.get();
  std::string value;
  bool found = false;
  if (!read_only) {
    if (!exists) MNEMO_RETURN_IF_ERROR(db->Exec("PRAGMA page_size=4096"));
    MNEMO_RETURN_IF_ERROR(db->EnableDurableWalAndSecureDelete());
    MNEMO_RETURN_IF_ERROR(db->Exec(kSchema));
  }
  MNEMO_RETURN_IF_ERROR(db->QueryText("PRAGMA page_size", &value, &found));
  if (!found || !ParseInt64(value, 512, 65536, &f->page_size_).ok()) {
    return Status::Corruption(db->path() + ": unexpected page size \"" + value + "\"");
  }
  std::vector<int64_t> committed;
  MNEMO_RETURN_IF_ERROR(CommittedIds(db, &committed));
  // An older share (before meta) answers "no table": it has no snapshot either.
  if (db->QueryText("SELECT value FROM meta WHERE key = 'version'", &value, &found).ok() && found) {
    MNEMO_RETURN_IF_ERROR(ParseInt64(value, 0, INT64_MAX, &f->version_));
  }
  if (!f->LoadSnapshot(committed)) MNEMO_RETURN_IF_ERROR(f->IndexRows(committed));
  f->snapshot_version_ = f->loaded_snapshot_ ? f->version_ : -1;
  *out = std::move(f);
  return Status::OK();
}

Status FactShard::IndexRows(const std::vector<int64_t>& ids) {
  std::vector<FactRecord> records;
  records.reserve(ids.size());
  for (int64_t id : ids) {
    if (segment_->Find(id) != nullptr) continue;
    FactRecord f;
    bool found = false;
    MNEMO_RETURN_IF_ERROR(ReadRow(db_.get(), id, &f, &found));
    if (found) records.push_back(std::move(f));
  }
  std::sort(records.begin(), records.end(), [](const FactRecord& a, const FactRecord& b) { return a.id < b.id; });
  std::vector<const FactRecord*> ptrs;
  for (const FactRecord& f : records) ptrs.push_back(&f);
  return segment_->AddFacts(ptrs);
}

Status FactShard::ReindexLocked(const Status& cause) {
  std::unique_ptr<VectorIndex> index;
  Status s = empty_->CreateEmptyLike(&index);
  std::vector<int64_t> committed;
  if (s.ok()) s = CommittedIds(db_.get(), &committed);
  if (s.ok()) {
    segment_.reset(new FactSegment(std::move(index), dim_));
    s = IndexRows(committed);
  }
  // Until an index matches the rows again, searches fail rather than answer from one that does not.
  broken_ = !s.ok();
  if (broken_) broken_reason_ = cause.ToString() + "; rebuilding the index failed too: " + s.ToString();
  return cause;
}

Status FactShard::Prepare(const std::vector<FactRecord>& facts) {
  if (read_only_) return Status::FailedPrecondition(dir_ + ": opened read-only");
  for (const FactRecord& f : facts) {
    if (f.tokens.size() < 2 || f.keys.size() != (f.tokens.size() - 1) * static_cast<size_t>(dim_)) {
      return Status::InvalidArgument(dir_ + ": fact " + std::to_string(f.id) + " has keys of another dimension");
    }
  }
  std::unique_lock lock(mu_);
  bool replaces = false;
  for (const FactRecord& f : facts) replaces = replaces || segment_->Find(f.id) != nullptr;
  if (replaces) {  // a committed fact rewritten (a sync that found another size): as a drop, then an add
    for (const std::string& old : SnapshotFiles(dir_)) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(old));
    snapshot_version_ = -1;
  }
  for (const FactRecord& f : facts) {  // a replaced fact is searchable again only once committed
    const FactSegment::Entries* e = segment_->Find(f.id);
    if (e == nullptr) continue;
    Status removed = segment_->RemoveFact(f.id, static_cast<int64_t>(e->values.size()));
    if (!removed.ok()) return ReindexLocked(removed);
  }
  Transaction txn(db_.get());
  MNEMO_RETURN_IF_ERROR(txn.Begin());
  if (replaces) MNEMO_RETURN_IF_ERROR(BumpVersion(db_.get()));
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare("INSERT OR REPLACE INTO entries(id, pad, committed, values_blob, keys) VALUES(?, zeroblob(?), 0, ?, ?)"));
  for (const FactRecord& f : facts) {
    s.BindInt(1, f.id);
    s.BindInt(2, page_size_);
    s.BindBlob(3, ToLittleEndian(f.tokens.data() + 1, f.tokens.size() - 1));
    s.BindBlob(4, ToLittleEndian(f.keys));
    MNEMO_RETURN_IF_ERROR(s.Run());
  }
  MNEMO_RETURN_IF_ERROR(txn.Commit());
  if (replaces) ++version_;
  return Status::OK();
}

Status FactShard::Commit(const std::vector<int64_t>& ids) {
  if (read_only_) return Status::FailedPrecondition(dir_ + ": opened read-only");
  std::unique_lock lock(mu_);
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    MNEMO_RETURN_IF_ERROR(BumpVersion(db_.get()));
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare("UPDATE entries SET committed = 1 WHERE id = ?"));
    for (int64_t id : ids) {
      s.BindInt(1, id);
      MNEMO_RETURN_IF_ERROR(s.Run());
    }
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  ++version_;
  Status indexed = IndexRows(ids);
  return indexed.ok() ? indexed : ReindexLocked(indexed);
}

Status FactShard::Drop(const std::vector<int64_t>& ids) {
  if (read_only_) return Status::FailedPrecondition(dir_ + ": opened read-only");
  std::unique_lock lock(mu_);
  // No file may keep a dropped fact's keys once the drop is acknowledged: the index snapshots go first.
  for (const std::string& old : SnapshotFiles(dir_)) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(old));
  snapshot_version_ = -1;
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    MNEMO_RETURN_IF_ERROR(BumpVersion(db_.get()));
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare("DELETE FROM entries WHERE id = ?"));
    for (int64_t id : ids) {
      s.BindInt(1, id);
      MNEMO_RETURN_IF_ERROR(s.Run());
    }
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  ++version_;
  for (int64_t id : ids) {
    const FactSegment::Entries* e = segment_->Find(id);
    if (e == nullptr) continue;
    Status removed = segment_->RemoveFact(id, static_cast<int64_t>(e->values.size()));
    if (!removed.ok()) return ReindexLocked(removed);
  }
  // The WAL's older frames still hold the rows' pages: copy them back and truncate (fact_db.cc). Until
  // that succeeds every List (each sync) tries again and fails, so rank 0 keeps the shard behind.
  scrub_pending_ = true;
  MNEMO_RETURN_IF_ERROR(db_->CheckpointAndTruncateWal());
  scrub_pending_ = false;
  return Status::OK();
}

Status FactShard::List(std::vector<FactShardRow>* out) const {
  out->clear();
  std::unique_lock lock(mu_);  // exclusive: the connection is not shared between threads
  if (db_ == nullptr) return Status::OK();
  if (broken_) return Status::Internal(dir_ + ": " + broken_reason_);
  if (scrub_pending_) {
    MNEMO_RETURN_IF_ERROR(db_->CheckpointAndTruncateWal());
    scrub_pending_ = false;
  }
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT id, length(values_blob) / 4, committed FROM entries ORDER BY id"));
  bool row = false;
  for (;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    out->push_back({s.Int(0), s.Int(1), s.Int(2) != 0});
  }
  return Status::OK();
}

Status FactShard::Holds(int64_t id, int64_t entries, bool* row, bool* indexed) const {
  std::unique_lock lock(mu_);
  *row = false;
  if (db_ != nullptr) {
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT 1 FROM entries WHERE id = ?"));
    s.BindInt(1, id);
    MNEMO_RETURN_IF_ERROR(s.Next(row));
  }
  *indexed = segment_->Find(id) != nullptr;
  for (int64_t p = 0; p < entries && !*indexed; ++p) *indexed = segment_->index().Contains(FactEntryId(id, p));
  // An index snapshot on disk counts as indexed too.
  for (const std::string& path : SnapshotFiles(dir_)) {
    std::unique_ptr<VectorIndex> snapshot;
    if (*indexed || !VectorIndex::Load(path, LoadOptions(), &snapshot).ok()) continue;
    for (int64_t p = 0; p < entries && !*indexed; ++p) *indexed = snapshot->Contains(FactEntryId(id, p));
  }
  return Status::OK();
}

Status FactShard::Check(std::string* result) const {
  std::unique_lock lock(mu_);
  if (db_ == nullptr) {
    *result = "ok";
    return Status::OK();
  }
  std::string quick;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(db_->QueryText("PRAGMA quick_check", &quick, &found));
  if (quick != "ok") {
    *result = DbPath(dir_) + ": " + quick;
    return Status::OK();
  }
  std::string value;
  MNEMO_RETURN_IF_ERROR(db_->QueryText("SELECT count(*) FROM entries WHERE committed = 1", &value, &found));
  int64_t committed = 0;
  MNEMO_RETURN_IF_ERROR(ParseInt64(value, 0, INT64_MAX, &committed));
  if (committed != static_cast<int64_t>(segment_->fact_count())) {
    *result = dir_ + ": " + value + " committed facts, " + std::to_string(segment_->fact_count()) + " indexed";
    return Status::OK();
  }
  *result = "ok";
  return Status::OK();
}

Status FactShard::Search(const float* queries, int64_t n, int k, int nprobe, bool exact, std::vector<Neighbor>* out,
                         std::vector<float>* exact_out) const {
  std::shared_lock lock(mu_);
  if (broken_) return Status::Internal(dir_ + ": " + broken_reason_);
  return segment_->Search(queries, n, k, nprobe, exact, out, exact_out);
}

int64_t FactShard::entries() const {
  std::shared_lock lock(mu_);
  return segment_->entries();
}

Status FactShard::Handle(const std::string& request, std::string* reply) {
  ByteReader r(request);
  ByteWriter w;
  int64_t op = 0;
  if (!r.Get(&op)) return Malformed("request");
  switch (op) {
    case kPrepare: {
      int64_t count = 0;
      if (!r.Get(&count) || count < 0) return Malformed("prepare");
      std::vector<FactRecord> facts(static_cast<size_t>(std::min<int64_t>(count, 1 << 20)));
      for (int64_t i = 0; i < count; ++i) {
        if (i >= static_cast<int64_t>(facts.size())) return Malformed("prepare");
        FactRecord& f = facts[i];
        if (!r.Get(&f.id) || !r.GetVector(&f.tokens) || !r.GetVector(&f.keys)) return Malformed("prepare");
      }
      if (r.left() != 0) return Malformed("prepare");
      MNEMO_RETURN_IF_ERROR(Prepare(facts));
      break;
    }
    case kCommit:
    case kDrop: {
      std::vector<int64_t> ids;
      if (!r.GetVector(&ids) || r.left() != 0) return Malformed("ids");
      MNEMO_RETURN_IF_ERROR(op == kCommit ? Commit(ids) : Drop(ids));
      break;
    }
    case kList: {
      std::vector<FactShardRow> rows;
      MNEMO_RETURN_IF_ERROR(List(&rows));
      w.Put(static_cast<int64_t>(rows.size()));
      for (const FactShardRow& row : rows) {
        w.Put(row.id);
        w.Put(row.entries);
        w.Put(static_cast<int64_t>(row.committed));
      }
      break;
    }
    case kHolds: {
      int64_t id = 0, entries = 0;
      if (!r.Get(&id) || !r.Get(&entries) || r.left() != 0) return Malformed("holds");
      bool row = false, indexed = false;
      MNEMO_RETURN_IF_ERROR(Holds(id, entries, &row, &indexed));
      w.Put(static_cast<int64_t>(row));
      w.Put(static_cast<int64_t>(indexed));
      break;
    }
    case kCheck: {
      std::string result;
      MNEMO_RETURN_IF_ERROR(Check(&result));
      w.PutBytes(result.data(), result.size());
      break;
    }
    default:
      return Status::InvalidArgument("unknown fact shard request " + std::to_string(op));
  }
  *reply = std::move(w.buf());
  return Status::OK();
}

namespace {

Status Call(const DatastoreShards& shards, int shard, const std::string& request, std::string* reply) {
  if (!shards.holds_facts()) return Status::FailedPrecondition("these shards hold no facts");
  return shards.FactCall(shard, request, reply);
}

Status CallWithIds(const DatastoreShards& shards, int shard, FactOp op, const std::vector<int64_t>& ids) {
  ByteWriter w;
  w.Put(static_cast<int64_t>(op));
  w.PutVector(ids);
  std::string reply;
  return Call(shards, shard, w.buf(), &reply);
}

}  // namespace

Status ShardPrepareFacts(const DatastoreShards& shards, int shard, const std::vector<const FactRecord*>& facts) {
  ByteWriter w;
  w.Put(static_cast<int64_t>(kPrepare));
  w.Put(static_cast<int64_t>(facts.size()));
  for (const FactRecord* f : facts) {
    w.Put(f->id);
    w.PutVector(f->tokens);
    w.PutVector(f->keys);
  }
  std::string reply;
  return Call(shards, shard, w.buf(), &reply);
}

Status ShardCommitFacts(const DatastoreShards& shards, int shard, const std::vector<int64_t>& ids) {
  return CallWithIds(shards, shard, kCommit, ids);
}

Status ShardDropFacts(const DatastoreShards& shards, int shard, const std::vector<int64_t>& ids) {
  return CallWithIds(shards, shard, kDrop, ids);
}

Status ShardListFacts(const DatastoreShards& shards, int shard, std::vector<FactShardRow>* out) {
  ByteWriter w;
  w.Put(static_cast<int64_t>(kList));
  std::string reply;
  MNEMO_RETURN_IF_ERROR(Call(shards, shard, w.buf(), &reply));
  ByteReader r(reply);
  int64_t count = 0;
  if (!r.Get(&count) || count < 0 || r.left() != static_cast<size_t>(count) * 24) return Malformed("list reply");
  out->resize(static_cast<size_t>(count));
  for (FactShardRow& row : *out) {
    int64_t committed = 0;
    r.Get(&row.id);
    r.Get(&row.entries);
    r.Get(&committed);
    row.committed = committed != 0;
  }
  return Status::OK();
}

Status ShardHoldsFact(const DatastoreShards& shards, int shard, int64_t id, int64_t entries, bool* row, bool* indexed) {
  ByteWriter w;
  w.Put(static_cast<int64_t>(kHolds));
  w.Put(id);
  w.Put(entries);
  std::string reply;
  MNEMO_RETURN_IF_ERROR(Call(shards, shard, w.buf(), &reply));
  ByteReader r(reply);
  int64_t a = 0, b = 0;
  if (!r.Get(&a) || !r.Get(&b) || r.left() != 0) return Malformed("holds reply");
  *row = a != 0;
  *indexed = b != 0;
  return Status::OK();
}

Status ShardCheckFacts(const DatastoreShards& shards, int shard, std::string* result) {
  ByteWriter w;
  w.Put(static_cast<int64_t>(kCheck));
  return Call(shards, shard, w.buf(), result);
}

}  // namespace mnemo
