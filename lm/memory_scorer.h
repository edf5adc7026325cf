// Scoring long documents with the memorizing layer: each document is read in order, window after window
// (PlanWindows: windows of W tokens advancing by S), with a memory of the document's earlier tokens. The
// memory holds exactly the tokens before the current window (a window appends the tokens that leave it,
// after its queries searched the memory), so the local window and the memory never hold the same token.
// Every window is scored twice, without and with the memory, so `base` and `memory` cover the same
// tokens and differ only by the memory.
//
// A document is scored as [<|endoftext|>] + its tokens (every token of the document is predicted); in
// copy mode as [<|endoftext|>] + tokens + tokens, scoring only the second copy: with a memory at least as
// long as the document, its first copy is in memory when the second is read.
//
// Thread-safety: like lm/scorer.h; the memory is used from the calling thread only.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "lm/gpt.h"
#include "lm/kv_memory.h"
#include "lm/scorer.h"
#include "lm/tokenizer.h"
#include "util/status.h"

namespace mnemo {

struct MemoryScoreOptions {
  WindowOptions window;         // window and stride; batch_size and overlap are not used.
  KvMemory* memory = nullptr;   // Lane 0 is used and cleared at each document. Null: base scores only.
  int64_t topk = 0;             // 0: the model's memory_topk.
  bool copy = false;            // Score each document's second copy (see above).
  int64_t max_tokens = 0;       // Stop after the document that reaches this many scored tokens; 0: all.
  int64_t examples = 0;         // Keep this many tokens whose log-probability the memory raised most.
  bool skip_base = false;       // With a memory: score only with it (report.base stays empty).
  bool keep_logprobs = false;   // Fill the report's per-token log-probabilities.
  const std::atomic<bool>* cancel = nullptr;
};

// A token whose prediction the memory changed, with the memory positions its heads attended to most.
struct MemoryExample {
  int64_t document = 0;   // index into the documents
  int64_t position = 0;   // of the predicted token, in [<|endoftext|>] + document (+ document)
  float base_logprob = 0, memory_logprob = 0;
  struct Hit {
    int64_t position;     // of the retrieved token in the same sequence
    int head;
    float weight;         // its attention weight for that head (see lm/gpt.h MemoryAccess)
  };
  std::vector<Hit> hits;  // up to 4, by weight
};

struct MemoryScoreReport {
  PerplexityReport base, memory;  // memory: empty when options.memory is null
  int64_t documents = 0;
  double base_seconds = 0, memory_seconds = 0;  // model time of each pass
  int64_t max_memory_tokens = 0;                 // largest memory a window searched
  double mean_memory_tokens = 0;                 // the memory's mean size over the scored windows
  std::vector<MemoryExample> examples;           // largest memory_logprob - base_logprob first
  // With keep_logprobs: each scored target's log-probability, in order (documents, then positions).
  std::vector<float> base_logprobs, memory_logprobs;
};

// `documents` are token ids (without <|endoftext|>). InvalidArgument for a model without a memory layer
// when options.memory is set, a memory with no lane or the wrong shape, or bad window options.
Status ScoreDocumentsWithMemory(Gpt& net, const Tokenizer& tokenizer,
                                const std::vector<std::vector<int32_t>>& documents,
                                const MemoryScoreOptions& options, MemoryScoreReport* report);

// Appends ids[0, count) to `lane` of `memory` (tags first_tag + index) as ScoreDocumentsWithMemory's
// reading would: window by window (PlanWindows), each token's key and value computed in the window it
// leaves; the last window's tokens are appended after it. Generation can then continue from ids[count..)
// (lm/generator.h GenerateOptions::memory).
Status ReadIntoMemory(Gpt& net, const std::vector<int32_t>& ids, int64_t count, const WindowOptions& window,
                      KvMemory* memory, int64_t lane, int64_t first_tag);

// The (key, value) pairs ReadIntoMemory would append for ids[0, count), [heads, count, head_dim] each,
// computed without searching any memory: the memorizing layer's pairs depend only on the layers below it.
Status ComputeMemoryPairs(Gpt& net, const std::vector<int32_t>& ids, int64_t count, const WindowOptions& window,
                          std::vector<float>* keys, std::vector<float>* values);

// The memory index of a memorizing model (model_dir/memory_index.safetensors): per-head centroids of the
// memory layer's keys, trained by `mnemo memory index`, that let large memories search by IVF.
inline constexpr const char* kMemoryIndexFile = "memory_index.safetensors";

// Reads model_dir's memory index: [heads, lists, head_dim] centroids. NotFound when it has none;
// Corruption for a file of another shape or with non-finite values.
Status LoadMemoryIndex(const std::string& model_dir, const GptConfig& config, std::vector<float>* centroids,
                       int64_t* lists);

// The sequence ScoreDocumentsWithMemory scores for a document, and the index of its first scored target.
std::vector<int32_t> MemoryScoredSequence(const std::vector<int32_t>& document, int32_t bos, bool copy,
                                          int64_t* first_target);

}  // namespace mnemo
