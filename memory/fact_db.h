// FactDb: the SQLite database that is the source of truth for runtime facts.
//
// A fact is a text (plus an optional client id and a metadata JSON object) and the datastore entries the
// language model derived from it: its token ids t[0..n) and, for every prefix t[0..i], the kNN key of
// that context (fp16, dim halves), which predicts t[i+1]. So a fact of n tokens has n - 1 entries. The
// keys are stored so that the in-memory index can be rebuilt without running the model again.
//
// Schema (format version 1; see docs/ARCHITECTURE.md):
//   meta(key TEXT PRIMARY KEY, value TEXT)
//   facts(id INTEGER PRIMARY KEY AUTOINCREMENT, pad BLOB, client_id TEXT, text TEXT, metadata TEXT,
//         created_seq INTEGER, created_at_ms INTEGER, tokens BLOB, keys BLOB)
//   (pad: page_size zero bytes, which push everything after it into the row's own overflow pages)
//   changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, op INTEGER, fact_id INTEGER)  -- ids only, no text
//   tombstones(fact_id INTEGER PRIMARY KEY, deleted_seq INTEGER, deleted_at_ms INTEGER, entries INTEGER)
// AUTOINCREMENT: a deleted fact's id is never handed out again, so an id names one fact forever.
//
// Durability: journal_mode=WAL, synchronous=FULL. Every write method is one transaction; when it returns
// OK the transaction has committed and the WAL has been fsynced, so the change survives a crash or power
// loss. Deletion leaves no copy of the fact's text, tokens or keys in the database files:
// secure_delete=ON overwrites freed content with zeros; b-tree rebalancing, which can leave stale copies
// of a moved cell in the unused space of live pages, only ever moves the leading pad of a fact row (the
// content lives in overflow pages); and every delete ends with wal_checkpoint(TRUNCATE), which copies the
// zeroed pages into the main file and empties the WAL that still held old page images. Client ids also
// live in an index, whose cells rebalancing may copy: they are labels, not fact content. (Blocks the file
// system frees are outside our reach.) If the checkpoint fails after the commit, Delete returns the error
// but still reports *deleted and *last_seq: the delete happened.
//
// Thread-safety: all methods may be called from any thread; an internal mutex serializes them. ForEach
// calls `fn` with the mutex held, so `fn` must not call back into the same FactDb. SetKeyDim must be
// called before the object is shared (key_dim() reads without the lock).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

class SqliteDb;  // memory/sqlite_db.h

struct NewFact {
  std::string text;
  std::string client_id;      // Optional; not unique (e.g. the user a group of facts belongs to).
  std::string metadata_json;  // "" or a JSON object, stored as given.
  std::vector<int32_t> tokens;  // n >= 2 token ids.
  std::vector<uint16_t> keys;   // (n - 1) * dim fp16 values, row-major.
};

struct FactRecord {
  int64_t id = 0;
  std::string text;
  std::string client_id;
  std::string metadata_json;
  int64_t created_seq = 0;     // The change that added it.
  int64_t created_at_ms = 0;   // Unix time in milliseconds.
  int64_t num_tokens = 0;
  // Filled only when entries are requested.
  std::vector<int32_t> tokens;
  std::vector<uint16_t> keys;
};

struct Tombstone {
  int64_t fact_id = 0;
  int64_t deleted_seq = 0;
  int64_t deleted_at_ms = 0;
  int64_t entries = 0;  // How many datastore entries the fact had.
};

// Selects facts; empty fields match everything. Both set: both must match.
struct FactFilter {
  std::string client_id;
  // metadata.<field> == value. field: letters, digits, '_' and '.' (nested objects); value: a JSON
  // scalar (string, number, true/false), compared with its JSON type ("1" does not match 1).
  std::string metadata_field;
  std::string metadata_value_json;
  bool empty() const { return client_id.empty() && metadata_field.empty(); }
};

struct ListOptions {
  FactFilter filter;
  int64_t after_id = 0;  // Paging: facts with id > after_id, ascending.
  int64_t limit = 100;   // 1..10000.
  bool with_entries = false;
};

enum class ChangeOp { kAdd = 1, kDelete = 2 };

struct Change {
  int64_t seq = 0;
  ChangeOp op = ChangeOp::kAdd;
  int64_t fact_id = 0;
};

// One entry of the state's action log: who did what to which ids, and when; never fact text, metadata
// values or keys. Fact adds and deletes are logged in the transaction that makes them, so the log and the
// facts never disagree; other actions (memories, base datastore documents, audits, verifications) are
// logged right after they succeed, so a crash in between can lose their entry but never invent one.
struct ActionRecord {
  int64_t seq = 0;                 // Set by the log: ascending, never reused.
  int64_t at_ms = 0;               // Set by the log: Unix time in milliseconds.
  std::string actor;               // The API key's name, "cli:<user>", or "local" (a server without keys).
  std::string action;              // e.g. "facts.add", "facts.delete", "facts.verify-deleted".
  std::vector<std::string> ids;    // What it acted on (fact ids in decimal, document ids, memory ids).
  std::string detail_json = "{}";  // A JSON object: counts, a verification's evidence (a deletion receipt).
};

// A page of the action log, oldest first.
struct ActionQuery {
  int64_t after_seq = 0;  // Entries with seq > after_seq.
  int64_t limit = 100;    // 1..1000.
  std::string action;     // When non-empty, only this action, or those under it ("facts" matches "facts.add").
  std::string id;         // When non-empty, only entries naming this id.
  std::string actor;      // When non-empty, only this actor.
};

class FactDb {
 public:
  // Opens (creating when absent) the database at `path`, sets the pragmas above and creates the schema.
  // IOError when SQLite cannot open it; Corruption when it is not a mnemo fact database or its format
  // version is newer than this build understands.
  static Status Open(const std::string& path, std::unique_ptr<FactDb>* out);
  // Opens an existing database for reading only (never writes, not even the schema or pragmas): what
  // `mnemo log` uses beside a running server. Writes through it fail. NotFound when the file is absent.
  static Status OpenForReading(const std::string& path, std::unique_ptr<FactDb>* out);
  ~FactDb();
  FactDb(const FactDb&) = delete;
  FactDb& operator=(const FactDb&) = delete;

  // Small key/value settings (model fingerprint, key dimension). NotFound for an absent key.
  Status GetMeta(const std::string& key, std::string* value);
  Status SetMeta(const std::string& key, const std::string& value);

  // Inserts every fact and one kAdd change per fact in a single transaction; ids (ascending, never
  // reused) are written to *ids and the seq of the last change to *last_seq. InvalidArgument (nothing
  // written) for a fact with fewer than 2 tokens, keys of the wrong size (needs `dim` from meta "dim"
  // via SetKeyDim), or metadata that is not a JSON object.
  // With `action`, the action log gets one entry for the batch (its ids the new ones) in the same
  // transaction. With `before_commit`, it is called with the new ids once the rows are written, before
  // the commit; its error rolls the transaction back (nothing is inserted) and is Insert's.
  Status Insert(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, int64_t* last_seq,
                const ActionRecord* action = nullptr,
                const std::function<Status(const std::vector<int64_t>&)>& before_commit = nullptr);

  // Deletes the listed facts that exist, in one transaction: the rows go, a kDelete change and a
  // tombstone are recorded per fact, then the WAL is checkpointed and truncated (see above). *deleted
  // receives the removed records with their entries (the caller removes them from its indexes) and
  // *last_seq the seq of the last change (unchanged when nothing matched). Absent ids are ignored.
  // With `action`, the action log gets one entry naming the deleted ids in the same transaction (none
  // when nothing matched).
  Status Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted, int64_t* last_seq,
                const ActionRecord* action = nullptr);
  // The same for every fact the (non-empty) filter matches; InvalidArgument for an empty filter.
  Status DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted, int64_t* last_seq,
                        const ActionRecord* action = nullptr);

  // Appends one entry to the action log in its own transaction; *seq (may be null) receives its seq.
  // InvalidArgument for an empty actor or action, or a detail that is not a JSON object. (fact_db_actions.cc)
  Status LogAction(const ActionRecord& action, int64_t* seq);
  // One page of the action log; *next_after_seq is the after_seq of the next page, 0 when this is the
  // last. InvalidArgument for a limit outside 1..1000.
  Status ListActions(const ActionQuery& query, std::vector<ActionRecord>* out, int64_t* next_after_seq);

  // NotFound when no fact has this id (never added, or deleted).
  Status Get(int64_t id, bool with_entries, FactRecord* out);
  // One page of facts matching options.filter; *next_after_id is the id to pass as after_id for the next
  // page, or 0 when this page is the last.
  Status List(const ListOptions& options, std::vector<FactRecord>* out, int64_t* next_after_id);
  Status Count(const FactFilter& filter, int64_t* count);
  // Every fact in ascending id order (start-up rebuilds, fsck). Stops at the first non-OK from fn.
  Status ForEach(bool with_entries, const std::function<Status(const FactRecord&)>& fn);

  // Changes with seq > after_seq, ascending (start-up replay after a snapshot).
  Status ChangesAfter(int64_t after_seq, std::vector<Change>* out);
  // The seq of the newest change, 0 when there is none.
  Status LastSeq(int64_t* seq);
  // Drops changes with seq <= up_to_seq (they are contained in a durable snapshot).
  Status TruncateChanges(int64_t up_to_seq);

  // SQLite's PRAGMA quick_check: *result is "ok" for a sound database, else the problems found.
  Status QuickCheck(std::string* result);

  // NotFound when `id` was never deleted (absent or still live).
  Status GetTombstone(int64_t id, Tombstone* out);

  // The key dimension every fact's keys must have; stored in meta "dim" on first call, and a different
  // value later is InvalidArgument.
  Status SetKeyDim(int dim);
  int key_dim() const { return dim_; }

  const std::string& path() const { return path_; }

 private:
  FactDb() = default;
  std::string path_;
  std::unique_ptr<SqliteDb> db_;  // The one connection; every use is under mu_.
  int dim_ = 0;
  int64_t page_size_ = 4096;  // Length of each row's leading zero pad (see fact_db.cc, Delete).
  bool has_actions_ = true;   // False for a database opened for reading that predates the action log.
  std::mutex mu_;
};

// True for a metadata field name FactFilter accepts.
bool IsValidMetadataField(const std::string& field);

}  // namespace mnemo
