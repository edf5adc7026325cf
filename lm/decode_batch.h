// DecodeBatch: many sequences decoded together, one token each per step, each with its own length
// (continuous batching, after llama.cpp's slots and vLLM). A sequence takes a slot, its prompt is run
// alone (Prefill, the same forward pass as Generate's first step), and from then on every Step advances
// all the slots it is given with one forward pass: the linear layers see a [B, n_embd] matrix, attention
// runs per slot over that slot's own keys and values.
//
// Row independence: a slot's rows never mix with other slots. Its keys and values are its own rows of a
// fixed [slots, n_head, n_positions, head_dim] cache per layer; attention reads the columns up to the
// longest sequence in the step, the ones past a slot's own length masked to -inf (weight exactly 0; the
// cache holds zeros or an earlier sequence's finite values there). The linear layers are one matrix product per layer whose rows do not mix. What other
// slots can change is rounding only: the softmax and weighted sum run over as many columns as the longest
// sequence has, and the BLAS picks kernels and threads by shape (OpenBLAS 0.3.21 rounds a row of a
// [4, 768] x [768, 97] product differently from the same row alone). Results agree across batch
// compositions to float rounding, not always bit for bit.
//
// Devices: the cache lives on the model's device; Step's results come back on the CPU.
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

class DecodeBatch {
 public:
  DecodeBatch(Gpt net, int64_t slots);

  int64_t slots() const { return slots_; }
  int64_t length(int64_t slot) const { return lengths_[static_cast<size_t>(slot)]; }
  int64_t context() const { return context_; }

  // Runs `ids` (1 .. n_positions tokens) through the model alone, like the first step of Generate, and
  // makes them the whole of `slot`'s sequence (whatever it held before is dropped). Returns the last
  // position's logits and key as rows of a batch of one.
  DecodeOutput Prefill(int64_t slot, const std::vector<int32_t>& ids, bool want_knn_key);
  // Appends tokens[i] to slot slots[i] (distinct slots, each shorter than n_positions) and returns the
  // next-token logits (and keys) of each, row i for slots[i].
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
