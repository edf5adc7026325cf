// FactShard: one shard's share of a state's facts, when the state's base datastore is sharded
// (datastore_shards.h). Fact f lives on shard FactShardOf(f, N) = f mod N.
//
// The state's facts.db stays the catalogue and the source of truth: every fact's text, metadata, tokens
// and keys, the tombstones and the action log, on rank 0. A shard holds what its searches need: per fact
// the values (tokens[1..]) and fp16 keys, durable in <state>/fact-shards/shard-<s>/entries.db, and its
// committed facts indexed in a FactSegment made from the set's trained structures (trained.faiss), so a
// fact entry is found as in one process's segment and a query's top k over the shards, merged by
// (distance, entry), is the one process's top k.
//
// Writes come from rank 0 (FactStore, fact_store_shards.cc) under its write lock:
//   add     Prepare on the owning shards (rows written durably, not searchable) inside the catalogue's
//           transaction; the catalogue commits; then Commit (indexed, searchable), then the client's
//           acknowledgement. A failed prepare rolls the catalogue back: nothing is added.
//   delete  the catalogue commits the tombstone; then Drop on the owning shards (rows deleted and scrubbed,
//           entries out of the index), then the acknowledgement.
// A shard that missed a commit or a drop (stalled or dead) is brought in line before any search or write
// uses it again: rank 0 lists the shard's rows, drops those the catalogue does not hold as live, commits
// the live ones held prepared and sends the live ones missing (FactStore::SyncFactShards). The same runs
// at every open, so restarting the job recovers every shard from its entries.db and the catalogue.
//
// Start-up: the share writes its index to segment-<version>.idx when it closes (version: the changes
// of its committed rows, counted in entries.db) and the next open loads it when the version still
// matches and it holds exactly the committed rows' entries; otherwise the rows are encoded again.
//
// No trace after a drop: entries.db takes the catalogue's measures (fact_db.cc): WAL with
// synchronous=FULL, secure_delete, a zero pad one page long leading every row (its blobs live in overflow
// pages that the delete zeroes), and a WAL checkpoint with truncation after each drop. A drop (or a
// rewrite of a committed fact) first removes the index snapshot, durably.
//
// Wire: rank 0 encodes a request (the Shard* functions below), DatastoreShards::FactCall carries it to
// the shard (a direct call in one process, MPI bytes across processes) and FactShard::Handle answers.
//
// Thread-safety: searches run concurrently with each other; everything else is exclusive.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "memory/fact_db.h"
#include "memory/knn_memory.h"
#include "util/status.h"

namespace mnemo {

class DatastoreShards;
class FactSegment;
class SqliteDb;
class StateLock;
class VectorIndex;

inline int FactShardOf(int64_t fact_id, int shards) { return static_cast<int>(fact_id % shards); }
// <state>/fact-shards/shard-<s>
std::string FactShardDir(const std::string& state_dir, int shard);

struct FactShardRow {
  int64_t id = 0, entries = 0;
  bool committed = false;
};

class FactShard {
 public:
  // Opens (creating unless read_only) the share at `dir`; its committed rows are indexed in id order.
  // `trained` is the set's empty index with the trained structures. read_only: never writes (an absent
  // share is empty) and writes are FailedPrecondition.
  static Status Open(const std::string& dir, const VectorIndex& trained, int dim, bool read_only,
                     std::unique_ptr<FactShard>* out);
  ~FactShard();

  // Writes the facts' rows (id, values, keys) durably, not yet searchable. A fact already held is
  // replaced. InvalidArgument for keys of another dimension.
  Status Prepare(const std::vector<FactRecord>& facts);
  // Makes prepared facts searchable (ids not held prepared are ignored).
  Status Commit(const std::vector<int64_t>& ids);
  // Deletes the facts' rows and index entries (absent ids are ignored) and scrubs the files.
  Status Drop(const std::vector<int64_t>& ids);
  Status List(std::vector<FactShardRow>* out) const;
  // Whether the share holds a row of `id`, and whether any of its entries is indexed (in memory or in
  // an index snapshot on disk).
  Status Holds(int64_t id, int64_t entries, bool* row, bool* indexed) const;
  // SQLite's quick_check and the index against the rows: "ok", or what differs.
  Status Check(std::string* result) const;
  // Each query's k nearest committed entries by (index distance, entry), padded with entry -1; with
  // exact, *exact_out their exact distances (FactSegment::SquaredDistance), else it is left empty.
  Status Search(const float* queries, int64_t n, int k, int nprobe, bool exact, std::vector<Neighbor>* out,
                std::vector<float>* exact_out) const;
  int64_t entries() const;
  // Whether Open took the index from its snapshot (segment-<version>.idx) rather than encoding the rows.
  bool loaded_snapshot() const { return loaded_snapshot_; }

  // Answers one encoded request (below) into *reply.
  Status Handle(const std::string& request, std::string* reply);

 private:
  FactShard();
  Status IndexRows(const std::vector<int64_t>& ids);  // callers hold mu_ exclusively
  // After the index failed to follow a committed change (`cause`): builds it again from the committed
  // rows, or marks the share broken (searches and listings fail). Returns `cause`. Callers hold mu_.
  Status ReindexLocked(const Status& cause);
  // Takes the index from segment-<version_>.idx when it holds exactly the committed rows' entries.
  bool LoadSnapshot(const std::vector<int64_t>& committed);

  std::string dir_;
  int dim_ = 0;
  bool read_only_ = false;
  int64_t page_size_ = 4096;
  std::unique_ptr<StateLock> lock_;
  std::unique_ptr<SqliteDb> db_;  // null for an absent share opened read-only
  // Shared: searches (the index only). Exclusive: everything that uses the SQLite connection, which is
  // opened without SQLite's mutex (sqlite_db.h), and every change.
  mutable std::shared_mutex mu_;
  std::unique_ptr<VectorIndex> empty_;  // the trained structures, to make an index from
  std::unique_ptr<FactSegment> segment_;
  bool broken_ = false;         // the index could not be made to match the rows
  std::string broken_reason_;
  mutable bool scrub_pending_ = false;  // a drop's WAL checkpoint failed: retried by List
  int64_t version_ = 0;            // changes of the committed rows (meta 'version'), as this share knows them
  int64_t snapshot_version_ = -1;  // the version of the snapshot on disk, -1 when none is current
  bool loaded_snapshot_ = false;
};

// Rank 0's side: each encodes a request, carries it to shard `shard` (DatastoreShards::FactCall) and
// decodes the reply.
Status ShardPrepareFacts(const DatastoreShards& shards, int shard, const std::vector<const FactRecord*>& facts);
Status ShardCommitFacts(const DatastoreShards& shards, int shard, const std::vector<int64_t>& ids);
Status ShardDropFacts(const DatastoreShards& shards, int shard, const std::vector<int64_t>& ids);
Status ShardListFacts(const DatastoreShards& shards, int shard, std::vector<FactShardRow>* out);
Status ShardHoldsFact(const DatastoreShards& shards, int shard, int64_t id, int64_t entries, bool* row, bool* indexed);
Status ShardCheckFacts(const DatastoreShards& shards, int shard, std::string* result);

}  // namespace mnemo
