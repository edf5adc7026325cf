// KvRing: the memorizing layer's memory (lm/kv_memory.h): for each lane, a FIFO ring of at most
// `capacity` tokens (0: unbounded), each token one (key, value) pair per head, stored as fp32 or fp16.
//
// Search is exact: per head, one matrix product of the lane's keys with the queries (BLAS sgemm), then a
// top-k selection by (score descending, insertion order ascending) — a total order, so results do not
// depend on where in the ring a token sits. With fp16 storage the stored keys and values are the
// fp16-rounded ones, and they are what a search returns and scores with.
//
// IVF search (optional, for large memories): given per-head centroids (trained once per model on keys of
// its training documents: TrainKvCentroids, `mnemo memory index`), every stored key also sits in the
// inverted list of its nearest (L2) centroid, and a lane holding at least `ivf_from` tokens answers each
// query from the `nprobe` lists whose centroids score highest with it by inner product (an IVF over the
// ring's own storage: the lists hold slot numbers, 4 bytes). L2 assignment keeps the lists balanced;
// inner-product assignment (FAISS's IndexIVFFlat with an IP quantizer) puts most keys in the lists of the
// few largest-norm centroids, which made IVF scan a third to a half of the memory. The
// same total order ranks the candidates. The centroids are a property of the model, never of what the
// memory held, so removal stays exact for IVF search too: the answer is the top-k of the remaining
// tokens that sit in the probed lists, which is what a ring that never held the removed ones answers.
//
// Removal: RemoveTags(lane, first, last) forgets the lane's tokens whose tags lie in [first, last] (a
// document, when tags are document-major) and compacts the rest in insertion order, so every later
// search answers exactly as a ring that was given the same appends without those tokens and evicted the
// same older ones (tested). A FIFO ring does not bring back tokens it already evicted: a memory that
// must answer as if a deleted document had never been read keeps its documents elsewhere and rebuilds
// the ring from them.
//
// Thread-safety: as KvMemory: concurrent const calls; writes exclusive.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "lm/kv_memory.h"

namespace mnemo {

struct KvRingOptions {
  int64_t lanes = 1;
  int64_t heads = 1;
  int64_t head_dim = 1;
  int64_t capacity = 0;  // Tokens per lane; 0: unbounded.
  bool fp16 = false;     // Store keys and values as IEEE half floats (half the bytes).
  // IVF search: `lists` centroids per head, [heads, lists, head_dim] floats; empty: exact search only.
  std::vector<float> centroids;
  int64_t lists = 0;
  int64_t nprobe = 8;         // Lists each query scans.
  int64_t ivf_from = 16384;   // A lane searches by IVF once it holds this many tokens (the measured crossover).
};

// k-means (FAISS, L2 assignment) of n keys per head,
// keys [heads, n, head_dim], into `lists` centroids per head: out [heads, lists, head_dim].
Status TrainKvCentroids(const float* keys, int64_t heads, int64_t n, int64_t head_dim, int64_t lists, uint64_t seed,
                        std::vector<float>* out);

class KvRing : public KvMemory {
 public:
  static Status Create(const KvRingOptions& options, std::unique_ptr<KvRing>* out);
  ~KvRing() override;

  int64_t lanes() const override { return options_.lanes; }
  int64_t heads() const override { return options_.heads; }
  int64_t head_dim() const override { return options_.head_dim; }
  int64_t size(int64_t lane) const override;
  Status Search(int64_t lane, const float* queries, int64_t n, int64_t k, float* keys_out, float* values_out,
                int64_t* tags_out) const override;
  Status Append(int64_t lane, const float* keys, const float* values, const int64_t* tags, int64_t n) override;
  void Clear(int64_t lane) override;

  // Forgets `lane`'s tokens whose tags are in [first, last]; *removed (may be null) gets their count.
  Status RemoveTags(int64_t lane, int64_t first, int64_t last, int64_t* removed);
  // Tokens evicted from `lane` since it was created or last cleared.
  int64_t evicted(int64_t lane) const;
  // The lane's tags, oldest first.
  std::vector<int64_t> Tags(int64_t lane) const;
  // The lane's keys of every head, oldest first: [heads, size(lane), head_dim].
  std::vector<float> Keys(int64_t lane) const;
  // The lane's values, laid out as Keys.
  std::vector<float> Values(int64_t lane) const;
  // Whether a search of `lane` now goes through the IVF lists.
  bool searches_by_ivf(int64_t lane) const;
  // The lane's whole state (pairs, tags, insertion order, eviction count, IVF lists) as bytes (host byte
  // order), and back: a lane restored from Save's bytes answers every search, append and removal as the
  // saved one did. Restore checks the bytes against this ring's options and replaces the lane only when they
  // are whole and consistent (Corruption otherwise, the lane unchanged).
  void Save(int64_t lane, std::string* out) const;  // appends to *out
  Status Restore(int64_t lane, std::string_view bytes);
  // Reserves room for `tokens` more tokens in the lane (at most the capacity): a ring rebuilt from many
  // documents then grows without reallocating. No effect on what it holds.
  void Reserve(int64_t lane, int64_t tokens);
  // Bytes of keys, values and bookkeeping per stored token (all heads).
  int64_t bytes_per_token() const;
  const KvRingOptions& options() const { return options_; }

 private:
  struct Lane;
  explicit KvRing(const KvRingOptions& options);
  Status CheckLane(int64_t lane) const;
  std::vector<float> Pairs(int64_t lane, bool values) const;  // Keys or Values
  // Inverted-list maintenance (IVF only).
  void Assign(const float* keys, int64_t n, std::vector<int32_t>* list_ids) const;  // [heads, n]
  void ListAdd(Lane& l, int64_t h, int64_t slot, int32_t list) const;
  void ListRemove(Lane& l, int64_t h, int64_t slot) const;
  void SearchIvf(const Lane& l, const float* queries, int64_t n, int64_t k, float* keys_out, float* values_out,
                 int64_t* tags_out) const;

  KvRingOptions options_;
  std::vector<float> centroid_norms_;  // [heads, lists]: |c|^2 of each centroid (IVF only)
  std::vector<Lane> lanes_;
};

// A KvRing as a KvMemory of `lanes` x `heads` x `head_dim` and `capacity` tokens per lane (fp32 unless
// fp16): the factory lm/trainer.h's TrainOptions::make_memory and the CLI's scorers take.
Status MakeKvRing(int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity, std::unique_ptr<KvMemory>* out);
Status MakeKvRing(int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity, bool fp16,
                  std::unique_ptr<KvMemory>* out);

}  // namespace mnemo
