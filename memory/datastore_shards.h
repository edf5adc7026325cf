// Sharded datastores: one datastore split into N shards that are searched as one (on one machine, or one
// process per shard under Open MPI: memory/mpi_shards.h), with results identical to the unsplit datastore.
//
// Directory layout (`mnemo datastore split --datastore DS --shards N --out DIR`):
//   shards.json    what the whole is: format "mnemo-datastore-shards", the source's model fingerprint, key
//                  layer, dim, count, index spec, the trained structures' fingerprint, and per shard its
//                  directory, first entry and count. Written last: the commit point of a split.
//   trained.faiss  an empty VectorIndex with the whole's trained structures (IVF centroids, PQ codebooks)
//                  bit for bit: what a state's facts segment is made from without loading any shard
//   shard-<i>/     a datastore (datastore.h) holding entries [first_i, first_i + count_i) of the whole,
//                  numbered from 0; its manifest's "shard" names i, N, first_i and the whole's count
//
// Each shard is a complete datastore: `mnemo datastore info|rm|verify-deleted` work on it alone. Its index
// holds the whole index's codes for its entries, copied byte for byte (VectorIndex::CopyIdRange), so an
// entry is in the same inverted list with the same code as in the whole. A query goes to every shard with
// the same k and nprobe (the same lists are probed: the coarse quantizer is shared), each returns its top k
// by (distance, entry), and the merge by (distance, whole entry number) is exactly the whole index's top k,
// ties included: mnemo's searches order equal distances by id and shard numbering keeps the whole's order.
// With recompute, shards return each neighbour's exact distance too and the merge re-sorts afterwards, as
// one index does. A datastore with provenance is cut at document boundaries (a document, and so its
// RetoMaton successor chain, stays in one shard); one without, or with a single document (a --text-file
// build), is cut evenly, its shards keep no provenance, and the successor of a shard's last entry is the
// next shard's first.
//
// Thread-safety: a ShardedDatastore allows concurrent searches (as its shards do).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "memory/datastore.h"
#include "memory/knn_memory.h"
#include "util/status.h"

namespace mnemo {

struct ShardSetManifest {
  static constexpr int kFormatVersion = 1;
  struct Shard {
    std::string dir;  // Relative to the set's directory.
    int64_t first = 0, count = 0;
  };
  std::string model_fingerprint, key_layer, index_spec, source;
  int dim = 0;
  int64_t count = 0;  // Entries of the whole (slots: deleted ranges included).
  uint64_t trained_fingerprint = 0;
  bool provenance = false;
  std::vector<Shard> shards;

  std::string ToJson() const;
  static Status FromJson(const std::string& text, const std::string& path, ShardSetManifest* out);
};

// Whether `dir` holds a sharded datastore (a shards.json).
bool IsShardedDatastore(const std::string& dir);
Status ReadShardSetManifest(const std::string& dir, ShardSetManifest* out);

struct SplitOptions {
  int shards = 2;
  bool progress = false;
};

struct SplitReport {
  std::vector<ShardSetManifest::Shard> shards;
  double seconds = 0;
};

// Splits the datastore at `source_dir` into `options.shards` shards under `out_dir` (created; it must not
// already hold a datastore or shards). InvalidArgument when there are fewer documents (or entries) than
// shards or shards < 1; errors leave no shards.json, so an unfinished split never opens.
Status SplitDatastore(const std::string& source_dir, const std::string& out_dir, const SplitOptions& options,
                      SplitReport* report);

// One shard's answers in its own entry numbering.
struct ShardSearchResult {
  std::vector<Neighbor> neighbors;  // n * k, best first by (index distance, entry), padding entry -1
  std::vector<float> exact;         // n * k exact distances when asked for, else empty
  // When the shards hold a state's facts (fact_shard.h): the shard's share of them, searched alike
  // (fact entry ids, fact_store.h); else empty.
  std::vector<Neighbor> facts;
  std::vector<float> fact_exact;
};

class FactShard;

// The N shards of one sharded datastore, wherever they run: in this process (LocalShards) or in other
// processes (MpiShards, memory/mpi_shards.h). Entries are shard-local.
class DatastoreShards {
 public:
  virtual ~DatastoreShards() = default;
  virtual int count() const = 0;
  // Live entries of each shard.
  virtual Status Sizes(std::vector<int64_t>* sizes) const = 0;
  // Every shard searches the same queries: (*out)[s] is shard s's answer.
  virtual Status SearchAll(const float* queries, int64_t n, int k, int nprobe, bool exact,
                           std::vector<ShardSearchResult>* out) const = 0;
  // Datastore::Successors of shard `shard` for its `entries` (one query).
  virtual Status Successors(int shard, const float* query, const std::vector<int64_t>& entries,
                            std::vector<Neighbor>* out) const = 0;
  // The listed entries of shard `shard` themselves: value and exact distance to `query` (deleted ones skipped).
  virtual Status Entries(int shard, const float* query, const std::vector<int64_t>& entries,
                         std::vector<Neighbor>* out) const = 0;
  // Whether each shard also holds its share of a state's facts (fact_shard.h), searched with the base.
  virtual bool holds_facts() const { return false; }
  // Carries an encoded fact request (fact_shard.h) to shard `shard`'s FactShard::Handle.
  virtual Status FactCall(int shard, const std::string& request, std::string* reply) const;
};

// How this process reaches the shards of a set it opens without being told (FactStoreOptions::open_shards
// unset): null opens them here (OpenLocalShards); a process that is rank 0 of an MPI job sets
// OpenMpiShards (memory/mpi_shards.h) once at start, before any state is opened. `state_dir` is the state
// whose facts the shards are to hold (its FactShardDir), or empty for the datastore alone; with
// `read_only` (fsck without --repair) nothing of it may be written.
using ShardOpener =
    std::function<Status(const std::string& dir, const ShardSetManifest& manifest, const std::string& state_dir,
                         bool read_only, std::unique_ptr<DatastoreShards>* out)>;
void SetProcessShardOpener(ShardOpener opener);
ShardOpener ProcessShardOpener();

// Opens each shard of the set at `dir` in this process. With a `state_dir`, each shard also opens that
// state's share of the facts (FactShardDir; read-only when options.read_only).
Status OpenLocalShards(const std::string& dir, const ShardSetManifest& manifest, const DatastoreOpenOptions& options,
                       std::unique_ptr<DatastoreShards>* out, const std::string& state_dir = "");

// The set's trained.faiss (an empty index with the whole's trained structures), checked against shards.json.
Status LoadTrained(const std::string& dir, const ShardSetManifest& manifest, std::unique_ptr<VectorIndex>* out);

// Checks that an open shard is shard `index` of `manifest` (same model, spec, trained structures, range).
Status CheckShard(const Datastore& shard, const ShardSetManifest& manifest, int index);

// Answers of one search of a single shard and its share of the facts, when it has one (what a shard's
// process computes for SearchAll).
Status SearchShard(const Datastore& shard, const FactShard* facts, const float* queries, int64_t n, int k, int nprobe,
                   bool exact, ShardSearchResult* out);
// Datastore::Successors of a shard for its listed entries.
Status ShardSuccessors(const Datastore& shard, const float* query, const std::vector<int64_t>& entries,
                       std::vector<Neighbor>* out);
// The listed entries of a shard with their exact distance to `query` (deleted ones skipped).
void ShardEntries(const Datastore& shard, const float* query, const std::vector<int64_t>& entries,
                  std::vector<Neighbor>* out);

// The whole: a BaseMemory whose entries are numbered as in the unsplit datastore.
class ShardedDatastore : public BaseMemory {
 public:
  // Reads dir/shards.json and trained.faiss; `shards` are the shards to search (null: the process's
  // ProcessShardOpener when set, else OpenLocalShards).
  static Status Open(const std::string& dir, const DatastoreOpenOptions& options,
                     std::unique_ptr<DatastoreShards> shards, std::unique_ptr<ShardedDatastore>* out);

  const ShardSetManifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // An empty index with the whole's trained structures.
  const VectorIndex& trained() const { return *trained_; }
  const DatastoreShards& shards() const { return *shards_; }

  int dim() const override { return manifest_.dim; }
  // Live entries of every shard (asked of the shards: a remote one answers or the size is its last known).
  int64_t size() const override;
  Status SearchIndex(const float* queries, int64_t n, const MemorySearchOptions& options,
                     std::vector<Neighbor>* out, std::vector<float>* exact) const override;
  // One search of every shard: the base's top k as SearchIndex, and, when the shards hold a state's facts,
  // the facts' top k over all shares by (index distance, entry) into *facts (and exact distances into
  // *fact_exact when `exact` is given), padded with entry -1.
  Status SearchWithFacts(const float* queries, int64_t n, const MemorySearchOptions& options,
                         std::vector<Neighbor>* out, std::vector<float>* exact, std::vector<Neighbor>* facts,
                         std::vector<float>* fact_exact) const;
  Status Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const override;

 private:
  ShardedDatastore() = default;
  // The shard holding whole entry `entry`.
  int ShardOf(int64_t entry) const;

  std::string dir_;
  ShardSetManifest manifest_;
  std::unique_ptr<VectorIndex> trained_;
  std::unique_ptr<DatastoreShards> shards_;
  mutable std::vector<int64_t> sizes_;  // last known live sizes (guarded by sizes_mu_)
  mutable std::mutex sizes_mu_;
};

}  // namespace mnemo
