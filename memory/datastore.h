// Datastore: the kNN-LM memory on disk. Entry i maps a context's key vector (the LM's hidden state)
// to the token that followed that context (Khandelwal et al. 2020).
//
// Directory layout (format version 1):
//   manifest.json  what the entries are: model fingerprint, key layer, dim, count, index spec, source,
//                  CRC32 of keys and values. Written last: a directory without it is an unfinished build.
//   keys.f16       count x dim IEEE half floats, little endian, row-major (memory-mapped when opened)
//   values.i32     count int32 next-token ids, little endian (memory-mapped)
//   index.faiss    a VectorIndex (indexes/) over the keys, entry i stored under id i
// The index is built from the fp16-rounded keys, so exact re-ranking against keys.f16 ("recompute")
// and the index agree on what an entry's key is.
//
// This layer knows nothing of language models: retriever/ runs the LM and feeds DatastoreWriter.
//
// Thread-safety: a Datastore is immutable once opened; any number of threads may read and search it.
// A DatastoreWriter has one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "indexes/vector_index.h"
#include "memory/knn_memory.h"
#include "util/status.h"

namespace mnemo {

class MappedFile;

struct DatastoreManifest {
  static constexpr int kFormatVersion = 1;
  int format_version = kFormatVersion;
  std::string model_fingerprint;  // Of the model whose hidden states the keys are.
  std::string key_layer;          // Which tap produced the keys, e.g. "h.3.ln_2 (FFN input after layer norm)".
  int dim = 0;
  int64_t count = 0;
  std::string index_spec;         // VectorIndex spec of index.faiss.
  std::string source;             // Where the text came from (a path or a description).
  int64_t source_tokens = 0;
  uint32_t keys_crc32 = 0, values_crc32 = 0;

  std::string ToJson() const;
  static Status FromJson(const std::string& text, const std::string& path, DatastoreManifest* out);
};

struct DatastoreOpenOptions {
  // When non-empty, a datastore built with another model is an InvalidArgument error.
  std::string expected_model_fingerprint;
  bool mmap_index = false;      // Memory-map IVF inverted lists instead of reading them (large datastores).
  bool verify_checksums = false;  // Read keys/values fully and check their CRC32 (O(size); fsck does this).
  // When >= 0, searches run on a copy of the index on this GPU (VectorIndex::EnableGpuSearch); Open fails
  // when the copy cannot be made (a build without FAISS GPU support, no such GPU, an unsupported index).
  int gpu_device = -1;
};

class Datastore : public KnnMemory {
 public:
  // NotFound when `dir` has no manifest.json (never built, or a build that did not finish);
  // Corruption (naming the file) when files are damaged or disagree with the manifest.
  static Status Open(const std::string& dir, const DatastoreOpenOptions& options, std::unique_ptr<Datastore>* out);
  ~Datastore() override;

  const DatastoreManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  int64_t size() const override { return manifest_.count; }
  int dim() const override { return manifest_.dim; }
  const VectorIndex& index() const { return *index_; }
  // Entry i's key (dim halves) and value. i must be in [0, size()).
  const uint16_t* key(int64_t i) const { return keys_ + i * manifest_.dim; }
  int32_t value(int64_t i) const { return values_[i]; }
  // Exact squared L2 distance between `query` (dim floats) and entry i's stored key.
  float SquaredDistance(const float* query, int64_t i) const;

  // KnnMemory: entry i is datastore position i.
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override;

 private:
  Datastore() = default;
  std::string dir_;
  DatastoreManifest manifest_;
  std::unique_ptr<MappedFile> keys_file_, values_file_;
  const uint16_t* keys_ = nullptr;
  const int32_t* values_ = nullptr;
  std::unique_ptr<VectorIndex> index_;
};

struct DatastoreFinishOptions {
  std::string index_spec = "Flat";
  int64_t train_sample = 262144;  // Keys sampled (uniformly, seeded) to train IVF/PQ structures.
  uint64_t seed = 1;
  int64_t add_batch = 65536;      // Keys added to the index per call.
  bool progress = true;
};

// Streams entries to disk (so datastores larger than memory can be built), then builds the index.
class DatastoreWriter {
 public:
  // Creates `dir` (which must not already hold a datastore) and opens the key/value files.
  static Status Create(const std::string& dir, int dim, std::unique_ptr<DatastoreWriter>* out);
  ~DatastoreWriter();

  // Appends n entries: keys (n * dim floats, stored as fp16) and their next-token values.
  Status Append(int64_t n, const float* keys, const int32_t* values);
  int64_t count() const { return count_; }

  // Syncs the key/value files, trains and fills the index, saves it, then writes manifest.json (the
  // commit point). `manifest` supplies model_fingerprint, key_layer, source and source_tokens; the rest is
  // filled in here.
  Status Finish(DatastoreManifest manifest, const DatastoreFinishOptions& options);

 private:
  DatastoreWriter() = default;
  Status Flush();
  std::string dir_;
  int dim_ = 0;
  int64_t count_ = 0;
  int keys_fd_ = -1, values_fd_ = -1;
  std::string key_buffer_, value_buffer_;
  uint32_t keys_crc_ = 0, values_crc_ = 0;
};

}  // namespace mnemo
