// SqliteDb, Statement, Transaction: the SQLite layer under FactDb. It knows nothing of facts: it owns one
// connection (open, pragmas, WAL checkpoints, close), wraps prepared statements (binding, stepping, reading
// columns) and BEGIN IMMEDIATE transactions, and turns SQLite's result codes into Status.
//
// Errors: a damaged or foreign file is Corruption, a value too large for SQLite (SQLITE_TOOBIG) is
// InvalidArgument, everything else (locks, full disk, I/O) is IOError. Messages name the file and the
// statement (its first 60 characters).
//
// Internal to memory/. SQLite's types are only forward-declared here, so fact_db.h, which holds a SqliteDb
// through a pointer, shows none of them to the rest of the tree.
//
// Thread-safety: none. The connection is opened with SQLITE_OPEN_NOMUTEX, so its owner serializes every
// use of it and of its statements (FactDb holds its mutex around each call).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "util/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace mnemo {

class SqliteDb {
 public:
  // Opens (creating when absent) the database at `path` for reading and writing, with a busy timeout of
  // 5 s for locks held by other connections. IOError when SQLite cannot open it. Sets no pragma: an owner
  // that must not modify a foreign file checks it first (journal_mode=WAL would convert it).
  // With read_only, the file must exist and is never written (SQLITE_OPEN_READONLY).
  static Status Open(const std::string& path, std::unique_ptr<SqliteDb>* out, bool read_only = false);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // journal_mode=WAL with synchronous=FULL (a commit returns once the WAL is fsynced, so it survives a
  // crash or power loss) and secure_delete=ON (SQLite overwrites the content it frees with zeros).
  // IOError when SQLite refuses write-ahead logging or secure_delete.
  Status EnableDurableWalAndSecureDelete();

  // Copies the WAL into the main file and truncates it to zero bytes (PRAGMA wal_checkpoint(TRUNCATE)):
  // after a delete the WAL's older frames still hold the page images with the deleted content. IOError
  // when the checkpoint cannot complete (another connection reading).
  Status CheckpointAndTruncateWal();

  // Runs `sql` (one or more statements; rows they return are ignored).
  Status Exec(const char* sql);
  // First column of the first row of `sql` as text; *found says whether there was a row ("" when not).
  Status QueryText(const std::string& sql, std::string* value, bool* found);
  // The rowid of the last row inserted through this connection.
  int64_t LastInsertRowid() const;

  const std::string& path() const { return path_; }

 private:
  friend class Statement;
  friend class Transaction;
  SqliteDb() = default;

  std::string path_;
  sqlite3* db_ = nullptr;
};

// A value bound to a placeholder whose type is known only at run time (e.g. a filter's JSON scalar).
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
  explicit Statement(SqliteDb* db) : db_(db) {}
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Status Prepare(const std::string& sql);

  void BindInt(int i, int64_t v);
  void BindText(int i, const std::string& v);
  // Empty optional strings are stored as NULL: json_extract() fails on '' but yields NULL for NULL.
  void BindTextOrNull(int i, const std::string& v);
  void BindBlob(int i, const std::string& v);
  void BindValue(int i, const SqlValue& v);

  // Steps once; *row says whether a row is available.
  Status Next(bool* row);
  // Runs a statement to completion and resets it for the next bindings.
  Status Run();
  void Reset();

  // Columns of the current row; NULL reads as 0 or "".
  int64_t Int(int col) const;
  std::string Text(int col) const;
  std::string Blob(int col) const;

 private:
  void Note(int rc);
  Status Error(int rc) const;

  SqliteDb* db_;
  std::string sql_;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = 0;  // SQLITE_OK (sqlite_db.cc checks the value)
};

// BEGIN IMMEDIATE takes the write lock up front, so a transaction that read state cannot later fail to
// upgrade. Rolls back on destruction unless committed; statements must be declared after it so that
// they are finalized first.
class Transaction {
 public:
  explicit Transaction(SqliteDb* db) : db_(db) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  Status Begin();
  Status Commit();

 private:
  SqliteDb* db_;
  bool active_ = false;
};

// Wall-clock time, Unix milliseconds (the databases' created_at / deleted_at columns).
int64_t UnixTimeMs();

// Blobs are little-endian whatever the host, so a database file moves between machines.
template <typename T>
std::string ToLittleEndian(const T* values, size_t n) {
  using U = std::make_unsigned_t<std::conditional_t<std::is_floating_point_v<T>,
                                                    std::conditional_t<sizeof(T) == 4, int32_t, int64_t>, T>>;
  std::string out(n * sizeof(T), '\0');
  for (size_t i = 0; i < n; ++i) {
    U v;
    std::memcpy(&v, &values[i], sizeof(T));
    for (size_t b = 0; b < sizeof(T); ++b) out[i * sizeof(T) + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return out;
}
template <typename T>
std::string ToLittleEndian(const std::vector<T>& values) {
  return ToLittleEndian(values.data(), values.size());
}

// False when the blob's size is not a multiple of sizeof(T).
template <typename T>
bool FromLittleEndian(const std::string& bytes, std::vector<T>* out) {
  using U = std::make_unsigned_t<std::conditional_t<std::is_floating_point_v<T>,
                                                    std::conditional_t<sizeof(T) == 4, int32_t, int64_t>, T>>;
  if (bytes.size() % sizeof(T) != 0) return false;
  out->resize(bytes.size() / sizeof(T));
  for (size_t i = 0; i < out->size(); ++i) {
    U v = 0;
    for (size_t b = 0; b < sizeof(T); ++b) {
      v |= static_cast<U>(static_cast<U>(static_cast<unsigned char>(bytes[i * sizeof(T) + b])) << (8 * b));
    }
    std::memcpy(&(*out)[i], &v, sizeof(T));
  }
  return true;
}

}  // namespace mnemo
