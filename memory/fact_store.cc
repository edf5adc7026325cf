#include "memory/fact_store.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <unordered_set>

#include "util/file_util.h"
#include "util/half.h"

namespace mnemo {
namespace {

constexpr char kSnapshotPrefix[] = "segment-";
constexpr char kSnapshotSuffix[] = ".idx";

std::string SnapshotPath(const std::string& dir, int64_t seq) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s%020" PRId64 "%s", kSnapshotPrefix, seq, kSnapshotSuffix);
  return SnapshotDir(dir) + "/" + name;
}

// Snapshot files in the directory, by seq; leftovers of interrupted writes go to *temporary.
std::vector<std::pair<int64_t, std::string>> ListSnapshots(const std::string& dir,
                                                           std::vector<std::string>* temporary) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(SnapshotDir(dir), ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) {
      temporary->push_back(e.path().string());
      continue;
    }
    const size_t prefix = std::strlen(kSnapshotPrefix), suffix = std::strlen(kSnapshotSuffix);
    if (name.size() <= prefix + suffix || name.compare(0, prefix, kSnapshotPrefix) != 0 ||
        name.compare(name.size() - suffix, suffix, kSnapshotSuffix) != 0) {
      continue;
    }
    const std::string digits = name.substr(prefix, name.size() - prefix - suffix);
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    try {
      out.emplace_back(std::stoll(digits), e.path().string());
    } catch (const std::out_of_range&) {  // not a seq this store wrote
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// The facts' entries: an index over their keys plus, per fact, the values and fp16 keys (for exact
// distances). Not synchronized: FactStore guards it with segment_mu_.
class FactStore::Segment {
 public:
  struct Entries {
    std::vector<int32_t> values;  // tokens[1..n)
    std::vector<uint16_t> keys;   // (n - 1) * dim
  };

  Segment(std::unique_ptr<VectorIndex> index, int dim) : index_(std::move(index)), dim_(dim) {}

  // Adds every fact's entries to the index in one call (all or nothing), then to the map.
  Status AddFacts(const std::vector<const FactRecord*>& facts) {
    std::vector<std::pair<int64_t, const std::vector<uint16_t>*>> keys;
    for (const FactRecord* f : facts) keys.emplace_back(f->id, &f->keys);
    MNEMO_RETURN_IF_ERROR(IndexKeys(keys));
    for (const FactRecord* f : facts) RememberFact(*f);
    return Status::OK();
  }

  // Adds the entries of facts given as (id, fp16 keys) to the index in one call; the map is untouched
  // (start-up replay re-indexes facts the map already holds).
  Status IndexKeys(const std::vector<std::pair<int64_t, const std::vector<uint16_t>*>>& facts) {
    int64_t total = 0;
    for (const auto& [id, k] : facts) total += static_cast<int64_t>(k->size()) / dim_;
    std::vector<float> keys(static_cast<size_t>(total) * dim_);
    std::vector<int64_t> ids(static_cast<size_t>(total));
    int64_t row = 0;
    for (const auto& [id, k] : facts) {
      const int64_t n = static_cast<int64_t>(k->size()) / dim_;
      for (int64_t p = 0; p < n; ++p, ++row) {
        ids[row] = FactEntryId(id, p);
        for (int d = 0; d < dim_; ++d) keys[row * dim_ + d] = HalfToFloat((*k)[p * dim_ + d]);
      }
    }
    MNEMO_RETURN_IF_ERROR(index_->Add(total, keys.data(), ids.data()));
    entries_ += total;
    return Status::OK();
  }

  // Removes the fact's entries (ids for `entries` positions) from the index and the map, zeroing the
  // in-memory keys before freeing them.
  Status RemoveFact(int64_t fact_id, int64_t entries) {
    std::vector<int64_t> ids(static_cast<size_t>(std::max<int64_t>(entries, 0)));
    for (int64_t p = 0; p < entries; ++p) ids[p] = FactEntryId(fact_id, p);
    int64_t removed = 0;
    MNEMO_RETURN_IF_ERROR(index_->Remove(ids.data(), entries, &removed));
    auto it = facts_.find(fact_id);
    if (it != facts_.end()) {
      std::fill(it->second.keys.begin(), it->second.keys.end(), uint16_t{0});
      facts_.erase(it);
    }
    entries_ -= removed;
    return Status::OK();
  }

  const Entries* Find(int64_t fact_id) const {
    auto it = facts_.find(fact_id);
    return it == facts_.end() ? nullptr : &it->second;
  }

  // The value and key of a fact entry; false when it is not here.
  bool Lookup(int64_t entry, int32_t* token, const uint16_t** key) const {
    const Entries* e = Find(FactIdOfEntry(entry));
    const int64_t p = PositionOfEntry(entry);
    if (e == nullptr || p >= static_cast<int64_t>(e->values.size())) return false;
    *token = e->values[p];
    *key = e->keys.data() + p * dim_;
    return true;
  }

  float SquaredDistance(const float* query, const uint16_t* key) const {
    float sum = 0;
    for (int d = 0; d < dim_; ++d) {
      const float diff = query[d] - HalfToFloat(key[d]);
      sum += diff * diff;
    }
    return sum;
  }

  VectorIndex& index() { return *index_; }
  const VectorIndex& index() const { return *index_; }
  void ReplaceIndex(std::unique_ptr<VectorIndex> index) { index_ = std::move(index); }
  void SetEntryCount(int64_t n) { entries_ = n; }
  int64_t entries() const { return entries_; }
  size_t fact_count() const { return facts_.size(); }
  // Map-only insertion (start-up: the index comes from a snapshot).
  void RememberFact(const FactRecord& f) {
    Entries& e = facts_[f.id];
    e.values.assign(f.tokens.begin() + 1, f.tokens.end());
    e.keys = f.keys;
  }
  const std::unordered_map<int64_t, Entries>& facts() const { return facts_; }

 private:
  std::unique_ptr<VectorIndex> index_;
  int dim_;
  std::unordered_map<int64_t, Entries> facts_;
  int64_t entries_ = 0;
};

// A read-only memory of the same base and a segment rebuilt from the database.
class FactStore::Rebuilt : public KnnMemory {
 public:
  Rebuilt(const Datastore* base, std::unique_ptr<Segment> segment, int dim)
      : base_(base), segment_(std::move(segment)), dim_(dim) {}
  int dim() const override { return dim_; }
  int64_t size() const override { return (base_ ? base_->size() : 0) + segment_->entries(); }
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override {
    return SearchMerged(base_, *segment_, queries, n, options, out);
  }

 private:
  const Datastore* base_;
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
    MNEMO_RETURN_IF_ERROR(Datastore::Open(config.datastore_path, ds, &store->base_));
    if (store->base_->dim() != config.dim) {
      return Status::InvalidArgument(config.datastore_path + ": keys have dimension " +
                                     std::to_string(store->base_->dim()) + ", the state " +
                                     std::to_string(config.dim));
    }
  } else if (options.base_gpu_device >= 0) {
    return Status::InvalidArgument(dir + ": the state has no base datastore to search on a GPU");
  }
  MNEMO_RETURN_IF_ERROR(store->Recover());
  store->recovery_.seconds = SecondsSince(start);
  *out = std::move(store);
  return Status::OK();
}

Status FactStore::NewSegment(std::unique_ptr<Segment>* out) const {
  std::unique_ptr<VectorIndex> index;
  if (base_ != nullptr && base_->index().is_trained()) {
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

Status FactStore::Recover() {
  RecoveryReport& report = recovery_;
  MNEMO_RETURN_IF_ERROR(db_->LastSeq(&last_seq_));
  std::vector<std::string> temporary;
  auto snapshots = ListSnapshots(dir_, &temporary);
  if (!options_.read_only_check) {
    for (const std::string& t : temporary) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(t));
  }

  std::unique_ptr<Segment> segment;
  MNEMO_RETURN_IF_ERROR(NewSegment(&segment));
  const uint64_t trained = segment->index().TrainedFingerprint();
  bool snapshot_needs_rewrite = false;
  if (!snapshots.empty()) {
    const auto& [seq, path] = snapshots.back();
    LoadOptions load;
    load.expected_dim = config_.dim;
    std::unique_ptr<VectorIndex> index;
    Status s = VectorIndex::Load(path, load, &index);
    if (s.ok() && index->TrainedFingerprint() != trained) {
      s = Status::Corruption(path + ": trained structures differ from the base datastore's");
    }
    if (s.ok() && seq > last_seq_) {
      s = Status::Corruption(path + ": snapshot is newer than the database's last change");
    }
    if (s.ok()) {
      report.snapshot_seq = seq;
      snapshot_seq_ = seq;
      segment->ReplaceIndex(std::move(index));
    } else {
      report.snapshot_problem = s.ToString();
    }
  }

  // The map of values and keys always comes from the database.
  int64_t live_entries = 0;
  MNEMO_RETURN_IF_ERROR(db_->ForEach(/*with_entries=*/true, [&](const FactRecord& f) -> Status {
    segment->RememberFact(f);
    live_entries += static_cast<int64_t>(f.tokens.size()) - 1;
    ++report.facts;
    return Status::OK();
  }));
  report.fact_entries = live_entries;

  bool rebuild = report.snapshot_seq < 0;
  if (!rebuild) {
    std::vector<Change> changes;
    MNEMO_RETURN_IF_ERROR(db_->ChangesAfter(report.snapshot_seq, &changes));
    VectorIndex& index = segment->index();
    for (const Change& c : changes) {
      ++report.replayed_changes;
      if (c.op == ChangeOp::kAdd) {
        const Segment::Entries* e = segment->Find(c.fact_id);
        if (e == nullptr || index.Contains(FactEntryId(c.fact_id, 0))) continue;  // deleted later, or present
        MNEMO_RETURN_IF_ERROR(segment->IndexKeys({{c.fact_id, &e->keys}}));
      } else {
        Tombstone t;
        if (!db_->GetTombstone(c.fact_id, &t).ok()) continue;
        std::vector<int64_t> ids(static_cast<size_t>(t.entries));
        for (int64_t p = 0; p < t.entries; ++p) ids[p] = FactEntryId(c.fact_id, p);
        int64_t removed = 0;
        MNEMO_RETURN_IF_ERROR(index.Remove(ids.data(), t.entries, &removed));
        // The snapshot file still holds the deleted fact's keys (the process died before unlinking it).
        if (removed > 0) snapshot_needs_rewrite = true;
      }
    }
    // Check the result against the database: every live entry present, nothing else.
    int64_t present = 0;
    for (const auto& [fact_id, e] : segment->facts()) {
      for (size_t p = 0; p < e.values.size(); ++p) {
        if (index.Contains(FactEntryId(fact_id, static_cast<int64_t>(p)))) {
          ++present;
        } else {
          ++report.missing_entries;
        }
      }
    }
    report.orphan_entries = index.size() - present;
    rebuild = report.missing_entries > 0 || report.orphan_entries > 0;
    if (!rebuild) segment->SetEntryCount(index.size());
  }
  if (rebuild) {
    report.rebuilt = true;
    std::unique_ptr<Segment> fresh;
    MNEMO_RETURN_IF_ERROR(NewSegment(&fresh));
    MNEMO_RETURN_IF_ERROR(RebuildSegment(fresh.get()));
    segment = std::move(fresh);
    snapshot_needs_rewrite = true;
  }
  segment_ = std::move(segment);
  if (options_.read_only_check) return Status::OK();
  for (size_t i = 0; i + 1 < snapshots.size(); ++i) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(snapshots[i].second));
  if (snapshot_needs_rewrite) {
    if (!snapshots.empty()) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(snapshots.back().second));
    snapshot_seq_ = -1;
    if (last_seq_ > 0) {
      std::lock_guard<std::mutex> lock(write_mu_);
      return CheckpointLocked();
    }
  }
  return Status::OK();
}

std::vector<std::string> FactStore::SnapshotPaths() const {
  std::vector<std::string> temporary, out;
  for (auto& [seq, path] : ListSnapshots(dir_, &temporary)) out.push_back(path);
  return out;
}

int64_t FactStore::size() const {
  std::shared_lock lock(segment_mu_);
  return (base_ ? base_->size() : 0) + segment_->entries();
}

int64_t FactStore::fact_entries() const {
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
  if (base_ == nullptr || !base_->index().is_trained()) {
    std::unique_ptr<VectorIndex> flat;
    if (!VectorIndex::Create(config_.dim, "Flat", Metric::kL2, &flat).ok()) return 0;
    return flat->TrainedFingerprint();
  }
  return base_->index().TrainedFingerprint();
}

Status FactStore::Add(const std::vector<NewFact>& facts, std::vector<int64_t>* ids) {
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
  std::lock_guard<std::mutex> write(write_mu_);
  int64_t last_seq = 0;
  MNEMO_RETURN_IF_ERROR(db_->Insert(facts, ids, &last_seq));
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
    MNEMO_RETURN_IF_ERROR(segment_->AddFacts(ptrs));
  }
  return AfterChange(last_seq);
}

Status FactStore::Delete(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted) {
  std::vector<FactRecord> local;
  std::vector<FactRecord>& out = deleted != nullptr ? *deleted : local;
  out.clear();
  std::lock_guard<std::mutex> write(write_mu_);
  // A snapshot holding any of these facts goes first, before the delete is committed: after the
  // acknowledgement no file may keep their keys, even if the process dies right after.
  if (snapshot_seq_ >= 0) {
    for (int64_t id : ids) {
      FactRecord f;
      if (db_->Get(id, /*with_entries=*/false, &f).ok() && f.created_seq <= snapshot_seq_) {
        MNEMO_RETURN_IF_ERROR(RemoveFileDurably(SnapshotPath(dir_, snapshot_seq_)));
        snapshot_seq_ = -1;
        break;
      }
    }
  }
  int64_t last_seq = 0;
  Status s = db_->Delete(ids, &out, &last_seq);
  // FactDb reports the deleted records even when the scrub after the commit (VACUUM, checkpoint) failed:
  // the delete happened, so the segment must forget the facts either way.
  if (out.empty()) return s;
  Status applied = ApplyDeletes(out, last_seq);
  Status listened = delete_listener_ ? delete_listener_(out) : Status::OK();
  if (!s.ok()) return s;
  return applied.ok() ? listened : applied;
}

Status FactStore::DeleteMatching(const FactFilter& filter, std::vector<FactRecord>* deleted) {
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
  return Delete(ids, deleted);
}

Status FactStore::ApplyDeletes(const std::vector<FactRecord>& deleted, int64_t last_seq) {
  {
    std::unique_lock lock(segment_mu_);
    for (const FactRecord& f : deleted) {
      MNEMO_RETURN_IF_ERROR(segment_->RemoveFact(f.id, static_cast<int64_t>(f.tokens.size()) - 1));
    }
  }
  return AfterChange(last_seq);
}

Status FactStore::AfterChange(int64_t last_seq) {
  last_seq_ = last_seq;
  ++changes_since_snapshot_;
  if (options_.snapshot_every > 0 && changes_since_snapshot_ >= options_.snapshot_every) {
    // The change itself is committed; a snapshot that cannot be written (disk full) is retried at the
    // next change and must not turn an acknowledged write into an error (a client would retry it).
    Status s = CheckpointLocked();
    if (!s.ok()) std::fprintf(stderr, "fact store: snapshot failed, will retry: %s\n", s.ToString().c_str());
  }
  return Status::OK();
}

Status FactStore::Checkpoint() {
  std::lock_guard<std::mutex> write(write_mu_);
  return CheckpointLocked();
}

Status FactStore::CheckpointLocked() {
  // The caller holds write_mu_, so the segment cannot change meanwhile; searches keep running (Save takes
  // the index's shared lock).
  if (options_.read_only_check) return Status::FailedPrecondition("Checkpoint: store opened for checking only");
  if (snapshot_seq_ == last_seq_) return Status::OK();
  const int64_t seq = last_seq_;
  const std::string path = SnapshotPath(dir_, seq);
  MNEMO_RETURN_IF_ERROR(segment_->index().Save(path));
  if (snapshot_seq_ >= 0) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(SnapshotPath(dir_, snapshot_seq_)));
  snapshot_seq_ = seq;
  changes_since_snapshot_ = 0;
  return db_->TruncateChanges(seq);
}

Status FactStore::Close() {
  if (options_.read_only_check) return Status::OK();
  std::lock_guard<std::mutex> write(write_mu_);
  return CheckpointLocked();
}

Status FactStore::RebuildFromDatabase(std::unique_ptr<KnnMemory>* out) const {
  std::unique_ptr<Segment> segment;
  MNEMO_RETURN_IF_ERROR(NewSegment(&segment));
  MNEMO_RETURN_IF_ERROR(RebuildSegment(segment.get()));
  out->reset(new Rebuilt(base_.get(), std::move(segment), config_.dim));
  return Status::OK();
}

Status FactStore::Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                         std::vector<Neighbor>* out) const {
  std::shared_lock lock(segment_mu_);
  return SearchMerged(base_.get(), *segment_, queries, n, options, out);
}

Status FactStore::SearchMerged(const Datastore* base, const Segment& segment, const float* queries, int64_t n,
                               const MemorySearchOptions& options, std::vector<Neighbor>* out) {
  const int k = options.k;
  if (k < 1) return Status::InvalidArgument("k must be at least 1");
  MemorySearchOptions index_only = options;
  index_only.recompute = false;  // recompute after merging, as one index would
  std::vector<Neighbor> from_base;
  if (base != nullptr) MNEMO_RETURN_IF_ERROR(base->Search(queries, n, index_only, &from_base));
  std::vector<float> seg_distances;
  std::vector<int64_t> seg_ids;
  const bool search_segment = segment.index().size() > 0;
  if (search_segment) {
    seg_distances.resize(static_cast<size_t>(n) * k);
    seg_ids.resize(static_cast<size_t>(n) * k);
    SearchOptions search;
    search.nprobe = options.nprobe;
    MNEMO_RETURN_IF_ERROR(segment.index().Search(n, queries, k, seg_distances.data(), seg_ids.data(), search));
  }
  const int dim = segment.index().dim();
  out->assign(static_cast<size_t>(n) * k, Neighbor());
  for (int64_t q = 0; q < n; ++q) {
    // Both lists are best first with padding at the end; on equal distances the base entry comes first.
    int i = 0, j = 0;
    for (int r = 0; r < k; ++r) {
      const bool base_ok = base != nullptr && i < k && from_base[q * k + i].entry >= 0;
      const bool seg_ok = search_segment && j < k && seg_ids[q * k + j] >= 0;
      if (!base_ok && !seg_ok) break;
      Neighbor& nb = (*out)[q * k + r];
      if (base_ok && (!seg_ok || from_base[q * k + i].distance <= seg_distances[q * k + j])) {
        nb = from_base[q * k + i++];
      } else {
        const int64_t id = seg_ids[q * k + j];
        const float distance = seg_distances[q * k + j++];
        int32_t token = 0;
        const uint16_t* key = nullptr;
        if (!segment.Lookup(id, &token, &key)) {
          return Status::Corruption("fact entry " + std::to_string(id) + " is indexed but has no stored key");
        }
        nb.entry = id;
        nb.token = token;
        nb.distance = options.recompute ? segment.SquaredDistance(queries + q * dim, key) : distance;
      }
      if (options.recompute && !IsFactEntry(nb.entry)) nb.distance = base->SquaredDistance(queries + q * dim, nb.entry);
    }
    if (options.recompute) SortNeighborsByDistance(out->begin() + q * k, out->begin() + (q + 1) * k);
  }
  return Status::OK();
}

Status FactStore::DeleteBaseDocuments(const std::vector<std::string>& ids, DocumentDeleteReport* report) {
  if (base_ == nullptr) return Status::FailedPrecondition("this state has no base datastore");
  DocumentDeleteOptions options;
  options.retrain = false;
  return base_->DeleteDocuments(ids, options, report);
}

}  // namespace mnemo
