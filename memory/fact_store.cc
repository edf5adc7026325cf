#include "memory/fact_store.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>
#include <unordered_set>

#include "memory/datastore_shards.h"
#include "memory/fact_store_segment.h"
#include "util/file_system.h"
#include "util/file_util.h"
#include "util/half.h"

namespace mnemo {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// A read-only memory of the same base and a segment rebuilt from the database.
class FactStore::Rebuilt : public KnnMemory {
 public:
  Rebuilt(const BaseMemory* base, std::unique_ptr<Segment> segment, int dim)
      : base_(base), segment_(std::move(segment)), dim_(dim) {}
  int dim() const override { return dim_; }
  int64_t size() const override { return (base_ ? base_->size() : 0) + segment_->entries(); }
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override {
    return SearchMerged(base_, *segment_, queries, n, options, out);
  }

 private:
  const BaseMemory* base_;
  std::unique_ptr<Segment> segment_;
  int dim_;
};

FactStore::FactStore() = default;
FactStore::~FactStore() = default;

Status FactStore::Open(const std::string& dir, const FactStoreOptions& options, std::unique_ptr<FactStore>* out) {
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<FactStore> store(new FactStore());
  store->dir_ = dir;
  store->options_ = options;
  if (options.snapshot_chunk_facts < 1) {
    return Status::InvalidArgument("snapshot_chunk_facts must be at least 1, got " +
                                   std::to_string(options.snapshot_chunk_facts));
  }
  store->chunk_facts_ = options.snapshot_chunk_facts;
  MNEMO_RETURN_IF_ERROR(ReadStateConfig(dir, &store->config_));
  const StateConfig& config = store->config_;
  if (!options.expected_model_fingerprint.empty() &&
      options.expected_model_fingerprint != config.model_fingerprint) {
    return Status::InvalidArgument(dir + ": state was made for model " + config.model_fingerprint +
                                   ", not the loaded model " + options.expected_model_fingerprint);
  }
  MNEMO_RETURN_IF_ERROR(StateLock::Acquire(dir, &store->lock_));
  MNEMO_RETURN_IF_ERROR(FactDb::Open(FactDbPath(dir), &store->db_));
  MNEMO_RETURN_IF_ERROR(store->db_->SetKeyDim(config.dim));
  if (!config.datastore_path.empty()) {
    DatastoreOpenOptions ds;
    ds.expected_model_fingerprint = config.model_fingerprint;
    ds.mmap_index = options.mmap_base_index;
    ds.gpu_device = options.base_gpu_device;
    ds.read_only = options.read_only_check;  // fsck without --repair finishes no deletion
    if (IsShardedDatastore(config.datastore_path)) {
      if (options.base_gpu_device >= 0) {
        return Status::InvalidArgument(config.datastore_path + ": a sharded datastore is searched on the CPU");
      }
      std::unique_ptr<DatastoreShards> shards;
      ShardSetManifest manifest;
      MNEMO_RETURN_IF_ERROR(ReadShardSetManifest(config.datastore_path, &manifest));
      // Each shard with this state's share of the facts: in other processes, or in this one.
      const ShardOpener opener = options.open_shards ? options.open_shards : ProcessShardOpener();
      if (opener) {
        MNEMO_RETURN_IF_ERROR(opener(config.datastore_path, manifest, dir, options.read_only_check, &shards));
      } else {
        MNEMO_RETURN_IF_ERROR(OpenLocalShards(config.datastore_path, manifest, ds, &shards, dir));
      }
      MNEMO_RETURN_IF_ERROR(ShardedDatastore::Open(config.datastore_path, ds, std::move(shards), &store->sharded_));
      store->base_memory_ = store->sharded_.get();
      store->facts_on_shards_ = store->sharded_->shards().holds_facts();
    } else {
      MNEMO_RETURN_IF_ERROR(Datastore::Open(config.datastore_path, ds, &store->base_));
      store->base_memory_ = store->base_.get();
    }
    if (store->base_memory_->dim() != config.dim) {
      return Status::InvalidArgument(config.datastore_path + ": keys have dimension " +
                                     std::to_string(store->base_memory_->dim()) + ", the state " +
                                     std::to_string(config.dim));
    }
  } else if (options.base_gpu_device >= 0) {
    return Status::InvalidArgument(dir + ": the state has no base datastore to search on a GPU");
  }
  MNEMO_RETURN_IF_ERROR(store->facts_on_shards_ ? store->RecoverOnShards() : store->Recover());
  store->recovery_.seconds = SecondsSince(start);
  *out = std::move(store);
  return Status::OK();
}

Status FactStore::NewSegment(std::unique_ptr<Segment>* out) const {
  std::unique_ptr<VectorIndex> index;
  if (sharded_ != nullptr) {
    MNEMO_RETURN_IF_ERROR(sharded_->trained().CreateEmptyLike(&index));
  } else if (base_ != nullptr && base_->index().is_trained()) {
    MNEMO_RETURN_IF_ERROR(base_->index().CreateEmptyLike(&index));
  } else {
    MNEMO_RETURN_IF_ERROR(VectorIndex::Create(config_.dim, "Flat", Metric::kL2, &index));
  }
  out->reset(new Segment(std::move(index), config_.dim));
  return Status::OK();
}

Status FactStore::RebuildSegment(Segment* segment) const {
  // Facts in id order are facts in the order they were added, so the index holds its entries in the
  // same order as one that was never restarted (tie order matters for exactness).
  std::vector<FactRecord> batch;
  auto flush = [&]() -> Status {
    std::vector<const FactRecord*> ptrs;
    for (const FactRecord& f : batch) ptrs.push_back(&f);
    Status s = segment->AddFacts(ptrs);
    batch.clear();
    return s;
  };
  MNEMO_RETURN_IF_ERROR(db_->ForEach(/*with_entries=*/true, [&](const FactRecord& f) -> Status {
    batch.push_back(f);
    return batch.size() >= 1024 ? flush() : Status::OK();
  }));
  return flush();
}

int64_t FactStore::size() const { return base_entries() + fact_entries(); }

int64_t FactStore::base_entries() const { return base_memory_ != nullptr ? base_memory_->size() : 0; }

int64_t FactStore::fact_entries() const {
  if (facts_on_shards_) return shard_fact_entries_;
  std::shared_lock lock(segment_mu_);
  return segment_->entries();
}

bool FactStore::SegmentHoldsFact(int64_t fact_id, int64_t entries) const {
  std::shared_lock lock(segment_mu_);
  if (segment_->Find(fact_id) != nullptr) return true;
  for (int64_t p = 0; p < entries; ++p) {
    if (segment_->index().Contains(FactEntryId(fact_id, p))) return true;
  }
  return false;
}

uint64_t FactStore::segment_trained_fingerprint() const {
  std::shared_lock lock(segment_mu_);
  return segment_->index().TrainedFingerprint();
}

uint64_t FactStore::base_trained_fingerprint() const {
  if (sharded_ != nullptr) return sharded_->trained().TrainedFingerprint();
  if (base_ == nullptr || !base_->index().is_trained()) {
    std::unique_ptr<VectorIndex> flat;
    if (!VectorIndex::Create(config_.dim, "Flat", Metric::kL2, &flat).ok()) return 0;
    return flat->TrainedFingerprint();
  }
  return base_->index().TrainedFingerprint();
}

Status FactStore::Add(const std::vector<NewFact>& facts, std::vector<int64_t>* ids, const ActionRecord* action) {
  ids->clear();
  if (facts.empty()) return Status::OK();
  for (size_t i = 0; i < facts.size(); ++i) {
    const NewFact& f = facts[i];
    const std::string which = "fact " + std::to_string(i);
    if (f.tokens.size() < 2) return Status::InvalidArgument(which + ": needs at least 2 tokens");
    if (static_cast<int64_t>(f.tokens.size()) - 1 > kMaxFactEntries) {
      return Status::InvalidArgument(which + ": " + std::to_string(f.tokens.size()) + " tokens; at most " +
                                     std::to_string(kMaxFactEntries + 1) + " are allowed");
    }
    if (f.keys.size() != (f.tokens.size() - 1) * static_cast<size_t>(config_.dim)) {
      return Status::InvalidArgument(which + ": keys do not have dimension " + std::to_string(config_.dim));
    }
    for (uint16_t h : f.keys) {
      if (!std::isfinite(HalfToFloat(h))) return Status::InvalidArgument(which + ": a key is not finite");
    }
  }
  if (facts_on_shards_) return AddOnShards(facts, ids, action);
  std::lock_guard<std::mutex> write(write_mu_);
  int64_t last_seq = 0;
  MNEMO_RETURN_IF_ERROR(db_->Insert(facts, ids, &last_seq, action));
  // Committed: from here on the facts exist. The segment catches up under the exclusive lock; should it
  // fail (out of memory), the next Open rebuilds it from the database.
  std::vector<FactRecord> records(facts.size());
  std::vector<const FactRecord*> ptrs;
  for (size_t i = 0; i < facts.size(); ++i) {
    records[i].id = (*ids)[i];
    records[i].tokens = facts[i].tokens;
    records[i].keys = facts[i].keys;
    ptrs.push_back(&records[i]);
  }
  {
    std::unique_lock lock(segment_mu_);
    Status added = segment_->AddFacts(ptrs);
    if (!added.ok()) {
      segment_failed_ = true;  // as in ApplyDeletes
      return added;
    }
  }
  for (int64_t id : *ids) dirty_chunks_.insert(ChunkOf(id));
  return AfterChange(last_seq, static_cast<int64_t>(ids->size()));
}

Status FactStore::Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted,
                         const ActionRecord* action) {
  std::vector<FactRecord> local;
  std::vector<FactRecord>& out = deleted != nullptr ? *deleted : local;
  out.clear();
  if (facts_on_shards_) return DeleteOnShards(ids, &out, action);
  std::lock_guard<std::mutex> write(write_mu_);
  // A snapshot chunk holding any of these facts goes first, before the delete is committed: after the
  // acknowledgement no file may keep their keys, even if the process dies right after. (A file at seq s
  // holds exactly the chunk's facts created at or before s.)
  if (!snapshot_dir_synced_ && !options_.read_only_check && std::filesystem::is_directory(SnapshotDir(dir_))) {
    MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->SyncDirectory(SnapshotDir(dir_)));
    snapshot_dir_synced_ = true;
  }
  if (!chunk_seq_.empty()) {
    for (int64_t id : ids) {
      FactRecord f;
      auto file = chunk_seq_.find(ChunkOf(id));
      if (file == chunk_seq_.end()) continue;
      Status got = db_->Get(id, /*with_entries=*/false, &f);
      if (got.IsNotFound() || (got.ok() && f.created_seq > file->second)) continue;  // not in that file
      MNEMO_RETURN_IF_ERROR(got);  // unsure what the file holds: delete nothing
      MNEMO_RETURN_IF_ERROR(RemoveChunkFileLocked(file->first));
    }
  }
  int64_t last_seq = 0;
  Status s = db_->Delete(ids, &out, &last_seq, action);
  // FactDb reports the deleted records even when the scrub after the commit (VACUUM, checkpoint) failed:
  // the delete happened, so the segment must forget the facts either way.
  if (out.empty()) return s;
  Status applied = ApplyDeletes(out, last_seq);
  Status listened = delete_listener_ ? delete_listener_(out) : Status::OK();
  if (!s.ok()) return s;
  return applied.ok() ? listened : applied;
}

Status FactStore::DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted,
                                 const ActionRecord* action) {
  if (filter.empty()) return Status::InvalidArgument("delete by filter needs a client id or a metadata field");
  std::vector<int64_t> ids;
  ListOptions list;
  list.filter = filter;
  list.limit = 10000;
  for (;;) {
    std::vector<FactRecord> page;
    int64_t next = 0;
    MNEMO_RETURN_IF_ERROR(db_->List(list, &page, &next));
    for (const FactRecord& f : page) ids.push_back(f.id);
    if (next == 0) break;
    list.after_id = next;
  }
  // A fact added between the listing and the delete is not deleted: the filter applies to the facts
  // that existed when the call started.
  return Delete(ids, deleted, action);
}

Status FactStore::ApplyDeletes(const std::vector<FactRecord>& deleted, int64_t last_seq) {
  std::set<int64_t> touched;
  {
    std::unique_lock lock(segment_mu_);
    for (const FactRecord& f : deleted) {
      touched.insert(ChunkOf(f.id));
      Status removed = segment_->RemoveFact(f.id, static_cast<int64_t>(f.tokens.size()) - 1);
      if (!removed.ok()) {
        // The segment no longer matches the database: no chunk may be written from it (it could put a
        // deleted fact's keys back on disk). The next Open rebuilds what differs.
        segment_failed_ = true;
        return removed;
      }
    }
  }
  dirty_chunks_.insert(touched.begin(), touched.end());
  MNEMO_RETURN_IF_ERROR(AfterChange(last_seq, static_cast<int64_t>(deleted.size())));
  // The chunks the delete touched are written again without the facts, so the next start loads them
  // instead of rebuilding them. Like a failed automatic snapshot, a failure here does not undo the
  // acknowledged delete: the chunk stays dirty (written at the next checkpoint, or rebuilt at start-up).
  for (int64_t chunk : touched) {
    if (dirty_chunks_.count(chunk) == 0) continue;  // AfterChange's checkpoint wrote it
    Status s = WriteChunkLocked(chunk);
    if (!s.ok()) std::fprintf(stderr, "fact store: snapshot chunk not written, will retry: %s\n", s.ToString().c_str());
  }
  return Status::OK();
}

Status FactStore::AfterChange(int64_t last_seq, int64_t facts) {
  last_seq_ = last_seq;
  changes_since_snapshot_ += facts;
  if (options_.snapshot_every > 0 && changes_since_snapshot_ >= options_.snapshot_every) {
    // The change itself is committed; a snapshot that cannot be written (disk full) is retried at the
    // next change and must not turn an acknowledged write into an error (a client would retry it).
    Status s = CheckpointLocked();
    if (!s.ok()) std::fprintf(stderr, "fact store: snapshot failed, will retry: %s\n", s.ToString().c_str());
  }
  return Status::OK();
}

Status FactStore::RebuildFromDatabase(std::unique_ptr<KnnMemory>* out) const {
  std::unique_ptr<Segment> segment;
  MNEMO_RETURN_IF_ERROR(NewSegment(&segment));
  MNEMO_RETURN_IF_ERROR(RebuildSegment(segment.get()));
  out->reset(new Rebuilt(base_memory_, std::move(segment), config_.dim));
  return Status::OK();
}

Status FactStore::Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const {
  if (base_memory_ == nullptr) return Status::OK();
  std::vector<Neighbor> base_entries;
  for (const Neighbor& nb : from) {
    if (nb.entry >= 0 && !IsFactEntry(nb.entry)) base_entries.push_back(nb);
  }
  return base_memory_->Successors(query, base_entries, out);
}

Status FactStore::Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                         std::vector<Neighbor>* out) const {
  if (facts_on_shards_) return SearchOnShards(queries, n, options, out);
  std::shared_lock lock(segment_mu_);
  return SearchMerged(base_memory_, *segment_, queries, n, options, out);
}

Status FactStore::SearchMerged(const BaseMemory* base, const Segment& segment, const float* queries, int64_t n,
                               const MemorySearchOptions& options, std::vector<Neighbor>* out) {
  const int k = options.k;
  if (k < 1) return Status::InvalidArgument("k must be at least 1");
  MemorySearchOptions index_only = options;
  index_only.recompute = false;  // recompute after merging, as one index would
  std::vector<Neighbor> from_base, from_segment;
  std::vector<float> base_exact, segment_exact;  // with recompute: exact distances
  if (base != nullptr) {
    MNEMO_RETURN_IF_ERROR(base->SearchIndex(queries, n, index_only, &from_base, options.recompute ? &base_exact : nullptr));
  }
  MNEMO_RETURN_IF_ERROR(segment.Search(queries, n, k, options.nprobe, options.recompute, &from_segment, &segment_exact));
  MergeBaseAndFacts(from_base, base_exact, from_segment, segment_exact, n, k, options.recompute, out);
  return Status::OK();
}

void FactStore::MergeBaseAndFacts(const std::vector<Neighbor>& base, const std::vector<float>& base_exact,
                                  const std::vector<Neighbor>& facts, const std::vector<float>& fact_exact, int64_t n,
                                  int k, bool recompute, std::vector<Neighbor>* out) {
  out->assign(static_cast<size_t>(n) * k, Neighbor());
  for (int64_t q = 0; q < n; ++q) {
    // Both lists are best first with padding at the end; on equal distances the base entry comes first.
    int i = 0, j = 0;
    for (int r = 0; r < k; ++r) {
      const bool base_ok = !base.empty() && i < k && base[q * k + i].entry >= 0;
      const bool fact_ok = j < k && facts[q * k + j].entry >= 0;
      if (!base_ok && !fact_ok) break;
      Neighbor& nb = (*out)[q * k + r];
      if (base_ok && (!fact_ok || base[q * k + i].distance <= facts[q * k + j].distance)) {
        nb = base[q * k + i];
        if (recompute) nb.distance = base_exact[q * k + i];
        ++i;
      } else {
        nb = facts[q * k + j];
        if (recompute) nb.distance = fact_exact[q * k + j];
        ++j;
      }
    }
    if (recompute) SortNeighborsByDistance(out->begin() + q * k, out->begin() + (q + 1) * k);
  }
}

Status FactStore::DeleteBaseDocuments(const std::vector<std::string>& ids, DocumentDeleteReport* report) {
  if (sharded_ != nullptr) {
    return Status::FailedPrecondition(
        "the base datastore is sharded: delete its documents offline from the shard that holds them "
        "(mnemo datastore rm --datastore " + sharded_->dir() + "/shard-<i>; mnemo datastore info lists them)");
  }
  if (base_ == nullptr) return Status::FailedPrecondition("this state has no base datastore");
  DocumentDeleteOptions options;
  options.retrain = false;
  return base_->DeleteDocuments(ids, options, report);
}

}  // namespace mnemo
