// GptConfig: the hyperparameters of a GPT-2-architecture model, read from and written to a
// Hugging Face `config.json` (model_type "gpt2"), so checkpoints interoperate with GPT-2 tooling.
#pragma once

#include <cstdint>
#include <string>

#include "util/status.h"

namespace mnemo {

struct GptConfig {
  int64_t vocab_size = 50257;  // GPT-2's byte-level BPE vocabulary.
  int64_t n_positions = 1024;  // Context window (learned position embeddings).
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  double layer_norm_epsilon = 1e-5;
  // HF's name for GPT-2's tanh-approximated GELU; "gelu" (exact erf form) is also accepted.
  std::string activation_function = "gelu_new";
  int64_t bos_token_id = 50256;
  int64_t eos_token_id = 50256;

  // The memorizing layer (Wu et al. 2022): the 0-based block whose attention also reads a KvMemory
  // (lm/kv_memory.h) of past keys and values; -1 for none. Stored in config.json as the extra fields
  // "mnemo_memory_layer", "mnemo_memory_topk" and "mnemo_memory_mode" (only when there is a layer, so
  // configs without one are byte-for-byte GPT-2's and GPT-2 tooling ignores the fields).
  int64_t memory_layer = -1;
  int64_t memory_topk = 32;  // Pairs each query retrieves (per head).
  // "gated": the paper's design: queries and memory keys L2-normalised, a learned per-head scale, a
  // separate softmax over the retrieved pairs, mixed with local attention by a learned per-head gate
  // sigmoid(b_h) (parameters attn.mem_gate, attn.mem_scale). "joint": the retrieved pairs join the local
  // softmax with the layer's own 1/sqrt(head_dim) scaling and no new parameters (Focused Transformer;
  // Unlimiformer), so a pretrained layer's copying attention reaches the memory as it is.
  std::string memory_mode = "gated";
  // Smeared keys (Olsson et al. 2022, "In-context Learning and Induction Heads"): the memory layer's key
  // at position j becomes (1 - s_h) k_j + s_h k_{j-1}, with s_h a learned per-head parameter
  // (attn.mem_smear) that starts at 0, where the layer is exactly GPT-2's. A key then also says which
  // token came before it, so one layer can attend from token A to what followed A earlier (an
  // induction head: copying), in its window and in its memory; without it copying needs a
  // previous-token head in an earlier layer, which these small models did not learn
  // (docs/RESULTS.md). Stored as "mnemo_memory_smear": true; memory layer only.
  bool memory_smear = false;

  bool has_memory() const { return memory_layer >= 0; }
  int64_t head_dim() const { return n_embd / n_head; }
  int64_t NumParameters() const;  // Tied embeddings counted once.
  Status Validate() const;

  // Named presets for models trained with mnemo ("tiny", "default", "medium"); see docs/RESULTS.md
  // for how the default was chosen.
  static Status Preset(const std::string& name, int64_t vocab_size, GptConfig* out);

  std::string ToJson() const;
  // `source` names the file in error messages.
  static Status FromJson(const std::string& json_text, const std::string& source, GptConfig* out);
};

}  // namespace mnemo
