// KvMemory: the external memory of a memorizing attention layer (Wu et al., ICLR 2022), declared here as
// lm/ needs it and implemented in memory/ (memory/kv_ring.h). No LibTorch in this header: memory/ does not
// link it, so pairs cross as plain float arrays.
//
// A memory serves `lanes` independent sequences (a batch lane reading one document, later a session) and,
// in each lane, `heads` attention heads. Every stored token contributes one (key, value) pair per head,
// head_dim floats each, and carries a 64-bit tag chosen by the writer (a document and token position), so
// a hit can say where it came from. All heads of a lane hold the same tokens.
//
// Searching is by inner product: the layer normalises queries and keys itself when its design asks for
// cosine similarity. Ties are broken by the older token (smaller insertion order) first, so results are a
// total order and do not depend on how the memory is laid out.
//
// Thread-safety: Search is const and may run concurrently with other Searches; Append, Remove and Clear
// must be exclusive (the layer calls them from the thread that runs the forward pass).
#pragma once

#include <cstdint>

#include "util/status.h"

namespace mnemo {

class KvMemory {
 public:
  virtual ~KvMemory() = default;

  virtual int64_t lanes() const = 0;
  virtual int64_t heads() const = 0;
  virtual int64_t head_dim() const = 0;
  // Tokens held by `lane`.
  virtual int64_t size(int64_t lane) const = 0;

  // For `lane`, each head h and each of the n queries q[h][t] (queries: [heads, n, head_dim]): the k pairs
  // with the largest <q, key>, best first. keys_out and values_out are [heads, n, k, head_dim], tags_out
  // (may be null) [heads, n, k]. Where the lane holds fewer than k tokens the missing slots get zero keys
  // and values and tag -1; callers mask them out by the tag.
  virtual Status Search(int64_t lane, const float* queries, int64_t n, int64_t k, float* keys_out,
                        float* values_out, int64_t* tags_out) const = 0;

  // Appends n tokens to `lane`: keys and values [heads, n, head_dim], tags [n]. A bounded memory then
  // evicts its oldest tokens beyond its capacity.
  virtual Status Append(int64_t lane, const float* keys, const float* values, const int64_t* tags, int64_t n) = 0;

  // Forgets every token of `lane` (a new document starts there).
  virtual void Clear(int64_t lane) = 0;
};

}  // namespace mnemo
