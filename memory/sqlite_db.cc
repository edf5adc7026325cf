// The SQLite layer under FactDb (see sqlite_db.h): connection, pragmas, statements, transactions, and the
// mapping of SQLite result codes to Status.
#include "memory/sqlite_db.h"

#include <chrono>

#include <sqlite3.h>

#include <utility>

namespace mnemo {
namespace {

static_assert(SQLITE_OK == 0, "Statement::bind_rc_ starts at SQLITE_OK");

constexpr int kBusyTimeoutMs = 5000;

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

}  // namespace

Status SqliteDb::Open(const std::string& path, std::unique_ptr<SqliteDb>* out, bool read_only) {
  std::unique_ptr<SqliteDb> db(new SqliteDb());
  db->path_ = path;
  // NOMUTEX: the owner already serializes every use of the connection (see sqlite_db.h).
  const int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db->db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    // ~SqliteDb closes the handle SQLite allocates even when opening fails.
    return Status::IOError(path + ": cannot open: " + (db->db_ ? sqlite3_errmsg(db->db_) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db->db_, kBusyTimeoutMs);
  *out = std::move(db);
  return Status::OK();
}

SqliteDb::~SqliteDb() {
  // Every Statement is finalized when its scope ends, so close cannot be refused as busy.
  if (db_ != nullptr) sqlite3_close(db_);
}

Status SqliteDb::EnableDurableWalAndSecureDelete() {
  std::string value;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(QueryText("PRAGMA journal_mode=WAL", &value, &found));
  if (value != "wal") {
    return Status::IOError(path_ + ": cannot enable write-ahead logging (journal_mode is \"" + value + "\")");
  }
  MNEMO_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
  MNEMO_RETURN_IF_ERROR(QueryText("PRAGMA secure_delete=ON", &value, &found));
  if (value != "1") return Status::IOError(path_ + ": cannot enable secure_delete");
  return Status::OK();
}

Status SqliteDb::CheckpointAndTruncateWal() {
  Statement s(this);
  MNEMO_RETURN_IF_ERROR(s.Prepare("PRAGMA wal_checkpoint(TRUNCATE)"));
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row || s.Int(0) != 0) {
    return Status::IOError(path_ + ": WAL checkpoint did not complete (another connection reading?); deleted "
                           "content may remain in " + path_ + "-wal until the next checkpoint");
  }
  return Status::OK();
}

Status SqliteDb::Exec(const char* sql) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::OK() : SqlError(db_, path_, sql, rc);
}

Status SqliteDb::QueryText(const std::string& sql, std::string* value, bool* found) {
  Statement s(this);
  MNEMO_RETURN_IF_ERROR(s.Prepare(sql));
  MNEMO_RETURN_IF_ERROR(s.Next(found));
  *value = *found ? s.Text(0) : std::string();
  return Status::OK();
}

int64_t SqliteDb::LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }

Statement::~Statement() { sqlite3_finalize(stmt_); }

Status Statement::Prepare(const std::string& sql) {
  sql_ = sql;
  const int rc = sqlite3_prepare_v2(db_->db_, sql.c_str(), -1, &stmt_, nullptr);
  return rc == SQLITE_OK ? Status::OK() : Error(rc);
}

void Statement::BindInt(int i, int64_t v) { Note(sqlite3_bind_int64(stmt_, i, v)); }

void Statement::BindText(int i, const std::string& v) {
  Note(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

void Statement::BindTextOrNull(int i, const std::string& v) {
  if (v.empty()) {
    Note(sqlite3_bind_null(stmt_, i));
  } else {
    BindText(i, v);
  }
}

void Statement::BindBlob(int i, const std::string& v) {
  Note(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT));
}

void Statement::BindValue(int i, const SqlValue& v) {
  switch (v.type) {
    case SqlValue::Type::kText: BindText(i, v.text); break;
    case SqlValue::Type::kInt: BindInt(i, v.i); break;
    case SqlValue::Type::kReal: Note(sqlite3_bind_double(stmt_, i, v.d)); break;
  }
}

Status Statement::Next(bool* row) {
  *row = false;
  if (bind_rc_ != SQLITE_OK) return Error(bind_rc_);
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) {
    *row = true;
    return Status::OK();
  }
  return rc == SQLITE_DONE ? Status::OK() : Error(rc);
}

Status Statement::Run() {
  bool row = true;
  while (row) MNEMO_RETURN_IF_ERROR(Next(&row));
  Reset();
  return Status::OK();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_rc_ = SQLITE_OK;
}

int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::Text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
}

std::string Statement::Blob(int col) const {
  const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return p ? std::string(p, sqlite3_column_bytes(stmt_, col)) : std::string();
}

void Statement::Note(int rc) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

Status Statement::Error(int rc) const {
  return SqlError(db_->db_, db_->path_, "\"" + sql_.substr(0, 60) + (sql_.size() > 60 ? "...\"" : "\""), rc);
}

Transaction::~Transaction() {
  // An I/O error may already have rolled SQLite back; a second ROLLBACK would only fail.
  if (active_ && !sqlite3_get_autocommit(db_->db_)) sqlite3_exec(db_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

Status Transaction::Begin() {
  MNEMO_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  active_ = true;
  return Status::OK();
}

Status Transaction::Commit() {
  MNEMO_RETURN_IF_ERROR(db_->Exec("COMMIT"));
  active_ = false;
  return Status::OK();
}

int64_t UnixTimeMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace mnemo
