// KnnMemory: what the kNN-LM searches. A set of entries, each a key vector (a context's hidden state)
// and the token that followed that context. Implemented by Datastore (read-only, built offline) and by
// FactStore (a base datastore plus the runtime facts).
//
// Thread-safety: implementations allow any number of concurrent Search calls.
#pragma once

#include <cstdint>
#include <vector>

#include "util/status.h"

namespace mnemo {

struct Neighbor {
  int64_t entry = -1;  // Entry id (datastore position, or a fact entry id: see fact_store.h); -1 = padding.
  int32_t token = -1;  // The entry's value (next token).
  float distance = 0;  // Squared L2.
  float weight = 0;    // softmax(-distance / T) over the query's valid neighbours (filled by retriever/).
};

struct MemorySearchOptions {
  int k = 1024;
  int nprobe = 32;         // IVF lists visited per query.
  bool recompute = false;  // Exact squared L2 against the stored fp16 keys, then re-sorted by it.
};

class KnnMemory {
 public:
  virtual ~KnnMemory() = default;
  virtual int dim() const = 0;
  // Total entries searched.
  virtual int64_t size() const = 0;
  // For each of n queries (n * dim floats) writes k neighbours to (*out)[q*k ..), best first; when fewer
  // than k are reachable the tail is padding (entry -1). Weights are left 0.
  virtual Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                        std::vector<Neighbor>* out) const = 0;
  // RetoMaton pointers (Alon et al. 2022): an entry's successor is the entry made from the next token of
  // the same text. Appends to *out, for each valid entry of `from`, its successor (value, and exact
  // squared L2 distance to `query`), skipping entries whose text ends there or that are deleted. A memory
  // that keeps no text order appends nothing (the default). An error (a shard not answering) means the
  // successors are unknown, not that there are none.
  virtual Status Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const {
    return Status::OK();
  }
};

// A read-only memory whose search can be merged with another's and recomputed afterwards (the base
// datastore under a FactStore: one Datastore, or a ShardedDatastore of several).
class BaseMemory : public KnnMemory {
 public:
  // SearchIndex, then with recompute each neighbour takes its exact distance and the list is re-sorted.
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override;
  // The index's own distances (never recomputed), best first by (distance, entry); when `exact` is not
  // null, also each returned neighbour's exact squared L2 distance to its stored key (padding: 0), so a
  // caller that merges results can recompute as one index would: merge by index distance, then re-sort
  // by exact distance.
  virtual Status SearchIndex(const float* queries, int64_t n, const MemorySearchOptions& options,
                             std::vector<Neighbor>* out, std::vector<float>* exact) const = 0;
};

// Stable sort of one query's neighbours: valid ones by ascending distance, then padding.
void SortNeighborsByDistance(std::vector<Neighbor>::iterator begin, std::vector<Neighbor>::iterator end);

// Recompute after a search by index distances (BaseMemory::SearchIndex): each valid neighbour of the n
// queries' k takes its exact distance, then each query's list is re-sorted (stably) by it.
void RecomputeAndSort(const std::vector<float>& exact, int64_t n, int k, std::vector<Neighbor>* out);

}  // namespace mnemo
