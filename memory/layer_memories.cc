// LayerMemories (layer_memories.h): the memories' schema and queries, and the rings derived from them.
#include "memory/layer_memories.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <utility>

#include "memory/kv_ring.h"
#include "memory/layer_memories_internal.h"
#include "memory/sqlite_db.h"
#include "util/file_util.h"
#include "util/parse.h"

namespace mnemo {
namespace {

constexpr int kFormatVersion = 1;
constexpr size_t kMaxNameBytes = 256;
constexpr int64_t kMaxListLimit = 10000;
constexpr int64_t kMaxCapacity = INT32_MAX;  // KvRing's slots are int32 (inverted lists)

constexpr char kSchema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE memories(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, capacity INTEGER, created_at_ms INTEGER);"
    "CREATE TABLE documents(id INTEGER PRIMARY KEY AUTOINCREMENT, pad BLOB, memory_id INTEGER, metadata TEXT,"
    "                       created_at_ms INTEGER, num_tokens INTEGER, text TEXT, tokens BLOB, keys BLOB, vals BLOB);"
    "CREATE INDEX documents_memory ON documents(memory_id, id);"
    "CREATE TABLE tombstones(document_id INTEGER PRIMARY KEY, memory_id INTEGER, deleted_at_ms INTEGER, tokens INTEGER);"
    "CREATE TABLE memory_tombstones(memory_id INTEGER PRIMARY KEY, deleted_at_ms INTEGER, documents INTEGER);";

Status ReadMetaInt(SqliteDb* db, const std::string& key, int64_t* value, bool* found) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT value FROM meta WHERE key = '" + key + "'", &text, found));
  if (*found && !ParseInt64(text, INT64_MIN, INT64_MAX, value).ok()) {
    return Status::Corruption(db->path() + ": meta \"" + key + "\" is not an integer: \"" + text + "\"");
  }
  return Status::OK();
}

// *empty when the file has no schema at all; Corruption for a file that is not a memories database or is
// newer than this build. Reads only, so a foreign file is not modified.
Status CheckFormat(SqliteDb* db, bool* empty) {
  std::string value;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master", &value, &found));
  *empty = value == "0";
  if (*empty) return Status::OK();
  MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                      "('meta', 'memories', 'documents', 'tombstones', 'memory_tombstones')",
                                      &value, &found));
  if (value != "5") return Status::Corruption(db->path() + ": not a mnemo memories database (its tables are missing)");
  int64_t version = 0;
  MNEMO_RETURN_IF_ERROR(ReadMetaInt(db, "format_version", &version, &found));
  if (!found || version < 1) return Status::Corruption(db->path() + ": not a mnemo memories database (no format_version)");
  if (version > kFormatVersion) {
    return Status::Corruption(db->path() + ": format_version " + std::to_string(version) +
                              " is newer than this build understands; open it with a newer mnemo");
  }
  return Status::OK();
}

MemoryInfo ReadInfo(const Statement& s) {  // id, name, capacity, created_at_ms
  MemoryInfo m;
  m.id = s.Int(0);
  m.name = s.Text(1);
  m.capacity = s.Int(2);
  m.created_at_ms = s.Int(3);
  return m;
}

constexpr char kSelectDocument[] = "SELECT id, memory_id, metadata, created_at_ms, num_tokens";

MemoryDocument ReadDocument(const Statement& s) {
  MemoryDocument d;
  d.id = s.Int(0);
  d.memory_id = s.Int(1);
  d.metadata_json = s.Text(2);
  d.created_at_ms = s.Int(3);
  d.tokens = s.Int(4);
  return d;
}

}  // namespace

KvRingOptions RingOptions(const LayerMemoriesOptions& options, int64_t capacity) {
  KvRingOptions o;
  o.heads = options.heads;
  o.head_dim = options.head_dim;
  o.capacity = capacity;
  o.centroids = options.centroids;
  o.lists = options.lists;
  o.nprobe = options.nprobe;
  o.ivf_from = options.ivf_from;
  return o;
}

class LayerMemories::ReaderImpl : public KvMemory {
 public:
  ReaderImpl(std::shared_ptr<Entry> entry, int64_t heads, int64_t head_dim)
      : entry_(std::move(entry)), heads_(heads), head_dim_(head_dim) {}
  int64_t lanes() const override { return 1; }
  int64_t heads() const override { return heads_; }
  int64_t head_dim() const override { return head_dim_; }
  int64_t size(int64_t lane) const override {
    std::shared_lock<std::shared_mutex> lock(entry_->mu);
    return entry_->deleted ? 0 : entry_->ring->size(lane);
  }
  Status Search(int64_t lane, const float* queries, int64_t n, int64_t k, float* keys_out, float* values_out,
                int64_t* tags_out) const override {
    std::shared_lock<std::shared_mutex> lock(entry_->mu);
    if (!entry_->deleted) return entry_->ring->Search(lane, queries, n, k, keys_out, values_out, tags_out);
    // A deleted memory holds nothing: every slot empty (as KvMemory::Search's contract for a short lane).
    if (lane != 0) return Status::InvalidArgument("memory lane " + std::to_string(lane) + " out of range");
    const size_t pairs = static_cast<size_t>(heads_ * n * k);
    std::fill(keys_out, keys_out + pairs * head_dim_, 0.0f);
    std::fill(values_out, values_out + pairs * head_dim_, 0.0f);
    if (tags_out != nullptr) std::fill(tags_out, tags_out + pairs, int64_t{-1});
    return Status::OK();
  }
  Status Append(int64_t, const float*, const float*, const int64_t*, int64_t) override {
    return Status::FailedPrecondition("a served memory is read-only here: documents are added through the state");
  }
  void Clear(int64_t) override {}

 private:
  std::shared_ptr<Entry> entry_;
  int64_t heads_, head_dim_;
};

LayerMemories::~LayerMemories() {
  // A clean close snapshots the large rings that changed since they were last saved (best effort: a
  // missing snapshot only makes the next open rebuild).
  try {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, entry] : memories_) {
      bool written = false;
      if (!entry->snapshot_current && !entry->deleted) (void)WriteRingSnapshot(*entry, &written);
    }
  } catch (...) {  // out of memory while saving: the next open rebuilds
  }
}

Status LayerMemories::Open(const std::string& path, const LayerMemoriesOptions& options,
                           std::unique_ptr<LayerMemories>* out) {
  if (options.heads < 1 || options.head_dim < 1) {
    return Status::InvalidArgument("memories need the memorizing layer's heads and head_dim (>= 1)");
  }
  std::unique_ptr<LayerMemories> m(new LayerMemories());
  m->path_ = path;
  m->options_ = options;
  MNEMO_RETURN_IF_ERROR(SqliteDb::Open(path, &m->db_));
  SqliteDb* db = m->db_.get();
  bool empty = false;
  MNEMO_RETURN_IF_ERROR(CheckFormat(db, &empty));
  if (empty) MNEMO_RETURN_IF_ERROR(db->Exec("PRAGMA page_size=4096"));
  MNEMO_RETURN_IF_ERROR(db->EnableDurableWalAndSecureDelete());
  if (empty) {
    Transaction txn(db);
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    std::string value;
    bool found = false;
    MNEMO_RETURN_IF_ERROR(db->QueryText("SELECT count(*) FROM sqlite_master", &value, &found));
    if (value == "0") {
      MNEMO_RETURN_IF_ERROR(db->Exec(kSchema));
      Statement s(db);
      MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO meta(key, value) VALUES(?, ?)"));
      for (const auto& [key, v] : {std::pair<std::string, int64_t>{"format_version", kFormatVersion},
                                   {"heads", options.heads},
                                   {"head_dim", options.head_dim}}) {
        s.BindText(1, key);
        s.BindText(2, std::to_string(v));
        MNEMO_RETURN_IF_ERROR(s.Run());
      }
    }
    MNEMO_RETURN_IF_ERROR(txn.Commit());
    MNEMO_RETURN_IF_ERROR(CheckFormat(db, &empty));
  }
  int64_t heads = 0, head_dim = 0, page = 0;
  bool found_heads = false, found_dim = false, found = false;
  MNEMO_RETURN_IF_ERROR(ReadMetaInt(db, "heads", &heads, &found_heads));
  MNEMO_RETURN_IF_ERROR(ReadMetaInt(db, "head_dim", &head_dim, &found_dim));
  if (!found_heads || !found_dim || heads != options.heads || head_dim != options.head_dim) {
    return Status::InvalidArgument(path + ": the memories here hold pairs of " + std::to_string(heads) + " heads x " +
                                   std::to_string(head_dim) + " dims, not the model's " +
                                   std::to_string(options.heads) + " x " + std::to_string(options.head_dim));
  }
  std::string value;
  MNEMO_RETURN_IF_ERROR(db->QueryText("PRAGMA page_size", &value, &found));
  if (!found || !ParseInt64(value, INT64_MIN, INT64_MAX, &page).ok() || page < 512) return Status::Corruption(path + ": unexpected page size");
  m->page_size_ = page;

  int64_t facts = 0;
  MNEMO_RETURN_IF_ERROR(ReadMetaInt(db, "facts_memory", &facts, &found));
  m->facts_memory_ = found ? facts : 0;
  std::lock_guard<std::mutex> lock(m->mu_);
  Statement s(db);
  MNEMO_RETURN_IF_ERROR(s.Prepare(
      "SELECT m.id, m.name, m.capacity, m.created_at_ms, count(d.id), coalesce(sum(d.num_tokens), 0) "
      "FROM memories m LEFT JOIN documents d ON d.memory_id = m.id GROUP BY m.id ORDER BY m.id"));
  bool row = false;
  std::vector<MemoryInfo> infos;
  while (true) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    MemoryInfo info = ReadInfo(s);
    info.documents = s.Int(4);
    info.stored_tokens = s.Int(5);
    infos.push_back(info);
  }
  // Snapshot files of memories that no longer exist (a crash between a memory's deletion and the removal
  // of its snapshot) and leftovers of interrupted writes go first.
  std::set<std::string> live;
  for (const MemoryInfo& info : infos) live.insert(std::to_string(info.id) + ".ring");
  std::error_code ec;
  const std::filesystem::path rings = std::filesystem::path(path).parent_path() / "memory-rings";
  std::vector<std::string> stray;
  for (auto it = std::filesystem::directory_iterator(rings, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec) && live.count(it->path().filename().string()) == 0) stray.push_back(it->path().string());
  }
  if (options.keep_snapshots) {
    for (const std::string& file : stray) MNEMO_RETURN_IF_ERROR(RemoveFileDurably(file));
  }
  for (const MemoryInfo& info : infos) {
    auto entry = std::make_shared<Entry>();
    entry->info = info;
    bool loaded = false;
    MNEMO_RETURN_IF_ERROR(m->LoadRingSnapshot(info, &entry->ring, &loaded));
    if (loaded) {
      entry->snapshot_current = true;
      ++m->rings_from_snapshots_;
    } else {
      MNEMO_RETURN_IF_ERROR(m->BuildRing(info.id, info.capacity, &entry->ring));
      bool written = false;
      (void)m->WriteRingSnapshot(*entry, &written);  // best effort: the next open rebuilds without it
    }
    m->memories_[info.id] = entry;
  }
  *out = std::move(m);
  return Status::OK();
}

Status LayerMemories::BuildRing(int64_t memory_id, int64_t capacity, std::unique_ptr<KvRing>* out) const {
  MNEMO_RETURN_IF_ERROR(KvRing::Create(RingOptions(options_, capacity), out));
  // Newest first until the ring is full; then appended oldest first. A FIFO ring that read every document
  // holds exactly these tokens (its last `capacity`), in this order.
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT id, num_tokens FROM documents WHERE memory_id = ? ORDER BY id DESC"));
  s.BindInt(1, memory_id);
  std::vector<int64_t> ids;
  int64_t total = 0;
  bool row = false;
  while (capacity == 0 || total < capacity) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    ids.push_back(s.Int(0));
    total += s.Int(1);
  }
  s.Reset();
  (*out)->Reserve(0, total);
  Statement get(db_.get());
  MNEMO_RETURN_IF_ERROR(get.Prepare("SELECT num_tokens, keys, vals FROM documents WHERE id = ?"));
  const int64_t H = options_.heads, D = options_.head_dim;
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    get.BindInt(1, *it);
    MNEMO_RETURN_IF_ERROR(get.Next(&row));
    if (!row) return Status::Corruption(path_ + ": document " + std::to_string(*it) + " vanished while reading");
    const int64_t n = get.Int(0);
    std::vector<float> keys, values;
    if (!FromLittleEndian(get.Blob(1), &keys) || !FromLittleEndian(get.Blob(2), &values) ||
        keys.size() != static_cast<size_t>(H * n * D) || values.size() != keys.size()) {
      return Status::Corruption(path_ + ": document " + std::to_string(*it) + " has pairs of the wrong size");
    }
    get.Reset();
    // The FIFO ring keeps the last `capacity` of them; skipping the rest first saves copying.
    int64_t skip = 0;
    if (capacity > 0 && total - n < capacity && total > capacity) skip = std::min(n, total - capacity);
    total -= n;
    std::vector<int64_t> tags(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) tags[t] = DocumentTag(*it, t);
    if (skip == 0) {
      MNEMO_RETURN_IF_ERROR((*out)->Append(0, keys.data(), values.data(), tags.data(), n));
      continue;
    }
    const int64_t keep = n - skip;
    std::vector<float> k2(static_cast<size_t>(H * keep * D)), v2(k2.size());
    for (int64_t h = 0; h < H; ++h) {
      std::copy(keys.begin() + (h * n + skip) * D, keys.begin() + (h * n + n) * D, k2.begin() + h * keep * D);
      std::copy(values.begin() + (h * n + skip) * D, values.begin() + (h * n + n) * D, v2.begin() + h * keep * D);
    }
    MNEMO_RETURN_IF_ERROR((*out)->Append(0, k2.data(), v2.data(), tags.data() + skip, keep));
  }
  return Status::OK();
}

std::shared_ptr<LayerMemories::Entry> LayerMemories::Find(int64_t memory_id) const {
  auto it = memories_.find(memory_id);
  return it == memories_.end() ? nullptr : it->second;
}

static Status UnknownMemory(int64_t id) { return Status::NotFound("no memory " + std::to_string(id)); }

Status LayerMemories::Create(const std::string& name, int64_t capacity, MemoryInfo* out) {
  if (capacity < 0 || capacity > kMaxCapacity) {
    return Status::InvalidArgument("capacity must be 0 (unbounded) or a number of tokens up to " +
                                   std::to_string(kMaxCapacity) + ", not " + std::to_string(capacity));
  }
  if (name.size() > kMaxNameBytes) {
    return Status::InvalidArgument("a memory name has at most " + std::to_string(kMaxNameBytes) + " bytes, not " +
                                   std::to_string(name.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(memories_.size()) >= options_.max_memories) {
    return Status::InvalidArgument("the state already holds " + std::to_string(memories_.size()) +
                                   " memories, the most it may (delete one first)");
  }
  // The ring first: whatever it refuses must not reach the database (Open would then fail to rebuild it).
  auto entry = std::make_shared<Entry>();
  MNEMO_RETURN_IF_ERROR(KvRing::Create(RingOptions(options_, capacity), &entry->ring));
  MemoryInfo info;
  info.name = name;
  info.capacity = capacity;
  info.created_at_ms = UnixTimeMs();
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO memories(name, capacity, created_at_ms) VALUES(?, ?, ?)"));
    s.BindText(1, name);
    s.BindInt(2, capacity);
    s.BindInt(3, info.created_at_ms);
    MNEMO_RETURN_IF_ERROR(s.Run());
    info.id = db_->LastInsertRowid();
    MNEMO_RETURN_IF_ERROR(NewGeneration(db_.get(), info.id));
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  entry->info = info;
  memories_[info.id] = entry;
  *out = info;
  return Status::OK();
}

Status LayerMemories::Get(int64_t memory_id, MemoryInfo* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  *out = entry->info;
  std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
  out->resident_tokens = entry->ring->size(0);
  return Status::OK();
}

Status LayerMemories::List(std::vector<MemoryInfo>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->clear();
  for (const auto& [id, entry] : memories_) {
    out->push_back(entry->info);
    std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
    out->back().resident_tokens = entry->ring->size(0);
  }
  return Status::OK();
}

Status LayerMemories::RefuseFactsMemory(int64_t memory_id, const char* what) const {
  if (memory_id != facts_memory_ || memory_id == 0) return Status::OK();
  return Status::FailedPrecondition(std::string("memory ") + std::to_string(memory_id) +
                                    " is the facts memory: it follows the state's facts, so " + what +
                                    " through /v1/facts (mnemo facts) instead");
}

Status LayerMemories::Delete(int64_t memory_id, int64_t* documents) {
  std::lock_guard<std::mutex> lock(mu_);
  MNEMO_RETURN_IF_ERROR(RefuseFactsMemory(memory_id, "delete facts"));
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  MNEMO_RETURN_IF_ERROR(RemoveRingSnapshot(entry.get()));
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    const int64_t now = UnixTimeMs();
    Statement tomb(db_.get()), docs(db_.get()), mem(db_.get()), memtomb(db_.get());
    MNEMO_RETURN_IF_ERROR(tomb.Prepare(
        "INSERT OR REPLACE INTO tombstones(document_id, memory_id, deleted_at_ms, tokens) "
        "SELECT id, memory_id, ?, num_tokens FROM documents WHERE memory_id = ?"));
    tomb.BindInt(1, now);
    tomb.BindInt(2, memory_id);
    MNEMO_RETURN_IF_ERROR(tomb.Run());
    MNEMO_RETURN_IF_ERROR(docs.Prepare("DELETE FROM documents WHERE memory_id = ?"));
    docs.BindInt(1, memory_id);
    MNEMO_RETURN_IF_ERROR(docs.Run());
    MNEMO_RETURN_IF_ERROR(mem.Prepare("DELETE FROM memories WHERE id = ?"));
    mem.BindInt(1, memory_id);
    MNEMO_RETURN_IF_ERROR(mem.Run());
    MNEMO_RETURN_IF_ERROR(memtomb.Prepare(
        "INSERT OR REPLACE INTO memory_tombstones(memory_id, deleted_at_ms, documents) VALUES(?, ?, ?)"));
    memtomb.BindInt(1, memory_id);
    memtomb.BindInt(2, now);
    memtomb.BindInt(3, entry->info.documents);
    MNEMO_RETURN_IF_ERROR(memtomb.Run());
    MNEMO_RETURN_IF_ERROR(NewGeneration(db_.get(), memory_id));
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  {
    std::unique_lock<std::shared_mutex> ring_lock(entry->mu);
    entry->deleted = true;
    entry->ring->Clear(0);
  }
  memories_.erase(memory_id);
  if (documents != nullptr) *documents = entry->info.documents;
  return db_->CheckpointAndTruncateWal();
}

Status LayerMemories::AddDocument(int64_t memory_id, const NewMemoryDocument& doc, MemoryDocument* out,
                                  int64_t* evicted) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    MNEMO_RETURN_IF_ERROR(RefuseFactsMemory(memory_id, "add facts"));
  }
  std::vector<MemoryDocument> added;
  MNEMO_RETURN_IF_ERROR(AddDocumentImpl(memory_id, {&doc}, &added, evicted));
  *out = added[0];
  return Status::OK();
}

Status LayerMemories::AddDocumentImpl(int64_t memory_id, const std::vector<const NewMemoryDocument*>& docs,
                                      std::vector<MemoryDocument>* out, int64_t* evicted) {
  const int64_t H = options_.heads, D = options_.head_dim;
  for (const NewMemoryDocument* doc : docs) {
    const int64_t n = static_cast<int64_t>(doc->tokens.size());
    if (n < 1) return Status::InvalidArgument("the document has no tokens");
    if (n > options_.max_document_tokens) {
      return Status::InvalidArgument("the document has " + std::to_string(n) + " tokens, more than the limit of " +
                                     std::to_string(options_.max_document_tokens) + " per document; read it in parts");
    }
    if (doc->keys.size() != static_cast<size_t>(H * n * D) || doc->values.size() != doc->keys.size()) {
      return Status::InvalidArgument("the document's pairs do not match its " + std::to_string(n) + " tokens");
    }
    if (!doc->metadata_json.empty()) {
      const auto j = nlohmann::json::parse(doc->metadata_json, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("metadata is not a JSON object");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  out->assign(docs.size(), MemoryDocument());
  {  // every document in one transaction
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare(
        "INSERT INTO documents(pad, memory_id, metadata, created_at_ms, num_tokens, text, tokens, keys, vals) "
        "VALUES(zeroblob(?), ?, ?, ?, ?, ?, ?, ?, ?)"));
    const int64_t now = UnixTimeMs();
    for (size_t i = 0; i < docs.size(); ++i) {
      const NewMemoryDocument& doc = *docs[i];
      MemoryDocument& d = (*out)[i];
      d.memory_id = memory_id;
      d.metadata_json = doc.metadata_json;
      d.created_at_ms = now;
      d.tokens = static_cast<int64_t>(doc.tokens.size());
      s.BindInt(1, page_size_);
      s.BindInt(2, memory_id);
      s.BindTextOrNull(3, doc.metadata_json);
      s.BindInt(4, d.created_at_ms);
      s.BindInt(5, d.tokens);
      s.BindText(6, doc.text);
      s.BindBlob(7, ToLittleEndian(doc.tokens));
      s.BindBlob(8, ToLittleEndian(doc.keys));
      s.BindBlob(9, ToLittleEndian(doc.values));
      MNEMO_RETURN_IF_ERROR(s.Run());
      d.id = db_->LastInsertRowid();
    }
    MNEMO_RETURN_IF_ERROR(NewGeneration(db_.get(), memory_id));
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  // Committed: the ring follows (a failure here leaves the ring behind the database until the next open,
  // which rebuilds it; KvRing::Append fails only on shape errors checked above).
  entry->snapshot_current = false;
  std::unique_lock<std::shared_mutex> ring_lock(entry->mu);
  const int64_t before = entry->ring->evicted(0);
  for (size_t i = 0; i < docs.size(); ++i) {
    MemoryDocument& d = (*out)[i];
    std::vector<int64_t> tags(static_cast<size_t>(d.tokens));
    for (int64_t t = 0; t < d.tokens; ++t) tags[t] = DocumentTag(d.id, t);
    const Status appended = entry->ring->Append(0, docs[i]->keys.data(), docs[i]->values.data(), tags.data(), d.tokens);
    if (!appended.ok()) {
      entry->diverged = true;  // never snapshotted; the next open rebuilds it
      return appended;
    }
    entry->info.documents += 1;
    entry->info.stored_tokens += d.tokens;
  }
  if (evicted != nullptr) *evicted = entry->ring->evicted(0) - before;
  // Of each document's tokens, those still in the ring (later documents may have evicted earlier ones).
  int64_t newer = 0;
  const int64_t size = entry->ring->size(0);
  for (size_t i = docs.size(); i-- > 0;) {
    MemoryDocument& d = (*out)[i];
    d.resident_tokens = std::clamp<int64_t>(size - newer, 0, d.tokens);
    newer += d.tokens;
  }
  return Status::OK();
}

Status LayerMemories::GetDocument(int64_t memory_id, int64_t document_id, bool with_text, MemoryDocument* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(std::string(kSelectDocument) + ", text FROM documents WHERE id = ? AND memory_id = ?"));
  s.BindInt(1, document_id);
  s.BindInt(2, memory_id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound("memory " + std::to_string(memory_id) + " has no document " + std::to_string(document_id));
  *out = ReadDocument(s);
  if (with_text) out->text = s.Text(5);
  std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
  for (int64_t tag : entry->ring->Tags(0)) out->resident_tokens += TagDocument(tag) == document_id;
  return Status::OK();
}

Status LayerMemories::ListDocuments(int64_t memory_id, int64_t after_id, int64_t limit, std::vector<MemoryDocument>* out,
                                    int64_t* next_after_id) const {
  if (limit < 1 || limit > kMaxListLimit) {
    return Status::InvalidArgument("limit must be in [1, " + std::to_string(kMaxListLimit) + "], not " + std::to_string(limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  out->clear();
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(std::string(kSelectDocument) +
                                  " FROM documents WHERE memory_id = ? AND id > ? ORDER BY id LIMIT ?"));
  s.BindInt(1, memory_id);
  s.BindInt(2, after_id);
  s.BindInt(3, limit + 1);
  bool row = false;
  while (true) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    out->push_back(ReadDocument(s));
  }
  *next_after_id = 0;
  if (static_cast<int64_t>(out->size()) > limit) {
    out->pop_back();
    *next_after_id = out->back().id;
  }
  std::map<int64_t, int64_t> resident;
  {
    std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
    for (int64_t tag : entry->ring->Tags(0)) ++resident[TagDocument(tag)];
  }
  for (MemoryDocument& d : *out) d.resident_tokens = resident[d.id];
  return Status::OK();
}

Status LayerMemories::DeleteDocument(int64_t memory_id, int64_t document_id, MemoryDocument* deleted) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    MNEMO_RETURN_IF_ERROR(RefuseFactsMemory(memory_id, "delete facts"));
  }
  return DeleteDocumentImpl(memory_id, document_id, deleted);
}

Status LayerMemories::DeleteDocumentImpl(int64_t memory_id, int64_t document_id, MemoryDocument* deleted) {
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  MNEMO_RETURN_IF_ERROR(RemoveRingSnapshot(entry.get()));
  MemoryDocument d;
  {
    Transaction txn(db_.get());
    MNEMO_RETURN_IF_ERROR(txn.Begin());
    Statement s(db_.get());
    MNEMO_RETURN_IF_ERROR(s.Prepare(std::string(kSelectDocument) + " FROM documents WHERE id = ? AND memory_id = ?"));
    s.BindInt(1, document_id);
    s.BindInt(2, memory_id);
    bool row = false;
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) {
      return Status::NotFound("memory " + std::to_string(memory_id) + " has no document " + std::to_string(document_id));
    }
    d = ReadDocument(s);
    s.Reset();
    Statement remove(db_.get()), tomb(db_.get());
    MNEMO_RETURN_IF_ERROR(remove.Prepare("DELETE FROM documents WHERE id = ?"));
    remove.BindInt(1, document_id);
    MNEMO_RETURN_IF_ERROR(remove.Run());
    MNEMO_RETURN_IF_ERROR(tomb.Prepare(
        "INSERT OR REPLACE INTO tombstones(document_id, memory_id, deleted_at_ms, tokens) VALUES(?, ?, ?, ?)"));
    tomb.BindInt(1, document_id);
    tomb.BindInt(2, memory_id);
    tomb.BindInt(3, UnixTimeMs());
    tomb.BindInt(4, d.tokens);
    MNEMO_RETURN_IF_ERROR(tomb.Run());
    MNEMO_RETURN_IF_ERROR(NewGeneration(db_.get(), memory_id));
    MNEMO_RETURN_IF_ERROR(txn.Commit());
  }
  entry->info.documents -= 1;
  entry->info.stored_tokens -= d.tokens;
  // The ring as a memory that never read the document: in place when unbounded (nothing was evicted),
  // rebuilt from the remaining documents when FIFO (older tokens it pushed out come back).
  Status ring_status;
  if (entry->info.capacity == 0) {
    std::unique_lock<std::shared_mutex> ring_lock(entry->mu);
    ring_status = entry->ring->RemoveTags(0, DocumentTag(document_id, 0), DocumentTag(document_id + 1, 0) - 1, nullptr);
  } else {
    std::unique_ptr<KvRing> rebuilt;
    ring_status = BuildRing(memory_id, entry->info.capacity, &rebuilt);
    std::unique_lock<std::shared_mutex> ring_lock(entry->mu);
    // Fail closed: if the rebuild failed, the ring is emptied rather than left serving the deleted
    // document (the next Open rebuilds it from the database).
    entry->ring->Clear(0);
    if (ring_status.ok()) entry->ring = std::move(rebuilt);
  }
  if (deleted != nullptr) *deleted = d;
  entry->snapshot_current = false;
  if (!ring_status.ok()) entry->diverged = true;
  MNEMO_RETURN_IF_ERROR(ring_status);
  return db_->CheckpointAndTruncateWal();
}

Status LayerMemories::GetTombstone(int64_t document_id, MemoryDocumentTombstone* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(
      s.Prepare("SELECT document_id, memory_id, deleted_at_ms, tokens FROM tombstones WHERE document_id = ?"));
  s.BindInt(1, document_id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound("document " + std::to_string(document_id) + " was never deleted");
  out->document_id = s.Int(0);
  out->memory_id = s.Int(1);
  out->deleted_at_ms = s.Int(2);
  out->tokens = s.Int(3);
  return Status::OK();
}

Status LayerMemories::GetDocumentPairs(int64_t document_id, std::vector<int32_t>* tokens, std::vector<float>* keys,
                                       std::vector<float>* values) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare("SELECT tokens, keys, vals FROM documents WHERE id = ?"));
  s.BindInt(1, document_id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  if (!row) return Status::NotFound("no document " + std::to_string(document_id));
  if (!FromLittleEndian(s.Blob(0), tokens) || !FromLittleEndian(s.Blob(1), keys) ||
      !FromLittleEndian(s.Blob(2), values)) {
    return Status::Corruption(path_ + ": document " + std::to_string(document_id) + " has malformed blobs");
  }
  return Status::OK();
}

Status LayerMemories::Reader(int64_t memory_id, std::unique_ptr<KvMemory>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  *out = std::make_unique<ReaderImpl>(entry, options_.heads, options_.head_dim);
  return Status::OK();
}

Status LayerMemories::RebuiltReader(int64_t memory_id, std::unique_ptr<KvMemory>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto entry = Find(memory_id);
  if (!entry) return UnknownMemory(memory_id);
  std::unique_ptr<KvRing> ring;
  MNEMO_RETURN_IF_ERROR(BuildRing(memory_id, entry->info.capacity, &ring));
  *out = std::move(ring);
  return Status::OK();
}

namespace {

// How many of the n keys [n, D] the ring's head 0 holds, bit for bit.
int64_t CountKeysIn(const KvRing& ring, const float* keys, int64_t n, int64_t D) {
  std::set<std::string> wanted;
  for (int64_t i = 0; i < n; ++i) wanted.emplace(reinterpret_cast<const char*>(keys + i * D), D * sizeof(float));
  const std::vector<float> all = ring.Keys(0);  // head 0 first
  int64_t held = 0;
  for (int64_t i = 0; i < ring.size(0); ++i) {
    held += wanted.count(std::string(reinterpret_cast<const char*>(all.data() + i * D), D * sizeof(float)));
  }
  return held;
}

}  // namespace

Status LayerMemories::CountHeldKeys(int64_t memory_id, const float* keys, int64_t n, int64_t* held) const {
  std::shared_ptr<Entry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry = Find(memory_id);
  }
  *held = 0;
  if (!entry) return Status::OK();  // a deleted memory holds nothing
  std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
  *held = CountKeysIn(*entry->ring, keys, n, options_.head_dim);
  return Status::OK();
}

Status LayerMemories::CountKeysBeyondStored(int64_t memory_id, const float* keys, int64_t n, int64_t* beyond) const {
  std::lock_guard<std::mutex> lock(mu_);
  *beyond = 0;
  auto entry = Find(memory_id);
  if (!entry) return Status::OK();
  std::unique_ptr<KvRing> rebuilt;
  MNEMO_RETURN_IF_ERROR(BuildRing(memory_id, entry->info.capacity, &rebuilt));
  const int64_t stored = CountKeysIn(*rebuilt, keys, n, options_.head_dim);
  std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
  *beyond = std::max<int64_t>(0, CountKeysIn(*entry->ring, keys, n, options_.head_dim) - stored);
  return Status::OK();
}

Status LayerMemories::StoredDocumentsContain(const std::string& bytes, bool* found) const {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(
      "SELECT 1 FROM documents WHERE instr(CAST(text AS BLOB), ?1) > 0 OR instr(CAST(metadata AS BLOB), ?1) > 0 "
      "OR instr(keys, ?1) > 0 OR instr(vals, ?1) > 0 LIMIT 1"));
  s.BindBlob(1, bytes);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(s.Next(&row));
  *found = row;
  return Status::OK();
}

namespace {
bool SameRing(const KvRing& a, const KvRing& b) {
  return a.Tags(0) == b.Tags(0) && a.Keys(0) == b.Keys(0) && a.Values(0) == b.Values(0);
}
}  // namespace

Status LayerMemories::FindTraces(int64_t memory_id, int64_t document_id, Traces* out) const {
  *out = Traces();
  MemoryDocumentTombstone t;
  Status s = GetTombstone(document_id, &t);
  if (!s.ok() && !s.IsNotFound()) return s;
  out->tombstone = s.ok();
  std::lock_guard<std::mutex> lock(mu_);
  Statement q(db_.get());
  MNEMO_RETURN_IF_ERROR(q.Prepare("SELECT count(*) FROM documents WHERE id = ?"));
  q.BindInt(1, document_id);
  bool row = false;
  MNEMO_RETURN_IF_ERROR(q.Next(&row));
  out->row = row && q.Int(0) > 0;
  auto entry = Find(memory_id);
  if (!entry) {  // the memory itself was deleted: nothing is served from it
    out->ring_matches_rebuild = true;
    return Status::OK();
  }
  std::unique_ptr<KvRing> rebuilt;
  MNEMO_RETURN_IF_ERROR(BuildRing(memory_id, entry->info.capacity, &rebuilt));
  std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
  for (int64_t tag : entry->ring->Tags(0)) out->ring_tokens += TagDocument(tag) == document_id;
  out->ring_matches_rebuild = SameRing(*entry->ring, *rebuilt);
  return Status::OK();
}

Status LayerMemories::Check(std::string* problems) const {
  problems->clear();
  std::lock_guard<std::mutex> lock(mu_);
  std::string result;
  bool found = false;
  MNEMO_RETURN_IF_ERROR(db_->QueryText("PRAGMA quick_check", &result, &found));
  if (result != "ok") *problems += path_ + ": " + result + "\n";
  for (const auto& [id, entry] : memories_) {
    std::unique_ptr<KvRing> rebuilt;
    MNEMO_RETURN_IF_ERROR(BuildRing(id, entry->info.capacity, &rebuilt));
    std::shared_lock<std::shared_mutex> ring_lock(entry->mu);
    if (!SameRing(*entry->ring, *rebuilt)) *problems += "memory " + std::to_string(id) + ": ring differs from the database\n";
  }
  return Status::OK();
}

}  // namespace mnemo
