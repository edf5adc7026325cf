// Datastore: the kNN-LM memory on disk. Entry i maps a context's key vector (the LM's hidden state)
// to the token that followed that context (Khandelwal et al. 2020).
//
// Directory layout (format version 1):
//   manifest.json  what the entries are: model fingerprint, key layer, dim, count, index spec, source,
//                  CRC32 of keys and values. Written last: a directory without it is an unfinished build.
//   keys.f16       count x dim IEEE half floats, little endian, row-major (memory-mapped when opened)
//   values.i32     count int32 next-token ids, little endian (memory-mapped)
//   index.faiss    a VectorIndex (indexes/) over the keys, entry i stored under id i
//   documents.jsonl (datastores built from documents) provenance: a header line {"format",
//                  "deletions": seq}, then one line per document {"id", "first", "count", "tokens",
//                  "metadata"?, "train"?} naming its entries [first, first + count); a deleted document
//                  keeps only {"id", "first", "count", "deleted": seq} (its tombstone)
//   LOCK           flock: shared while a Datastore is open, exclusive while documents are deleted
// The index is built from the fp16-rounded keys, so exact re-ranking against keys.f16 ("recompute")
// and the index agree on what an entry's key is.
//
// This layer knows nothing of language models: retriever/ runs the LM and feeds DatastoreWriter.
//
// Deleting documents (datastore_documents.cc): a document's entries are removed from the index (which then
// answers exactly as one that never held them, VectorIndex's removal contract), its key and value bytes
// are punched out of keys.f16 and values.i32 (the file system frees the blocks; reads give zeros), and its
// line in documents.jsonl keeps only a tombstone. Entry numbers do not change: a deleted range is a hole.
// The commit point is the atomic rewrite of documents.jsonl (header "deletions" = seq); the manifest's
// "deletions_applied" says which deletions the other files reflect, and Open finishes any it has not
// applied (roll forward) before anything is searched, so a deletion that committed is never undone.
//
// Trained structures and deletion: IVF centroids and PQ codebooks are trained on a sample of a training
// pool, recorded in the manifest: "external" (keys of a separate text, --train-text: no stored document
// fed training), "marked" (documents marked "train": true), "all" (every entry, the default) or "none"
// (Flat). A document in the pool shaped the centroids, and with pool "all" every document is in it (the
// sample is drawn from all entries, so removing any changes it): deleting one requires retraining
// (DocumentDeleteOptions::retrain, which trains again on the remaining pool, exactly as a build without
// the document would, and re-adds every live entry), else FailedPrecondition says why. Either way the
// datastore then answers exactly as one built from the remaining documents from the start.
//
// Thread-safety: any number of threads may search; DeleteDocuments may run beside searches (it swaps the
// index under an exclusive lock held only for the swap and the punching). A DatastoreWriter has one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "indexes/vector_index.h"
#include "memory/knn_memory.h"
#include "util/file_system.h"
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
  // Entries in the index: count minus deleted documents' entries (count when nothing was deleted).
  int64_t live = -1;
  bool provenance = false;        // documents.jsonl exists (a build from documents)
  int64_t deletions_applied = 0;  // The newest deletion the keys, values, index and counts reflect.
  // What trained the IVF/PQ structures: pool "none" (Flat), "all", "marked" or "external" (see above).
  std::string training_pool = "all";
  std::string training_source;    // The external text's path (pool "external").
  int64_t train_sample = 0;       // Keys sampled from the pool (at most).
  uint64_t train_seed = 1;
  // The windows the keys were computed with (lm/scorer.h WindowOptions; 0: the model's defaults), so a
  // document's keys can be recomputed exactly (verify-deleted).
  int64_t window = 0, stride = 0;
  // A shard of a sharded datastore (datastore_shards.h): shard `shard` of `shards` (0: not a shard), its
  // entry i being entry shard_first + i of the whole, which had whole_count entries. Its trained
  // structures are the whole's, bit for bit.
  int shard = 0, shards = 0;
  int64_t shard_first = 0, whole_count = 0;

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
  // Never write: a datastore with an unfinished deletion is then FailedPrecondition instead of being
  // finished (fsck without --repair).
  bool read_only = false;
};

// One document of a datastore built from documents (provenance).
struct DatastoreDocument {
  std::string id;
  int64_t first = 0, count = 0;  // Its entries [first, first + count).
  int64_t tokens = 0;            // Its length in tokens (count = tokens - 1 when tokens > 0).
  std::string metadata_json;     // "" when none; dropped on delete.
  bool train = false;            // Marked by the builder as training data (pool "marked").
  int64_t deleted_seq = 0;       // > 0: deleted by deletion `deleted_seq` (a tombstone).
  bool deleted() const { return deleted_seq > 0; }
};

struct DocumentDeleteOptions {
  // Documents in the training pool (see above) are deleted only with this set: the index is then trained
  // again on the remaining pool and every live entry re-added (minutes at 1M entries).
  bool retrain = false;
  bool progress = false;
};

struct DocumentDeleteReport {
  std::vector<DatastoreDocument> deleted;  // Their records before deletion (metadata included).
  int64_t entries = 0;                     // Entries removed.
  int64_t seq = 0;                         // The deletion's number.
  bool retrained = false;
  double seconds = 0, index_seconds = 0;   // Total; loading, changing and saving the index.
};

// Where a deleted document could still be (DatastoreDocument traces; the model probe is retriever/'s).
struct DocumentTraces {
  std::string id;
  bool tombstone = false;
  int64_t deleted_seq = 0;
  int64_t entries = 0;               // Its entry range's length.
  bool metadata_kept = false;        // Its line in documents.jsonl still has metadata.
  int64_t index_entries = 0;         // Ids of its range still in the index.
  int64_t nonzero_key_bytes = 0;     // Bytes of its rows in keys.f16 that are not zero.
  int64_t nonzero_value_bytes = 0;   // ... and in values.i32.
  std::vector<std::string> stray_files;  // Unfinished temporary files in the directory.
  bool clean() const {
    return tombstone && !metadata_kept && index_entries == 0 && nonzero_key_bytes == 0 &&
           nonzero_value_bytes == 0 && stray_files.empty();
  }
};

class Datastore : public BaseMemory {
 public:
  // NotFound when `dir` has no manifest.json (never built, or a build that did not finish);
  // Corruption (naming the file) when files are damaged or disagree with the manifest.
  static Status Open(const std::string& dir, const DatastoreOpenOptions& options, std::unique_ptr<Datastore>* out);
  ~Datastore() override;

  // A copy: deletions change it.
  DatastoreManifest manifest() const;
  const std::string& dir() const { return dir_; }
  // Live entries (slots() minus deleted ones).
  int64_t size() const override;
  // Entry numbers are in [0, slots()); deleted documents leave holes.
  int64_t slots() const { return slots_; }
  int dim() const override { return dim_; }
  // The index; valid until the next DeleteDocuments (which replaces it). Not for use beside deletions.
  const VectorIndex& index() const { return *index_; }
  // Deleted entry ranges [first, first + count), ascending.
  std::vector<std::pair<int64_t, int64_t>> DeletedRanges() const;
  // Entry i's key (dim halves) and value. i must be in [0, slots()); a deleted entry reads as zeros.
  const uint16_t* key(int64_t i) const { return keys_ + i * dim_; }
  int32_t value(int64_t i) const { return values_[i]; }
  // Exact squared L2 distance between `query` (dim floats) and entry i's stored key.
  float SquaredDistance(const float* query, int64_t i) const;

  // KnnMemory: entry i is datastore position i.
  Status SearchIndex(const float* queries, int64_t n, const MemorySearchOptions& options,
                     std::vector<Neighbor>* out, std::vector<float>* exact) const override;
  // Entry i's successor is i + 1 (entries are built in text order), within i's document when the
  // datastore has provenance; a deleted document has none.
  Status Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const override;

  // Provenance (datastore_documents.cc). has_provenance: built from documents.
  bool has_provenance() const { return provenance_; }
  // Every document, deleted ones as tombstones, in entry order.
  std::vector<DatastoreDocument> Documents() const;
  // NotFound for an id the datastore never had; FailedPrecondition without provenance.
  Status GetDocument(const std::string& id, DatastoreDocument* out) const;
  // Whether deleting `id` needs DocumentDeleteOptions::retrain, and why (empty when it does not).
  std::string RetrainReason(const DatastoreDocument& doc) const;

  // Deletes the documents (durably: see the top of this file) and returns when every file reflects it.
  // Errors change nothing: FailedPrecondition without provenance, for a document in the training pool
  // without options.retrain (the message says why and what retraining costs), when another process (or
  // another Datastore in this one) has the datastore open, or with GPU search on; NotFound naming an
  // unknown or already deleted id; InvalidArgument for an empty or repeated list.
  Status DeleteDocuments(const std::vector<std::string>& ids, const DocumentDeleteOptions& options,
                         DocumentDeleteReport* report);
  // NotFound for an unknown id, FailedPrecondition when the document is not deleted.
  Status FindDocumentTraces(const std::string& id, DocumentTraces* out) const;

 private:
  Datastore() = default;
  Status LoadDocuments();
  Status RollForward();
  Status ApplyDeletions(bool retrain, bool progress, double* index_seconds);
  Status RetrainedIndex(bool progress, std::unique_ptr<VectorIndex>* out) const;
  Status LockExclusive();
  void UnlockExclusive();
  Status WriteDocuments(int64_t seq, bool retrain_pending) const;

  std::string dir_;
  DatastoreOpenOptions options_;
  int dim_ = 0;
  int64_t slots_ = 0;
  int lock_fd_ = -1;
  mutable std::shared_mutex mu_;  // shared: searches and reads; exclusive: a deletion's swap and punch
  std::mutex delete_mu_;          // one deletion at a time
  DatastoreManifest manifest_;
  bool provenance_ = false;
  int64_t documents_seq_ = 0;     // documents.jsonl's header "deletions"
  bool retrain_pending_ = false;  // documents.jsonl's header "retrain"
  std::vector<DatastoreDocument> documents_;
  std::unique_ptr<MappedFile> keys_file_, values_file_;
  const uint16_t* keys_ = nullptr;
  const int32_t* values_ = nullptr;
  std::unique_ptr<VectorIndex> index_;
  std::vector<std::unique_ptr<VectorIndex>> retired_;  // replaced indexes (index() references stay valid)
};

// The sample of `pool` (entry numbers, ascending) that trains IVF/PQ structures: n rows drawn uniformly
// without replacement with `seed`, ascending. A build and a retrain after deletions draw it identically.
std::vector<int64_t> SampleTrainingRows(const std::vector<int64_t>& pool, int64_t n, uint64_t seed);

// Writes <dir>/documents.jsonl atomically: the header (deletion `seq`, whether it retrains) and the
// documents (tombstones without metadata).
Status WriteDocumentsFile(const std::string& dir, const std::vector<DatastoreDocument>& documents, int64_t seq,
                          bool retrain);

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
  int64_t documents() const { return static_cast<int64_t>(documents_.size()); }
  // Provenance: entries appended from now until the next BeginDocument (or Finish) are document `id`'s.
  // InvalidArgument for an empty or repeated id, or entries appended before the first document.
  Status BeginDocument(const std::string& id, int64_t tokens, const std::string& metadata_json, bool train);
  // Keys of a separate text that train the IVF/PQ structures instead of the stored entries (pool
  // "external"); they are not stored. Call before Finish, any number of times.
  void AddTrainingKeys(int64_t n, const float* keys, const std::string& source);

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
  std::unique_ptr<WritableFile> keys_file_, values_file_;
  std::string key_buffer_, value_buffer_;
  uint32_t keys_crc_ = 0, values_crc_ = 0;
  std::vector<DatastoreDocument> documents_;
  std::unordered_set<std::string> document_ids_;
  std::vector<float> training_keys_;  // fp16-rounded
  std::string training_source_;
};

}  // namespace mnemo
