// DecodeBatch: many sequences decoded together, each with its own length (continuous batching, after
// llama.cpp's slots and vLLM). A sequence takes a slot; every Run advances the slots it is given by one
// forward pass: each slot appends a segment of tokens (one while it decodes; a prompt, or a chunk of
// one, when it starts), the linear layers see all the segments' positions as one [rows, n_embd] matrix,
// and attention runs per slot over that slot's own keys and values. A newcomer's prompt thus rides in
// the same products as the others' decoding tokens (no weight read of its own) instead of stalling them.
//
// Row independence: a slot's rows never mix with other slots. Its keys and values are its own rows of a
// fixed [slots, n_head, n_positions, head_dim] cache per layer; attention of the one-token segments reads
// the columns up to the longest of them, the ones past a slot's own length masked to -inf (weight exactly
// 0; the cache holds zeros or an earlier sequence's finite values there); a longer segment attends over
// its own slot's columns causally. The linear layers are one matrix product per layer whose rows do not
// mix. What other slots can change is rounding only: the softmax and weighted sum run over as many
// columns as the longest sequence has, and the product's kernel is chosen by the number of rows (the
// packed kernel up to kPackedMaxRows rows computes each row alike at any count; the BLAS above that, and
// OpenBLAS 0.3.21 rounds a row of a [4, 768] x [768, 97] product differently from the same row alone).
// Results agree across batch compositions to float rounding, not always bit for bit.
//
// Devices: the cache lives on the model's device; Run's results come back on the CPU.
// Thread-safety: none; one thread drives a DecodeBatch (the model's parameters are only read).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "lm/gpt.h"

namespace mnemo {

struct DecodeOutput {
  torch::Tensor logits;   // [B, vocab_size], float32, CPU: the distribution of each slot's next token
  torch::Tensor knn_key;  // [B, n_embd] (when asked for): the kNN-LM key of each slot's last position
};

// Tokens appended to one slot by a Run.
struct DecodeSegment {
  int64_t slot = 0;
  std::vector<int32_t> tokens;  // at least one
  bool restart = false;         // the tokens replace the slot's sequence instead of extending it
};

class DecodeBatch {
 public:
  DecodeBatch(Gpt net, int64_t slots);

  int64_t slots() const { return slots_; }
  int64_t length(int64_t slot) const { return lengths_[static_cast<size_t>(slot)]; }
  int64_t context() const { return context_; }

  // One forward pass over all segments (distinct slots; a segment that does not restart extends a slot
  // that holds at least one token; every slot's sequence must stay within n_positions). Returns row i:
  // the next-token logits (and kNN key) after segment i's last token.
  DecodeOutput Run(const std::vector<DecodeSegment>& segments, bool want_knn_key);
  // `ids` (1 .. n_positions tokens) become the whole of `slot`'s sequence: Run of one restarting segment.
  DecodeOutput Prefill(int64_t slot, const std::vector<int32_t>& ids, bool want_knn_key);
  // Appends tokens[i] to slot slots[i]: Run of one-token segments, row i for slots[i].
  DecodeOutput Step(const std::vector<int64_t>& slots, const std::vector<int32_t>& tokens, bool want_knn_key);
  // Forgets the slot's sequence.
  void Release(int64_t slot) { lengths_[static_cast<size_t>(slot)] = 0; }

 private:
  Gpt net_;
  int64_t slots_, context_, n_head_, head_dim_;
  std::vector<torch::Tensor> keys_, values_;  // per layer [slots, n_head, n_positions, head_dim]
  std::vector<int64_t> lengths_;
};

}  // namespace mnemo
