// TrainBpe: learns a GPT-2-style byte-level BPE vocabulary from raw text, like Hugging Face's
// ByteLevel BPE trainer.
//
// The corpus is split with GPT-2's pre-tokenizer (Gpt2PreTokenize) and the distinct pieces are
// counted. Ids 0..255 are the byte symbols in ByteLevelOrder() (the same ids GPT-2 gives them); then
// the most frequent adjacent pair is merged, again and again, until there are vocab_size - 1 tokens;
// "<|endoftext|>" is the last id. Frequency ties go to the pair with the smallest (left id, right id),
// so the same corpus and options always give the same vocabulary. If the corpus runs out of pairs
// occurring at least min_frequency times, the vocabulary is smaller than asked for (still ending in
// "<|endoftext|>").
//
// Cost: pair counts are updated incrementally through a pair -> words index and a lazily invalidated
// max-heap, so each merge touches only the words containing its pair.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "lm/bpe_tokenizer.h"
#include "util/status.h"

namespace mnemo {

struct BpeTrainerOptions {
  // Total tokens including the 256 byte symbols and "<|endoftext|>"; at least 257.
  int vocab_size = 4096;
  // A pair seen fewer times than this is never merged (2: a pair seen once saves nothing).
  int64_t min_frequency = 2;
  // Called from the training thread now and then with (tokens so far, vocab_size); may be empty.
  std::function<void(int tokens, int vocab_size)> progress;
};

Status TrainBpe(const std::string& corpus_text, const BpeTrainerOptions& options,
                std::unique_ptr<BpeTokenizer>* out);

// TrainBpe with default options and the given vocabulary size.
Status TrainBpe(const std::string& corpus_text, int vocab_size, std::unique_ptr<BpeTokenizer>* out);

}  // namespace mnemo
