// FactStore with its facts on the shards of a sharded base datastore (fact_shard.h): placement, the
// two-phase add, deletes, syncing a shard that fell behind, and the search over base and facts.
#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_map>

#include "memory/datastore_shards.h"
#include "memory/fact_shard.h"
#include "memory/fact_store.h"
#include "memory/fact_store_segment.h"
#include "memory/state_dir.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

std::string IdList(const std::vector<int64_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size() && i < 10; ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  if (ids.size() > 10) out += ", ... (" + std::to_string(ids.size()) + " in all)";
  return out;
}

}  // namespace

Status FactStore::RecoverOnShards() {
  RecoveryReport& report = recovery_;
  report.facts_on_shards = true;
  MNEMO_RETURN_IF_ERROR(db_->LastSeq(&last_seq_));
  MNEMO_RETURN_IF_ERROR(NewSegment(&segment_));  // stays empty: the shards hold the facts
  // Snapshot chunks of this process's segment (from before the facts moved to the shards) would keep
  // keys where no delete looks for them.
  if (!options_.read_only_check) {
    for (const std::string& path : SnapshotPaths()) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(path));
  }
  std::lock_guard<std::mutex> write(write_mu_);
  return SyncFactShardsLocked(/*repair=*/!options_.read_only_check, &report);
}

Status FactStore::SyncFactShardsLocked(bool repair, RecoveryReport* report) const {
  const DatastoreShards& shards = sharded_->shards();
  const int n = shards.count();
  std::unordered_map<int64_t, int64_t> live;  // fact -> entries
  int64_t live_entries = 0;
  MNEMO_RETURN_IF_ERROR(db_->ForEach(/*with_entries=*/false, [&](const FactRecord& f) -> Status {
    live[f.id] = f.num_tokens - 1;
    live_entries += f.num_tokens - 1;
    return Status::OK();
  }));
  if (report != nullptr) {
    report->facts = static_cast<int64_t>(live.size());
    report->fact_entries = live_entries;
  }
  for (int s = 0; s < n; ++s) {
    std::vector<FactShardRow> rows;
    MNEMO_RETURN_IF_ERROR(ShardListFacts(shards, s, &rows));
    std::vector<int64_t> drop, commit, send;
    std::unordered_map<int64_t, bool> held;
    for (const FactShardRow& row : rows) {
      auto it = live.find(row.id);
      if (it == live.end() || FactShardOf(row.id, n) != s || it->second != row.entries) {
        drop.push_back(row.id);  // a different entry count: sent again below
        continue;
      }
      held[row.id] = true;
      if (!row.committed) commit.push_back(row.id);
    }
    for (const auto& [id, entries] : live) {
      if (FactShardOf(id, n) == s && held.count(id) == 0) send.push_back(id);
    }
    std::sort(send.begin(), send.end());
    if (report != nullptr) {
      report->shard_facts_orphans += static_cast<int64_t>(drop.size());
      report->shard_facts_uncommitted += static_cast<int64_t>(commit.size());
      report->shard_facts_missing += static_cast<int64_t>(send.size());
    }
    if (!repair) continue;
    if (!drop.empty()) MNEMO_RETURN_IF_ERROR(ShardDropFacts(shards, s, drop));
    // Sent in batches of at most 64 MiB (a message must stay under MPI's int counts).
    std::vector<FactRecord> batch;
    size_t bytes = 0;
    auto flush = [&]() -> Status {
      std::vector<const FactRecord*> ptrs;
      for (const FactRecord& f : batch) {
        ptrs.push_back(&f);
        commit.push_back(f.id);
      }
      Status sent = batch.empty() ? Status::OK() : ShardPrepareFacts(shards, s, ptrs);
      batch.clear();
      bytes = 0;
      return sent;
    };
    for (int64_t id : send) {
      batch.emplace_back();
      MNEMO_RETURN_IF_ERROR(db_->Get(id, /*with_entries=*/true, &batch.back()));
      bytes += batch.back().tokens.size() * 4 + batch.back().keys.size() * 2 + 32;
      if (bytes >= (size_t{64} << 20)) MNEMO_RETURN_IF_ERROR(flush());
    }
    MNEMO_RETURN_IF_ERROR(flush());
    if (!commit.empty()) MNEMO_RETURN_IF_ERROR(ShardCommitFacts(shards, s, commit));
  }
  if (repair) {
    shard_fact_entries_ = live_entries;
    shards_behind_ = false;
  }
  return Status::OK();
}

Status FactStore::SyncIfBehind() const {
  if (!shards_behind_) return Status::OK();
  // Not waiting: the holder may be a write (it syncs first itself) or this very thread inside
  // WithWritesPaused (verify-deleted's probes), which must not deadlock.
  std::unique_lock<std::mutex> write(write_mu_, std::try_to_lock);
  if (!write.owns_lock()) {
    return Status::Unavailable("a shard missed a write of facts and is being brought in line; try again");
  }
  if (!shards_behind_) return Status::OK();
  Status s = SyncFactShardsLocked(/*repair=*/true, nullptr);
  if (!s.ok()) {
    return Status::Unavailable("a shard missed a write of facts and cannot be brought in line yet: " + s.message());
  }
  return Status::OK();
}

Status FactStore::AddOnShards(const std::vector<NewFact>& facts, std::vector<int64_t>* ids,
                              const ActionRecord* action) {
  std::lock_guard<std::mutex> write(write_mu_);
  if (shards_behind_) {
    Status s = SyncFactShardsLocked(/*repair=*/true, nullptr);
    if (!s.ok()) return Status::Unavailable("nothing added: a shard missed an earlier write of facts: " + s.message());
  }
  const DatastoreShards& shards = sharded_->shards();
  const int n = shards.count();
  std::map<int, std::vector<int64_t>> by_shard;
  int64_t entries = 0;
  // Phase one, inside the catalogue's transaction: every owning shard writes the rows durably (not yet
  // searchable). A failure rolls the catalogue back, so nothing is added anywhere searchable.
  auto prepare = [&](const std::vector<int64_t>& new_ids) -> Status {
    std::map<int, std::vector<FactRecord>> records;
    for (size_t i = 0; i < facts.size(); ++i) {
      FactRecord f;
      f.id = new_ids[i];
      f.tokens = facts[i].tokens;
      f.keys = facts[i].keys;
      entries += static_cast<int64_t>(f.tokens.size()) - 1;
      by_shard[FactShardOf(f.id, n)].push_back(f.id);
      records[FactShardOf(f.id, n)].push_back(std::move(f));
    }
    for (auto& [s, list] : records) {
      std::vector<const FactRecord*> ptrs;
      for (const FactRecord& f : list) ptrs.push_back(&f);
      Status prepared = ShardPrepareFacts(shards, s, ptrs);
      if (!prepared.ok()) {
        shards_behind_ = true;  // shards that did prepare hold rows of facts that will not exist
        return Status::Unavailable("nothing added: shard " + std::to_string(s) + " did not store the facts: " +
                                   prepared.message());
      }
    }
    return Status::OK();
  };
  int64_t last_seq = 0;
  Status inserted = db_->Insert(facts, ids, &last_seq, action, prepare);
  if (!inserted.ok()) {
    if (!by_shard.empty()) shards_behind_ = true;  // prepared, then the catalogue failed to commit
    return inserted;
  }
  // Phase two: committed in the catalogue and stored durably on the shards; make them searchable.
  shard_fact_entries_ += entries;
  for (const auto& [s, list] : by_shard) {
    Status committed = ShardCommitFacts(shards, s, list);
    if (!committed.ok()) {
      // Durable in both places already: acknowledged. The shard is synced (the facts committed) before
      // any search uses it again, and searches fail while it does not answer.
      shards_behind_ = true;
      std::fprintf(stderr, "fact store: facts %s added; shard %d will index them when it answers: %s\n",
                   IdList(list).c_str(), s, committed.ToString().c_str());
    }
  }
  return AfterChange(last_seq, static_cast<int64_t>(ids->size()));
}

Status FactStore::DeleteOnShards(const std::vector<int64_t>& ids, std::vector<FactRecord>* deleted,
                                 const ActionRecord* action) {
  std::lock_guard<std::mutex> write(write_mu_);
  // A shard behind is synced first when it answers (a retried delete then finds everything in line).
  if (shards_behind_) SyncFactShardsLocked(/*repair=*/true, nullptr).ok();
  int64_t last_seq = 0;
  Status s = db_->Delete(ids, deleted, &last_seq, action);
  // The catalogue may have committed even when scrubbing failed: then the shards must drop them too.
  if (deleted->empty()) {
    if (s.ok() && shards_behind_) {
      return Status::Unavailable("nothing left to delete in the catalogue, but a shard has not yet dropped the "
                                 "entries of an earlier delete; kNN requests fail until it answers");
    }
    return s;
  }
  const DatastoreShards& shards = sharded_->shards();
  const int n = shards.count();
  std::map<int, std::vector<int64_t>> by_shard;
  int64_t entries = 0;
  for (const FactRecord& f : *deleted) {
    by_shard[FactShardOf(f.id, n)].push_back(f.id);
    entries += static_cast<int64_t>(f.tokens.size()) - 1;
  }
  shard_fact_entries_ -= entries;
  std::string missed;
  for (const auto& [shard, list] : by_shard) {
    Status dropped = ShardDropFacts(shards, shard, list);
    if (!dropped.ok()) {
      shards_behind_ = true;
      missed += (missed.empty() ? "" : "; ") + dropped.message();
    }
  }
  Status listened = delete_listener_ ? delete_listener_(*deleted) : Status::OK();
  MNEMO_RETURN_IF_ERROR(AfterChange(last_seq, static_cast<int64_t>(deleted->size())));
  if (!missed.empty()) {
    std::vector<int64_t> gone;
    for (const FactRecord& f : *deleted) gone.push_back(f.id);
    return Status::Unavailable("facts " + IdList(gone) + " are deleted from the catalogue and will never be served, "
                               "but a shard did not confirm dropping their entries (" + missed +
                               "); kNN requests fail until it answers and drops them");
  }
  if (!s.ok()) return s;
  return listened;
}

Status FactStore::SearchOnShards(const float* queries, int64_t n, const MemorySearchOptions& options,
                                 std::vector<Neighbor>* out) const {
  MNEMO_RETURN_IF_ERROR(SyncIfBehind());
  if (options.k < 1) return Status::InvalidArgument("k must be at least 1");
  MemorySearchOptions index_only = options;
  index_only.recompute = false;  // recompute after merging, as one index would
  std::vector<Neighbor> base, facts;
  std::vector<float> base_exact, fact_exact;
  MNEMO_RETURN_IF_ERROR(sharded_->SearchWithFacts(queries, n, index_only, &base,
                                                  options.recompute ? &base_exact : nullptr, &facts, &fact_exact));
  MergeBaseAndFacts(base, base_exact, facts, fact_exact, n, options.k, options.recompute, out);
  return Status::OK();
}

Status FactStore::CheckFactShards(std::string* result) const {
  if (!facts_on_shards_) {
    *result = "none";
    return Status::OK();
  }
  std::string problems;
  const DatastoreShards& shards = sharded_->shards();
  for (int s = 0; s < shards.count(); ++s) {
    std::string one;
    MNEMO_RETURN_IF_ERROR(ShardCheckFacts(shards, s, &one));
    if (one != "ok") problems += (problems.empty() ? "" : "; ") + ("shard " + std::to_string(s) + ": " + one);
  }
  *result = problems.empty() ? "ok" : problems;
  return Status::OK();
}

}  // namespace mnemo
