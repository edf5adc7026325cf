#include "memory/fact_db.h"

#include <sqlite3.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>
#include <utility>

namespace mnemo {
namespace {

constexpr int kFormatVersion = 1;
constexpr int kBusyTimeoutMs = 5000;
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

int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Maps an SQLite result code to our codes: a damaged or foreign file is Corruption, an oversized value
// the caller passed is InvalidArgument, everything else (locks, full disk, I/O) is IOError.
Status SqlError(sqlite3* db, const std::string& path, const std::string& what, int rc) {
  std::string msg = path + ": " + what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(std::move(msg));
    case SQLITE_TOOBIG:
      return Status::InvalidArgument(std::move(msg));
    default:
      return Status::IOError(std::move(msg));
  }
}

bool ParseInt64(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

// Blobs are little-endian whatever the host, so a database file moves between machines.
template <typename T>
std::string ToLittleEndian(const std::vector<T>& values) {
  using U = std::make_unsigned_t<T>;
  std::string out(values.size() * sizeof(T), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const U v = static_cast<U>(values[i]);
    for (size_t b = 0; b < sizeof(T); ++b) out[i * sizeof(T) + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return out;
}

template <typename T>
bool FromLittleEndian(const std::string& bytes, std::vector<T>* out) {
  using U = std::make_unsigned_t<T>;
  if (bytes.size() % sizeof(T) != 0) return false;
  out->resize(bytes.size() / sizeof(T));
  for (size_t i = 0; i < out->size(); ++i) {
    U v = 0;
    for (size_t b = 0; b < sizeof(T); ++b) {
      v |= static_cast<U>(static_cast<U>(static_cast<unsigned char>(bytes[i * sizeof(T) + b])) << (8 * b));
    }
    (*out)[i] = static_cast<T>(v);
  }
  return true;
}

// A value bound to a filter placeholder.
struct SqlValue {
  enum class Type { kText, kInt, kReal } type = Type::kText;
  std::string text;
  int64_t i = 0;
  double d = 0;
};

// A prepared statement, finalized on destruction. Bind errors (e.g. SQLITE_TOOBIG) are remembered and
// reported by the next Next()/Run(), so call sites bind without checking each call.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path) : db_(db), path_(path) {}
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Status Prepare(const std::string& sql) {
    sql_ = sql;
    const int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt_, nullptr);
    return rc == SQLITE_OK ? Status::OK() : Error(rc);
  }

  void BindInt(int i, int64_t v) { Note(sqlite3_bind_int64(stmt_, i, v)); }
  void BindText(int i, const std::string& v) {
    Note(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  // Empty optional strings are stored as NULL: json_extract() fails on '' but yields NULL for NULL.
  void BindTextOrNull(int i, const std::string& v) {
    if (v.empty()) {
      Note(sqlite3_bind_null(stmt_, i));
    } else {
      BindText(i, v);
    }
  }
  void BindBlob(int i, const std::string& v) {
    Note(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT));
  }
  void BindValue(int i, const SqlValue& v) {
    switch (v.type) {
      case SqlValue::Type::kText: BindText(i, v.text); break;
      case SqlValue::Type::kInt: BindInt(i, v.i); break;
      case SqlValue::Type::kReal: Note(sqlite3_bind_double(stmt_, i, v.d)); break;
    }
  }

  // Steps once; *row says whether a row is available.
  Status Next(bool* row) {
    *row = false;
    if (bind_rc_ != SQLITE_OK) return Error(bind_rc_);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) {
      *row = true;
      return Status::OK();
    }
    return rc == SQLITE_DONE ? Status::OK() : Error(rc);
  }
  // Runs a statement to completion and resets it for the next bindings.
  Status Run() {
    bool row = true;
    while (row) MNEMO_RETURN_IF_ERROR(Next(&row));
    Reset();
    return Status::OK();
  }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = SQLITE_OK;
  }

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
  }
  std::string Blob(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
  }

 private:
  void Note(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  Status Error(int rc) const {
    return SqlError(db_, path_, "\"" + sql_.substr(0, 60) + (sql_.size() > 60 ? "...\"" : "\""), rc);
  }

  sqlite3* db_;
  const std::string& path_;
  std::string sql_;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = SQLITE_OK;
};

Status Exec(sqlite3* db, const std::string& path, const char* sql) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::OK() : SqlError(db, path, sql, rc);
}

// First column of the first row of `sql` ("" when it returns no row).
Status QueryText(sqlite3* db, const std::string& path, const std::string& sql, std::string* value, bool* found) {
  Statement s(db, path);
  MNEMO_RETURN_IF_ERROR(s.Prepare(sql));
  MNEMO_RETURN_IF_ERROR(s.Next(found));
  *value = *found ? s.Text(0) : std::string();
  return Status::OK();
}

// BEGIN IMMEDIATE takes the write lock up front, so a transaction that read state cannot later fail to
// upgrade. Rolls back on destruction unless committed; statements must be declared after it so that
// they are finalized first.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& path) : db_(db), path_(path) {}
  ~Transaction() {
    // An I/O error may already have rolled SQLite back; a second ROLLBACK would only fail.
    if (active_ && !sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Status Begin() {
    MNEMO_RETURN_IF_ERROR(Exec(db_, path_, "BEGIN IMMEDIATE"));
    active_ = true;
    return Status::OK();
  }
  Status Commit() {
    MNEMO_RETURN_IF_ERROR(Exec(db_, path_, "COMMIT"));
    active_ = false;
    return Status::OK();
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool active_ = false;
};

// A FactFilter as SQL: " AND ..." clauses and the values for their placeholders, in order.
struct CompiledFilter {
  std::string sql;
  std::vector<SqlValue> args;
  void Bind(Statement* s, int first) const {
    for (size_t i = 0; i < args.size(); ++i) s->BindValue(first + static_cast<int>(i), args[i]);
  }
};

SqlValue TextValue(std::string s) {
  SqlValue v;
  v.text = std::move(s);
  return v;
}

Status CompileFilter(const FactFilter& filter, CompiledFilter* out) {
  *out = CompiledFilter();
  if (!filter.client_id.empty()) {
    out->sql += " AND client_id = ?";
    out->args.push_back(TextValue(filter.client_id));
  }
  if (filter.metadata_field.empty()) {
    if (!filter.metadata_value_json.empty()) {
      return Status::InvalidArgument("metadata filter value " + filter.metadata_value_json + " has no field");
    }
    return Status::OK();
  }
  if (!IsValidMetadataField(filter.metadata_field)) {
    return Status::InvalidArgument("invalid metadata field \"" + filter.metadata_field +
                                   "\" (letters, digits, '_' and '.' between names)");
  }
  const auto value = nlohmann::json::parse(filter.metadata_value_json, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !(value.is_string() || value.is_number() || value.is_boolean())) {
    return Status::InvalidArgument("metadata filter value for \"" + filter.metadata_field +
                                   "\" must be a JSON string, number, true or false, not \"" +
                                   filter.metadata_value_json + "\"");
  }
  // json_extract() returns SQL values, which lose the JSON type (true and 1 both come back as 1), so
  // json_type() pins the type and the value compare runs only within it. JSON has one number type:
  // 1 matches 1.0.
  const SqlValue path = TextValue("$." + filter.metadata_field);
  if (value.is_boolean()) {
    out->sql += value.get<bool>() ? " AND json_type(metadata, ?) = 'true'" : " AND json_type(metadata, ?) = 'false'";
    out->args.push_back(path);
    return Status::OK();
  }
  SqlValue want;
  if (value.is_string()) {
    out->sql += " AND json_type(metadata, ?) = 'text'";
    want = TextValue(value.get<std::string>());
  } else {
    out->sql += " AND json_type(metadata, ?) IN ('integer', 'real')";
    // Integers beyond int64 (nlohmann parses positive ones as unsigned) compare as reals, as SQLite reads them.
    if (value.is_number_integer() && !(value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX)) {
      want.type = SqlValue::Type::kInt;
      want.i = value.get<int64_t>();
    } else {
      want.type = SqlValue::Type::kReal;
      want.d = value.get<double>();
    }
  }
  out->sql += " AND json_extract(metadata, ?) = ?";
  out->args.insert(out->args.end(), {path, path, want});
  return Status::OK();
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
Status CheckFormat(sqlite3* db, const std::string& path, bool* empty) {
  std::string value;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(QueryText(db, path, "SELECT count(*) FROM sqlite_master", &value, &found));
  *empty = value == "0";
  if (*empty) return Status::OK();
  MNEMO_RETURN_IF_ERROR(QueryText(db, path,
                                  "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                  "name IN ('meta', 'facts', 'changes', 'tombstones')",
                                  &value, &found));
  if (value != "4") return Status::Corruption(path + ": not a mnemo fact database (its tables are missing)");
  MNEMO_RETURN_IF_ERROR(
      QueryText(db, path, "SELECT value FROM meta WHERE key = 'format_version'", &value, &found));
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

// Copies the WAL into the main file and truncates it to zero bytes: after a delete the WAL's older
// frames still hold the page images with the deleted content.
Status CheckpointAndTruncateWal(sqlite3* db, const std::string& path) {
  Statement s(db, path);
  MNEMO_RETURN_IF_ERROR(s.Prepare("PRAGMA wal_checkpoint(TRUNCATE)"));
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row || s.Int(0) != 0) {
    return Status::IOError(path + ": WAL checkpoint did not complete (another connection reading?); deleted "
                           "content may remain in " + path + "-wal until the next checkpoint");
  }
  return Status::OK();
}

// The body of Delete and DeleteMatching. `collect` runs inside the transaction and lists the records to
// delete (with entries); an empty list ends the call without writing anything.
Status DeleteCollected(sqlite3* db, const std::string& path,
                       const std::function<Status(std::vector<FactRecord>*)>& collect,
                       std::vector<FactRecord>* deleted, int64_t* last_seq) {
  deleted->clear();
  std::vector<FactRecord> found;
  int64_t seq = 0;
  {
    Transaction txn(db, path);
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    MNEMO_RETURN_IF_ERROR(collect(&found));
    if (found.empty()) return Status::OK();
    Statement remove(db, path), change(db, path), tombstone(db, path);
    MNEMO_RETURN_IF_ERROR(remove.Prepare("DELETE FROM facts WHERE id = ?"));
    MNEMO_RETURN_IF_ERROR(change.Prepare("INSERT INTO changes(op, fact_id) VALUES(2, ?)"));
    MNEMO_RETURN_IF_ERROR(tombstone.Prepare(
        "INSERT OR REPLACE INTO tombstones(fact_id, deleted_seq, deleted_at_ms, entries) VALUES(?, ?, ?, ?)"));
    const int64_t now = NowMs();
    for (const FactRecord& r : found) {
      remove.BindInt(1, r.id);
      MNEMO_RETURN_IF_ERROR(remove.Run());
      change.BindInt(1, r.id);
      MNEMO_RETURN_IF_ERROR(change.Run());
      seq = sqlite3_last_insert_rowid(db);
      tombstone.BindInt(1, r.id);
      tombstone.BindInt(2, seq);
      tombstone.BindInt(3, now);
      tombstone.BindInt(4, r.num_tokens - 1);
      MNEMO_RETURN_IF_ERROR(tombstone.Run());
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
  return CheckpointAndTruncateWal(db, path);
}

}  // namespace

bool IsValidMetadataField(const std::string& field) {
  if (field.empty() || field.front() == '.' || field.back() == '.') return false;
  char prev = 0;
  for (char c : field) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

FactDb::~FactDb() {
  // Every Statement is finalized when its scope ends, so close cannot be refused as busy.
  if (db_ != nullptr) sqlite3_close(db_);
}

Status FactDb::Open(const std::string& path, std::unique_ptr<FactDb>* out) {
  std::unique_ptr<FactDb> f(new FactDb());
  f->path_ = path;
  // NOMUTEX: mu_ already serializes every use of the connection.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &f->db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    // ~FactDb closes the handle SQLite allocates even when opening fails.
    return Status::IOError(path + ": cannot open: " + (f->db_ ? sqlite3_errmsg(f->db_) : sqlite3_errstr(rc)));
  }
  sqlite3* db = f->db_;
  sqlite3_busy_timeout(db, kBusyTimeoutMs);

  // Check before the pragmas write anything: journal_mode=WAL would convert a foreign database.
  bool empty = false;
  MNEMO_RETURN_IF_ERROR(CheckFormat(db, path, &empty));

  std::string value;
  bool found = false;
  // A page size fixed at creation (WAL cannot change it later); the pad below is one page long.
  if (empty) MNEMO_RETURN_IF_ERROR(Exec(db, path, "PRAGMA page_size=4096"));
  MNEMO_RETURN_IF_ERROR(QueryText(db, path, "PRAGMA journal_mode=WAL", &value, &found));
  if (value != "wal") {
    return Status::IOError(path + ": cannot enable write-ahead logging (journal_mode is \"" + value + "\")");
  }
  MNEMO_RETURN_IF_ERROR(Exec(db, path, "PRAGMA synchronous=FULL"));
  // The no-trace guarantee for deleted facts rests on this one.
  MNEMO_RETURN_IF_ERROR(QueryText(db, path, "PRAGMA secure_delete=ON", &value, &found));
  if (value != "1") return Status::IOError(path + ": cannot enable secure_delete");

  if (empty) {
    {
      Transaction txn(db, path);
      MNEMO_RETURN_IF_ERROR(txn.Begin());
      // Another process may have created the schema since CheckFormat; the write lock settles it.
      MNEMO_RETURN_IF_ERROR(QueryText(db, path, "SELECT count(*) FROM sqlite_master", &value, &found));
      if (value == "0") {
        MNEMO_RETURN_IF_ERROR(Exec(db, path, kSchema));
        Statement s(db, path);
        MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
        s.BindText(1, kFormatVersionKey);
        s.BindText(2, std::to_string(kFormatVersion));
        MNEMO_RETURN_IF_ERROR(s.Run());
      }
      MNEMO_RETURN_IF_ERROR(txn.Commit());
    }
    MNEMO_RETURN_IF_ERROR(CheckFormat(db, path, &empty));
  }

  MNEMO_RETURN_IF_ERROR(QueryText(db, path, "SELECT value FROM meta WHERE key = 'dim'", &value, &found));
  if (found) {
    int64_t dim = 0;
    if (!ParseInt64(value, &dim) || dim <= 0 || dim > INT32_MAX) {
      return Status::Corruption(path + ": invalid key dimension \"" + value + "\" in meta");
    }
    f->dim_ = static_cast<int>(dim);
  }
  MNEMO_RETURN_IF_ERROR(QueryText(db, path, "PRAGMA page_size", &value, &found));
  if (!found || !ParseInt64(value, &f->page_size_) || f->page_size_ < 512) {
    return Status::Corruption(path + ": unexpected page size \"" + value + "\"");
  }
  *out = std::move(f);
  return Status::OK();
}

Status FactDb::GetMeta(const std::string& key, std::string* value) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
  MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
  s.BindText(1, kDimKey);
  s.BindText(2, std::to_string(dim));
  MNEMO_RETURN_IF_ERROR(s.Run());
  dim_ = dim;
  return Status::OK();
}

Status FactDb::Insert(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, int64_t* last_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  if (dim_ <= 0) return Status::FailedPrecondition(path_ + ": key dimension not set (call SetKeyDim before Insert)");
  // Validate the whole batch first, so that a bad fact leaves nothing half written.
  Statement json_valid(db_, path_);
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
    Transaction txn(db_, path_);
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    Statement change(db_, path_), fact(db_, path_), link(db_, path_);
    // The change comes first because the fact row records its seq; the change row is then pointed at
    // the new id (an update of a tiny row, instead of rewriting the fact with its blobs).
    MNEMO_RETURN_IF_ERROR(change.Prepare("INSERT INTO changes(op, fact_id) VALUES(1, NULL)"));
    MNEMO_RETURN_IF_ERROR(
        fact.Prepare("INSERT INTO facts(pad, client_id, text, metadata, created_seq, created_at_ms, tokens, keys) "
                     "VALUES(zeroblob(?), ?, ?, ?, ?, ?, ?, ?)"));
    MNEMO_RETURN_IF_ERROR(link.Prepare("UPDATE changes SET fact_id = ? WHERE seq = ?"));
    const int64_t now = NowMs();
    for (const NewFact& f : facts) {
      MNEMO_RETURN_IF_ERROR(change.Run());
      seq = sqlite3_last_insert_rowid(db_);
      fact.BindInt(1, page_size_);
      fact.BindTextOrNull(2, f.client_id);
      fact.BindText(3, f.text);
      fact.BindTextOrNull(4, f.metadata_json);
      fact.BindInt(5, seq);
      fact.BindInt(6, now);
      fact.BindBlob(7, ToLittleEndian(f.tokens));
      fact.BindBlob(8, ToLittleEndian(f.keys));
      MNEMO_RETURN_IF_ERROR(fact.Run());
      const int64_t id = sqlite3_last_insert_rowid(db_);
      new_ids.push_back(id);
      link.BindInt(1, id);
      link.BindInt(2, seq);
      MNEMO_RETURN_IF_ERROR(link.Run());
    }
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  *ids = std::move(new_ids);
  *last_seq = seq;
  return Status::OK();
}

Status FactDb::Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted, int64_t* last_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto collect = [&](std::vector<FactRecord>* found) -> Status {
    Statement s(db_, path_);
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
  return DeleteCollected(db_, path_, collect, deleted, last_seq);
}

Status FactDb::DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted, int64_t* last_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  // An empty filter would delete everything: too easy to reach by accident (an unset request field).
  if (filter.empty()) return Status::InvalidArgument(path_ + ": DeleteMatching needs a non-empty filter");
  CompiledFilter where;
  MNEMO_RETURN_IF_ERROR(CompileFilter(filter, &where));
  auto collect = [&](std::vector<FactRecord>* found) -> Status {
    Statement s(db_, path_);
    MNEMO_RETURN_IF_ERROR(s.Prepare(SelectRecordSql(true) + " WHERE 1" + where.sql + " ORDER BY id"));
    where.Bind(&s, 1);
    for (bool row = true;;) {
      MNEMO_RETURN_IF_ERROR(s.Next(&row));
      if (!row) return Status::OK();
      found->emplace_back();
      MNEMO_RETURN_IF_ERROR(ReadRecord(s, true, dim_, path_, &found->back()));
    }
  };
  return DeleteCollected(db_, path_, collect, deleted, last_seq);
}

Status FactDb::Get(int64_t id, bool with_entries, FactRecord* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
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
  Statement s(db_, path_);
  MNEMO_RETURN_IF_ERROR(s.Prepare("DELETE FROM changes WHERE seq <= ?"));
  s.BindInt(1, up_to_seq);
  return s.Run();
}

Status FactDb::GetTombstone(int64_t id, Tombstone* out) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, path_);
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
