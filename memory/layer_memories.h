// LayerMemories: the named key-value memories of a state whose model has a memorizing layer (lm/gpt.h,
// Wu et al. 2022), durable in SQLite (<state>/memories.db) and served from KvRings (memory/kv_ring.h).
//
// A memory reads documents: each document's (key, value) pairs at the memorizing layer, one per token and
// head, are appended in reading order. The pairs are computed by the caller (retriever/state_service.h
// runs the model); here they are stored and searched. A memory has a capacity: a FIFO ring of `capacity`
// tokens (the paper's memory: the oldest tokens leave the ring as new ones are read) or 0, unbounded.
//
// Every stored token carries the tag document_id * 2^32 + position (kDocumentTagShift), so a retrieved
// pair names its document and position, and a document's tokens are one tag range.
//
// The database is the source of truth, the rings are derived:
//   meta(key TEXT PRIMARY KEY, value TEXT)             format_version, heads, head_dim
//   memories(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, capacity INTEGER, created_at_ms INTEGER)
//   documents(id INTEGER PRIMARY KEY AUTOINCREMENT, pad BLOB, memory_id INTEGER, metadata TEXT,
//             created_at_ms INTEGER, num_tokens INTEGER, text TEXT, tokens BLOB, keys BLOB, vals BLOB)
//   tombstones(document_id INTEGER PRIMARY KEY, memory_id INTEGER, deleted_at_ms INTEGER, tokens INTEGER)
//   memory_tombstones(memory_id INTEGER PRIMARY KEY, deleted_at_ms INTEGER, documents INTEGER)
// keys and vals are little-endian fp32 [heads, num_tokens, head_dim]; tokens int32. Deletion leaves no
// copy in the files by the FactDb recipe (memory/fact_db.h): secure_delete, a one-page zero pad that puts
// each row's content in overflow pages of its own, and a WAL checkpoint with truncation after each delete.
//
// Forgetting and deletion. A FIFO memory forgets what leaves its ring: no search sees it again. The
// database keeps every document until it is deleted, so that deleting one leaves the memory exactly as a
// memory that never read it: the ring is then rebuilt from the remaining documents' last `capacity`
// tokens, which may bring back older tokens the deleted one had pushed out, as they would be had it never
// been read. (Unbounded memories remove the document's tag range in place: KvRing::RemoveTags, exact.)
// Deleting a document is how its content leaves the state.
//
// Durability: each write is one SQLite transaction (WAL, synchronous=FULL); when a call returns OK it has
// committed, and Open rebuilds every ring from the database, so an acknowledged write survives a crash.
//
// Ring snapshots. Rebuilding a large ring costs about 30 us per token (reading and decoding the pairs,
// assigning IVF lists), so a ring of at least `snapshot_from` tokens is also saved to
// <state dir>/memory-rings/<id>.ring (KvRing::Save, written atomically) after Open rebuilt it and, for
// rings changed since, when the LayerMemories is destroyed (a clean shutdown). A snapshot names the
// database state it was taken at: the memory's generation, a random value the database stores and every
// write to the memory replaces in its own transaction (so a restored backup or a new database never
// matches), with its document and tombstone counts, and the ring's shape and centroids. Open uses it only
// when all of these match and its checksum holds, and otherwise rebuilds from the database and removes it;
// a ring that failed to follow a committed write is never saved. The database stays the source of truth: a
// snapshot only ever holds documents the database holds. Deleting a document or a memory removes that
// memory's snapshot (unlink and directory fsync) before the delete commits, so no file holds a deleted
// document's pairs once it is acknowledged, even after a crash right after the commit (the blocks an unlink frees are not overwritten, as for the fact store's
// snapshots); the next open rebuilds and snapshots again.
//
// Thread-safety: every method may be called from any thread. Writes are serialized; searches (through
// Reader) run concurrently with each other and take a memory's lock per search, so a write waits at most
// one search, and a search after a delete returns never sees the deleted document.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lm/kv_memory.h"
#include "util/status.h"

namespace mnemo {

class SqliteDb;
class KvRing;

inline constexpr int kDocumentTagShift = 32;
inline int64_t DocumentTag(int64_t document_id, int64_t position) {
  return (document_id << kDocumentTagShift) + position;
}
inline int64_t TagDocument(int64_t tag) { return tag >> kDocumentTagShift; }
inline int64_t TagPosition(int64_t tag) { return tag & ((int64_t{1} << kDocumentTagShift) - 1); }

struct LayerMemoriesOptions {
  int64_t heads = 0, head_dim = 0;   // The memorizing layer's shape (checked against the database's).
  int64_t max_document_tokens = 65536;  // Longer documents are InvalidArgument.
  int64_t max_memories = 1024;
  // IVF search for large memories (memory/kv_ring.h KvRingOptions): the model's per-head centroids
  // [heads, lists, head_dim] (lm/memory_scorer.h LoadMemoryIndex); empty: exact search only. The
  // centroids belong to the model, so deletion stays exact under IVF.
  std::vector<float> centroids;
  int64_t lists = 0;
  int64_t nprobe = 8;
  int64_t ivf_from = 16384;
  // Rings of at least this many tokens are snapshotted (see "Ring snapshots" above); 0: never.
  int64_t snapshot_from = 16384;
  // false: snapshots are used when current but never written or removed (an open that only checks).
  bool keep_snapshots = true;
};

struct MemoryInfo {
  int64_t id = 0;
  std::string name;
  int64_t capacity = 0;          // 0: unbounded
  int64_t created_at_ms = 0;
  int64_t documents = 0;         // stored
  int64_t stored_tokens = 0;     // tokens of the stored documents
  int64_t resident_tokens = 0;   // tokens in the ring (what searches see)
};

struct MemoryDocument {
  int64_t id = 0;
  int64_t memory_id = 0;
  std::string metadata_json;
  std::string text;              // only when asked for
  int64_t created_at_ms = 0;
  int64_t tokens = 0;
  int64_t resident_tokens = 0;   // of its tokens, those still in the ring
};

struct NewMemoryDocument {
  std::string text;
  std::string metadata_json;     // "" or a JSON object
  std::vector<int32_t> tokens;
  std::vector<float> keys, values;  // [heads, tokens, head_dim] each
};

struct MemoryDocumentTombstone {
  int64_t document_id = 0, memory_id = 0, deleted_at_ms = 0, tokens = 0;
};

class LayerMemories {
 public:
  // Opens (creating when absent) the database at `path` and rebuilds every memory's ring from it.
  // InvalidArgument when the database holds pairs of another shape; Corruption for a foreign file.
  static Status Open(const std::string& path, const LayerMemoriesOptions& options, std::unique_ptr<LayerMemories>* out);
  ~LayerMemories();

  const LayerMemoriesOptions& options() const { return options_; }
  const std::string& path() const { return path_; }

  // InvalidArgument for a negative capacity, a name over 256 bytes, or more than max_memories memories.
  Status Create(const std::string& name, int64_t capacity, MemoryInfo* out);
  // NotFound for an unknown (or deleted) id.
  Status Get(int64_t memory_id, MemoryInfo* out) const;
  Status List(std::vector<MemoryInfo>* out) const;
  // Deletes the memory and every document it read; *documents (may be null) gets their count.
  Status Delete(int64_t memory_id, int64_t* documents);

  // Appends the document's pairs after every earlier document (one transaction; the ring follows).
  // *evicted (may be null): tokens that left a FIFO ring because of it. InvalidArgument (nothing written)
  // for an empty or oversized document, pairs of the wrong size, or metadata that is not a JSON object.
  Status AddDocument(int64_t memory_id, const NewMemoryDocument& doc, MemoryDocument* out, int64_t* evicted);
  // NotFound when the memory or document does not exist (or the document belongs to another memory).
  Status GetDocument(int64_t memory_id, int64_t document_id, bool with_text, MemoryDocument* out) const;
  // One page of the memory's documents with id > after_id, ascending; *next_after_id 0 when last.
  Status ListDocuments(int64_t memory_id, int64_t after_id, int64_t limit, std::vector<MemoryDocument>* out,
                       int64_t* next_after_id) const;
  // Deletes one document; *deleted (may be null) gets what it was (without text).
  Status DeleteDocument(int64_t memory_id, int64_t document_id, MemoryDocument* deleted);
  // NotFound when `document_id` was never deleted.
  Status GetTombstone(int64_t document_id, MemoryDocumentTombstone* out) const;
  // The document's tokens and pairs as stored (verification, tests). NotFound when absent.
  Status GetDocumentPairs(int64_t document_id, std::vector<int32_t>* tokens, std::vector<float>* keys,
                          std::vector<float>* values) const;

  // The facts memory: an unbounded memory named "facts" that holds one document per runtime fact (metadata
  // {"fact_id": N}), kept in step with the fact store by retriever/state_service.h. Clients read it like
  // any memory but cannot add to it, delete it or delete from it (FailedPrecondition): it follows
  // /v1/facts. *id 0 when it does not exist and `create` is false.
  Status FactsMemory(bool create, int64_t* id);
  int64_t facts_memory_id() const;
  // Adds the facts' documents to the facts memory in one transaction (docs[i] for fact_ids[i]; their
  // metadata is set here), or deletes the facts memory's documents of a fact.
  Status AddFactDocuments(const std::vector<int64_t>& fact_ids, std::vector<NewMemoryDocument>* docs);
  Status DeleteFactDocuments(int64_t fact_id, int64_t* deleted);
  // Every (document id, fact id) of the facts memory, ascending.
  Status FactDocuments(std::vector<std::pair<int64_t, int64_t>>* out) const;

  // A read-only view of one memory for the model (lm/kv_memory.h, one lane): each Search takes the
  // memory's lock; Append is refused (FailedPrecondition). It stays valid after the memory is deleted
  // (it then holds nothing). NotFound for an unknown id.
  Status Reader(int64_t memory_id, std::unique_ptr<KvMemory>* out) const;

  // The memory as rebuilt from the database alone (a standalone ring; verification compares it with the
  // served one). NotFound for an unknown id.
  Status RebuiltReader(int64_t memory_id, std::unique_ptr<KvMemory>* out) const;
  // How many of the n keys (head 0's, [n, head_dim]) the memory's ring holds, bit for bit.
  Status CountHeldKeys(int64_t memory_id, const float* keys, int64_t n, int64_t* held) const;
  // The same beyond what a ring rebuilt from the stored documents holds: a key of a deleted document
  // that a live one shares (the same leading tokens give the same keys) is not a trace of it.
  Status CountKeysBeyondStored(int64_t memory_id, const float* keys, int64_t n, int64_t* beyond) const;
  // Whether any stored document's text, keys or values contain `bytes` (a deleted document's text or key
  // bytes found in the files are a trace only when no live document holds them too).
  Status StoredDocumentsContain(const std::string& bytes, bool* found) const;

  // Structural evidence about a deleted document: whether a row, a tag in the ring, or its tombstone exist.
  struct Traces {
    bool tombstone = false;
    bool row = false;
    int64_t ring_tokens = 0;    // tokens of the document in the memory's ring
    bool ring_matches_rebuild = false;  // the ring equals one rebuilt from the database
  };
  Status FindTraces(int64_t memory_id, int64_t document_id, Traces* out) const;

  // PRAGMA quick_check of the database, and every ring against a rebuild from it (fsck).
  Status Check(std::string* problems) const;
  // The snapshot file of a memory's ring (it may not exist), and how many rings Open restored from one.
  std::string RingSnapshotPath(int64_t memory_id) const;
  int64_t rings_from_snapshots() const { return rings_from_snapshots_; }

 private:
  struct Entry;
  class ReaderImpl;
  LayerMemories() = default;
  std::shared_ptr<Entry> Find(int64_t memory_id) const;
  // Appends the documents in order, in one transaction.
  Status AddDocumentImpl(int64_t memory_id, const std::vector<const NewMemoryDocument*>& docs,
                         std::vector<MemoryDocument>* out, int64_t* evicted);
  Status DeleteDocumentImpl(int64_t memory_id, int64_t document_id, MemoryDocument* deleted);
  Status RefuseFactsMemory(int64_t memory_id, const char* what) const;
  // Builds a ring holding the memory's documents as a memory that read them in order would (caller holds mu_).
  Status BuildRing(int64_t memory_id, int64_t capacity, std::unique_ptr<KvRing>* out) const;
  // What a snapshot of the memory's ring must match: the database state and the ring's shape (caller
  // holds mu_).
  Status RingStamp(const MemoryInfo& info, std::string* stamp) const;
  // Restores the ring from its snapshot when the snapshot is current and whole; otherwise *loaded is false
  // and any snapshot file is removed (caller holds mu_).
  Status LoadRingSnapshot(const MemoryInfo& info, std::unique_ptr<KvRing>* ring, bool* loaded) const;
  // Writes the snapshot of a ring of at least snapshot_from tokens (caller holds mu_); *written says
  // whether it did.
  Status WriteRingSnapshot(Entry& entry, bool* written) const;
  // Removes the memory's snapshot durably, before a delete commits (caller holds mu_).
  Status RemoveRingSnapshot(Entry* entry) const;

  std::string path_;
  LayerMemoriesOptions options_;
  std::unique_ptr<SqliteDb> db_;
  mutable std::mutex mu_;  // the connection and `memories_`; writes hold it throughout
  std::map<int64_t, std::shared_ptr<Entry>> memories_;
  int64_t page_size_ = 4096;
  int64_t facts_memory_ = 0;  // guarded by mu_ (0: none yet)
  int64_t rings_from_snapshots_ = 0;  // set by Open
};

}  // namespace mnemo
