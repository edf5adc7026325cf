// FactStore: a base datastore (read-only) plus the facts added at runtime, searched as one memory.
//
// Every fact's entries (fact_db.h) live in a mutable segment: a VectorIndex with the base index's trained
// structures (VectorIndex::CreateEmptyLike), or Flat when there is no base. Each query searches both and
// merges by distance, which returns exactly what one index holding both would (same lists probed, same
// codes). IVF centroids and PQ codebooks are trained on the base corpus only and never change, so a fact
// leaves no trace in them; fsck checks the segment's trained fingerprint against the base's.
//
// Entry ids: base entry i is i; entry p of fact f is FactEntryId(f, p) = 2^62 | f << 16 | p, so a
// neighbour names its fact. A fact has at most 65,535 entries.
//
// Writes: Add and Delete commit to SQLite first (fsynced; that is the acknowledgement), then change the
// segment under an exclusive lock, so a search sees all of a fact's entries or none, and sees them as
// soon as Add returns. A deleted fact's entries are removed from the segment; the index then answers
// exactly as one that never held them (VectorIndex's removal contract), so search results and kNN-LM
// distributions are bit-for-bit those of a state where the fact was never added.
//
// Snapshots and recovery: the segment is snapshotted in chunks of fact ids, chunk c holding the entries of
// facts [c*C, (c+1)*C) (C = FactStoreOptions::snapshot_chunk_facts, 256) as snapshots/chunk-<C>-<c>-<seq>.idx,
// its state as of change <seq>. Checkpoint writes the chunks changed since their file and drops the changes
// log; since ids grow with time, adds dirty only the newest chunk. Open loads every chunk, replays later
// changes of its facts from the log, checks it against the database and puts the segment together in id
// order (VectorIndex::Append); a chunk whose file is missing, corrupt or inconsistent is rebuilt from the
// database alone (which stores every fact's keys, so the model is not needed), the others are not.
// A delete of a fact that a chunk file holds unlinks that file before the delete commits, so no file
// keeps the fact's keys once it is acknowledged; after the commit it writes the chunk again without the
// fact (VectorIndex::CopyIds), so the next start does not rebuild it. Should the process die in
// between, only that chunk is rebuilt.
//
// What deletion does not reach: what the base language model learned in training. A fact that was also
// in the model's training text stays in its weights (Huang et al. 2023); eval/ measures that.
//
// Thread-safety: every method may be called from any thread. Searches run concurrently; writes are
// serialized among themselves and block searches only while the segment changes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "memory/datastore.h"
#include "memory/fact_db.h"
#include "memory/knn_memory.h"
#include "memory/state_dir.h"

namespace mnemo {

class DatastoreShards;
class FactSegment;
class ShardedDatastore;
struct ShardSetManifest;

constexpr int64_t kFactEntryFlag = int64_t{1} << 62;
constexpr int64_t kMaxFactEntries = 65535;
inline int64_t FactEntryId(int64_t fact_id, int64_t position) { return kFactEntryFlag | fact_id << 16 | position; }
inline bool IsFactEntry(int64_t entry) { return entry >= 0 && (entry & kFactEntryFlag) != 0; }
inline int64_t FactIdOfEntry(int64_t entry) { return (entry & ~kFactEntryFlag) >> 16; }
inline int64_t PositionOfEntry(int64_t entry) { return entry & 0xffff; }

struct FactStoreOptions {
  // When non-empty, a state made for another model is InvalidArgument.
  std::string expected_model_fingerprint;
  bool mmap_base_index = true;  // Memory-map the base datastore's IVF lists.
  // When >= 0, the base datastore's index is searched on this GPU (DatastoreOpenOptions::gpu_device); the
  // facts' segment, which changes, stays on the CPU. InvalidArgument for a state without a base datastore.
  int base_gpu_device = -1;
  // Facts added or deleted between automatic checkpoints (0: only Checkpoint and Close write them). A
  // checkpoint writes the chunks changed since their files; a restart replays or rebuilds the rest.
  int64_t snapshot_every = 10000;
  // Facts per snapshot chunk: what one delete writes again (about C x entries per fact x bytes per entry).
  // Files of another chunk size are not used: their chunks are rebuilt from the database, then replaced.
  int64_t snapshot_chunk_facts = 256;
  // fsck without --repair: never write, delete or heal anything on disk.
  bool read_only_check = false;
  // Where a sharded base datastore's shards, with this state's facts, run (a ShardOpener,
  // datastore_shards.h): null takes the process's (under mpirun the other ranks, else this process).
  std::function<Status(const std::string& dir, const ShardSetManifest& manifest, const std::string& state_dir,
                       bool read_only, std::unique_ptr<DatastoreShards>* out)>
      open_shards;
};

// Where a deleted fact could still be: the structural half of verify-deleted (retriever/deletion_verifier
// adds the model probe). Filled by FactStore::FindTraces.
struct FactTraces {
  int64_t fact_id = 0;
  bool tombstone = false;
  int64_t deleted_seq = 0;
  int64_t entries = 0;              // The fact's entry count, from its tombstone.
  bool in_database = false;         // A live row with this id.
  bool in_segment = false;          // Any of its entries in the live index.
  int64_t snapshots_checked = 0;
  int64_t snapshots_holding = 0;    // Snapshot files holding any of its entries.
  bool text_checked = false;        // The caller gave the text (mnemo keeps no copy of it).
  bool text_in_database_files = false;  // The text's bytes in facts.db or facts.db-wal.
  int shard = -1;                   // With facts on shards (fact_shard.h): the shard that held it, else -1.
  int64_t shards_checked = 0;       // Every shard is asked.
  bool on_shard = false;            // A row or an index entry of it on any shard.

  bool clean() const {
    return tombstone && !in_database && !in_segment && snapshots_holding == 0 && !text_in_database_files && !on_shard;
  }
};

// What Open found and did.
struct RecoveryReport {
  int64_t snapshot_seq = -1;       // The newest snapshot chunk loaded, -1 when none was usable.
  std::string snapshot_problem;    // Why a snapshot file was not used (corrupt, inconsistent), when one was not.
  int64_t replayed_changes = 0;    // Log entries applied to loaded chunks after their snapshots.
  int64_t missing_entries = 0;     // Entries of live facts absent from a loaded chunk after replay.
  int64_t orphan_entries = 0;      // Entries in a loaded chunk whose fact is not in the database.
  int64_t chunks = 0;              // Snapshot chunks holding live facts.
  int64_t chunks_loaded = 0;       // Of those, loaded from their files.
  int64_t chunks_rebuilt = 0;      // Built from the database instead (no usable file).
  bool rebuilt = false;            // Some chunk was built from the database (chunks_rebuilt > 0).
  int64_t facts = 0, fact_entries = 0;
  // With facts on shards (fact_shard.h): what the shards held against the catalogue at open, set right
  // unless the store is read-only (fsck without --repair).
  bool facts_on_shards = false;
  int64_t shard_facts_missing = 0;      // live facts a shard did not hold (sent again)
  int64_t shard_facts_orphans = 0;      // rows of facts that are not live (deleted, or an add that never committed)
  int64_t shard_facts_uncommitted = 0;  // live facts a shard held prepared, not searchable (committed)
  double seconds = 0;
};

class FactStore : public KnnMemory {
 public:
  // Locks the state (StateLock), opens the database and base datastore, recovers the segment.
  static Status Open(const std::string& dir, const FactStoreOptions& options, std::unique_ptr<FactStore>* out);
  // Releases the state without writing a snapshot (Close writes one).
  ~FactStore() override;

  // Writes a snapshot when anything changed since the last one. The store stays usable.
  Status Close();

  // Adds the facts in one transaction; ids in input order. InvalidArgument (nothing added) for a fact
  // with more than kMaxFactEntries entries, keys of another dimension or a non-finite key.
  // With `action`, the action log records the add in the same transaction (FactDb::Insert).
  Status Add(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, const ActionRecord* action = nullptr);
  // Deletes the listed facts that exist (absent ids are ignored); *deleted (may be null) receives their
  // records, entries included, which is the last copy of them anywhere.
  // With `action`, the action log records the delete in the same transaction (FactDb::Delete).
  Status Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted,
                const ActionRecord* action = nullptr);
  Status DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted,
                        const ActionRecord* action = nullptr);
  // The state's action log (FactDb::LogAction, FactDb::ListActions).
  Status LogAction(const ActionRecord& action, int64_t* seq = nullptr) { return db_->LogAction(action, seq); }
  Status ListActions(const ActionQuery& query, std::vector<ActionRecord>* out, int64_t* next_after_seq) const {
    return db_->ListActions(query, out, next_after_seq);
  }
  // Called after every delete has committed and left the segment, with the deleted records (under the
  // write lock, so before the next write): the state's other copies of facts (the memorizing layer's
  // facts memory) follow deletes whatever path they take. Its error is Delete's. Set before sharing.
  using DeleteListener = std::function<Status(const std::vector<FactRecord>& deleted)>;
  void SetDeleteListener(DeleteListener listener) { delete_listener_ = std::move(listener); }

  Status Get(int64_t id, bool with_entries, FactRecord* out) const { return db_->Get(id, with_entries, out); }
  Status List(const ListOptions& options, std::vector<FactRecord>* out, int64_t* next_after_id) const {
    return db_->List(options, out, next_after_id);
  }
  Status Count(const FactFilter& filter, int64_t* count) const { return db_->Count(filter, count); }
  Status GetTombstone(int64_t id, Tombstone* out) const { return db_->GetTombstone(id, out); }
  // The traces a deleted fact may have left in this state's memory and files: its tombstone, a row, entries
  // in the live segment or any snapshot file and, when `text` is given, its bytes in the database files.
  // NotFound when `fact_id` never existed; FailedPrecondition when it is still stored. (fact_traces.cc)
  Status FindTraces(int64_t fact_id, const std::string* text, FactTraces* out) const;
  // The snapshot files on disk, by chunk and seq.
  std::vector<std::string> SnapshotPaths() const;

  // KnnMemory over base + facts.
  int dim() const override { return config_.dim; }
  int64_t size() const override;
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override;
  // The base datastore's entries follow their text (Datastore::Successors); fact entries have none here.
  Status Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const override;

  int64_t fact_entries() const;
  // The base datastore's live entries (0 without one).
  int64_t base_entries() const;
  // Whether any entry of `fact_id` is in the segment.
  bool SegmentHoldsFact(int64_t fact_id, int64_t entries) const;
  // The base datastore when it is one directory; null without a base or when it is sharded.
  const Datastore* base() const { return base_.get(); }
  // The base datastore when it is sharded (datastore_shards.h), else null.
  const ShardedDatastore* sharded_base() const { return sharded_.get(); }
  // Deletes documents from the base datastore while serving (Datastore::DeleteDocuments): searches see
  // them gone once it returns. Retraining is refused here (it would change the trained structures the
  // facts' segment shares; offline: mnemo datastore rm --retrain). FailedPrecondition without a base.
  Status DeleteBaseDocuments(const std::vector<std::string>& ids, DocumentDeleteReport* report);
  const StateConfig& config() const { return config_; }
  const RecoveryReport& recovery() const { return recovery_; }
  // Whether the facts live on the shards of a sharded base datastore (fact_shard.h) rather than in this
  // process's segment: when the base's shards were opened with this state's facts (OpenLocalShards with
  // the state, or shard ranks under mpirun).
  bool facts_on_shards() const { return facts_on_shards_; }
  // Each shard's check of its facts (FactShard::Check): "ok", or what is wrong; "none" without facts on shards.
  Status CheckFactShards(std::string* result) const;
  // SQLite's quick_check of the fact database ("ok" when sound).
  Status CheckDatabase(std::string* result) const { return db_->QuickCheck(result); }
  const std::string& dir() const { return dir_; }
  // The segment's and the base's trained-structure fingerprints (equal by construction).
  uint64_t segment_trained_fingerprint() const;
  uint64_t base_trained_fingerprint() const;

  // Writes the chunks changed since their snapshot files, removes the files they replace and truncates the log.
  Status Checkpoint();

  // A memory rebuilt from the database alone, beside this one (same base, fresh segment): the reference
  // verify-deleted compares against. It stays valid while this store is open.
  Status RebuildFromDatabase(std::unique_ptr<KnnMemory>* out) const;
  // Runs `fn` with no add or delete in progress or starting (they wait); searches go on. verify-deleted
  // compares the live memory with a rebuild under it, so that another fact's add or delete cannot make
  // the two differ in between (a soak saw 50 false "NOT deleted" verdicts in 501 without it).
  Status WithWritesPaused(const std::function<Status()>& fn) const {
    std::lock_guard<std::mutex> write(write_mu_);
    return fn();
  }

 private:
  using Segment = FactSegment;
  class Rebuilt;
  FactStore();
  Status Recover();
  Status RebuildSegment(Segment* segment) const;
  Status NewSegment(std::unique_ptr<Segment>* out) const;
  Status AfterChange(int64_t last_seq, int64_t facts);
  Status CheckpointLocked();  // callers hold write_mu_
  // Writes chunk `chunk` of the segment as of last_seq_ (none when it holds no entries) and removes the file
  // it replaces. Callers hold write_mu_.
  Status WriteChunkLocked(int64_t chunk);
  // Unlinks chunk `chunk`'s snapshot file (durably) and forgets it. Callers hold write_mu_.
  Status RemoveChunkFileLocked(int64_t chunk);
  int64_t ChunkOf(int64_t fact_id) const { return fact_id / chunk_facts_; }
  Status ApplyDeletes(const std::vector<FactRecord>& deleted, int64_t last_seq);
  static Status SearchMerged(const BaseMemory* base, const Segment& segment, const float* queries, int64_t n,
                             const MemorySearchOptions& options, std::vector<Neighbor>* out);
  // Each query's k best of the base's and the facts' answers (both best first by index distance, base
  // first on equal distances); with recompute, exact distances and a stable re-sort, as one index.
  static void MergeBaseAndFacts(const std::vector<Neighbor>& base, const std::vector<float>& base_exact,
                                const std::vector<Neighbor>& facts, const std::vector<float>& fact_exact, int64_t n,
                                int k, bool recompute, std::vector<Neighbor>* out);

  // Facts on shards (fact_store_shards.cc).
  Status RecoverOnShards();
  // Brings every shard's facts in line with the catalogue (fact_shard.h), or only counts what differs
  // without `repair`; counts into *report when given. Callers hold write_mu_.
  Status SyncFactShardsLocked(bool repair, RecoveryReport* report) const;
  // Runs SyncFactShardsLocked when a write left a shard behind; Unavailable while one does not answer.
  Status SyncIfBehind() const;
  Status AddOnShards(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, const ActionRecord* action);
  Status DeleteOnShards(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted, const ActionRecord* action);
  Status SearchOnShards(const float* queries, int64_t n, const MemorySearchOptions& options,
                        std::vector<Neighbor>* out) const;

  std::string dir_;
  FactStoreOptions options_;
  StateConfig config_;
  std::unique_ptr<StateLock> lock_;
  std::unique_ptr<FactDb> db_;
  std::unique_ptr<Datastore> base_;
  std::unique_ptr<ShardedDatastore> sharded_;
  const BaseMemory* base_memory_ = nullptr;  // base_ or sharded_, null without a base
  RecoveryReport recovery_;

  mutable std::mutex write_mu_;         // serializes Add, Delete, Checkpoint, Close (and WithWritesPaused)
  DeleteListener delete_listener_;
  mutable std::shared_mutex segment_mu_;  // shared: searches; exclusive: segment changes
  std::unique_ptr<Segment> segment_;
  int64_t last_seq_ = 0;       // newest change applied to the segment
  int64_t chunk_facts_ = 1024;           // options_.snapshot_chunk_facts
  std::map<int64_t, int64_t> chunk_seq_;  // chunk -> seq of its snapshot file on disk
  std::set<int64_t> dirty_chunks_;        // chunks changed since their file (or without one)
  bool segment_failed_ = false;           // a segment update failed after its commit: write no chunk
  // The snapshot directory was fsynced since this store listed it: a chunk file it does not track cannot
  // come back after a power loss (an unlink whose directory fsync failed before a restart would).
  bool snapshot_dir_synced_ = false;
  int64_t changes_since_snapshot_ = 0;
  bool facts_on_shards_ = false;
  // A shard may hold what the catalogue no longer does, or miss what it does (a write it did not
  // confirm): it is synced before the next search or write uses it.
  mutable std::atomic<bool> shards_behind_{false};
  mutable std::atomic<int64_t> shard_fact_entries_{0};  // live facts' entries, with facts on shards
};

}  // namespace mnemo
