// Continuous batching of completions (retriever/completion_batcher.h): requests decoded together give
// what each gives alone (tokens, log-probabilities, neighbours), kNN searches of a step go out as one
// batch, finished and cancelled requests leave without disturbing the others, a full queue refuses, and
// shutting down ends what is left.
#include "retriever/completion_batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "retriever/datastore_builder.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

// Exact search over random entries; remembers how many queries each call carried.
class BruteMemory : public KnnMemory {
 public:
  BruteMemory(int dim, int64_t n, int vocab) : dim_(dim), keys_(static_cast<size_t>(n * dim)), values_(static_cast<size_t>(n)) {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    for (float& x : keys_) x = normal(rng);
    for (int32_t& v : values_) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  }
  int dim() const override { return dim_; }
  int64_t size() const override { return static_cast<int64_t>(values_.size()); }
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      calls_.push_back(n);
    }
    out->assign(static_cast<size_t>(n * options.k), Neighbor());
    for (int64_t q = 0; q < n; ++q) {
      std::vector<Neighbor> all;
      for (int64_t e = 0; e < size(); ++e) {
        float d = 0;
        for (int j = 0; j < dim_; ++j) {
          const float diff = queries[q * dim_ + j] - keys_[static_cast<size_t>(e * dim_ + j)];
          d += diff * diff;
        }
        all.push_back({e, values_[static_cast<size_t>(e)], d, 0});
      }
      std::stable_sort(all.begin(), all.end(), [](const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; });
      std::copy(all.begin(), all.begin() + std::min<int64_t>(options.k, size()), out->begin() + q * options.k);
    }
    return Status::OK();
  }
  int64_t largest_call() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.empty() ? 0 : *std::max_element(calls_.begin(), calls_.end());
  }

 private:
  int dim_;
  std::vector<float> keys_;
  std::vector<int32_t> values_;
  mutable std::mutex mu_;
  mutable std::vector<int64_t> calls_;
};

// One submitted request's outcome.
struct Outcome {
  std::mutex mu;
  std::condition_variable finished;
  bool done = false;
  Status status;
  CompletionResult result;
  std::vector<CompletionEvent> events;  // pointers cleared: only choice, text, finished
  CompletionBatcher::DoneFn Done() {
    return [this](const Status& s, CompletionResult r) {
      std::lock_guard<std::mutex> lock(mu);
      status = s;
      result = std::move(r);
      done = true;
      finished.notify_all();
    };
  }
  CompletionEventFn Events() {
    return [this](const CompletionEvent& e) {
      CompletionEvent copy;
      copy.choice = e.choice, copy.text = e.text, copy.finished = e.finished, copy.finish_reason = e.finish_reason;
      events.push_back(copy);
      return true;
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(finished.wait_for(lock, std::chrono::seconds(120), [&] { return done; })) << "no answer in 2 minutes";
  }
};

class CompletionBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model_));
    memory_ = std::make_unique<BruteMemory>(static_cast<int>(model_.config.n_embd), 3000,
                                            static_cast<int>(model_.config.vocab_size));
  }
  CompletionRequest Request(const std::string& prompt, int max_tokens, uint64_t seed) const {
    CompletionRequest r;
    r.prompt = model_.tokenizer->Encode(prompt);
    r.max_tokens = max_tokens;
    r.has_seed = true;
    r.seed = seed;
    r.logprobs = 2;
    r.knn.enabled = false;
    return r;
  }
  LanguageModel model_;
  std::unique_ptr<BruteMemory> memory_;
};

void ExpectSameResult(const CompletionResult& a, const CompletionResult& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.prompt_tokens, b.prompt_tokens);
  EXPECT_EQ(a.completion_tokens, b.completion_tokens);
  ASSERT_EQ(a.choices.size(), b.choices.size());
  for (size_t c = 0; c < a.choices.size(); ++c) {
    const CompletionChoice& x = a.choices[c];
    const CompletionChoice& y = b.choices[c];
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.text, y.text);
    EXPECT_EQ(x.finish_reason, y.finish_reason);
    EXPECT_EQ(x.text_offset, y.text_offset);
    ASSERT_EQ(x.logprobs.size(), y.logprobs.size());
    for (size_t i = 0; i < x.logprobs.size(); ++i) {
      EXPECT_EQ(x.logprobs[i].token, y.logprobs[i].token);
      // Equal up to the BLAS's rounding of a row at another batch size (lm/decode_batch.h).
      EXPECT_NEAR(x.logprobs[i].logprob, y.logprobs[i].logprob, 1e-5) << "token " << i;
      ASSERT_EQ(x.logprobs[i].top.size(), y.logprobs[i].top.size());
      for (size_t j = 0; j < x.logprobs[i].top.size(); ++j) {
        EXPECT_EQ(x.logprobs[i].top[j].first, y.logprobs[i].top[j].first);
        EXPECT_NEAR(x.logprobs[i].top[j].second, y.logprobs[i].top[j].second, 1e-5);
      }
    }
    ASSERT_EQ(x.neighbors.size(), y.neighbors.size());
    for (size_t i = 0; i < x.neighbors.size(); ++i) {
      ASSERT_EQ(x.neighbors[i].size(), y.neighbors[i].size());
      for (size_t j = 0; j < x.neighbors[i].size(); ++j) {
        EXPECT_EQ(x.neighbors[i][j].entry, y.neighbors[i][j].entry);
        EXPECT_NEAR(x.neighbors[i][j].distance, y.neighbors[i][j].distance, 1e-4);
        EXPECT_NEAR(x.neighbors[i][j].weight, y.neighbors[i][j].weight, 1e-5);
      }
    }
  }
}

TEST_F(CompletionBatcherTest, RequestsDecodedTogetherGiveWhatEachGivesAlone) {
  std::vector<CompletionRequest> requests;
  requests.push_back(Request("The cat sees", 20, 1));  // base LM
  CompletionRequest knn = Request("The dog", 24, 2);
  knn.knn.enabled = true, knn.knn.k = 8, knn.knn.lambda = 0.5, knn.return_neighbors = 3;
  requests.push_back(knn);
  CompletionRequest knn2 = knn;  // another kNN setting: its own search group
  knn2.prompt = model_.tokenizer->Encode("A bird");
  knn2.knn.k = 16, knn2.knn.temperature = 3, knn2.seed = 3;
  requests.push_back(knn2);
  CompletionRequest knn3 = knn;  // the first setting again: shares its searches
  knn3.prompt = model_.tokenizer->Encode("The old sailor");
  knn3.seed = 4;
  requests.push_back(knn3);
  CompletionRequest long_run = Request("The cat", 90, 5);  // past the 64-token context: the window restarts
  long_run.ignore_eos = true, long_run.knn = knn.knn;
  requests.push_back(long_run);
  CompletionRequest choices = Request("The", 12, 6);  // n = 3, echoed with prompt log-probabilities
  choices.n = 3, choices.echo = true, choices.sampling.temperature = 0.7;
  requests.push_back(choices);
  CompletionRequest greedy = Request("The cat sees the", 15, 7);
  greedy.sampling.temperature = 0;
  requests.push_back(greedy);
  // A long prompt that joins while others decode: it runs in chunks of prefill_tokens, in their steps.
  CompletionRequest long_prompt = Request("The old sailor sees the cat and the dog and the bird by the sea", 10, 8);
  ASSERT_GT(long_prompt.prompt.size(), 9u);
  requests.push_back(long_prompt);

  BatcherOptions options;
  options.slots = 4;  // fewer slots than requests: four wait and join the running batch later
  options.prefill_tokens = 3;
  std::vector<CompletionResult> alone;
  for (const CompletionRequest& r : requests) {
    CompletionBatcher batcher(model_, memory_.get(), options);
    Outcome o;
    ASSERT_TRUE(batcher.Submit(r, o.Events(), nullptr, o.Done()).ok());
    ASSERT_NO_FATAL_FAILURE(o.Wait());
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(batcher.stats().rows, batcher.stats().steps);  // alone: one row per step
    alone.push_back(o.result);
  }
  EXPECT_EQ(alone[4].choices[0].tokens.size(), 90u);

  CompletionBatcher batcher(model_, memory_.get(), options);
  std::vector<std::unique_ptr<Outcome>> together;
  for (const CompletionRequest& r : requests) {
    together.push_back(std::make_unique<Outcome>());
    ASSERT_TRUE(batcher.Submit(r, together.back()->Events(), nullptr, together.back()->Done()).ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(together[i]->Wait());
    ASSERT_TRUE(together[i]->status.ok()) << together[i]->status.ToString();
    ExpectSameResult(together[i]->result, alone[i], "request " + std::to_string(i));
  }
  const BatcherStats stats = batcher.stats();
  EXPECT_GT(stats.rows, 2 * stats.steps) << "the requests were not decoded together";
  EXPECT_GT(stats.prompt_chunks, stats.prefills) << "no prompt was fed in chunks";
  EXPECT_GE(memory_->largest_call(), 2) << "a step's kNN rows did not share a search";
  EXPECT_EQ(stats.active, 0);
  EXPECT_EQ(stats.waiting, 0);
  // The n = 3 request's events come choice after choice, each ending once, as Complete sends them.
  int last_choice = 0, ends = 0;
  for (const CompletionEvent& e : together[5]->events) {
    EXPECT_GE(e.choice, last_choice);
    last_choice = e.choice;
    ends += e.finished;
  }
  EXPECT_EQ(ends, 3);
}

TEST_F(CompletionBatcherTest, GreedyDecodingMatchesComplete) {
  // The batch pads attention to the context and Complete does not: the same model up to float rounding,
  // so greedy tokens agree (a wrong mask or position would not).
  for (bool knn : {false, true}) {
    CompletionRequest r = Request("The cat sees the", 40, 1);
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    r.knn.enabled = knn, r.knn.k = 8, r.knn.lambda = 0.5;
    CompletionResult direct;
    ASSERT_TRUE(Complete(model_, memory_.get(), r, nullptr, nullptr, &direct).ok());
    CompletionBatcher batcher(model_, memory_.get(), BatcherOptions());
    Outcome o;
    ASSERT_TRUE(batcher.Submit(r, nullptr, nullptr, o.Done()).ok());
    ASSERT_NO_FATAL_FAILURE(o.Wait());
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.result.choices[0].tokens, direct.choices[0].tokens) << "knn " << knn;
    for (size_t i = 0; i < direct.choices[0].logprobs.size(); ++i) {
      EXPECT_NEAR(o.result.choices[0].logprobs[i].logprob, direct.choices[0].logprobs[i].logprob, 1e-4);
    }
  }
}

TEST_F(CompletionBatcherTest, ACancelledRequestLeavesAndTheOthersGoOn) {
  BatcherOptions options;
  options.slots = 2;
  CompletionRequest other = Request("The dog", 30, 9);
  CompletionResult reference;
  {
    CompletionBatcher batcher(model_, memory_.get(), options);
    Outcome o;
    ASSERT_TRUE(batcher.Submit(other, nullptr, nullptr, o.Done()).ok());
    ASSERT_NO_FATAL_FAILURE(o.Wait());
    reference = o.result;
  }
  CompletionBatcher batcher(model_, memory_.get(), options);
  CompletionRequest endless = Request("The cat", 1000, 8);
  endless.ignore_eos = true;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  Outcome cancelled, refused_by_client, kept;
  int seen = 0;
  ASSERT_TRUE(batcher.Submit(endless, [&](const CompletionEvent&) {
                       if (++seen == 5) *cancel = true;  // e.g. the request timed out
                       return true;
                     }, cancel, cancelled.Done()).ok());
  int streamed = 0;
  ASSERT_TRUE(batcher.Submit(endless, [&](const CompletionEvent&) { return ++streamed < 3; },  // the client left
                             nullptr, refused_by_client.Done()).ok());
  ASSERT_TRUE(batcher.Submit(other, nullptr, nullptr, kept.Done()).ok());
  ASSERT_NO_FATAL_FAILURE(cancelled.Wait());
  ASSERT_NO_FATAL_FAILURE(refused_by_client.Wait());
  ASSERT_NO_FATAL_FAILURE(kept.Wait());
  EXPECT_TRUE(cancelled.status.IsCancelled()) << cancelled.status.ToString();
  EXPECT_EQ(seen, 5);  // checked before the next token
  EXPECT_TRUE(refused_by_client.status.IsCancelled()) << refused_by_client.status.ToString();
  EXPECT_EQ(streamed, 3);
  ASSERT_TRUE(kept.status.ok()) << kept.status.ToString();
  ExpectSameResult(kept.result, reference, "the request beside the cancelled ones");
}

TEST_F(CompletionBatcherTest, ACancelWhileItsPromptIsFedEndsItAtTheNextStep) {
  BatcherOptions options;
  options.slots = 2;
  options.prefill_tokens = 1;  // one prompt token per step while the other decodes
  CompletionBatcher batcher(model_, memory_.get(), options);
  CompletionRequest decoding = Request("The dog", 30, 9);
  decoding.ignore_eos = true;
  CompletionRequest long_prompt = Request("The old sailor sees the cat and the dog and the bird by the sea", 5, 10);
  ASSERT_GT(long_prompt.prompt.size(), 12u);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu;
  std::condition_variable cv;
  bool submitted = false;
  std::atomic<int> events{0}, events_when_cancelled_ended{-1};
  Outcome first, second;
  // The decoding request's first event waits until the long prompt is queued (so it arrives while this
  // one decodes and is fed in chunks); its third cancels the long prompt, one or two chunks in.
  ASSERT_TRUE(batcher.Submit(decoding, [&](const CompletionEvent&) {
                       const int n = ++events;
                       if (n == 1) {
                         std::unique_lock<std::mutex> lock(mu);
                         cv.wait(lock, [&] { return submitted; });
                       }
                       if (n == 3) *cancel = true;
                       return true;
                     }, nullptr, first.Done()).ok());
  while (events.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto done = second.Done();
  ASSERT_TRUE(batcher.Submit(long_prompt, nullptr, cancel, [&](const Status& s, CompletionResult r) {
                       events_when_cancelled_ended = events.load();
                       done(s, std::move(r));
                     }).ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    submitted = true;
  }
  cv.notify_all();
  ASSERT_NO_FATAL_FAILURE(second.Wait());
  ASSERT_NO_FATAL_FAILURE(first.Wait());
  EXPECT_TRUE(second.status.IsCancelled()) << second.status.ToString();
  EXPECT_TRUE(second.result.choices.empty() || second.result.choices[0].tokens.empty());
  // Ended at the step after the cancel, not after the rest of its prompt (12+ more steps).
  EXPECT_LE(events_when_cancelled_ended.load(), 4);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.result.choices[0].tokens.size(), 30u);
}

TEST_F(CompletionBatcherTest, GenerationFollowsPointersThroughTextTheDatastoreHolds) {
  // A datastore over a text; a greedy kNN-LM continuation of its first words (lambda 0.9) regenerates the
  // text, whose positions each find their own entry: with pointers, the successors of the neighbours that
  // carried the emitted token replace almost every search.
  const std::string stored = testing::ToyCorpus().substr(0, 3000);
  testing::ScratchDir dir;
  DatastoreBuildOptions build;
  build.finish.progress = false;
  DatastoreBuildReport report;
  ASSERT_TRUE(BuildDatastore(model_, stored, "toy", dir.File("ds"), build, &report).ok());
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());
  const std::vector<int32_t> ids = model_.tokenizer->Encode(stored);
  CompletionRequest r;
  r.prompt.assign(ids.begin(), ids.begin() + 8);
  r.max_tokens = 40;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  r.knn.k = 8, r.knn.lambda = 0.9;
  auto run = [&](int pointers, bool batched, CompletionResult* out) {
    CompletionRequest req = r;
    req.knn.min_pointers = pointers;
    if (!batched) {
      ASSERT_TRUE(Complete(model_, ds.get(), req, nullptr, nullptr, out).ok());
      return;
    }
    CompletionBatcher batcher(model_, ds.get(), BatcherOptions());
    Outcome o;
    ASSERT_TRUE(batcher.Submit(req, nullptr, nullptr, o.Done()).ok());
    ASSERT_NO_FATAL_FAILURE(o.Wait());
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    *out = o.result;
  };
  for (bool batched : {false, true}) {
    SCOPED_TRACE(batched ? "batched" : "alone");
    CompletionResult searched, followed;
    ASSERT_NO_FATAL_FAILURE(run(0, batched, &searched));
    ASSERT_NO_FATAL_FAILURE(run(1, batched, &followed));
    EXPECT_EQ(searched.knn.queries, 40);
    EXPECT_EQ(searched.knn.searched, 40);
    EXPECT_EQ(followed.knn.queries, 40);
    EXPECT_LT(followed.knn.searched, 8) << "pointers saved few searches";
    EXPECT_GE(followed.knn.searched, 1);  // the first position has no pointers yet
    // Following keeps to the stored text: its continuation is the text's. Searching finds the same until
    // the text repeats a phrase (position 26 here), where its neighbours mix both continuations.
    const std::vector<int32_t> want(ids.begin() + 8, ids.begin() + 48);
    EXPECT_EQ(followed.choices[0].tokens, want);
    const auto& got = searched.choices[0].tokens;
    ASSERT_EQ(got.size(), want.size());
    EXPECT_GE(std::mismatch(got.begin(), got.end(), want.begin()).first - got.begin(), 20);
    if (!batched) continue;
    // Both in one batch: each keeps its own pointers setting (they search in separate groups), so each
    // gives what it gives alone.
    CompletionBatcher batcher(model_, ds.get(), BatcherOptions());
    Outcome a, b;
    CompletionRequest follow = r;
    follow.knn.min_pointers = 1;
    ASSERT_TRUE(batcher.Submit(r, nullptr, nullptr, a.Done()).ok());
    ASSERT_TRUE(batcher.Submit(follow, nullptr, nullptr, b.Done()).ok());
    ASSERT_NO_FATAL_FAILURE(a.Wait());
    ASSERT_NO_FATAL_FAILURE(b.Wait());
    EXPECT_EQ(a.result.knn.searched, searched.knn.searched);
    EXPECT_EQ(b.result.knn.searched, followed.knn.searched);
    EXPECT_EQ(a.result.choices[0].tokens, searched.choices[0].tokens);
    EXPECT_EQ(b.result.choices[0].tokens, followed.choices[0].tokens);
  }
}

TEST_F(CompletionBatcherTest, BadRequestsFullQueueAndShutdown) {
  BatcherOptions options;
  options.slots = 1;
  options.queue = 1;
  Outcome running, queued;
  {
    CompletionBatcher batcher(model_, memory_.get(), options);
    CompletionRequest empty = Request("x", 4, 1);
    empty.prompt.clear();
    EXPECT_TRUE(batcher.Submit(empty, nullptr, nullptr, nullptr).IsInvalidArgument());
    CompletionRequest endless = Request("The cat", 1000, 8);
    endless.ignore_eos = true;
    std::mutex mu;
    std::condition_variable started;
    bool first = false;
    ASSERT_TRUE(batcher.Submit(endless, [&](const CompletionEvent&) {
                         std::lock_guard<std::mutex> lock(mu);
                         first = true;
                         started.notify_all();
                         return true;
                       }, nullptr, running.Done()).ok());
    {
      std::unique_lock<std::mutex> lock(mu);
      started.wait(lock, [&] { return first; });  // it holds the only slot now
    }
    ASSERT_TRUE(batcher.Submit(endless, nullptr, nullptr, queued.Done()).ok());
    const Status full = batcher.Submit(endless, nullptr, nullptr, nullptr);
    EXPECT_TRUE(full.IsFailedPrecondition()) << full.ToString();
    EXPECT_EQ(batcher.stats().waiting, 1);
    EXPECT_EQ(batcher.stats().active, 1);
  }  // destroyed mid-generation: both end, cancelled
  ASSERT_TRUE(running.done && queued.done);
  EXPECT_TRUE(running.status.IsCancelled()) << running.status.ToString();
  EXPECT_TRUE(queued.status.IsCancelled()) << queued.status.ToString();
}

}  // namespace
}  // namespace mnemo
