#include "memory/datastore_shards.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>

#include "indexes/index_spec.h"
#include "memory/fact_shard.h"
#include "memory/json_int.h"
#include "util/file_system.h"
#include "util/file_util.h"
#include "util/hash.h"
#include "util/progress.h"

namespace mnemo {
namespace {

constexpr char kShardsFile[] = "/shards.json";
constexpr char kTrainedFile[] = "/trained.faiss";
constexpr char kShardsFormat[] = "mnemo-datastore-shards";
constexpr int64_t kCopyBytes = 8 << 20;

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

// Copies `bytes` bytes at `data` to a new file `path` in pieces, fsyncs it and returns its CRC32.
Status WriteSlice(const std::string& path, const void* data, int64_t bytes, uint32_t* crc) {
  std::unique_ptr<WritableFile> file;
  MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->NewWritableFile(path, &file));
  const char* p = static_cast<const char*>(data);
  *crc = 0;
  for (int64_t at = 0; at < bytes; at += kCopyBytes) {
    const int64_t n = std::min(kCopyBytes, bytes - at);
    *crc = Crc32(p + at, static_cast<size_t>(n), *crc);
    MNEMO_RETURN_IF_ERROR(file->Append(std::string_view(p + at, static_cast<size_t>(n))));
  }
  MNEMO_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

// Whether the datastore is split as one text: no provenance, or a single live document (a --text-file
// build), which is then cut evenly like one and its shards keep no documents.jsonl.
bool SplitsAsOneText(const Datastore& source) {
  if (!source.has_provenance()) return true;
  const std::vector<DatastoreDocument> docs = source.Documents();
  return docs.size() == 1 && !docs[0].deleted();
}

// Where shards end: with provenance at document starts nearest to equal shares, else at equal shares.
Status ChooseCuts(const Datastore& source, int shards, std::vector<int64_t>* cuts) {
  const int64_t slots = source.slots();
  cuts->assign(1, 0);
  if (SplitsAsOneText(source)) {
    if (slots < shards) {
      return Status::InvalidArgument(source.dir() + ": " + std::to_string(slots) + " entries cannot make " +
                                     std::to_string(shards) + " shards");
    }
    for (int s = 1; s < shards; ++s) cuts->push_back(slots * s / shards);
    cuts->push_back(slots);
    return Status::OK();
  }
  std::vector<int64_t> starts;  // document starts that can end a shard (not 0, not past the end)
  for (const DatastoreDocument& d : source.Documents()) {
    if (d.first > 0 && d.first < slots && (starts.empty() || starts.back() != d.first)) starts.push_back(d.first);
  }
  if (static_cast<int>(starts.size()) < shards - 1) {
    return Status::InvalidArgument(source.dir() + ": " + std::to_string(starts.size() + 1) +
                                   " non-empty documents cannot make " + std::to_string(shards) +
                                   " shards (a document stays in one shard)");
  }
  size_t next = 0;  // the first start still free
  for (int s = 1; s < shards; ++s) {
    const int64_t target = slots * s / shards;
    // The last start this cut may take leaves one start for each later cut.
    const size_t last = starts.size() - static_cast<size_t>(shards - 1 - s) - 1;
    size_t best = next;
    for (size_t i = next; i <= last; ++i) {
      if (std::llabs(starts[i] - target) < std::llabs(starts[best] - target)) best = i;
      if (starts[i] > target) break;
    }
    cuts->push_back(starts[best]);
    next = best + 1;
  }
  cuts->push_back(slots);
  return Status::OK();
}

}  // namespace

std::string ShardSetManifest::ToJson() const {
  nlohmann::ordered_json j;
  j["format"] = kShardsFormat;
  j["format_version"] = kFormatVersion;
  j["model_fingerprint"] = model_fingerprint;
  j["key_layer"] = key_layer;
  j["dim"] = dim;
  j["count"] = count;
  j["index_spec"] = index_spec;
  j["source"] = source;
  j["provenance"] = provenance;
  j["trained"] = {{"file", "trained.faiss"}, {"fingerprint", Hex(trained_fingerprint)}};
  j["shards"] = nlohmann::ordered_json::array();
  for (const Shard& s : shards) j["shards"].push_back({{"dir", s.dir}, {"first", s.first}, {"count", s.count}});
  return j.dump(2) + "\n";
}

Status ShardSetManifest::FromJson(const std::string& text, const std::string& path, ShardSetManifest* out) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("format") || j.at("format") != kShardsFormat) {
    return Status::Corruption(path + ": not a mnemo sharded datastore manifest");
  }
  try {
    if (JsonInt<int>(j.at("format_version")) != kFormatVersion) {
      return Status::Corruption(path + ": unsupported format_version");
    }
    ShardSetManifest m;
    m.model_fingerprint = j.at("model_fingerprint").get<std::string>();
    m.key_layer = j.at("key_layer").get<std::string>();
    m.dim = JsonInt<int>(j.at("dim"));
    m.count = JsonInt<int64_t>(j.at("count"));
    m.index_spec = j.at("index_spec").get<std::string>();
    m.source = j.at("source").get<std::string>();
    m.provenance = j.at("provenance").get<bool>();
    m.trained_fingerprint = std::stoull(j.at("trained").at("fingerprint").get<std::string>(), nullptr, 16);
    int64_t next = 0;
    for (const auto& s : j.at("shards")) {
      Shard shard{s.at("dir").get<std::string>(), JsonInt<int64_t>(s.at("first")), JsonInt<int64_t>(s.at("count"))};
      if (shard.dir.empty() || shard.dir.find('/') != std::string::npos || shard.dir[0] == '.') {
        return Status::Corruption(path + ": a shard's dir must be a plain name inside the set");
      }
      if (shard.first != next || shard.count < 0 || shard.count > m.count - shard.first) {
        return Status::Corruption(path + ": shard entry ranges must be contiguous and inside the whole");
      }
      next = shard.first + shard.count;
      m.shards.push_back(shard);
    }
    if (m.dim <= 0 || m.shards.empty() || next != m.count) {
      return Status::Corruption(path + ": dim must be positive and the shards must cover the whole");
    }
    *out = m;
  } catch (const std::exception& e) {  // nlohmann's, and std::stoull's on a bad fingerprint
    return Status::Corruption(path + ": malformed manifest: " + e.what());
  }
  return Status::OK();
}

namespace {
std::mutex opener_mu;
ShardOpener process_opener;
}  // namespace

void SetProcessShardOpener(ShardOpener opener) {
  std::lock_guard<std::mutex> lock(opener_mu);
  process_opener = std::move(opener);
}

ShardOpener ProcessShardOpener() {
  std::lock_guard<std::mutex> lock(opener_mu);
  return process_opener;
}

bool IsShardedDatastore(const std::string& dir) { return FileExists(dir + kShardsFile); }

Status ReadShardSetManifest(const std::string& dir, ShardSetManifest* out) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(dir + kShardsFile, &text));
  return ShardSetManifest::FromJson(text, dir + kShardsFile, out);
}

Status SplitDatastore(const std::string& source_dir, const std::string& out_dir, const SplitOptions& options,
                      SplitReport* report) {
  const auto start = std::chrono::steady_clock::now();
  if (options.shards < 1) return Status::InvalidArgument("--shards must be at least 1");
  std::error_code ec;
  if (std::filesystem::exists(out_dir, ec) && !std::filesystem::is_empty(out_dir, ec)) {
    return Status::InvalidArgument(out_dir + ": exists and is not empty (remove it or choose another --out)");
  }
  if (IsShardedDatastore(source_dir)) {
    return Status::InvalidArgument(source_dir + ": is already sharded (split the unsplit datastore instead)");
  }
  std::unique_ptr<Datastore> source;
  DatastoreOpenOptions open;
  open.mmap_index = true;
  open.read_only = true;
  MNEMO_RETURN_IF_ERROR(Datastore::Open(source_dir, open, &source));
  const DatastoreManifest whole = source->manifest();
  if (whole.shards > 0) return Status::InvalidArgument(source_dir + ": is a shard; split the whole datastore");
  IndexSpec spec;
  MNEMO_RETURN_IF_ERROR(ParseIndexSpec(whole.index_spec, whole.dim, &spec));
  if (spec.kind == IndexSpec::Kind::kIvfPq && spec.pq_bits != 8) {
    // FAISS searches those, and its heaps do not order equal distances by id: a merge could part from the whole.
    return Status::InvalidArgument(source_dir + ": index " + whole.index_spec + " cannot be split exactly (shards merge "
                                   "exactly for Flat, IVF-Flat and IVF-PQ with 8-bit codes)");
  }
  std::vector<int64_t> cuts;
  MNEMO_RETURN_IF_ERROR(ChooseCuts(*source, options.shards, &cuts));
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(out_dir));

  ShardSetManifest set;
  set.model_fingerprint = whole.model_fingerprint;
  set.key_layer = whole.key_layer;
  set.dim = whole.dim;
  set.count = source->slots();
  set.index_spec = whole.index_spec;
  set.source = source_dir;
  set.provenance = !SplitsAsOneText(*source);
  set.trained_fingerprint = source->index().TrainedFingerprint();
  {
    std::unique_ptr<VectorIndex> trained;
    MNEMO_RETURN_IF_ERROR(source->index().CreateEmptyLike(&trained));
    MNEMO_RETURN_IF_ERROR(trained->Save(out_dir + kTrainedFile));
  }
  const std::vector<DatastoreDocument> documents = source->Documents();
  const auto deleted = source->DeletedRanges();
  const int dim = whole.dim;
  ProgressBar bar("split into " + std::to_string(options.shards) + " shards", options.shards, "shards",
                  options.progress);
  for (int s = 0; s < options.shards; ++s) {
    const int64_t lo = cuts[s], hi = cuts[s + 1];
    ShardSetManifest::Shard shard{"shard-" + std::to_string(s), lo, hi - lo};
    const std::string dir = out_dir + "/" + shard.dir;
    MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
    DatastoreManifest m = whole;
    m.count = hi - lo;
    m.live = m.count;
    for (const auto& [first, count] : deleted) {
      if (first >= lo && first < hi) m.live -= count;
    }
    m.provenance = set.provenance;
    m.shard = s;
    m.shards = options.shards;
    m.shard_first = lo;
    m.whole_count = set.count;
    MNEMO_RETURN_IF_ERROR(WriteSlice(dir + "/keys.f16", source->key(0) + lo * dim, (hi - lo) * dim * 2, &m.keys_crc32));
    std::vector<int32_t> values(static_cast<size_t>(hi - lo));
    for (int64_t i = lo; i < hi; ++i) values[i - lo] = source->value(i);
    MNEMO_RETURN_IF_ERROR(WriteSlice(dir + "/values.i32", values.data(), (hi - lo) * 4, &m.values_crc32));
    if (set.provenance) {
      std::vector<DatastoreDocument> mine;
      for (DatastoreDocument d : documents) {
        if (d.first < lo || d.first >= hi || (d.first == hi && d.count == 0)) continue;
        d.first -= lo;
        mine.push_back(d);
      }
      MNEMO_RETURN_IF_ERROR(WriteDocumentsFile(dir, mine, whole.deletions_applied, /*retrain=*/false));
    }
    std::unique_ptr<VectorIndex> index;
    MNEMO_RETURN_IF_ERROR(source->index().CopyIdRange(lo, hi, &index, /*renumber=*/true));
    if (index->size() != m.live) {
      return Status::Corruption(source_dir + ": the index holds " + std::to_string(index->size()) + " entries of [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "), the documents say " +
                                std::to_string(m.live));
    }
    MNEMO_RETURN_IF_ERROR(index->Save(dir + "/index.faiss"));
    MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->SyncDirectory(dir));
    MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/manifest.json", m.ToJson()));
    set.shards.push_back(shard);
    bar.Update(s + 1, hi, "entries");
  }
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(out_dir + kShardsFile, set.ToJson()));
  if (report != nullptr) {
    report->shards = set.shards;
    report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return Status::OK();
}

Status CheckShard(const Datastore& shard, const ShardSetManifest& manifest, int index) {
  const DatastoreManifest m = shard.manifest();
  const ShardSetManifest::Shard& want = manifest.shards[index];
  const std::string where = shard.dir() + ": ";
  if (m.shards != static_cast<int>(manifest.shards.size()) || m.shard != index || m.shard_first != want.first ||
      m.count != want.count || m.whole_count != manifest.count) {
    return Status::Corruption(where + "is not shard " + std::to_string(index) + " of " +
                              std::to_string(manifest.shards.size()) + " with entries [" + std::to_string(want.first) +
                              ", " + std::to_string(want.first + want.count) + ") as shards.json says");
  }
  if (m.dim != manifest.dim || m.model_fingerprint != manifest.model_fingerprint ||
      shard.index().TrainedFingerprint() != manifest.trained_fingerprint || m.provenance != manifest.provenance) {
    return Status::Corruption(where + "its model, dimension, trained structures or provenance differ from the set's");
  }
  return Status::OK();
}

Status SearchShard(const Datastore& shard, const FactShard* facts, const float* queries, int64_t n, int k, int nprobe,
                   bool exact, ShardSearchResult* out) {
  MemorySearchOptions options;
  options.k = k;
  options.nprobe = nprobe;
  out->exact.clear();
  out->facts.clear();
  out->fact_exact.clear();
  MNEMO_RETURN_IF_ERROR(shard.SearchIndex(queries, n, options, &out->neighbors, exact ? &out->exact : nullptr));
  if (facts == nullptr) return Status::OK();
  return facts->Search(queries, n, k, nprobe, exact, &out->facts, &out->fact_exact);
}

Status DatastoreShards::FactCall(int, const std::string&, std::string*) const {
  return Status::FailedPrecondition("these shards hold no facts");
}

Status ShardSuccessors(const Datastore& shard, const float* query, const std::vector<int64_t>& entries,
                       std::vector<Neighbor>* out) {
  std::vector<Neighbor> from;
  for (int64_t e : entries) from.push_back({e, 0, 0, 0});
  return shard.Successors(query, from, out);
}

void ShardEntries(const Datastore& shard, const float* query, const std::vector<int64_t>& entries,
                  std::vector<Neighbor>* out) {
  const auto deleted = shard.DeletedRanges();
  for (int64_t e : entries) {
    if (e < 0 || e >= shard.slots()) continue;
    bool gone = false;
    for (const auto& [first, count] : deleted) gone = gone || (e >= first && e < first + count);
    if (!gone) out->push_back({e, shard.value(e), shard.SquaredDistance(query, e), 0});
  }
}

namespace {

class LocalShards : public DatastoreShards {
 public:
  LocalShards(std::vector<std::unique_ptr<Datastore>> shards, std::vector<std::unique_ptr<FactShard>> facts)
      : shards_(std::move(shards)), facts_(std::move(facts)) {}
  int count() const override { return static_cast<int>(shards_.size()); }
  Status Sizes(std::vector<int64_t>* sizes) const override {
    sizes->clear();
    for (const auto& s : shards_) sizes->push_back(s->size());
    return Status::OK();
  }
  Status SearchAll(const float* queries, int64_t n, int k, int nprobe, bool exact,
                   std::vector<ShardSearchResult>* out) const override {
    out->resize(shards_.size());
    for (size_t s = 0; s < shards_.size(); ++s) {
      MNEMO_RETURN_IF_ERROR(SearchShard(*shards_[s], facts_.empty() ? nullptr : facts_[s].get(), queries, n, k,
                                        nprobe, exact, &(*out)[s]));
    }
    return Status::OK();
  }
  Status Successors(int shard, const float* query, const std::vector<int64_t>& entries,
                    std::vector<Neighbor>* out) const override {
    return ShardSuccessors(*shards_[shard], query, entries, out);
  }
  Status Entries(int shard, const float* query, const std::vector<int64_t>& entries,
                 std::vector<Neighbor>* out) const override {
    ShardEntries(*shards_[shard], query, entries, out);
    return Status::OK();
  }
  bool holds_facts() const override { return !facts_.empty(); }
  Status FactCall(int shard, const std::string& request, std::string* reply) const override {
    if (facts_.empty()) return DatastoreShards::FactCall(shard, request, reply);
    return facts_[shard]->Handle(request, reply);
  }

 private:
  std::vector<std::unique_ptr<Datastore>> shards_;
  std::vector<std::unique_ptr<FactShard>> facts_;  // empty without a state
};

}  // namespace

Status OpenLocalShards(const std::string& dir, const ShardSetManifest& manifest, const DatastoreOpenOptions& options,
                       std::unique_ptr<DatastoreShards>* out, const std::string& state_dir) {
  std::vector<std::unique_ptr<Datastore>> shards;
  std::vector<std::unique_ptr<FactShard>> facts;
  std::unique_ptr<VectorIndex> trained;
  if (!state_dir.empty()) MNEMO_RETURN_IF_ERROR(LoadTrained(dir, manifest, &trained));
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    std::unique_ptr<Datastore> shard;
    MNEMO_RETURN_IF_ERROR(Datastore::Open(dir + "/" + manifest.shards[i].dir, options, &shard));
    MNEMO_RETURN_IF_ERROR(CheckShard(*shard, manifest, static_cast<int>(i)));
    shards.push_back(std::move(shard));
    if (state_dir.empty()) continue;
    std::unique_ptr<FactShard> share;
    MNEMO_RETURN_IF_ERROR(
        FactShard::Open(FactShardDir(state_dir, static_cast<int>(i)), *trained, manifest.dim, options.read_only, &share));
    facts.push_back(std::move(share));
  }
  out->reset(new LocalShards(std::move(shards), std::move(facts)));
  return Status::OK();
}

Status LoadTrained(const std::string& dir, const ShardSetManifest& manifest, std::unique_ptr<VectorIndex>* out) {
  LoadOptions load;
  load.expected_dim = manifest.dim;
  MNEMO_RETURN_IF_ERROR(VectorIndex::Load(dir + kTrainedFile, load, out));
  if ((*out)->TrainedFingerprint() != manifest.trained_fingerprint) {
    return Status::Corruption(dir + kTrainedFile + ": trained structures differ from shards.json's fingerprint");
  }
  return Status::OK();
}

Status ShardedDatastore::Open(const std::string& dir, const DatastoreOpenOptions& options,
                              std::unique_ptr<DatastoreShards> shards, std::unique_ptr<ShardedDatastore>* out) {
  std::unique_ptr<ShardedDatastore> ds(new ShardedDatastore());
  ds->dir_ = dir;
  MNEMO_RETURN_IF_ERROR(ReadShardSetManifest(dir, &ds->manifest_));
  if (!options.expected_model_fingerprint.empty() &&
      options.expected_model_fingerprint != ds->manifest_.model_fingerprint) {
    return Status::InvalidArgument(dir + ": built with model " + ds->manifest_.model_fingerprint +
                                   ", not the loaded model " + options.expected_model_fingerprint);
  }
  MNEMO_RETURN_IF_ERROR(LoadTrained(dir, ds->manifest_, &ds->trained_));
  if (shards == nullptr) {
    const ShardOpener opener = ProcessShardOpener();
    MNEMO_RETURN_IF_ERROR(opener ? opener(dir, ds->manifest_, "", options.read_only, &shards)
                                 : OpenLocalShards(dir, ds->manifest_, options, &shards));
  }
  if (shards->count() != static_cast<int>(ds->manifest_.shards.size())) {
    return Status::InvalidArgument(dir + ": " + std::to_string(ds->manifest_.shards.size()) + " shards, " +
                                   std::to_string(shards->count()) + " opened");
  }
  ds->shards_ = std::move(shards);
  MNEMO_RETURN_IF_ERROR(ds->shards_->Sizes(&ds->sizes_));
  *out = std::move(ds);
  return Status::OK();
}

int64_t ShardedDatastore::size() const {
  std::vector<int64_t> sizes;
  std::lock_guard<std::mutex> lock(sizes_mu_);
  if (shards_->Sizes(&sizes).ok()) sizes_ = sizes;
  int64_t total = 0;
  for (int64_t s : sizes_) total += s;
  return total;
}

int ShardedDatastore::ShardOf(int64_t entry) const {
  const auto& shards = manifest_.shards;
  auto it = std::upper_bound(shards.begin(), shards.end(), entry,
                             [](int64_t e, const ShardSetManifest::Shard& s) { return e < s.first; });
  return static_cast<int>(it - shards.begin()) - 1;
}

Status ShardedDatastore::SearchIndex(const float* queries, int64_t n, const MemorySearchOptions& options,
                                     std::vector<Neighbor>* out, std::vector<float>* exact) const {
  return SearchWithFacts(queries, n, options, out, exact, nullptr, nullptr);
}

namespace {

// Merges the shards' answers (base neighbours, or facts) for n queries of k: each query's k best by
// (index distance, entry), entries offset by first[s] (the whole's numbering). Padding stays at the end.
void MergeShardAnswers(const std::vector<ShardSearchResult>& results, bool facts, const std::vector<int64_t>& first,
                       int64_t n, int k, std::vector<Neighbor>* out, std::vector<float>* exact) {
  const size_t nk = static_cast<size_t>(n) * k;
  out->assign(nk, Neighbor());
  if (exact != nullptr) exact->assign(nk, 0.0f);
  struct Candidate {
    float distance;
    int64_t entry;
    int shard;
    int j;
  };
  std::vector<Candidate> candidates;
  for (int64_t q = 0; q < n; ++q) {
    candidates.clear();
    for (size_t s = 0; s < results.size(); ++s) {
      const std::vector<Neighbor>& answer = facts ? results[s].facts : results[s].neighbors;
      for (int j = 0; j < k; ++j) {
        const Neighbor& nb = answer[q * k + j];
        if (nb.entry >= 0) candidates.push_back({nb.distance, first[s] + nb.entry, static_cast<int>(s), j});
      }
    }
    // The whole index's order: by distance, equal distances by entry.
    const size_t keep = std::min(candidates.size(), static_cast<size_t>(k));
    std::partial_sort(candidates.begin(), candidates.begin() + keep, candidates.end(),
                      [](const Candidate& a, const Candidate& b) {
                        return a.distance < b.distance || (a.distance == b.distance && a.entry < b.entry);
                      });
    for (size_t r = 0; r < keep; ++r) {
      const Candidate& c = candidates[r];
      const ShardSearchResult& from = results[c.shard];
      Neighbor& nb = (*out)[q * k + r];
      nb = (facts ? from.facts : from.neighbors)[q * k + c.j];
      nb.entry = c.entry;
      if (exact != nullptr) (*exact)[q * k + r] = (facts ? from.fact_exact : from.exact)[q * k + c.j];
    }
  }
}

}  // namespace

Status ShardedDatastore::SearchWithFacts(const float* queries, int64_t n, const MemorySearchOptions& options,
                                         std::vector<Neighbor>* out, std::vector<float>* exact,
                                         std::vector<Neighbor>* facts, std::vector<float>* fact_exact) const {
  const int k = options.k;
  if (k < 1) return Status::InvalidArgument("k must be at least 1");
  std::vector<ShardSearchResult> results;
  MNEMO_RETURN_IF_ERROR(shards_->SearchAll(queries, n, k, options.nprobe, exact != nullptr, &results));
  const size_t nk = static_cast<size_t>(n) * k;
  const bool with_facts = facts != nullptr && shards_->holds_facts();
  for (size_t s = 0; s < results.size(); ++s) {
    const ShardSearchResult& r = results[s];
    if (r.neighbors.size() != nk || (exact != nullptr && r.exact.size() != nk) ||
        (with_facts && (r.facts.size() != nk || (exact != nullptr && r.fact_exact.size() != nk)))) {
      return Status::Internal("shard " + std::to_string(s) + " answered " + std::to_string(r.neighbors.size()) +
                              " neighbours and " + std::to_string(r.facts.size()) + " facts, not " + std::to_string(nk));
    }
  }
  std::vector<int64_t> first;
  for (const ShardSetManifest::Shard& shard : manifest_.shards) first.push_back(shard.first);
  MergeShardAnswers(results, /*facts=*/false, first, n, k, out, exact);
  if (facts == nullptr) return Status::OK();
  if (!with_facts) {
    facts->assign(nk, Neighbor());
    if (fact_exact != nullptr) fact_exact->assign(exact != nullptr ? nk : 0, 0.0f);
    return Status::OK();
  }
  // Fact entry ids name their fact: no offset.
  MergeShardAnswers(results, /*facts=*/true, std::vector<int64_t>(results.size(), 0), n, k, facts,
                    exact != nullptr ? fact_exact : nullptr);
  return Status::OK();
}

Status ShardedDatastore::Successors(const float* query, const std::vector<Neighbor>& from,
                                    std::vector<Neighbor>* out) const {
  // Each shard answers for its own entries; a shard's last entry in a datastore without provenance
  // continues into the next shard's first. Answers are appended in `from`'s order, as one datastore does.
  const int shards = static_cast<int>(manifest_.shards.size());
  std::vector<std::vector<int64_t>> asked(shards), first_of_next(shards);
  for (const Neighbor& nb : from) {
    if (nb.entry < 0 || nb.entry >= manifest_.count) continue;
    const int s = ShardOf(nb.entry);
    const ShardSetManifest::Shard& shard = manifest_.shards[s];
    const int64_t local = nb.entry - shard.first;
    if (local + 1 < shard.count) {
      asked[s].push_back(local);
    } else if (!manifest_.provenance && s + 1 < shards) {
      first_of_next[s + 1].push_back(0);
    }
  }
  std::unordered_map<int64_t, Neighbor> next;  // whole entry e -> the successor of e
  for (int s = 0; s < shards; ++s) {
    const int64_t first = manifest_.shards[s].first;
    std::vector<Neighbor> found;
    if (!asked[s].empty()) MNEMO_RETURN_IF_ERROR(shards_->Successors(s, query, asked[s], &found));
    if (!first_of_next[s].empty()) MNEMO_RETURN_IF_ERROR(shards_->Entries(s, query, {0}, &found));
    for (Neighbor nb : found) {
      nb.entry += first;
      next[nb.entry - 1] = nb;
    }
  }
  for (const Neighbor& nb : from) {
    auto it = next.find(nb.entry);
    if (nb.entry >= 0 && it != next.end()) out->push_back(it->second);
  }
  return Status::OK();
}

}  // namespace mnemo
