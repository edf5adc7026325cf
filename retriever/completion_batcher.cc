#include "retriever/completion_batcher.h"

#include <omp.h>

#include <limits>
#include <map>
#include <random>
#include <tuple>
#include <utility>

#include "lm/decode_batch.h"
#include "util/blas_threads.h"
#include "util/packed_gemm.h"
#include "util/parallel.h"

namespace mnemo {

struct CompletionBatcher::Job {
  CompletionRequest request;
  CompletionEventFn on_event;
  std::shared_ptr<std::atomic<bool>> cancel;
  DoneFn done;
  CompletionResult result;
  std::string prompt_text;
  std::vector<TokenLogprob> prompt_logprobs;
  bool knn = false;
  int choice = -1;  // the choice being decoded
};

// A slot and the job decoding in it.
struct CompletionBatcher::Row {
  int64_t slot = 0;
  std::unique_ptr<Job> job;  // null: the slot is free
  std::unique_ptr<ChoiceBuilder> builder;
  std::mt19937_64 rng;
  std::vector<int32_t> tokens;  // the choice's prompt and generated tokens (a full window restarts from them)
  // Tokens to run before the next sample (the prompt, or a full window's last half), `fed` of them run:
  // they ride in the steps in chunks, the slot restarting with the first.
  std::vector<int32_t> feed;
  size_t fed = 0;
  std::vector<Neighbor> pointers;  // RetoMaton pointers after the last sampled token (knn.min_pointers > 0)
  torch::Tensor logits, key;  // the next token's logits [V] and kNN key [C]
  int32_t next = -1;          // the sampled token to decode next; -1: the choice is over
};

CompletionBatcher::CompletionBatcher(LanguageModel& model, const KnnMemory* memory, BatcherOptions options)
    : model_(model), memory_(memory), options_(options) {
  TORCH_CHECK(options_.slots >= 1, "a completion batcher needs at least one slot");
  TORCH_CHECK(options_.prefill_tokens >= 1, "a completion batcher needs a prefill budget of at least one token");
  threads_ = options_.threads > 0 ? options_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  batch_ = std::make_unique<DecodeBatch>(model_.net, options_.slots);
  model_.net->PackForDecoding();
  for (int s = 0; s < options_.slots; ++s) {
    rows_.push_back(std::make_unique<Row>());
    rows_.back()->slot = s;
  }
  thread_ = std::thread([this] { Loop(); });
}

CompletionBatcher::~CompletionBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Status CompletionBatcher::Submit(CompletionRequest request, CompletionEventFn on_event,
                                 std::shared_ptr<std::atomic<bool>> cancel, DoneFn done) {
  if (request.layer_memory != nullptr) {
    return Status::InvalidArgument("requests with a layer memory are not batched: run them with Complete");
  }
  MNEMO_RETURN_IF_ERROR(request.Validate(model_.config.vocab_size, model_.config.n_positions));
  auto job = std::make_unique<Job>();
  job->request = std::move(request);
  job->on_event = std::move(on_event);
  job->cancel = cancel != nullptr ? std::move(cancel) : std::make_shared<std::atomic<bool>>(false);
  job->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::FailedPrecondition("the completion batcher is stopping");
    if (waiting_.size() >= options_.queue) {
      return Status::FailedPrecondition("the completion queue is full (" + std::to_string(options_.queue) +
                                        " requests wait for a slot)");
    }
    waiting_.push_back(std::move(job));
  }
  wake_.notify_one();
  return Status::OK();
}

BatcherStats CompletionBatcher::stats() const {
  BatcherStats s;
  s.steps = steps_.load();
  s.rows = step_rows_.load();
  s.prefills = prefills_.load();
  s.prompt_chunks = prompt_chunks_.load();
  s.active = active_.load();
  std::lock_guard<std::mutex> lock(mu_);
  s.waiting = static_cast<int64_t>(waiting_.size());
  return s;
}

void CompletionBatcher::Finish(Row& row, const Status& status) {
  std::unique_ptr<Job> job = std::move(row.job);
  row.builder.reset();
  row.next = -1;
  batch_->Release(row.slot);
  --active_;
  if (job->done) job->done(status, std::move(job->result));  // a failed one still counts its tokens
}

bool CompletionBatcher::StartChoice(Row& row) {
  Job& job = *row.job;
  for (;;) {
    if (++job.choice == job.request.n) {
      Finish(row, Status::OK());
      return false;
    }
    const CompletionRequest& request = job.request;
    row.builder = std::make_unique<ChoiceBuilder>(*model_.tokenizer, request, job.choice, job.prompt_text,
                                                  job.prompt_logprobs, &job.result.choices[job.choice], job.on_event);
    if (!row.builder->Begin()) {
      Finish(row, Status::Cancelled("client went away"));
      return false;
    }
    if (request.max_tokens > 0) break;
    if (!row.builder->Finish()) {
      Finish(row, Status::Cancelled("client went away"));
      return false;
    }
  }
  row.rng.seed(ChoiceSeed(job.request, job.choice));
  row.tokens = job.request.prompt;
  row.pointers.clear();
  Feed(row, row.tokens);
  return true;
}

void CompletionBatcher::Feed(Row& row, std::vector<int32_t> tokens) {
  row.feed = std::move(tokens);
  row.fed = 0;
  row.next = -1;
  ++prefills_;
}

void CompletionBatcher::EndChoice(Row& row) {
  Job& job = *row.job;
  job.result.completion_tokens += row.builder->tokens_seen();
  if (row.builder->cancelled()) {
    Finish(row, Status::Cancelled("request cancelled"));
    return;
  }
  if (!row.builder->Finish()) {
    Finish(row, Status::Cancelled("client went away"));
    return;
  }
  StartChoice(row);
}

bool CompletionBatcher::EndIfCancelled(Row& row) {
  if (!row.job->cancel->load()) return false;
  row.builder->Cancel();
  EndChoice(row);
  return true;
}

void CompletionBatcher::SampleAll(const std::vector<Row*>& rows) {
  // Each row's own distribution, as Generate computes it; the kNN rows of one setting share a search.
  std::vector<torch::Tensor> dist(rows.size());
  std::vector<std::vector<Neighbor>> neighbors(rows.size());
  using Setting = std::tuple<int, int, bool, double, double, double, int>;
  std::map<Setting, std::vector<size_t>> groups;
  for (size_t i = 0; i < rows.size(); ++i) {
    dist[i] = torch::log_softmax(rows[i]->logits, -1);
    const Job& job = *rows[i]->job;
    if (job.knn) {
      const KnnOptions& o = job.request.knn;
      groups[Setting(o.k, o.nprobe, o.recompute, o.temperature, o.lambda, o.skip_confidence, o.min_pointers)].push_back(i);
    }
  }
  if (!groups.empty()) {
    // The searches run on the cores (OpenMP in the index). Set here, per step: LibTorch resets this
    // thread's OpenMP count to its own (one) at the thread's first parallel operation.
    OmpThreadsScope omp_threads(threads_);
    KnnLm knn_lm(*memory_);
    for (const auto& [setting, members] : groups) {
      std::vector<torch::Tensor> keys, lps;
      std::vector<std::vector<Neighbor>> pointers;
      for (size_t i : members) keys.push_back(rows[i]->key), lps.push_back(dist[i]), pointers.push_back(rows[i]->pointers);
      std::vector<torch::Tensor> mixed;
      std::vector<std::vector<Neighbor>> found;
      std::vector<KnnStats> stats;
      const Status s = knn_lm.Distributions(torch::stack(keys), torch::stack(lps), rows[members[0]]->job->request.knn,
                                            &mixed, &found, &pointers, &stats);
      if (!s.ok()) {
        for (size_t i : members) Finish(*rows[i], s);
        continue;
      }
      for (size_t m = 0; m < members.size(); ++m) {
        dist[members[m]] = mixed[m];
        neighbors[members[m]] = std::move(found[m]);
        KnnStats& total = rows[members[m]]->job->result.knn;
        total.queries += stats[m].queries, total.searched += stats[m].searched;
      }
    }
  }
  // Sampling is per row (each its own generator) and costs a selection over the vocabulary: spread over
  // the cores.
  std::vector<int32_t> sampled(rows.size(), -1);
  ParallelFor(rows.size(), threads_, [&](size_t i) {
    if (rows[i]->job != nullptr) sampled[i] = SampleToken(dist[i], rows[i]->job->request.sampling, rows[i]->rng);
  });
  for (size_t i = 0; i < rows.size(); ++i) {
    Row& row = *rows[i];
    if (row.job == nullptr) continue;  // its search failed
    const CompletionRequest& request = row.job->request;
    row.next = -1;
    if (EndIfCancelled(row)) continue;
    const int32_t token = sampled[i];
    if (row.job->knn && request.knn.min_pointers > 0) NextPointers(neighbors[i], token, &row.pointers);
    if (!row.builder->Add(token, dist[i], neighbors[i]) || row.builder->tokens_seen() == request.max_tokens) {
      EndChoice(row);
      continue;
    }
    row.tokens.push_back(token);
    row.next = token;
  }
}

void CompletionBatcher::Loop() {
  torch::set_num_threads(1);
  // A step's products run on the cores (this thread's setting only).
  SetPackedGemmThreads(threads_);
  torch::InferenceMode inference;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || active_.load() > 0; });
      if (stopping_) break;
      for (auto& row : rows_) {
        if (row->job == nullptr && !waiting_.empty()) {
          row->job = std::move(waiting_.front());
          waiting_.pop_front();
          ++active_;
        }
      }
    }
    std::vector<Row*> ready;
    try {
      // New jobs: their echoed prompt's log-probabilities, then the first choice's prefill.
      for (auto& row : rows_) {
        if (row->job == nullptr || row->job->choice >= 0) continue;
        Job& job = *row->job;
        if (job.cancel->load()) {
          Finish(*row, Status::Cancelled("request cancelled"));
          continue;
        }
        job.knn = job.request.UsesKnn(memory_);
        job.result.choices.assign(job.request.n, CompletionChoice());
        job.result.prompt_tokens = static_cast<int64_t>(job.request.prompt.size());
        if (job.request.echo) job.prompt_text = model_.tokenizer->Decode(job.request.prompt);
        if (job.request.echo && job.request.logprobs >= 0) {
          const Status s = PromptLogprobs(model_, job.knn ? memory_ : nullptr, job.request, &job.prompt_logprobs);
          if (!s.ok()) {
            Finish(*row, s);
            continue;
          }
        }
        StartChoice(*row);
      }
      // The step: one token for each decoding row; prompts (and restarted windows) ride along in chunks,
      // at most prefill_tokens of them while others decode (a long prompt must not stall them), all of
      // them when nothing decodes.
      std::vector<DecodeSegment> segments;
      std::vector<Row*> stepping;
      bool want_key = false, decoding = false;
      for (auto& row : rows_) {
        if (row->job == nullptr || !row->feed.empty() || row->next < 0) continue;
        if (batch_->length(row->slot) >= batch_->context()) {
          // A full window restarts from its last half (as Generate does); the sampled token is in it.
          const size_t keep = static_cast<size_t>(batch_->context() / 2);
          Feed(*row, std::vector<int32_t>(row->tokens.end() - static_cast<int64_t>(keep), row->tokens.end()));
          continue;
        }
        DecodeSegment seg;
        seg.slot = row->slot, seg.tokens = {row->next};
        segments.push_back(std::move(seg));
        stepping.push_back(row.get());
        decoding = true;
      }
      size_t budget = decoding ? options_.prefill_tokens : std::numeric_limits<size_t>::max();
      for (auto& row : rows_) {
        if (row->job == nullptr || row->feed.empty() || budget == 0) continue;
        if (EndIfCancelled(*row)) continue;  // cancelled while its prompt runs: it ends now, not after it
        const size_t take = std::min(budget, row->feed.size() - row->fed);
        DecodeSegment seg;
        seg.slot = row->slot, seg.restart = row->fed == 0;
        seg.tokens.assign(row->feed.begin() + static_cast<int64_t>(row->fed),
                          row->feed.begin() + static_cast<int64_t>(row->fed + take));
        row->fed += take;
        budget -= take;
        ++prompt_chunks_;
        segments.push_back(std::move(seg));
        stepping.push_back(row.get());
      }
      for (Row* row : stepping) want_key = want_key || row->job->knn;
      if (stepping.empty()) continue;
      DecodeOutput out = batch_->Run(segments, want_key);
      ++steps_;
      step_rows_ += static_cast<int64_t>(stepping.size());
      for (size_t i = 0; i < stepping.size(); ++i) {
        Row* row = stepping[i];
        if (!row->feed.empty()) {
          if (row->fed < row->feed.size()) continue;  // more of its prompt to run
          row->feed.clear();
        }
        row->logits = out.logits[static_cast<int64_t>(i)];
        if (want_key) row->key = out.knn_key[static_cast<int64_t>(i)];
        ready.push_back(row);
      }
      if (!ready.empty()) SampleAll(ready);
    } catch (const std::exception& e) {
      // A failure of the model itself: every job in the batch ends with it; the batcher goes on.
      for (auto& row : rows_) {
        if (row->job != nullptr) Finish(*row, Status::Internal(std::string("decoding failed: ") + e.what()));
      }
    }
  }
  std::deque<std::unique_ptr<Job>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(waiting_);
  }
  for (auto& job : left) {
    if (job->done) job->done(Status::Cancelled("the server is shutting down"), CompletionResult());
  }
  for (auto& row : rows_) {
    if (row->job != nullptr) Finish(*row, Status::Cancelled("the server is shutting down"));
  }
}

}  // namespace mnemo
