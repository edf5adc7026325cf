// FactStore::FindTraces: the file and index checks of verify-deleted. They live beside the store because
// only the store knows its files (facts.db and its WAL, the snapshot directory), its segment and its shards.
#include <string>

#include "indexes/vector_index.h"
#include "memory/datastore_shards.h"
#include "memory/fact_shard.h"
#include "memory/fact_store.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

// False when the file is absent (a WAL after a TRUNCATE checkpoint may be).
bool FileContains(const std::string& path, const std::string& needle) {
  std::string data;
  if (!ReadFileToString(path, &data).ok()) return false;
  return data.find(needle) != std::string::npos;
}

}  // namespace

Status FactStore::FindTraces(int64_t fact_id, const std::string* text, FactTraces* out) const {
  FactTraces t;
  t.fact_id = fact_id;
  FactRecord live;
  Status got = Get(fact_id, false, &live);
  if (got.ok()) return Status::FailedPrecondition("fact " + std::to_string(fact_id) + " is still stored; delete it first");
  if (!got.IsNotFound()) return got;
  Tombstone tomb;
  Status s = GetTombstone(fact_id, &tomb);
  if (s.IsNotFound()) return Status::NotFound("fact " + std::to_string(fact_id) + " was never added");
  MNEMO_RETURN_IF_ERROR(s);
  t.tombstone = true;
  t.deleted_seq = tomb.deleted_seq;
  t.entries = tomb.entries;
  t.in_segment = SegmentHoldsFact(fact_id, tomb.entries);
  if (facts_on_shards_) {  // its shard, brought in line first when a delete left it behind
    MNEMO_RETURN_IF_ERROR(SyncIfBehind());
    const DatastoreShards& shards = sharded_->shards();
    t.shard = FactShardOf(fact_id, shards.count());
    // Every shard, not only the one that held it: a row on any other would be a trace too.
    for (int shard = 0; shard < shards.count(); ++shard) {
      bool row = false, indexed = false;
      MNEMO_RETURN_IF_ERROR(ShardHoldsFact(shards, shard, fact_id, tomb.entries, &row, &indexed));
      t.on_shard = t.on_shard || row || indexed;
      ++t.shards_checked;
    }
  }
  for (const std::string& path : SnapshotPaths()) {
    std::unique_ptr<VectorIndex> snapshot;
    Status loaded = VectorIndex::Load(path, LoadOptions(), &snapshot);
    // A chunk replaced by a delete since the listing is gone; its replacement was copied from the live
    // segment, which no longer holds the fact, so nothing is missed.
    if (loaded.IsNotFound()) continue;
    MNEMO_RETURN_IF_ERROR(loaded);
    ++t.snapshots_checked;
    for (int64_t p = 0; p < tomb.entries; ++p) {
      if (snapshot->Contains(FactEntryId(fact_id, p))) {
        ++t.snapshots_holding;
        break;
      }
    }
  }
  if (text != nullptr) {
    t.text_checked = true;
    const std::string db = FactDbPath(dir_);
    t.text_in_database_files = FileContains(db, *text) || FileContains(db + "-wal", *text);
  }
  *out = t;
  return Status::OK();
}

}  // namespace mnemo
