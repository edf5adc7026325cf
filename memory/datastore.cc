#include "memory/datastore.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <vector>

#include "indexes/auto_index.h"
#include "memory/json_int.h"
#include "util/file_util.h"
#include "util/half.h"
#include "util/hash.h"
#include "util/mapped_file.h"
#include "util/progress.h"

namespace mnemo {
namespace {

constexpr char kManifest[] = "/manifest.json";
constexpr char kKeys[] = "/keys.f16";
constexpr char kValues[] = "/values.i32";
constexpr char kIndex[] = "/index.faiss";
constexpr size_t kFlushBytes = 8 << 20;

}  // namespace

std::string DatastoreManifest::ToJson() const {
  nlohmann::ordered_json j;
  j["format"] = "mnemo-datastore";
  j["format_version"] = format_version;
  j["model_fingerprint"] = model_fingerprint;
  j["key_layer"] = key_layer;
  j["dim"] = dim;
  j["count"] = count;
  j["index_spec"] = index_spec;
  j["source"] = source;
  j["source_tokens"] = source_tokens;
  j["keys"] = {{"file", "keys.f16"}, {"dtype", "float16"}, {"crc32", keys_crc32}};
  j["values"] = {{"file", "values.i32"}, {"dtype", "int32"}, {"crc32", values_crc32}};
  j["live"] = live < 0 ? count : live;
  j["windows"] = {{"window", window}, {"stride", stride}};
  j["training"] = {{"pool", training_pool}, {"source", training_source}, {"sample", train_sample},
                   {"seed", train_seed}};
  if (provenance) j["documents"] = {{"file", "documents.jsonl"}, {"deletions_applied", deletions_applied}};
  if (shards > 0) {
    j["shard"] = {{"index", shard}, {"of", shards}, {"first", shard_first}, {"whole_count", whole_count}};
  }
  return j.dump(2) + "\n";
}

Status DatastoreManifest::FromJson(const std::string& text, const std::string& path, DatastoreManifest* out) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  // Not j.value("format", ""): it throws when "format" is there but not a string (fuzz/datastore_manifest_fuzz).
  if (j.is_discarded() || !j.is_object() || !j.contains("format") || j.at("format") != "mnemo-datastore") {
    return Status::Corruption(path + ": not a mnemo datastore manifest");
  }
  try {
    DatastoreManifest m;
    m.format_version = JsonInt<int>(j.at("format_version"));
    if (m.format_version != kFormatVersion) {
      return Status::Corruption(path + ": unsupported format_version " + std::to_string(m.format_version));
    }
    m.model_fingerprint = j.at("model_fingerprint").get<std::string>();
    m.key_layer = j.at("key_layer").get<std::string>();
    m.dim = JsonInt<int>(j.at("dim"));
    m.count = JsonInt<int64_t>(j.at("count"));
    m.index_spec = j.at("index_spec").get<std::string>();
    m.source = j.at("source").get<std::string>();
    m.source_tokens = JsonInt<int64_t>(j.at("source_tokens"));
    m.keys_crc32 = JsonInt<uint32_t>(j.at("keys").at("crc32"));
    m.values_crc32 = JsonInt<uint32_t>(j.at("values").at("crc32"));
    // Written since provenance (older manifests lack them: nothing was ever deleted from those).
    m.live = JsonIntOr(j, "live", m.count);
    if (j.contains("training")) {
      const auto& t = j.at("training");
      m.training_pool = t.at("pool").get<std::string>();
      m.training_source = t.at("source").get<std::string>();
      m.train_sample = JsonInt<int64_t>(t.at("sample"));
      m.train_seed = JsonInt<uint64_t>(t.at("seed"));
    }
    if (j.contains("windows")) {
      m.window = JsonInt<int64_t>(j.at("windows").at("window"));
      m.stride = JsonInt<int64_t>(j.at("windows").at("stride"));
    }
    if (j.contains("documents")) {
      m.provenance = true;
      m.deletions_applied = JsonInt<int64_t>(j.at("documents").at("deletions_applied"));
    }
    if (j.contains("shard")) {
      const auto& sh = j.at("shard");
      m.shard = JsonInt<int>(sh.at("index"));
      m.shards = JsonInt<int>(sh.at("of"));
      m.shard_first = JsonInt<int64_t>(sh.at("first"));
      m.whole_count = JsonInt<int64_t>(sh.at("whole_count"));
      if (m.shards < 1 || m.shard < 0 || m.shard >= m.shards || m.shard_first < 0 ||
          m.whole_count < m.shard_first || m.count > m.whole_count - m.shard_first) {
        return Status::Corruption(path + ": shard must be one of [0, of) with its entries inside the whole");
      }
    }
    if (m.dim <= 0 || m.count < 0) return Status::Corruption(path + ": dim must be positive and count non-negative");
    if (m.live < 0 || m.live > m.count) return Status::Corruption(path + ": live must be in [0, count]");
    if (m.training_pool != "all" && m.training_pool != "marked" && m.training_pool != "external" &&
        m.training_pool != "none") {
      return Status::Corruption(path + ": unknown training pool " + m.training_pool);
    }
    *out = m;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(path + ": malformed manifest: " + e.what());
  }
  return Status::OK();
}

Datastore::~Datastore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Status Datastore::Open(const std::string& dir, const DatastoreOpenOptions& options, std::unique_ptr<Datastore>* out) {
  std::unique_ptr<Datastore> ds(new Datastore());
  ds->dir_ = dir;
  ds->options_ = options;
  const std::string manifest_path = dir + kManifest;
  std::string text;
  if (!ReadFileToString(manifest_path, &text).ok()) {
    return Status::NotFound(manifest_path + ": missing (not a datastore, or its build did not finish)");
  }
  MNEMO_RETURN_IF_ERROR(DatastoreManifest::FromJson(text, manifest_path, &ds->manifest_));
  if (!options.expected_model_fingerprint.empty() &&
      options.expected_model_fingerprint != ds->manifest_.model_fingerprint) {
    return Status::InvalidArgument(dir + ": datastore was built with model " + ds->manifest_.model_fingerprint +
                                   ", but the loaded model is " + options.expected_model_fingerprint +
                                   " (rebuild it with `mnemo datastore build` for this model)");
  }
  ds->dim_ = ds->manifest_.dim;
  ds->slots_ = ds->manifest_.count;
  // A shared lock for as long as it is open: deletions (exclusive) wait for, or refuse, other holders.
  // A datastore on a read-only file system is served unlocked (nothing can delete from it).
  const std::string lock_path = dir + "/LOCK";
  ds->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (ds->lock_fd_ >= 0 && ::flock(ds->lock_fd_, LOCK_SH) != 0) {
    return Status::IOError(lock_path + ": flock failed: " + std::strerror(errno));
  }
  if (ds->manifest_.provenance) {
    MNEMO_RETURN_IF_ERROR(ds->LoadDocuments());
    if (ds->documents_seq_ > ds->manifest_.deletions_applied) {
      if (options.read_only) {
        return Status::FailedPrecondition(dir + ": deletion " + std::to_string(ds->documents_seq_) +
                                          " committed but not applied to every file (open it writable to finish it)");
      }
      MNEMO_RETURN_IF_ERROR(ds->RollForward());
    }
  }
  const DatastoreManifest& m = ds->manifest_;
  MNEMO_RETURN_IF_ERROR(MappedFile::Open(dir + kKeys, &ds->keys_file_));
  MNEMO_RETURN_IF_ERROR(MappedFile::Open(dir + kValues, &ds->values_file_));
  const size_t key_bytes = static_cast<size_t>(m.count) * m.dim * sizeof(uint16_t);
  const size_t value_bytes = static_cast<size_t>(m.count) * sizeof(int32_t);
  if (ds->keys_file_->size() != key_bytes) {
    return Status::Corruption(dir + kKeys + ": " + std::to_string(ds->keys_file_->size()) + " bytes, manifest implies " +
                              std::to_string(key_bytes));
  }
  if (ds->values_file_->size() != value_bytes) {
    return Status::Corruption(dir + kValues + ": " + std::to_string(ds->values_file_->size()) +
                              " bytes, manifest implies " + std::to_string(value_bytes));
  }
  if (options.verify_checksums) {
    if (Crc32(ds->keys_file_->data(), key_bytes) != m.keys_crc32) {
      return Status::Corruption(dir + kKeys + ": checksum mismatch");
    }
    if (Crc32(ds->values_file_->data(), value_bytes) != m.values_crc32) {
      return Status::Corruption(dir + kValues + ": checksum mismatch");
    }
  }
  ds->keys_ = reinterpret_cast<const uint16_t*>(ds->keys_file_->data());
  ds->values_ = reinterpret_cast<const int32_t*>(ds->values_file_->data());
  LoadOptions load;
  load.expected_dim = m.dim;
  load.mmap = options.mmap_index;
  MNEMO_RETURN_IF_ERROR(VectorIndex::Load(dir + kIndex, load, &ds->index_));
  if (options.gpu_device >= 0) {
    Status s = ds->index_->EnableGpuSearch(options.gpu_device);
    if (!s.ok()) {
      const std::string message = dir + kIndex + ": GPU search: " + s.message();
      return s.IsInvalidArgument() ? Status::InvalidArgument(message) : Status::FailedPrecondition(message);
    }
  }
  if (ds->index_->size() != m.live) {
    return Status::Corruption(dir + kIndex + ": holds " + std::to_string(ds->index_->size()) +
                              " entries, manifest says " + std::to_string(m.live));
  }
  *out = std::move(ds);
  return Status::OK();
}

DatastoreManifest Datastore::manifest() const {
  std::shared_lock lock(mu_);
  return manifest_;
}

int64_t Datastore::size() const {
  std::shared_lock lock(mu_);
  return manifest_.live;
}

float Datastore::SquaredDistance(const float* query, int64_t i) const {
  const uint16_t* k = key(i);
  float sum = 0;
  for (int d = 0; d < dim_; ++d) {
    const float diff = query[d] - HalfToFloat(k[d]);
    sum += diff * diff;
  }
  return sum;
}

Status Datastore::Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (const Neighbor& nb : from) {
    const int64_t next = nb.entry + 1;
    if (nb.entry < 0 || next >= slots_) continue;
    if (provenance_) {
      // The document holding nb.entry (documents_ is in entry order): its successor must be in it too.
      auto doc = std::upper_bound(documents_.begin(), documents_.end(), nb.entry,
                                  [](int64_t e, const DatastoreDocument& d) { return e < d.first; });
      if (doc == documents_.begin()) continue;
      --doc;
      if (doc->deleted() || next >= doc->first + doc->count) continue;
    }
    out->push_back({next, values_[next], SquaredDistance(query, next), 0});
  }
  return Status::OK();
}

Status Datastore::SearchIndex(const float* queries, int64_t n, const MemorySearchOptions& options,
                              std::vector<Neighbor>* out, std::vector<float>* exact) const {
  const int k = options.k;
  if (k < 1) return Status::InvalidArgument("k must be at least 1");
  std::vector<float> distances(n * k);
  std::vector<int64_t> ids(n * k);
  SearchOptions search;
  search.nprobe = options.nprobe;
  std::shared_lock lock(mu_);  // a deletion swaps the index and zeroes keys under the exclusive lock
  MNEMO_RETURN_IF_ERROR(index_->Search(n, queries, k, distances.data(), ids.data(), search));
  out->assign(n * k, Neighbor());
  if (exact != nullptr) exact->assign(n * k, 0.0f);
  for (int64_t q = 0; q < n; ++q) {
    for (int j = 0; j < k; ++j) {
      Neighbor& nb = (*out)[q * k + j];
      const int64_t id = ids[q * k + j];
      if (id < 0 || id >= slots_) continue;
      nb.entry = id;
      nb.token = value(id);
      nb.distance = distances[q * k + j];
      if (exact != nullptr) (*exact)[q * k + j] = SquaredDistance(queries + q * dim(), id);
    }
  }
  return Status::OK();
}

DatastoreWriter::~DatastoreWriter() = default;

Status DatastoreWriter::Create(const std::string& dir, int dim, std::unique_ptr<DatastoreWriter>* out) {
  if (dim <= 0) return Status::InvalidArgument("datastore dim must be positive");
  if (FileExists(dir + kManifest)) {
    return Status::InvalidArgument(dir + ": already holds a datastore (remove it or choose another --out)");
  }
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  std::unique_ptr<DatastoreWriter> w(new DatastoreWriter());
  w->dir_ = dir;
  w->dim_ = dim;
  MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->NewWritableFile(dir + kKeys, &w->keys_file_));
  MNEMO_RETURN_IF_ERROR(CurrentFileSystem()->NewWritableFile(dir + kValues, &w->values_file_));
  *out = std::move(w);
  return Status::OK();
}

Status DatastoreWriter::Append(int64_t n, const float* keys, const int32_t* values) {
  const size_t old_keys = key_buffer_.size();
  key_buffer_.resize(old_keys + n * dim_ * sizeof(uint16_t));
  auto* dst = reinterpret_cast<uint16_t*>(&key_buffer_[old_keys]);
  for (int64_t i = 0; i < n * dim_; ++i) {
    if (!std::isfinite(keys[i])) return Status::InvalidArgument("datastore key has a non-finite value");
    dst[i] = FloatToHalf(keys[i]);
  }
  value_buffer_.append(reinterpret_cast<const char*>(values), n * sizeof(int32_t));
  count_ += n;
  return key_buffer_.size() >= kFlushBytes ? Flush() : Status::OK();
}

Status DatastoreWriter::Flush() {
  keys_crc_ = Crc32(key_buffer_.data(), key_buffer_.size(), keys_crc_);
  values_crc_ = Crc32(value_buffer_.data(), value_buffer_.size(), values_crc_);
  MNEMO_RETURN_IF_ERROR(keys_file_->Append(key_buffer_));
  MNEMO_RETURN_IF_ERROR(values_file_->Append(value_buffer_));
  key_buffer_.clear();
  value_buffer_.clear();
  return Status::OK();
}

Status DatastoreWriter::Finish(DatastoreManifest manifest, const DatastoreFinishOptions& options) {
  MNEMO_RETURN_IF_ERROR(Flush());
  for (WritableFile* file : {keys_file_.get(), values_file_.get()}) {
    MNEMO_RETURN_IF_ERROR(file->Sync());
    MNEMO_RETURN_IF_ERROR(file->Close());
  }
  if (count_ == 0) return Status::InvalidArgument("datastore has no entries");
  std::unique_ptr<MappedFile> keys_file;
  MNEMO_RETURN_IF_ERROR(MappedFile::Open(dir_ + kKeys, &keys_file));
  const auto* keys = reinterpret_cast<const uint16_t*>(keys_file->data());
  auto to_float = [&](int64_t begin, int64_t n, std::vector<float>* out) {
    out->resize(n * dim_);
    for (int64_t i = 0; i < n * dim_; ++i) (*out)[i] = HalfToFloat(keys[begin * dim_ + i]);
  };

  // "auto": chosen by size now that the count is known (indexes/auto_index.h).
  const std::string spec =
      options.index_spec == "auto" ? AutoIndexSpec(count_, dim_, options.train_sample) : options.index_spec;
  std::unique_ptr<VectorIndex> index;
  MNEMO_RETURN_IF_ERROR(VectorIndex::Create(dim_, spec, Metric::kL2, &index));
  std::vector<float> buffer;
  manifest.training_pool = "none";
  manifest.training_source.clear();
  manifest.train_sample = 0;
  manifest.train_seed = options.seed;
  if (!index->is_trained()) {
    // The pool the sample is drawn from (datastore.h): a separate text's keys, the documents marked
    // "train", or every entry.
    std::vector<float> sample;
    std::vector<int64_t> pool;
    if (!training_keys_.empty()) {
      manifest.training_pool = "external";
      manifest.training_source = training_source_;
      for (int64_t i = 0; i < static_cast<int64_t>(training_keys_.size()) / dim_; ++i) pool.push_back(i);
    } else if (std::any_of(documents_.begin(), documents_.end(), [](const DatastoreDocument& d) { return d.train; })) {
      manifest.training_pool = "marked";
      for (const DatastoreDocument& d : documents_) {
        for (int64_t i = d.first; d.train && i < d.first + d.count; ++i) pool.push_back(i);
      }
    } else {
      manifest.training_pool = "all";
      pool.resize(count_);
      std::iota(pool.begin(), pool.end(), 0);
    }
    const std::vector<int64_t> rows = SampleTrainingRows(pool, options.train_sample, options.seed);
    const int64_t n = static_cast<int64_t>(rows.size());
    sample.resize(n * dim_);
    for (int64_t i = 0; i < n; ++i) {
      for (int d = 0; d < dim_; ++d) {
        sample[i * dim_ + d] = manifest.training_pool == "external" ? training_keys_[rows[i] * dim_ + d]
                                                                     : HalfToFloat(keys[rows[i] * dim_ + d]);
      }
    }
    manifest.train_sample = options.train_sample;
    ProgressBar bar("train index " + spec, 1, "", options.progress);
    MNEMO_RETURN_IF_ERROR(index->Train(n, sample.data()));
    bar.Update(1, n, "keys");
  }
  {
    ProgressBar bar("index keys", count_, "entries", options.progress);
    std::vector<int64_t> ids;
    for (int64_t begin = 0; begin < count_; begin += options.add_batch) {
      const int64_t n = std::min(options.add_batch, count_ - begin);
      to_float(begin, n, &buffer);
      ids.resize(n);
      std::iota(ids.begin(), ids.end(), begin);
      MNEMO_RETURN_IF_ERROR(index->Add(n, buffer.data(), ids.data()));
      bar.Update(begin + n, begin + n, "entries");
    }
  }
  MNEMO_RETURN_IF_ERROR(index->Save(dir_ + kIndex));
  manifest.format_version = DatastoreManifest::kFormatVersion;
  manifest.dim = dim_;
  manifest.count = count_;
  manifest.index_spec = index->spec();
  manifest.keys_crc32 = keys_crc_;
  manifest.values_crc32 = values_crc_;
  manifest.live = count_;
  manifest.provenance = !documents_.empty();
  manifest.deletions_applied = 0;
  if (manifest.provenance) {
    documents_.back().count = count_ - documents_.back().first;
    MNEMO_RETURN_IF_ERROR(WriteDocumentsFile(dir_, documents_, 0, false));
  }
  return WriteFileAtomically(dir_ + kManifest, manifest.ToJson());
}

Status DatastoreWriter::BeginDocument(const std::string& id, int64_t tokens, const std::string& metadata_json,
                                      bool train) {
  if (id.empty()) return Status::InvalidArgument("a document id must not be empty");
  if (documents_.empty() && count_ > 0) {
    return Status::InvalidArgument("entries were appended before the first document");
  }
  // documents.jsonl holds the id as a JSON string, which must be UTF-8: refused here rather than thrown
  // by the dump that writes the file.
  std::string quoted;
  try {
    quoted = nlohmann::json(id).dump();
  } catch (const nlohmann::json::exception&) {
    return Status::InvalidArgument("a document id must be valid UTF-8");
  }
  if (!document_ids_.insert(id).second) return Status::InvalidArgument("document id " + quoted + " is repeated");
  if (!documents_.empty()) documents_.back().count = count_ - documents_.back().first;
  DatastoreDocument d;
  d.id = id;
  d.first = count_;
  d.tokens = tokens;
  d.metadata_json = metadata_json;
  d.train = train;
  documents_.push_back(std::move(d));
  return Status::OK();
}

void DatastoreWriter::AddTrainingKeys(int64_t n, const float* keys, const std::string& source) {
  training_source_ = source;
  for (int64_t i = 0; i < n * dim_; ++i) training_keys_.push_back(HalfToFloat(FloatToHalf(keys[i])));
}

std::vector<int64_t> SampleTrainingRows(const std::vector<int64_t>& pool, int64_t n, uint64_t seed) {
  // A uniform sample without replacement, in entry order (deterministic for a seed and pool).
  const int64_t size = static_cast<int64_t>(pool.size());
  n = std::min(n, size);
  std::vector<int64_t> rows = pool;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n; ++i) std::swap(rows[i], rows[i + rng() % (size - i)]);
  rows.resize(n);
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace mnemo
