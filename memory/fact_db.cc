// FactDb (fact_db.h): the fact schema and its queries (open and format check, meta, insert, delete with
// tombstones, get/list/count, the changes log). The SQLite mechanics are in sqlite_db.h, the filter's SQL
// in fact_filter.h.
#include "memory/fact_db.h"
#include "memory/fact_db_internal.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>
#include <utility>

#include "memory/fact_filter.h"
#include "memory/sqlite_db.h"

namespace mnemo {
namespace {

constexpr int kFormatVersion = 1;
constexpr int64_t kMaxListLimit = 10000;

// Meta keys FactDb maintains itself; SetMeta refuses them so that dim_ and the format check stay true.
constexpr char kFormatVersionKey[] = "format_version";
constexpr char kDimKey[] = "dim";

constexpr char kSchema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE facts(id INTEGER PRIMARY KEY AUTOINCREMENT, pad BLOB, client_id TEXT, text TEXT, metadata TEXT,"
    "                   created_seq INTEGER, created_at_ms INTEGER, tokens BLOB, keys BLOB);"
    "CREATE INDEX facts_client_id ON facts(client_id);"
    "CREATE TABLE changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, op INTEGER, fact_id INTEGER);"
    "CREATE TABLE tombstones(fact_id INTEGER PRIMARY KEY, deleted_seq INTEGER, deleted_at_ms INTEGER,"
    "                        entries INTEGER);";

// length(tokens) / 4 lets SQLite answer from the record header without reading the blob.
constexpr char kSelectRecord[] =
    "SELECT id, client_id, text, metadata, created_seq, created_at_ms, length(tokens) / 4";

bool ParseInt64(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

std::string SelectRecordSql(bool with_entries) {
  return std::string(kSelectRecord) + (with_entries ? ", tokens, keys" : "") + " FROM facts";
}

// Reads the row `s` is on (columns of SelectRecordSql).
Status ReadRecord(const Statement& s, bool with_entries, int dim, const std::string& path, FactRecord* r) {
  *r = FactRecord();
  r->id = s.Int(0);
  r->client_id = s.Text(1);
  r->text = s.Text(2);
  r->metadata_json = s.Text(3);
  r->created_seq = s.Int(4);
  r->created_at_ms = s.Int(5);
  r->num_tokens = s.Int(6);
  if (!with_entries) return Status::OK();
  const bool ok = FromLittleEndian(s.Blob(7), &r->tokens) && FromLittleEndian(s.Blob(8), &r->keys) &&
                  r->tokens.size() >= 2 &&
                  (dim <= 0 || r->keys.size() == (r->tokens.size() - 1) * static_cast<size_t>(dim));
  if (!ok) {
    return Status::Corruption(path + ": fact " + std::to_string(r->id) + " has " + std::to_string(r->tokens.size()) +
                              " tokens and " + std::to_string(r->keys.size()) + " key values (dim " +
                              std::to_string(dim) + ")");
  }
  return Status::OK();
}

// Checks that an existing database is a mnemo fact database this build can read; *empty when it has no
// schema at all (new file). Reads only, so a foreign SQLite file is not modified.
Status CheckFormat(SqliteDb* db, bool* empty) {
  const std::string& path = db->path();
  std::string value;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master", &value, &found));
  *empty = value == "0";
  if (*empty) return Status::OK();
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                      "name IN ('meta', 'facts', 'changes', 'tombstones')",
                                      &value, &found));
  if (value != "4") return Status::Corruption(path + ": not a mnemo fact database (its tables are missing)");
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT value FROM meta WHERE key = 'format_version'", &value, &found));
  int64_t version = 0;
  if (!found || !ParseInt64(value, &version) || version < 1) {
    return Status::Corruption(path + ": not a mnemo fact database (format_version \"" + value + "\")");
  }
  if (version > kFormatVersion) {
    return Status::Corruption(path + ": format_version " + value + " is newer than this build understands (" +
                              std::to_string(kFormatVersion) + "); open it with a newer mnemo");
  }
  return Status::OK();
}

// The body of Delete and DeleteMatching. `collect` runs inside the transaction and lists the records to
// delete (with entries); an empty list ends the call without writing anything.
Status DeleteCollected(SqliteDb* db, const std::function<Status(std::vector<FactRecord>*)>& collect,
                       std::vector<FactRecord>* deleted, int64_t* last_seq, const ActionRecord* action) {
  deleted->clear();
  std::vector<FactRecord> found;
  int64_t seq = 0;
  {
    Transaction txn(db);
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    MNEMO_RETURN_IF_ERROR(collect(&found));
    if (found.empty()) return Status::OK();
    Statement remove(db), change(db), tombstone(db);
    MNEMO_RETURN_IF_ERROR(remove.Prepare("DELETE FROM facts WHERE id = ?"));
    MNEMO_RETURN_IF_ERROR(change.Prepare("INSERT INTO changes(op, fact_id) VALUES(2, ?)"));
    MNEMO_RETURN_IF_ERROR(tombstone.Prepare(
        "INSERT OR REPLACE INTO tombstones(fact_id, deleted_seq, deleted_at_ms, entries) VALUES(?, ?, ?, ?)"));
    const int64_t now = UnixTimeMs();
    for (const FactRecord& r : found) {
      remove.BindInt(1, r.id);
      MNEMO_RETURN_IF_ERROR(remove.Run());
      change.BindInt(1, r.id);
      MNEMO_RETURN_IF_ERROR(change.Run());
      seq = db->LastInsertRowid();
      tombstone.BindInt(1, r.id);
      tombstone.BindInt(2, seq);
      tombstone.BindInt(3, now);
      tombstone.BindInt(4, r.num_tokens - 1);
      MNEMO_RETURN_IF_ERROR(tombstone.Run());
    }
    if (action != nullptr) {
      ActionRecord logged = *action;
      logged.ids.clear();
      for (const FactRecord& r : found) logged.ids.push_back(std::to_string(r.id));
      MNEMO_RETURN_IF_ERROR(InsertAction(db, logged, now, nullptr));
    }
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  // The delete has committed: report it even if scrubbing below fails, so the caller still removes the
  // entries from its indexes.
  *deleted = std::move(found);
  *last_seq = seq;
  // secure_delete zeroes the deleted cells and freed pages, but not older copies of a cell: when a
  // rebalance moves a live row to a sibling page, the page it left keeps the cell's bytes in its
  // unallocated space, and they outlive the row (tests/fact_db_test.cc, DeletedFactsLeaveNoTraceAfterChurn).
  // Rebalancing moves only a cell's local part, never its overflow pages. So every fact row starts with a
  // zero-filled `pad` column one page long: a payload that large keeps at most page_size - 35 bytes local
  // (SQLite's file format, "Cell Payload Overflow Pages"), all of them header and padding, and the text,
  // metadata, tokens and keys always live in overflow pages that belong to the row alone and that
  // secure_delete zeroes when the row goes. (The alternative, VACUUM after each delete, measured 0.55 s
  // per delete at 10,000 facts and grows with the database.)
  return db->CheckpointAndTruncateWal();
}

}  // namespace

FactDb::~FactDb() = default;

Status FactDb::Open(const std::string& path, std::unique_ptr<FactDb>* out) {
  std::unique_ptr<FactDb> f(new FactDb());
  f->path_ = path;
  // The connection is opened without SQLite's own mutex: mu_ already serializes every use of it.
  MNEMO_RETURN_IF_ERROR(SqliteDb::Open(path, &f->db_));
  SqliteDb* db = f->db_.get();

  // Check before the pragmas write anything: journal_mode=WAL would convert a foreign database.
  bool empty = false;
  MNEMO_RETURN_IF_ERROR(CheckFormat(db, &empty));

  std::string value;
  bool found = false;
  // A page size fixed at creation (WAL cannot change it later); the pad below is one page long.
  if (empty) MNEMO_RETURN_IF_ERROR(db->Exec("PRAGMA page_size=4096"));
  // The no-trace guarantee for deleted facts rests on secure_delete.
  MNEMO_RETURN_IF_ERROR(db->EnableDurableWalAndSecureDelete());

  if (empty) {
    {
      Transaction txn(db);
      MNEMO_RETURN_IF_ERROR(txn.Begin());
      // Another process may have created the schema since CheckFormat; the write lock settles it.
      MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master", &value, &found));
      if (value == "0") {
        MNEMO_RETURN_IF_ERROR(db->Exec(kSchema));
        Statement s(db);
        MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
        s.BindText(1, kFormatVersionKey);
        s.BindText(2, std::to_string(kFormatVersion));
        MNEMO_RETURN_IF_ERROR(s.Run());
      }
      MNEMO_RETURN_IF_ERROR(txn.Commit());
    }
    MNEMO_RETURN_IF_ERROR(CheckFormat(db, &empty));
  }

  // The action log joined format 1 later: created when absent (older builds ignore it).
  MNEMO_RETURN_IF_ERROR(db->Exec(kActionsSchema));

  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT value FROM meta WHERE key = 'dim'", &value, &found));
  if (found) {
    int64_t dim = 0;
    if (!ParseInt64(value, &dim) || dim <= 0 || dim > INT32_MAX) {
      return Status::Corruption(path + ": invalid key dimension \"" + value + "\" in meta");
    }
    f->dim_ = static_cast<int>(dim);
  }
  MNEMO_RETURN_IF_ERROR(db->QueryText("PRAGMA page_size", &value, &found));
  if (!found || !ParseInt64(value, &f->page_size_) || f->page_size_ < 512) {
    return Status::Corruption(path + ": unexpected page size \"" + value + "\"");
  }
  *out = std::move(f);
  return Status::OK();
}

Status FactDb::OpenForReading(const std::string& path, std::unique_ptr<FactDb>* out) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status::NotFound(path + ": no fact database");
  std::unique_ptr<FactDb> f(new FactDb());
  f->path_ = path;
  MNEMO_RETURN_IF_ERROR(SqliteDb::Open(path, &f->db_, /*read_only=*/true));
  bool empty = false;
  MNEMO_RETURN_IF_ERROR(CheckFormat(f->db_.get(), &empty));
  if (empty) return Status::Corruption(path + ": not a mnemo fact database (empty)");
  std::string value;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(
      f->db_->QueryText("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'actions'", &value, &found));
  f->has_actions_ = value == "1";
  *out = std::move(f);
  return Status::OK();
}

Status FactDb::GetMeta(const std::string& key, std::string* value) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT value FROM meta WHERE key = ?"));
  s.BindText(1, key);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound(path_ + ": no meta value \"" + key + "\"");
  *value = s.Text(0);
  return Status::OK();
}

Status FactDb::SetMeta(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  if (key == kFormatVersionKey || key == kDimKey) {
    return Status::InvalidArgument(path_ + ": meta \"" + key + "\" is maintained by FactDb (use SetKeyDim for dim)");
  }
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
  s.BindText(1, key);
  s.BindText(2, value);
  return s.Run();
}

Status FactDb::SetKeyDim(int dim) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dim <= 0) return Status::InvalidArgument(path_ + ": key dimension must be positive, not " + std::to_string(dim));
  if (dim_ == dim) return Status::OK();
  if (dim_ != 0) {
    return Status::InvalidArgument(path_ + ": facts here have keys of dimension " + std::to_string(dim_) + ", not " +
                                   std::to_string(dim) + " (a different model or key layer?)");
  }
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
  s.BindText(1, kDimKey);
  s.BindText(2, std::to_string(dim));
  MNEMO_RETURN_IF_ERROR(s.Run());
  dim_ = dim;
  return Status::OK();
}

Status FactDb::Insert(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, int64_t* last_seq,
                      const ActionRecord* action, const std::function<Status(const std::vector<int64_t>&)>& before_commit) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dim_ <= 0) return Status::FailedPrecondition(path_ + ": key dimension not set (call SetKeyDim before Insert)");
  // Validate the whole batch first, so that a bad fact leaves nothing half written.
  Statement json_valid(db_.get());
  MNEMO_RETURN_IF_ERROR(json_valid.Prepare("SELECT json_valid(?)"));
  for (size_t i = 0; i < facts.size(); ++i) {
    const NewFact& f = facts[i];
    const std::string which = path_ + ": fact " + std::to_string(i) + " of the batch";
    if (f.tokens.size() < 2) {
      return Status::InvalidArgument(which + " has " + std::to_string(f.tokens.size()) +
                                     " tokens; a fact needs at least 2");
    }
    const size_t want = (f.tokens.size() - 1) * static_cast<size_t>(dim_);
    if (f.keys.size() != want) {
      return Status::InvalidArgument(which + " has " + std::to_string(f.keys.size()) + " key values; " +
                                     std::to_string(f.tokens.size()) + " tokens at dim " + std::to_string(dim_) +
                                     " need " + std::to_string(want));
    }
    if (f.metadata_json.empty()) continue;
    const auto j = nlohmann::json::parse(f.metadata_json, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument(which + ": metadata is not a JSON object");
    // SQLite's JSON functions must accept it too, or every metadata filter would fail on this row.
    json_valid.BindText(1, f.metadata_json);
    bool row = false;
    MNEMO_RETURN_IF_ERROR(json_valid.Next(&row));
    const bool valid = row && json_valid.Int(0) == 1;
    json_valid.Reset();
    if (!valid) return Status::InvalidArgument(which + ": metadata is not JSON that SQLite accepts");
  }
  if (facts.empty()) {
    ids->clear();
    return Status::OK();
  }

  std::vector<int64_t> new_ids;
  int64_t seq = 0;
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    Statement change(db_.get()), fact(db_.get()), link(db_.get());
    // The change comes first because the fact row records its seq; the change row is then pointed at
    // the new id (an update of a tiny row, instead of rewriting the fact with its blobs).
    MNEMO_RETURN_IF_ERROR(change.Prepare("INSERT INTO changes(op, fact_id) VALUES(1, NULL)"));
    MNEMO_RETURN_IF_ERROR(
        fact.Prepare("INSERT INTO facts(pad, client_id, text, metadata, created_seq, created_at_ms, tokens, keys) "
                     "VALUES(zeroblob(?), ?, ?, ?, ?, ?, ?, ?)"));
    MNEMO_RETURN_IF_ERROR(link.Prepare("UPDATE changes SET fact_id = ? WHERE seq = ?"));
    const int64_t now = UnixTimeMs();
    for (const NewFact& f : facts) {
      MNEMO_RETURN_IF_ERROR(change.Run());
      seq = db_->LastInsertRowid();
      fact.BindInt(1, page_size_);
      fact.BindTextOrNull(2, f.client_id);
      fact.BindText(3, f.text);
      fact.BindTextOrNull(4, f.metadata_json);
      fact.BindInt(5, seq);
      fact.BindInt(6, now);
      fact.BindBlob(7, ToLittleEndian(f.tokens));
      fact.BindBlob(8, ToLittleEndian(f.keys));
      MNEMO_RETURN_IF_ERROR(fact.Run());
      const int64_t id = db_->LastInsertRowid();
      new_ids.push_back(id);
      link.BindInt(1, id);
      link.BindInt(2, seq);
      MNEMO_RETURN_IF_ERROR(link.Run());
    }
    if (action != nullptr) {
      ActionRecord logged = *action;
      logged.ids.clear();
      for (int64_t id : new_ids) logged.ids.push_back(std::to_string(id));
      MNEMO_RETURN_IF_ERROR(InsertAction(db_.get(), logged, now, nullptr));
    }
    if (before_commit) MNEMO_RETURN_IF_ERROR(before_commit(new_ids));
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  *ids = std::move(new_ids);
  *last_seq = seq;
  return Status::OK();
}

Status FactDb::Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted, int64_t* last_seq,
                      const ActionRecord* action) {
  std::lock_guard<std::mutex> lock(mu_);
  auto collect = [&](std::vector<FactRecord>* found) -> Status {
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare(SelectRecordSql(true) + " WHERE id = ?"));
    std::set<int64_t> seen;  // A repeated id is deleted once.
    for (int64_t id : ids) {
      if (!seen.insert(id).second) continue;
      s.BindInt(1, id);
      bool row = false;
      MNEMO_RETURN_IF_ERROR(s.Next(&row));
      if (row) {
        found->emplace_back();
        MNEMO_RETURN_IF_ERROR(ReadRecord(s, true, dim_, path_, &found->back()));
      }
      s.Reset();
    }
    return Status::OK();
  };
  return DeleteCollected(db_.get(), collect, deleted, last_seq, action);
}

Status FactDb::DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted, int64_t* last_seq,
                              const ActionRecord* action) {
  std::lock_guard<std::mutex> lock(mu_);
  // An empty filter would delete everything: too easy to reach by accident (an unset request field).
  if (filter.empty()) return Status::InvalidArgument(path_ + ": DeleteMatching needs a non-empty filter");
  CompiledFilter where;
  MNEMO_RETURN_IF_ERROR(CompileFilter(filter, &where));
  auto collect = [&](std::vector<FactRecord>* found) -> Status {
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare(SelectRecordSql(true) + " WHERE 1" + where.sql + " ORDER BY id"));
    where.Bind(&s, 1);
    for (bool row = true;;) {
      MNEMO_RETURN_IF_ERROR(s.Next(&row));
      if (!row) return Status::OK();
      found->emplace_back();
      MNEMO_RETURN_IF_ERROR(ReadRecord(s, true, dim_, path_, &found->back()));
    }
  };
  return DeleteCollected(db_.get(), collect, deleted, last_seq, action);
}

Status FactDb::Get(int64_t id, bool with_entries, FactRecord* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(SelectRecordSql(with_entries) + " WHERE id = ?"));
  s.BindInt(1, id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound(path_ + ": no fact with id " + std::to_string(id));
  return ReadRecord(s, with_entries, dim_, path_, out);
}

Status FactDb::List(const ListOptions& options, std::vector<FactRecord>* out, int64_t* next_after_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options.limit < 1 || options.limit > kMaxListLimit) {
    return Status::InvalidArgument("list limit must be 1.." + std::to_string(kMaxListLimit) + ", not " +
                                   std::to_string(options.limit));
  }
  CompiledFilter where;
  MNEMO_RETURN_IF_ERROR(CompileFilter(options.filter, &where));
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare(SelectRecordSql(options.with_entries) + " WHERE id > ?" + where.sql + " ORDER BY id LIMIT ?"));
  s.BindInt(1, options.after_id);
  where.Bind(&s, 2);
  // One row beyond the page tells whether another page follows.
  s.BindInt(2 + static_cast<int>(where.args.size()), options.limit + 1);
  std::vector<FactRecord> page;
  bool more = false;
  for (bool row = true;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    if (static_cast<int64_t>(page.size()) == options.limit) {
      more = true;
      break;
    }
    page.emplace_back();
    MNEMO_RETURN_IF_ERROR(ReadRecord(s, options.with_entries, dim_, path_, &page.back()));
  }
  *next_after_id = more ? page.back().id : 0;
  *out = std::move(page);
  return Status::OK();
}

Status FactDb::Count(const FactFilter& filter, int64_t* count) {
  std::lock_guard<std::mutex> lock(mu_);
  CompiledFilter where;
  MNEMO_RETURN_IF_ERROR(CompileFilter(filter, &where));
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT count(*) FROM facts WHERE 1" + where.sql));
  where.Bind(&s, 1);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  *count = s.Int(0);
  return Status::OK();
}

Status FactDb::ForEach(bool with_entries, const std::function<Status(const FactRecord&)>& fn) {
  // fn runs under mu_ and inside one read transaction (a consistent snapshot), so it must not call back
  // into this FactDb.
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(SelectRecordSql(with_entries) + " ORDER BY id"));
  FactRecord r;
  for (bool row = true;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) return Status::OK();
    MNEMO_RETURN_IF_ERROR(ReadRecord(s, with_entries, dim_, path_, &r));
    MNEMO_RETURN_IF_ERROR(fn(r));
  }
}

Status FactDb::ChangesAfter(int64_t after_seq, std::vector<Change>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT seq, op, fact_id FROM changes WHERE seq > ? ORDER BY seq"));
  s.BindInt(1, after_seq);
  std::vector<Change> changes;
  for (bool row = true;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    Change c;
    c.seq = s.Int(0);
    const int64_t op = s.Int(1);
    if (op != static_cast<int64_t>(ChangeOp::kAdd) && op != static_cast<int64_t>(ChangeOp::kDelete)) {
      return Status::Corruption(path_ + ": change " + std::to_string(c.seq) + " has unknown op " + std::to_string(op));
    }
    c.op = static_cast<ChangeOp>(op);
    c.fact_id = s.Int(2);
    changes.push_back(c);
  }
  *out = std::move(changes);
  return Status::OK();
}

Status FactDb::LastSeq(int64_t* seq) {
  std::lock_guard<std::mutex> lock(mu_);
  // sqlite_sequence keeps the largest seq AUTOINCREMENT ever handed out, even after TruncateChanges has
  // removed every row, so LastSeq never goes backwards.
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0), "
                "coalesce((SELECT max(seq) FROM changes), 0))"));
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  *seq = s.Int(0);
  return Status::OK();
}

Status FactDb::QuickCheck(std::string* result) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("PRAGMA quick_check"));
  std::string all;
  for (;;) {
    bool row = false;
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    if (!all.empty()) all += "; ";
    all += s.Text(0);
  }
  *result = all;
  return Status::OK();
}

Status FactDb::TruncateChanges(int64_t up_to_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("DELETE FROM changes WHERE seq <= ?"));
  s.BindInt(1, up_to_seq);
  return s.Run();
}

Status FactDb::GetTombstone(int64_t id, Tombstone* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare("SELECT fact_id, deleted_seq, deleted_at_ms, entries FROM tombstones WHERE fact_id = ?"));
  s.BindInt(1, id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound(path_ + ": fact " + std::to_string(id) + " was never deleted");
  out->fact_id = s.Int(0);
  out->deleted_seq = s.Int(1);
  out->deleted_at_ms = s.Int(2);
  out->entries = s.Int(3);
  return Status::OK();
}

}  // namespace mnemo
