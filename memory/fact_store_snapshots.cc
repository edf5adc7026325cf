// FactStore's snapshots and recovery: the segment in chunks of fact ids, each its own file (fact_store.h).
//
// Chunk c of chunk size C holds the entries of facts [c*C, (c+1)*C) and is written as
// snapshots/chunk-<C>-<c>-<seq>.idx, the chunk as of change <seq>. A file at <seq> holds a live fact exactly
// when the fact was created at or before <seq>, which is how a delete knows which file to unlink first.
// Files of an older single-file format (snapshots/segment-<seq>.idx, the whole segment) are split into
// chunks once; files of another chunk size are not used (their chunks are rebuilt from the database).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

#include "memory/fact_store.h"
#include "memory/fact_store_segment.h"
#include "util/file_system.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

constexpr char kLegacyPrefix[] = "segment-";
constexpr char kChunkPrefix[] = "chunk-";
constexpr char kSuffix[] = ".idx";

struct SnapshotFile {
  bool legacy = false;  // the whole segment in one file (older format)
  int64_t chunk_facts = 0, chunk = 0, seq = 0;
  std::string path;
};

bool ParseNumber(const std::string& s, int64_t* out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return false;
  try {
    *out = std::stoll(s);
  } catch (const std::out_of_range&) {  // not a number this store wrote
    return false;
  }
  return true;
}

std::string ChunkPath(const std::string& dir, int64_t chunk_facts, int64_t chunk, int64_t seq) {
  char name[96];
  std::snprintf(name, sizeof(name), "%s%" PRId64 "-%010" PRId64 "-%020" PRId64 "%s", kChunkPrefix, chunk_facts,
                chunk, seq, kSuffix);
  return SnapshotDir(dir) + "/" + name;
}

// Snapshot files in the directory, by (format, chunk size, chunk, seq); leftovers of interrupted writes go
// to *temporary. Names this store does not write are left alone.
std::vector<SnapshotFile> ListSnapshotFiles(const std::string& dir, std::vector<std::string>* temporary) {
  std::vector<SnapshotFile> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(SnapshotDir(dir), ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) {
      temporary->push_back(e.path().string());
      continue;
    }
    const size_t suffix = std::strlen(kSuffix);
    if (name.size() <= suffix || name.compare(name.size() - suffix, suffix, kSuffix) != 0) continue;
    const std::string stem = name.substr(0, name.size() - suffix);
    SnapshotFile f;
    f.path = e.path().string();
    if (stem.rfind(kLegacyPrefix, 0) == 0) {
      f.legacy = true;
      if (!ParseNumber(stem.substr(std::strlen(kLegacyPrefix)), &f.seq)) continue;
    } else if (stem.rfind(kChunkPrefix, 0) == 0) {
      const std::string rest = stem.substr(std::strlen(kChunkPrefix));
      const size_t a = rest.find('-'), b = a == std::string::npos ? a : rest.find('-', a + 1);
      if (b == std::string::npos || !ParseNumber(rest.substr(0, a), &f.chunk_facts) ||
          !ParseNumber(rest.substr(a + 1, b - a - 1), &f.chunk) || !ParseNumber(rest.substr(b + 1), &f.seq) ||
          f.chunk_facts < 1) {
        continue;
      }
    } else {
      continue;
    }
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(), [](const SnapshotFile& x, const SnapshotFile& y) {
    return std::tie(x.legacy, x.chunk_facts, x.chunk, x.seq) < std::tie(y.legacy, y.chunk_facts, y.chunk, y.seq);
  });
  return out;
}

}  // namespace

Status FactStore::Recover() {
  RecoveryReport& report = recovery_;
  MNEMO_RETURN_IF_ERROR(db_->LastSeq(&last_seq_));
  std::vector<std::string> temporary;
  const std::vector<SnapshotFile> files = ListSnapshotFiles(dir_, &temporary);
  if (!options_.read_only_check) {
    for (const std::string& t : temporary) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(t));
  }

  std::unique_ptr<Segment> segment;
  MNEMO_RETURN_IF_ERROR(NewSegment(&segment));
  const uint64_t trained = segment->index().TrainedFingerprint();

  // The map of values and keys always comes from the database; live facts by chunk, in id order.
  std::map<int64_t, std::vector<int64_t>> live;
  MNEMO_RETURN_IF_ERROR(db_->ForEach(/*with_entries=*/true, [&](const FactRecord& f) -> Status {
    segment->RememberFact(f);
    live[ChunkOf(f.id)].push_back(f.id);
    report.fact_entries += static_cast<int64_t>(f.tokens.size()) - 1;
    ++report.facts;
    return Status::OK();
  }));
  report.chunks = static_cast<int64_t>(live.size());

  std::vector<std::string> problems;
  auto load = [&](const SnapshotFile& f, std::unique_ptr<VectorIndex>* out) {
    LoadOptions options;
    options.expected_dim = config_.dim;
    Status s = VectorIndex::Load(f.path, options, out);
    if (s.ok() && (*out)->TrainedFingerprint() != trained) {
      s = Status::Corruption(f.path + ": trained structures differ from the base datastore's");
    }
    if (s.ok() && f.seq > last_seq_) {
      s = Status::Corruption(f.path + ": snapshot is newer than the database's last change");
    }
    if (!s.ok()) problems.push_back(s.ToString());
    return s.ok();
  };

  // Each chunk's source: its newest file, else the newest single-file snapshot of the older format.
  struct Source {
    std::unique_ptr<VectorIndex> index;
    int64_t seq = -1;
    bool native = false;  // its own file, kept
  };
  std::map<int64_t, Source> sources;
  const SnapshotFile* legacy = nullptr;
  for (size_t i = 0; i < files.size(); ++i) {
    const SnapshotFile& f = files[i];
    if (f.legacy) {
      legacy = &f;  // sorted by seq: the last one is the newest
      continue;
    }
    if (f.chunk_facts != chunk_facts_) continue;
    const bool newest = i + 1 == files.size() || files[i + 1].legacy || files[i + 1].chunk_facts != f.chunk_facts ||
                        files[i + 1].chunk != f.chunk;
    if (!newest) continue;
    Source source;
    if (!load(f, &source.index)) continue;
    source.seq = f.seq;
    source.native = true;
    sources[f.chunk] = std::move(source);
  }
  if (legacy != nullptr) {
    std::unique_ptr<VectorIndex> whole;
    bool needed = false;
    for (const auto& [chunk, ids] : live) needed = needed || sources.count(chunk) == 0;
    if (needed && load(*legacy, &whole)) {
      for (const auto& [chunk, ids] : live) {
        if (sources.count(chunk) > 0) continue;
        Source source;
        MNEMO_RETURN_IF_ERROR(whole->CopyIdRange(FactEntryId(chunk * chunk_facts_, 0),
                                                 FactEntryId((chunk + 1) * chunk_facts_, 0), &source.index));
        source.seq = legacy->seq;
        sources[chunk] = std::move(source);
      }
    }
  }

  // Replay the log into each loaded chunk: the changes of its facts after its snapshot.
  std::set<int64_t> dirty;
  if (!sources.empty()) {
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const auto& [chunk, source] : sources) oldest = std::min(oldest, source.seq);
    std::vector<Change> changes;
    MNEMO_RETURN_IF_ERROR(db_->ChangesAfter(oldest, &changes));
    for (const Change& c : changes) {
      const int64_t chunk = ChunkOf(c.fact_id);
      auto it = sources.find(chunk);
      if (it == sources.end() || c.seq <= it->second.seq) continue;
      ++report.replayed_changes;
      dirty.insert(chunk);
      VectorIndex& index = *it->second.index;
      if (c.op == ChangeOp::kAdd) {
        const Segment::Entries* e = segment->Find(c.fact_id);
        if (e == nullptr || index.Contains(FactEntryId(c.fact_id, 0))) continue;  // deleted later, or present
        int64_t added = 0;
        MNEMO_RETURN_IF_ERROR(IndexFactKeys({{c.fact_id, &e->keys}}, config_.dim, &index, &added));
      } else {
        Tombstone t;
        if (!db_->GetTombstone(c.fact_id, &t).ok()) continue;
        std::vector<int64_t> ids(static_cast<size_t>(t.entries));
        for (int64_t p = 0; p < t.entries; ++p) ids[p] = FactEntryId(c.fact_id, p);
        MNEMO_RETURN_IF_ERROR(index.Remove(ids.data(), t.entries, nullptr));
      }
    }
  }

  // Check every loaded chunk against the database: each live entry present, nothing else.
  for (auto& [chunk, source] : sources) {
    int64_t present = 0, missing = 0;
    auto ids = live.find(chunk);
    for (size_t i = 0; ids != live.end() && i < ids->second.size(); ++i) {
      const int64_t id = ids->second[i];
      const int64_t n = static_cast<int64_t>(segment->Find(id)->values.size());
      for (int64_t p = 0; p < n; ++p) {
        if (source.index->Contains(FactEntryId(id, p))) {
          ++present;
        } else {
          ++missing;
        }
      }
    }
    const int64_t orphans = source.index->size() - present;
    if (missing == 0 && orphans == 0) continue;
    report.missing_entries += missing;
    report.orphan_entries += orphans;
    problems.push_back("snapshot chunk " + std::to_string(chunk) + ": " + std::to_string(missing) +
                       " entries of live facts missing, " + std::to_string(orphans) +
                       " of facts not in the database, after replay");
    source.index.reset();
  }

  // Put the segment together in chunk order (so in id order, the order facts were added): loaded chunks
  // appended, the others built from the database's keys.
  std::set<int64_t> chunks;
  for (const auto& [chunk, ids] : live) chunks.insert(chunk);
  for (const auto& [chunk, source] : sources) chunks.insert(chunk);
  for (int64_t chunk : chunks) {
    auto it = sources.find(chunk);
    if (it != sources.end() && it->second.index != nullptr) {
      MNEMO_RETURN_IF_ERROR(segment->index().Append(*it->second.index));
      it->second.index.reset();
      if (live.count(chunk) > 0) ++report.chunks_loaded;
      report.snapshot_seq = std::max(report.snapshot_seq, it->second.seq);
      if (it->second.native) {
        chunk_seq_[chunk] = it->second.seq;
      } else {
        dirty.insert(chunk);
      }
      continue;
    }
    dirty.insert(chunk);
    auto ids = live.find(chunk);
    if (ids == live.end()) continue;
    ++report.chunks_rebuilt;
    for (size_t begin = 0; begin < ids->second.size(); begin += 1024) {
      std::vector<std::pair<int64_t, const std::vector<uint16_t>*>> batch;
      for (size_t i = begin; i < std::min(ids->second.size(), begin + 1024); ++i) {
        batch.emplace_back(ids->second[i], &segment->Find(ids->second[i])->keys);
      }
      int64_t added = 0;
      MNEMO_RETURN_IF_ERROR(IndexFactKeys(batch, config_.dim, &segment->index(), &added));
    }
  }
  segment->SetEntryCount(segment->index().size());
  report.rebuilt = report.chunks_rebuilt > 0;
  if (!problems.empty()) {
    report.snapshot_problem = problems[0];
    if (problems.size() > 1) report.snapshot_problem += " (and " + std::to_string(problems.size() - 1) + " more)";
  }
  segment_ = std::move(segment);
  dirty_chunks_ = std::move(dirty);
  if (options_.read_only_check) return Status::OK();

  // Every file but the kept chunks' goes (older seqs, damaged files, other formats and chunk sizes), then
  // the chunks that changed are written.
  for (const SnapshotFile& f : files) {
    if (!f.legacy && f.chunk_facts == chunk_facts_) {
      auto kept = chunk_seq_.find(f.chunk);
      if (kept != chunk_seq_.end() && kept->second == f.seq) continue;
    }
    MNEMO_RETURN_IF_ERROR(RemoveFileDurably(f.path));
  }
  // What the listing did not find must stay absent: an unlink whose directory fsync failed before the
  // restart is made durable here (or, if this fsync fails too, by the next delete before it commits).
  snapshot_dir_synced_ = CurrentFileSystem()->SyncDirectory(SnapshotDir(dir_)).ok();
  if (dirty_chunks_.empty()) return Status::OK();
  std::lock_guard<std::mutex> lock(write_mu_);
  // As for automatic checkpoints, a chunk that cannot be written (disk full) stays dirty: the store
  // opens and serves, and the next checkpoint tries again.
  Status s = CheckpointLocked();
  if (!s.ok()) std::fprintf(stderr, "fact store: snapshot chunks not written, will retry: %s\n", s.ToString().c_str());
  return Status::OK();
}

std::vector<std::string> FactStore::SnapshotPaths() const {
  std::vector<std::string> temporary, out;
  for (const SnapshotFile& f : ListSnapshotFiles(dir_, &temporary)) out.push_back(f.path);
  return out;
}

Status FactStore::Checkpoint() {
  std::lock_guard<std::mutex> write(write_mu_);
  return CheckpointLocked();
}

Status FactStore::CheckpointLocked() {
  // The caller holds write_mu_, so the segment cannot change meanwhile; searches keep running (CopyIds
  // takes the index's shared lock).
  if (options_.read_only_check) return Status::FailedPrecondition("Checkpoint: store opened for checking only");
  if (dirty_chunks_.empty() && changes_since_snapshot_ == 0) return Status::OK();
  const std::set<int64_t> dirty = dirty_chunks_;
  for (int64_t chunk : dirty) MNEMO_RETURN_IF_ERROR(WriteChunkLocked(chunk));
  // Every chunk's file now reflects every change up to last_seq_.
  changes_since_snapshot_ = 0;
  return db_->TruncateChanges(last_seq_);
}

Status FactStore::WriteChunkLocked(int64_t chunk) {
  if (segment_failed_) {
    return Status::FailedPrecondition(dir_ + ": the facts' segment missed a change; snapshots wait for a restart");
  }
  // The chunk's entries, listed from the map (only writers change it, and the caller holds write_mu_), so
  // copying them costs the chunk's size, not the segment's.
  std::vector<int64_t> ids;
  for (int64_t f = chunk * chunk_facts_; f < (chunk + 1) * chunk_facts_; ++f) {
    const Segment::Entries* e = segment_->Find(f);
    if (e == nullptr) continue;
    for (size_t p = 0; p < e->values.size(); ++p) ids.push_back(FactEntryId(f, static_cast<int64_t>(p)));
  }
  std::unique_ptr<VectorIndex> part;
  MNEMO_RETURN_IF_ERROR(segment_->index().CopyIds(ids.data(), static_cast<int64_t>(ids.size()), &part));
  // The old file goes first: a file this store no longer tracks would escape the unlink of a later delete.
  // A crash in between costs only this chunk's rebuild at the next start.
  MNEMO_RETURN_IF_ERROR(RemoveChunkFileLocked(chunk));
  if (part->size() > 0) {
    MNEMO_RETURN_IF_ERROR(part->Save(ChunkPath(dir_, chunk_facts_, chunk, last_seq_)));
    chunk_seq_[chunk] = last_seq_;
  }
  dirty_chunks_.erase(chunk);
  return Status::OK();
}

Status FactStore::RemoveChunkFileLocked(int64_t chunk) {
  auto file = chunk_seq_.find(chunk);
  if (file == chunk_seq_.end()) return Status::OK();
  MNEMO_RETURN_IF_ERROR(RemoveFileDurably(ChunkPath(dir_, chunk_facts_, chunk, file->second)));
  chunk_seq_.erase(file);
  dirty_chunks_.insert(chunk);
  return Status::OK();
}

Status FactStore::Close() {
  if (options_.read_only_check) return Status::OK();
  std::lock_guard<std::mutex> write(write_mu_);
  return CheckpointLocked();
}

}  // namespace mnemo
