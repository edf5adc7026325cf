// CompletionBatcher: completions decoded together (continuous batching, after llama.cpp's slots and
// vLLM). One decoding thread owns a DecodeBatch (lm/decode_batch.h) of `slots` sequences. A request
// that arrives while others decode takes a free slot at the next step, and its prompt rides in the
// steps with the others' tokens (chunked prefill: at most `prefill_tokens` prompt tokens per step while
// others decode, so a long prompt does not stall them); once its prompt has run it advances with the
// others, one token per step, in one forward pass for all of them. Each sequence keeps its own key/value
// cache, sampler state (seed + choice), stop sequences, kNN settings, RetoMaton pointers and events; a
// step's kNN searches go to the datastore as one batch per distinct setting (k, nprobe, recompute,
// temperature, lambda, skip_confidence, pointers). A request that finishes (stop, length, cancel) leaves
// at once and its slot is free for the next step; the choices of a request with n > 1 run one after
// another in its slot, so its events come in the same order as Complete's.
//
// Outputs: a request's tokens for a fixed seed do not depend on what else is in the batch (a slot's
// rows never mix with other slots), and its log-probabilities and neighbour distances agree to float
// rounding (the BLAS may round a row differently at another batch size: lm/decode_batch.h). They are
// what Complete produces for the same request up to that rounding too (a decoding step's attention spans
// the longest sequence in it, Complete's Generate its own). Requests for the memorizing layer's memories are not
// batched (Complete runs them).
//
// Threading: Submit from any thread; events and `done` run on the decoding thread, so they must be quick
// (append, push to a channel). Back-pressure: at most `queue` requests wait for a slot; past that
// Submit refuses. Cancellation: setting the request's cancel flag ends it at its next step (Cancelled).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "retriever/completion.h"

namespace mnemo {

class DecodeBatch;

struct BatcherOptions {
  // Sequences decoded together. 16 keeps a step's kNN batch under FAISS's threshold (20 queries) for
  // switching its coarse distances to a BLAS product, which rounds differently.
  int slots = 16;
  size_t queue = 32;  // requests waiting for a slot before Submit refuses
  // Prompt tokens a step runs while other sequences decode (all of them when none does). More: a
  // newcomer's first token sooner; fewer: the others' steps stay short.
  size_t prefill_tokens = 64;
  // Threads for a step: its products (the packed kernel), kNN searches and sampling; the BLAS keeps its
  // own (prompts past kPackedMaxRows rows).
  // 0: one per core.
  int threads = 0;
};

struct BatcherStats {
  int64_t steps = 0;     // batched forward passes
  int64_t rows = 0;      // sequences advanced by them (rows / steps: the mean batch)
  int64_t prefills = 0;       // prompts (and restarted windows) started
  int64_t prompt_chunks = 0;  // steps' pieces of them (a prompt longer than prefill_tokens takes several)
  int64_t waiting = 0;   // requests waiting for a slot now
  int64_t active = 0;    // requests holding a slot now
};

class CompletionBatcher {
 public:
  // Called once per request, on the decoding thread: OK with the result, Cancelled (its cancel flag, or
  // on_event returned false, or the batcher shutting down) or an error, with what was generated so far.
  using DoneFn = std::function<void(const Status& status, CompletionResult result)>;

  // `memory` may be null (kNN requests then run the base LM, as in Complete).
  CompletionBatcher(LanguageModel& model, const KnnMemory* memory, BatcherOptions options);
  // Ends every request still queued or decoding with Cancelled, then stops the thread.
  ~CompletionBatcher();
  CompletionBatcher(const CompletionBatcher&) = delete;
  CompletionBatcher& operator=(const CompletionBatcher&) = delete;

  // Queues `request` (request.layer_memory must be null). InvalidArgument when it fails Validate,
  // FailedPrecondition when `queue` requests already wait or the batcher is stopping; `done` is then never
  // called. `cancel` may be null.
  Status Submit(CompletionRequest request, CompletionEventFn on_event, std::shared_ptr<std::atomic<bool>> cancel,
                DoneFn done);

  BatcherStats stats() const;

 private:
  struct Job;
  struct Row;
  void Loop();
  // Starts the job's next choice in its row (its prompt to feed); false when the job is over (row released).
  bool StartChoice(Row& row);
  // Makes `tokens` the row's sequence, to run in the next steps before it samples again.
  void Feed(Row& row, std::vector<int32_t> tokens);
  // Ends the row's current choice; starts the next one or ends the job.
  void EndChoice(Row& row);
  void Finish(Row& row, const Status& status);
  // Ends the row's choice, and so its job, when the job's cancel flag is set; true then.
  bool EndIfCancelled(Row& row);
  // Samples one token for each row (kNN searches batched per setting); rows that go on get the token to
  // decode next.
  void SampleAll(const std::vector<Row*>& rows);

  LanguageModel& model_;
  const KnnMemory* memory_;
  const BatcherOptions options_;
  int threads_ = 1;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> waiting_;  // guarded by mu_
  bool stopping_ = false;                     // guarded by mu_
  std::atomic<int64_t> steps_{0}, step_rows_{0}, prefills_{0}, prompt_chunks_{0}, active_{0};
  std::thread thread_;
  // Decoding-thread state.
  std::unique_ptr<DecodeBatch> batch_;
  std::vector<std::unique_ptr<Row>> rows_;  // one per slot; a null job: free
};

}  // namespace mnemo
