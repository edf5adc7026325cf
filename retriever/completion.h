// Completion: what POST /v1/completions computes, independent of HTTP. Continues a prompt n times with
// the (optionally kNN-augmented) model, applying stop sequences, collecting OpenAI-style log-probabilities
// (the chosen token's and the top-N alternatives', from the distribution the token was sampled from,
// before temperature), text offsets, and optionally each step's nearest neighbours.
//
// Streaming: `on_event` receives every generated token as it is produced, with the text that became safe
// to show (text is held back while it could still be the start of a stop sequence, and never ends inside
// a UTF-8 character). The concatenation of a choice's event texts equals its final text.
//
// Thread-safety: reads the model and the memory; one call per thread, any number of threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lm/checkpoint.h"
#include "lm/sampler.h"
#include "retriever/knn_lm.h"

namespace mnemo {

struct CompletionRequest {
  // The contract's limits, named once (the server's parser and Complete both rely on Validate).
  static constexpr int kMaxChoices = 16;           // n
  static constexpr int kMaxLogprobs = 20;          // top-N alternatives per token
  static constexpr size_t kMaxStops = 4;           // stop sequences
  static constexpr size_t kMaxStopBytes = 256;     // bytes of each stop sequence
  static constexpr int kMaxReturnNeighbors = 64;   // neighbours per generated token
  static constexpr double kMaxTemperature = 2.0;
  // The response's size is bounded by a product, not by each factor: every choice carries its echoed
  // prompt and generated tokens, and each token its log-probability, its top-N alternatives and its
  // neighbours. ResponseItems() must not exceed max_response_items (the server's --max-response-items).
  static constexpr int64_t kDefaultMaxResponseItems = 65536;

  // InvalidArgument naming the field for anything outside the contract: an empty prompt, one longer than
  // `context` tokens or with ids outside [0, vocab_size), n, logprobs, max_tokens, stop sequences,
  // return_neighbors, temperature or top_p out of range, or kNN options that KnnOptions::Validate refuses
  // (when knn.enabled), stop sequences longer than kMaxStopBytes, or ResponseItems() over
  // max_response_items (the message names the product, its factors and the limit).
  Status Validate(int64_t vocab_size, int64_t context) const;
  // n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors), logprobs counted as 0
  // when none are asked for, return_neighbors twice with a layer memory (its hits are listed too): the most tokens, alternatives and neighbours the response can hold. (A
  // double, so that no max_tokens overflows it.)
  double ResponseItems() const;
  // Whether decoding interpolates with `memory`: kNN enabled with lambda > 0 and a memory to search.
  bool UsesKnn(const KnnMemory* memory) const { return knn.enabled && knn.lambda > 0 && memory != nullptr; }

  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingOptions sampling;  // temperature (0: greedy), top_p
  bool has_seed = false;
  uint64_t seed = 0;         // choice i uses seed + i
  std::vector<std::string> stop;  // up to 4 stop sequences, excluded from the text
  int n = 1;
  int logprobs = -1;         // -1: none; else the top-N alternatives per token (0..20)
  bool echo = false;         // prepend the prompt (and its log-probabilities) to each choice
  KnnOptions knn;            // knn.enabled = false: the base LM
  int return_neighbors = 0;  // >0: per generated token, this many nearest neighbours
  bool ignore_eos = false;   // keep generating past <|endoftext|> (fixed-length runs for benchmarks)
  int64_t max_response_items = kDefaultMaxResponseItems;  // the limit of ResponseItems()
  // A memory the memorizing layer reads (a served memory: read-only here, lm/kv_memory.h); null: none.
  // With return_neighbors, each generated token also reports the memory pairs its heads attended to most.
  KvMemory* layer_memory = nullptr;
  int64_t layer_memory_topk = 0;  // 0: the model's
};

// A memory pair a generated token's memorizing layer attended to: where it came from (a document and the
// token position in it, memory/layer_memories.h tags) and its attention weight in one head.
struct MemoryHit {
  int64_t document = 0;
  int64_t position = 0;
  int head = 0;
  float weight = 0;
};

struct TokenLogprob {
  int32_t token = 0;
  bool has_logprob = true;  // false for an echoed prompt's first token (nothing predicts it)
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // best first
};

struct CompletionEvent {
  int choice = 0;
  std::string text;            // newly visible text (may be empty)
  const TokenLogprob* logprob = nullptr;          // when logprobs were requested
  const std::vector<Neighbor>* neighbors = nullptr;  // when neighbours were requested
  const std::vector<MemoryHit>* memory_hits = nullptr;  // when neighbours were requested with a memory
  bool finished = false;
  std::string finish_reason;   // with finished
};

struct CompletionChoice {
  std::vector<int32_t> tokens;  // generated tokens kept (a token that completed a stop sequence is dropped)
  std::string text;             // (prompt text when echoing +) generated text up to any stop sequence
  std::string finish_reason;    // "stop" or "length"
  std::vector<TokenLogprob> logprobs;  // echoed prompt tokens first, then generated ones
  std::vector<int64_t> text_offset;    // byte offset of each logprobs token in `text`
  std::vector<std::vector<Neighbor>> neighbors;  // per generated token
  std::vector<std::vector<MemoryHit>> memory_hits;  // per generated token (return_neighbors with a memory)
};

struct CompletionResult {
  std::vector<CompletionChoice> choices;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Generated positions of a kNN request (queries; those skipped as confident included), and those that
  // searched (pointers and confidence skip some).
  KnnStats knn;
};

// The text side of one streamed choice, without the model (Complete uses one per choice): token bytes go
// in, and out comes the text that may be shown. Text that could still be the start of a stop sequence is
// held back until it is known not to be one, and shown text never ends inside a UTF-8 character (a token
// may end in the middle of one). Once a stop sequence appears the text ends before it. Everything taken
// (TakeSafe, then TakeRest) concatenates to text().
class StreamedText {
 public:
  explicit StreamedText(std::vector<std::string> stop);  // empty sequences are ignored
  // Appends one token's bytes; true when a stop sequence has now appeared (the earliest one: the text is
  // cut before it, keeping the token's bytes before it). Appending after that does nothing.
  bool Append(const std::string& bytes);
  std::string TakeSafe();  // the text that became safe to show since the last take (may be empty)
  std::string TakeRest();  // at the end: all not yet taken, held-back bytes and an unfinished character too
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stop_;
  size_t longest_stop_ = 0;
  std::string text_;
  size_t taken_ = 0;
  bool stopped_ = false;
};

// Returns false to cancel (e.g. the client went away); Complete then stops and returns Cancelled.
using CompletionEventFn = std::function<bool(const CompletionEvent&)>;

// The log-probabilities of the prompt's tokens (echo with logprobs) from the distributions generation
// would use (the first token has none); `memory` null: the base LM.
Status PromptLogprobs(LanguageModel& model, const KnnMemory* memory, const CompletionRequest& request,
                      std::vector<TokenLogprob>* out);

// The seed of choice c: request.seed + c with a seed, else a random one.
uint64_t ChoiceSeed(const CompletionRequest& request, int c);

// One choice as its tokens arrive, whoever samples them (Complete one request at a time, the server's
// CompletionBatcher many in one batch): stop token and sequences, log-probabilities, neighbours, events,
// finish reason and the final text. Not thread-safe; the request, tokenizer and choice outlive it.
class ChoiceBuilder {
 public:
  // `prompt_text` and `prompt_logprobs`: the echoed prompt (empty without echo).
  ChoiceBuilder(const Tokenizer& tokenizer, const CompletionRequest& request, int index, std::string prompt_text,
                const std::vector<TokenLogprob>& prompt_logprobs, CompletionChoice* choice,
                const CompletionEventFn& on_event);
  // The token that ends generation (<|endoftext|>, or -1 with ignore_eos).
  int32_t stop_token() const { return stop_token_; }
  // Sends the echoed prompt's event; false when on_event cancelled.
  bool Begin();
  // One sampled token with the distribution it was drawn from and the step's neighbours and memory hits.
  // False when the choice is over: a stop token or sequence (finish reason "stop"), or on_event cancelled.
  bool Add(int32_t token, const torch::Tensor& distribution, const std::vector<Neighbor>& neighbors,
           const std::vector<MemoryHit>& hits = {});
  bool cancelled() const { return cancelled_; }
  void Cancel() { cancelled_ = true; }
  int64_t tokens_seen() const { return seen_; }  // tokens given to Add (completion_tokens)
  // Ends the choice: finish reason ("length" unless a stop came), text, offsets and the last event; false
  // when on_event cancelled.
  bool Finish();

 private:
  const Tokenizer& tokenizer_;
  const CompletionRequest& request_;
  int index_;
  std::string prompt_text_;
  CompletionChoice* choice_;
  const CompletionEventFn& on_event_;
  int32_t stop_token_;
  StreamedText generated_;
  std::string finish_reason_;
  bool cancelled_ = false;
  int64_t seen_ = 0;
};

// InvalidArgument for a bad request (request.Validate against the model's vocabulary and context). `memory` may be null when knn.enabled is false. `cancel` (may be null) is polled every token.
Status Complete(LanguageModel& model, const KnnMemory* memory, const CompletionRequest& request,
                const CompletionEventFn& on_event, const std::atomic<bool>* cancel, CompletionResult* out);

}  // namespace mnemo
