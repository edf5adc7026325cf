// Trainer: trains a GPT-2-architecture model from plain text on the CPU (or CUDA when available).
// AdamW, linear warmup then cosine decay to lr/10, gradient clipping at 1.0, periodic validation and
// checkpoints. Deterministic for a seed: the batch of step s is drawn from an RNG seeded by (seed, s),
// so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
//
// Output directory: a HF GPT-2 checkpoint (config.json, model.safetensors, vocab.json, merges.txt) of
// the latest step, plus train_state.json (step, losses) and optimizer.pt (AdamW moments) for resuming,
// and tokens-<hash>.bin caches of the tokenized corpus.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

struct TrainOptions {
  std::string train_path, valid_path, out_dir;
  std::string tokenizer_dir;          // Empty: train a BPE vocabulary of `vocab_size` on the corpus first.
  int64_t vocab_size = 4096;
  std::string config = "default";     // GptConfig preset.
  // Fine-tuning: start from this model directory's config, tokenizer and weights instead of a preset and
  // a random initialisation (ignored when resuming, which continues the run in out_dir).
  std::string init_from;
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
  int64_t parameters = 0;
  bool resumed = false;
  std::string ToJson() const;
};

Status Train(const TrainOptions& options, TrainReport* report);

}  // namespace mnemo
