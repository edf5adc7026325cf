// Trainer: trains a GPT-2-architecture model from plain text on the CPU (or CUDA when available).
// AdamW, linear warmup then cosine decay to lr/10, gradient clipping at 1.0, periodic validation and
// checkpoints. Deterministic for a seed: the batch of step s is drawn from an RNG seeded by (seed, s),
// so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
//
// Documents (the memorizing layer's regime, Wu et al. 2022): with train_documents, each batch lane reads
// one document at a time in consecutive segments of seq_len tokens (lane b's document order is a
// permutation drawn from (seed, b, epoch); a document's tail shorter than a segment is skipped, documents
// shorter than one segment too). With a memory layer, lane b has its own memory of memory_size tokens,
// cleared when the lane starts a new document; each step searches it, then appends the segment's keys and
// values (no gradient flows into memory). The lane schedule is a function of the step, so a resumed run
// reads the same segments; its memories are refilled by re-reading (no gradient) the segments the lanes
// read of their current documents, with the checkpoint's weights: the resumed run is deterministic, but
// not bit-identical to one that was never interrupted (the memories were written by older weights).
// Validation then scores the first eval_tokens of the validation documents with a fresh memory.
//
// Output directory: a HF GPT-2 checkpoint (config.json, model.safetensors, vocab.json, merges.txt) of
// the latest step, plus train_state.json (step, losses) and optimizer.pt (AdamW moments) for resuming,
// and tokens-<hash>.bin caches of the tokenized corpus.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lm/kv_memory.h"
#include "util/status.h"

namespace mnemo {

struct TrainOptions {
  std::string train_path, valid_path, out_dir;
  std::string tokenizer_dir;          // Empty: train a BPE vocabulary of `vocab_size` on the corpus first.
  // JSONL documents (lm/documents.h) instead of the text files above; both or neither.
  std::string train_documents, valid_documents;
  int64_t vocab_size = 4096;
  std::string config = "default";     // GptConfig preset.
  // Fine-tuning: start from this model directory's config, tokenizer and weights instead of a preset and
  // a random initialisation (ignored when resuming, which continues the run in out_dir).
  std::string init_from;
  // The memorizing layer (needs documents): -1 keeps the model's own (none for a preset; init_from's or
  // the resumed run's otherwise); L >= 0 makes layer L memorizing.
  int64_t memory_layer = -1;
  int64_t memory_size = 0;            // Tokens per lane's memory; 0: the layer trains without memory.
  int64_t memory_topk = 0;            // 0: keep the config's (default 32).
  std::string memory_mode;            // "joint" or "gated"; empty: keep the config's.
  // With memory_smear, on a new run (not a resumed one): heads 0..N-1 of the memory layer start as
  // induction heads (CausalSelfAttentionImpl::InitInductionHeads), after --init-from's weights load.
  int64_t induction_heads = 0;
  double induction_qk_scale = 2.0, induction_ov_scale = 4.0;
  bool memory_smear = false;          // Smear the memory layer's keys (GptConfig::memory_smear); false: keep the config's.
  // The repetition curriculum (documents only): a fraction of the training documents, chosen by a hash
  // of (seed, document), is cut into chunks and each chunk read twice in a row (chunk 1, chunk 1, chunk 2,
  // chunk 2, ...). Chunk lengths are drawn per chunk from repeat_chunk / 16 .. repeat_chunk (powers of two
  // apart), so some second copies lie inside the local window (teaching the layer's own attention to copy,
  // with gradients into its keys) and some beyond it, inside a memory of 2 * repeat_chunk tokens (where
  // joint mode reuses that same attention). Natural text at this budget teaches neither (docs/RESULTS.md).
  // 0: off. Validation documents are never repeated.
  int64_t repeat_chunk = 0;
  double repeat_fraction = 0.5;
  // With repeat_chunk: this fraction of the training tokens comes from added documents of uniformly
  // random token ids, read as repeated chunks like the chosen real ones. Their first copies cannot be
  // predicted and their second copies can only be copied, so there is no shortcut to copying (no n-gram
  // statistics to fall back on): the classic way to make induction heads form early (docs/RESULTS.md).
  double repeat_random = 0;
  // Makes the training memory (memory/kv_ring.h in the CLI): lanes x heads x head_dim, capacity tokens.
  std::function<Status(int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity,
                       std::unique_ptr<KvMemory>* out)> make_memory;
  int64_t steps = 0;                  // 0: the preset's default.
  int64_t batch_size = 0;             // Sequences per step; 0: the preset's default.
  int64_t seq_len = 0;                // 0: n_positions.
  double learning_rate = 0;           // Peak; 0: the preset's default.
  double weight_decay = 0.1;          // On matrices only (nanoGPT's choice), not on norms/biases/positions.
  double grad_clip = 1.0;
  int64_t warmup_steps = -1;          // -1: 5% of steps.
  int64_t eval_interval = 0;          // 0: steps / 10.
  int64_t eval_tokens = 32768;        // Validation tokens per evaluation.
  uint64_t seed = 1234;
  int64_t stop_after = 0;             // >0: checkpoint and return after this many steps (resume later).
  bool quiet = false;                 // No progress bar.
  // Polled every step: when it turns true, Train returns Status::Cancelled (nothing is checkpointed).
  const std::atomic<bool>* cancel = nullptr;
};

struct TrainReport {
  int64_t steps = 0;
  int64_t tokens_seen = 0;
  double seconds = 0;                 // Wall time of this invocation's training loop.
  double tokens_per_second = 0;
  double final_train_loss = 0;
  double final_valid_loss = 0;        // nats/token on the validation slice
  double final_valid_bits_per_byte = 0;
  int64_t memory_layer = -1;          // The trained model's memory layer (-1: none).
  int64_t memory_size = 0;
  int64_t parameters = 0;
  bool resumed = false;
  std::string ToJson() const;
};

Status Train(const TrainOptions& options, TrainReport* report);

}  // namespace mnemo
