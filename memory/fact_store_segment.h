// FactSegment (FactStore::Segment), the facts' part of the memory, shared by fact_store.cc (writes, searches),
// fact_store_snapshots.cc (snapshot chunks, recovery) and fact_shard.cc (a shard rank's share of the facts).
// Internal to memory/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "indexes/vector_index.h"
#include "memory/fact_store.h"
#include "memory/knn_memory.h"
#include "util/half.h"

namespace mnemo {

// Adds the entries of facts given as (id, fp16 keys of dimension `dim`) to `index` in one call (all or
// nothing), entry p of fact f under FactEntryId(f, p); *added receives the number of entries.
inline Status IndexFactKeys(const std::vector<std::pair<int64_t, const std::vector<uint16_t>*>>& facts, int dim,
                            VectorIndex* index, int64_t* added) {
  int64_t total = 0;
  for (const auto& [id, k] : facts) total += static_cast<int64_t>(k->size()) / dim;
  std::vector<float> keys(static_cast<size_t>(total) * dim);
  std::vector<int64_t> ids(static_cast<size_t>(total));
  int64_t row = 0;
  for (const auto& [id, k] : facts) {
    const int64_t n = static_cast<int64_t>(k->size()) / dim;
    for (int64_t p = 0; p < n; ++p, ++row) {
      ids[row] = FactEntryId(id, p);
      for (int d = 0; d < dim; ++d) keys[row * dim + d] = HalfToFloat((*k)[p * dim + d]);
    }
  }
  MNEMO_RETURN_IF_ERROR(index->Add(total, keys.data(), ids.data()));
  *added = total;
  return Status::OK();
}

// The facts' entries: an index over their keys plus, per fact, the values and fp16 keys (for exact
// distances). Not synchronized: FactStore guards it with segment_mu_, FactShard with its mutex.
class FactSegment {
 public:
  struct Entries {
    std::vector<int32_t> values;  // tokens[1..n)
    std::vector<uint16_t> keys;   // (n - 1) * dim
  };

  FactSegment(std::unique_ptr<VectorIndex> index, int dim) : index_(std::move(index)), dim_(dim) {}

  // Adds every fact's entries to the index in one call (all or nothing), then to the map.
  Status AddFacts(const std::vector<const FactRecord*>& facts) {
    std::vector<std::pair<int64_t, const std::vector<uint16_t>*>> keys;
    for (const FactRecord* f : facts) keys.emplace_back(f->id, &f->keys);
    MNEMO_RETURN_IF_ERROR(IndexKeys(keys));
    for (const FactRecord* f : facts) RememberFact(*f);
    return Status::OK();
  }

  // Adds the entries of facts given as (id, fp16 keys) to the index in one call; the map is untouched
  // (start-up replay re-indexes facts the map already holds).
  Status IndexKeys(const std::vector<std::pair<int64_t, const std::vector<uint16_t>*>>& facts) {
    int64_t added = 0;
    MNEMO_RETURN_IF_ERROR(IndexFactKeys(facts, dim_, index_.get(), &added));
    entries_ += added;
    return Status::OK();
  }

  // Removes the fact's entries (ids for `entries` positions) from the index and the map, zeroing the
  // in-memory keys before freeing them.
  Status RemoveFact(int64_t fact_id, int64_t entries) {
    std::vector<int64_t> ids(static_cast<size_t>(std::max<int64_t>(entries, 0)));
    for (int64_t p = 0; p < entries; ++p) ids[p] = FactEntryId(fact_id, p);
    int64_t removed = 0;
    MNEMO_RETURN_IF_ERROR(index_->Remove(ids.data(), entries, &removed));
    auto it = facts_.find(fact_id);
    if (it != facts_.end()) {
      std::fill(it->second.keys.begin(), it->second.keys.end(), uint16_t{0});
      facts_.erase(it);
    }
    entries_ -= removed;
    return Status::OK();
  }

  const Entries* Find(int64_t fact_id) const {
    auto it = facts_.find(fact_id);
    return it == facts_.end() ? nullptr : &it->second;
  }

  // The value and key of a fact entry; false when it is not here.
  bool Lookup(int64_t entry, int32_t* token, const uint16_t** key) const {
    const Entries* e = Find(FactIdOfEntry(entry));
    const int64_t p = PositionOfEntry(entry);
    if (e == nullptr || p >= static_cast<int64_t>(e->values.size())) return false;
    *token = e->values[p];
    *key = e->keys.data() + p * dim_;
    return true;
  }

  float SquaredDistance(const float* query, const uint16_t* key) const {
    float sum = 0;
    for (int d = 0; d < dim_; ++d) {
      const float diff = query[d] - HalfToFloat(key[d]);
      sum += diff * diff;
    }
    return sum;
  }

  // Each query's k nearest entries by (index distance, entry) with their values, padded with entry -1;
  // with exact, *exact_out their exact distances (SquaredDistance), else it is left as it was.
  Status Search(const float* queries, int64_t n, int k, int nprobe, bool exact, std::vector<Neighbor>* out,
                std::vector<float>* exact_out) const {
    const size_t nk = static_cast<size_t>(n) * k;
    out->assign(nk, Neighbor());
    if (exact) exact_out->assign(nk, 0.0f);
    if (index_->size() == 0) return Status::OK();
    std::vector<float> distances(nk);
    std::vector<int64_t> ids(nk);
    SearchOptions search;
    search.nprobe = nprobe;
    MNEMO_RETURN_IF_ERROR(index_->Search(n, queries, k, distances.data(), ids.data(), search));
    for (size_t i = 0; i < nk; ++i) {
      if (ids[i] < 0) continue;
      int32_t token = 0;
      const uint16_t* key = nullptr;
      if (!Lookup(ids[i], &token, &key)) {
        return Status::Corruption("fact entry " + std::to_string(ids[i]) + " is indexed but has no stored key");
      }
      (*out)[i] = {ids[i], token, distances[i], 0};
      if (exact) (*exact_out)[i] = SquaredDistance(queries + (i / k) * dim_, key);
    }
    return Status::OK();
  }

  VectorIndex& index() { return *index_; }
  const VectorIndex& index() const { return *index_; }
  void ReplaceIndex(std::unique_ptr<VectorIndex> index) { index_ = std::move(index); }
  void SetEntryCount(int64_t n) { entries_ = n; }
  int64_t entries() const { return entries_; }
  size_t fact_count() const { return facts_.size(); }
  // Map-only insertion (start-up: the index comes from a snapshot).
  void RememberFact(const FactRecord& f) {
    Entries& e = facts_[f.id];
    e.values.assign(f.tokens.begin() + 1, f.tokens.end());
    e.keys = f.keys;
  }
  const std::unordered_map<int64_t, Entries>& facts() const { return facts_; }

 private:
  std::unique_ptr<VectorIndex> index_;
  int dim_;
  std::unordered_map<int64_t, Entries> facts_;
  int64_t entries_ = 0;
};

}  // namespace mnemo
