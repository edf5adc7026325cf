// LayerMemories (layer_memories.h), "Ring snapshots": saving and restoring large rings, and the memories'
// generations that tie a snapshot to the database state it was taken at.
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>

#include "memory/layer_memories_internal.h"
#include "util/file_util.h"
#include "util/hash.h"

namespace mnemo {

Status NewGeneration(SqliteDb* db, int64_t memory_id) {
  static std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(UnixTimeMs()));
  static std::mutex rng_mu;
  uint64_t value;
  {
    std::lock_guard<std::mutex> lock(rng_mu);
    value = rng();
  }
  Statement s(db);
  MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"));
  s.BindText(1, "generation:" + std::to_string(memory_id));
  s.BindText(2, std::to_string(value));
  return s.Run();
}

namespace {

constexpr char kRingMagic[8] = {'M', 'N', 'R', 'I', 'N', 'G', '0', '1'};

// The snapshot body's checksum: FNV-1a over 8-byte words (then the tail bytes), eight times fewer steps than
// byte-wise FNV over a few hundred MB. It detects torn and damaged files, not tampering.
uint64_t RingChecksum(std::string_view data) {
  uint64_t h = kFnv1a64Basis;
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + i, sizeof(w));
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < data.size(); ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ull;
  return h;
}

}  // namespace

std::string LayerMemories::RingSnapshotPath(int64_t memory_id) const {
  return (std::filesystem::path(path_).parent_path() / "memory-rings" / (std::to_string(memory_id) + ".ring")).string();
}

Status LayerMemories::RemoveRingSnapshot(Entry* entry) const {
  // The snapshot holds every document of the memory: a delete removes it (unlink and directory fsync)
  // before it commits, so no file keeps a deleted document's pairs once the delete is acknowledged, even
  // if the process dies right after; if the unlink fails, nothing is deleted. A delete that then fails
  // costs only the snapshot (written again at the next clean shutdown). An absent file is removed
  // durably too: an earlier unlink whose directory fsync failed could otherwise come back after a power
  // loss, holding the document this delete acknowledges (found by tests/fault_injection_test.cc).
  const std::string path = RingSnapshotPath(entry->info.id);
  entry->snapshot_current = false;
  if (!std::filesystem::is_directory(std::filesystem::path(path).parent_path())) return Status::OK();
  return RemoveFileDurably(path);
}

Status LayerMemories::RingStamp(const MemoryInfo& info, std::string* stamp) const {
  std::string generation;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(db_->QueryText("SELECT value FROM meta WHERE key = 'generation:" + std::to_string(info.id) + "'",
                                       &generation, &found));
  Statement docs(db_.get()), tombs(db_.get());
  MNEMO_RETURN_IF_ERROR(docs.Prepare("SELECT coalesce(max(id), 0), count(*) FROM documents WHERE memory_id = ?"));
  docs.BindInt(1, info.id);
  MNEMO_RETURN_IF_ERROR(tombs.Prepare("SELECT count(*) FROM tombstones WHERE memory_id = ?"));
  tombs.BindInt(1, info.id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(docs.Next(&row));
  const int64_t max_id = docs.Int(0), count = docs.Int(1);
  MNEMO_RETURN_IF_ERROR(tombs.Next(&row));
  const uint64_t centroids = Fnv1a64(options_.centroids.data(), options_.centroids.size() * sizeof(float));
  *stamp = "memory=" + std::to_string(info.id) + " generation=" + (found ? generation : "none") +
           " capacity=" + std::to_string(info.capacity) +
           " heads=" + std::to_string(options_.heads) + " head_dim=" + std::to_string(options_.head_dim) +
           " lists=" + std::to_string(options_.lists) + " centroids=" + std::to_string(centroids) +
           " max_document=" + std::to_string(max_id) + " documents=" + std::to_string(count) +
           " tombstones=" + std::to_string(tombs.Int(0));
  return Status::OK();
}

Status LayerMemories::LoadRingSnapshot(const MemoryInfo& info, std::unique_ptr<KvRing>* ring, bool* loaded) const {
  *loaded = false;
  const std::string path = RingSnapshotPath(info.id);
  if (!FileExists(path)) return Status::OK();
  std::string bytes, stamp;
  MNEMO_RETURN_IF_ERROR(RingStamp(info, &stamp));
  Status s = ReadFileToString(path, &bytes);
  // magic, stamp size (u64), stamp, body checksum (u64), body
  uint64_t stamp_size = 0, checksum = 0;
  const size_t fixed = sizeof(kRingMagic) + 2 * sizeof(uint64_t);
  if (s.ok() && bytes.size() >= fixed && std::memcmp(bytes.data(), kRingMagic, sizeof(kRingMagic)) == 0) {
    std::memcpy(&stamp_size, bytes.data() + sizeof(kRingMagic), sizeof(stamp_size));
    if (stamp_size == stamp.size() && bytes.size() >= fixed + stamp_size &&
        bytes.compare(sizeof(kRingMagic) + sizeof(uint64_t), stamp_size, stamp) == 0) {
      const size_t body = fixed + stamp_size;
      std::memcpy(&checksum, bytes.data() + body - sizeof(uint64_t), sizeof(checksum));
      const std::string_view data(bytes.data() + body, bytes.size() - body);
      std::unique_ptr<KvRing> restored;
      if (checksum == RingChecksum(data) &&
          KvRing::Create(RingOptions(options_, info.capacity), &restored).ok() && restored->Restore(0, data).ok()) {
        *ring = std::move(restored);
        *loaded = true;
        return Status::OK();
      }
    }
  }
  // Stale, torn or foreign: the database rebuilds the ring.
  return options_.keep_snapshots ? RemoveFileDurably(path) : Status::OK();
}

Status LayerMemories::WriteRingSnapshot(Entry& entry, bool* written) const {
  *written = false;
  if (!options_.keep_snapshots || options_.snapshot_from <= 0 || entry.diverged) return Status::OK();
  {
    std::shared_lock<std::shared_mutex> ring_lock(entry.mu);
    if (entry.ring->size(0) < options_.snapshot_from) return Status::OK();
  }
  std::string stamp;
  MNEMO_RETURN_IF_ERROR(RingStamp(entry.info, &stamp));
  const uint64_t stamp_size = stamp.size();
  std::string bytes(kRingMagic, sizeof(kRingMagic));
  bytes.append(reinterpret_cast<const char*>(&stamp_size), sizeof(stamp_size));
  bytes += stamp;
  const size_t checksum_at = bytes.size(), body_at = checksum_at + sizeof(uint64_t);
  bytes.resize(body_at);
  {
    std::shared_lock<std::shared_mutex> ring_lock(entry.mu);
    if (options_.snapshot_from <= 0 || entry.ring->size(0) < options_.snapshot_from) return Status::OK();
    entry.ring->Save(0, &bytes);
  }
  const uint64_t checksum = RingChecksum(std::string_view(bytes).substr(body_at));
  std::memcpy(bytes.data() + checksum_at, &checksum, sizeof(checksum));
  const std::string path = RingSnapshotPath(entry.info.id);
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(std::filesystem::path(path).parent_path().string()));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(path, bytes));
  entry.snapshot_current = true;
  *written = true;
  return Status::OK();
}

}  // namespace mnemo
