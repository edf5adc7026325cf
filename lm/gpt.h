// Gpt: a GPT-2-architecture decoder in LibTorch, small enough to read in one sitting (after nanoGPT).
// Learned positions, pre-LN blocks, tanh-GELU, tied input/output embeddings. Parameter names are the
// Hugging Face GPT-2 names (wte.weight, h.0.attn.c_attn.weight, ...), and linear weights are stored in
// GPT-2's Conv1D layout [in, out], so checkpoints map one-to-one onto HF safetensors files.
//
// Taps for retrieval: the kNN-LM key (the input of the last block's feed-forward network, after its
// layer norm: Khandelwal et al. 2020, best of their ablation) and per-layer attention q/k/v (for a
// memory layer).
//
// Devices: the parameters live on one device (CPU unless moved with `net->to(device)`, see lm/device.h).
// Forward takes its input on any device and runs where the parameters are; its results come back on the
// CPU unless ForwardOptions::keep_on_device says otherwise, so callers that read results through
// accessors or data_ptr work unchanged whatever the device. A KvCache stays on the parameters' device.
//
// Thread-safety: Forward() is const with respect to the parameters and may run concurrently from many
// threads under torch::NoGradGuard / InferenceMode; training must be exclusive.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <vector>

#include "lm/gpt_config.h"
#include "lm/kv_memory.h"
#include "util/packed_gemm.h"

namespace mnemo {

// Per-layer keys and values of the tokens seen so far, [batch, n_head, length, head_dim] each, on the
// model's device (they are only ever read by Forward).
struct KvCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  void Clear() { keys.clear(), values.clear(); }
};

// One layer's attention projections for the current tokens, [batch, n_head, T, head_dim] each.
struct AttentionTap {
  torch::Tensor q, k, v;
};

// How the memorizing layer (GptConfig::memory_layer) uses its memory in one Forward call. Batch row b
// reads and writes memory lane first_lane + b. Order within the call: the layer's queries search the memory first,
// then this call's keys and values are appended (the paper's query-then-insert), so a segment never
// retrieves itself; its own tokens are covered by local attention.
struct MemoryAccess {
  KvMemory* memory = nullptr;  // Null: the layer is plain local attention.
  int64_t topk = 0;            // Pairs per query; 0: the config's memory_topk.
  int64_t first_lane = 0;      // Batch row b uses lane first_lane + b.
  bool write = true;           // Append this call's pairs after the search.
  // Which of this call's T tokens are appended: [write_begin, write_end) (write_end < 0: T). A sliding
  // window appends the tokens that leave it, so memory and local window never hold the same token.
  int64_t write_begin = 0;
  int64_t write_end = -1;
  // Tags of the appended tokens, [B, write_end - write_begin] row-major (a document id and position, chosen by the caller);
  // null: the tokens' positions in the window.
  const int64_t* tags = nullptr;
  // When set, receives the tags of the retrieved pairs, [B, n_head, T, topk] int64 (-1: empty slot), and
  // their attention weights, [B, n_head, T, topk] float (within the memory softmax for "gated", within the
  // joint softmax for "joint").
  torch::Tensor* retrieved_tags = nullptr;
  torch::Tensor* retrieved_weights = nullptr;
};

struct ForwardOptions {
  KvCache* cache = nullptr;       // When set: continue from it, then append the new keys/values.
  bool want_knn_key = false;      // Fill ForwardResult::knn_key.
  bool want_attention = false;    // Fill ForwardResult::attention (one tap per layer).
  bool want_logits = true;        // Training computes its loss from hidden states when false.
  // ForwardResult::hidden. With want_logits also false, ln_f is skipped, and with want_knn_key the last
  // block stops at its ln_2 output (the key): its MLP would only feed ln_f. Encoding keys then costs one
  // MLP less than a forward pass that feeds the head.
  bool want_hidden = true;
  MemoryAccess memory;            // The memorizing layer's memory (ignored by a model without one).
  // Leave the results on the model's device. Off by default: every ForwardResult tensor is then on the
  // CPU (a no-op for a CPU model, a copy for a GPU one), which is what callers reading data_ptr need.
  bool keep_on_device = false;
};

struct ForwardResult {
  torch::Tensor logits;    // [batch, T, vocab_size], float32
  torch::Tensor hidden;    // [batch, T, n_embd], after ln_f
  torch::Tensor knn_key;   // [batch, T, n_embd]: last block's ln_2 output
  std::vector<AttentionTap> attention;
};

// A packed copy (util/packed_gemm.h) of a weight, made on first use and made again when the weight
// changes (its storage or LibTorch's version counter, which every in-place write bumps). Thread-safe.
class PackedWeightCache {
 public:
  // True when the packed kernel can take `weight`: float on the CPU, and the CPU has a kernel.
  static bool Applies(const torch::Tensor& weight);
  // `weight` [k, n] float on the CPU, or with `transposed` [n, k] (the tied head's wte).
  std::shared_ptr<const PackedWeights> Get(const torch::Tensor& weight, bool transposed);
  // Get now, where it Applies (GptImpl::PackForDecoding: packed before the first step needs it).
  void Prepare(const torch::Tensor& weight, bool transposed) {
    if (Applies(weight)) Get(weight, transposed);
  }

 private:
  std::mutex mu_;
  std::shared_ptr<const PackedWeights> packed_;
  int64_t version_ = -1;
  const void* data_ = nullptr;
};

// x [rows, k] times a packed weight [k, n] (+ bias [n] if defined) when the packed kernel applies: the
// calling thread turned it on (SetPackedGemmThreads: the decoding thread of batched serving), 2 to
// kPackedMaxRows rows, no gradient, float on the CPU. Returns an undefined tensor otherwise, and the
// caller uses its BLAS product.
// At most this many rows (a decoding step's tokens, newcomers' prompt chunks included) take the packed
// kernel. Measured against OpenBLAS 0.3.21 on GPT-2 small's [768, 3072] and [3072, 768] weights (one and
// two threads, 16 to 256 rows): 1.2x to 2.3x its rate, the gap closing as rows amortise its packing.
constexpr int64_t kPackedMaxRows = 256;
torch::Tensor PackedProduct(const torch::Tensor& x2d, const torch::Tensor& weight, bool transposed,
                            const torch::Tensor& bias, PackedWeightCache* cache);

// GPT-2's Conv1D: y = x W + b with W stored [in, out].
struct Conv1DImpl : torch::nn::Module {
  Conv1DImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);
  // Makes the packed copy a decoding step of a few rows will use (util/packed_gemm.h) now, not then.
  void Pack();
  torch::Tensor weight, bias;

 private:
  std::shared_ptr<PackedWeightCache> packed_ = std::make_shared<PackedWeightCache>();
};
TORCH_MODULE(Conv1D);

struct CausalSelfAttentionImpl : torch::nn::Module {
  // `memorizing`: this is the config's memory layer (it then owns mem_gate and mem_scale in "gated" mode).
  CausalSelfAttentionImpl(const GptConfig& config, bool memorizing);
  // x: [B, T, C]. `past_k/past_v` (may be undefined) hold earlier positions; the new full keys and
  // values are written back to them. `tap` (may be null) receives this call's q/k/v. `memory` (may be
  // null) is read and written only by the memorizing layer.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* past_k, torch::Tensor* past_v,
                        AttentionTap* tap, const MemoryAccess* memory = nullptr);
  int64_t n_head, n_embd;
  bool memorizing = false, gated = false;
  int64_t memory_topk = 0;
  Conv1D c_attn{nullptr}, c_proj{nullptr};
  torch::Tensor mem_gate, mem_scale;  // [n_head] each, "gated" memory layer only: b_h and the scale.
  torch::Tensor mem_smear;            // [n_head], GptConfig::memory_smear only: s_h.

  // Makes heads 0..heads-1 induction heads by construction (smeared keys only): s_h = 1, so head h's
  // key at j is position j-1's; its query and key project the layer's input onto the same random
  // orthonormal head_dim-dimensional subspace (times qk_scale), so position t attends to where the
  // token before matched its own input; its value and output projections write that subspace of the
  // attended position's input back (times ov_scale). A model then copies what followed a repeated
  // token, inside its window and from its memory, before any training; training tunes it from there.
  void InitInductionHeads(int64_t heads, double qk_scale, double ov_scale, uint64_t seed);
  // Keys [B, H, S, D] of positions 0..S-1 smeared with their predecessors' (GptConfig::memory_smear);
  // position 0 has none and keeps its own. Without smeared keys, k itself. Public for DecodeBatch, which
  // runs this layer's attention over its own cache.
  torch::Tensor SmearKeys(const torch::Tensor& k) const;

 private:
  // Local attention plus attention over the pairs retrieved from memory->memory, before c_proj.
  torch::Tensor AttendWithMemory(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& local_scores, const MemoryAccess& memory);
  // Appends this call's keys and values [B, H, T, D] to the memory.
  void WriteMemory(const torch::Tensor& k, const torch::Tensor& v, int64_t past, const MemoryAccess& memory);
};
TORCH_MODULE(CausalSelfAttention);

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(const GptConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  bool tanh_gelu;
  Conv1D c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Mlp);

struct BlockImpl : torch::nn::Module {
  BlockImpl(const GptConfig& config, bool memorizing = false);
  // `ffn_input` (may be null) receives ln_2's output: the kNN-LM key when this is the last block.
  // `skip_mlp`: return after the attention's residual, without the MLP (the caller wants only ffn_input).
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* past_k, torch::Tensor* past_v,
                        AttentionTap* tap, torch::Tensor* ffn_input, const MemoryAccess* memory = nullptr,
                        bool skip_mlp = false);
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  CausalSelfAttention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptConfig& config);
  // ids: [B, T] int64, on any device (moved to the parameters' device). Positions continue from
  // options.cache's length. Fails (c10::Error) if the total length exceeds n_positions; callers check
  // with CheckContext() first. Results are on the CPU unless options.keep_on_device.
  ForwardResult Forward(const torch::Tensor& ids, const ForwardOptions& options = {});
  // Logits from hidden states (tied output embedding).
  torch::Tensor Logits(const torch::Tensor& hidden);
  // The same for hidden [n, d] (n >= 2; Logits' packed rows go to Logits), written into *buffer, which
  // is reused when it already has the shape, dtype and device (a caller scoring window after window:
  // GPT-2's [512, 50,257] logits are over glibc's 32 MiB mmap threshold, so a fresh tensor costs a page
  // fault per 4 KB). Returns *buffer.
  torch::Tensor LogitsInto(const torch::Tensor& hidden, torch::Tensor* buffer);
  // Packs every weight a batch of decoding steps multiplies (the blocks' products and the head) now, where
  // the packed kernel applies (float weights on a CPU it supports), so the first batched step does not
  // pay for it (about a second and the weights' size again at GPT-2 small's). A weight written later is
  // packed again at its next use.
  void PackForDecoding();
  // GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer). Parameters
  // must be on the CPU (the generator is a CPU one), as they are after construction.
  void InitWeights(uint64_t seed);

  const GptConfig& config() const { return config_; }
  // Where the parameters are (all of them are on one device).
  torch::Device device() const { return wte->weight.device(); }

  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h;
  std::vector<Block> blocks;  // Typed view of `h`.
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  GptConfig config_;
  std::shared_ptr<PackedWeightCache> packed_head_ = std::make_shared<PackedWeightCache>();
};
TORCH_MODULE(Gpt);

}  // namespace mnemo
