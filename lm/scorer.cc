#include "lm/scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <utility>

#include "util/blas_threads.h"

namespace mnemo {

Status CheckScorable(const GptConfig& config, const std::vector<int32_t>& ids) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) return Status::InvalidArgument("nothing to score: the text has no tokens");
  if (n > config.n_positions) {
    return Status::InvalidArgument("text has " + std::to_string(n) + " tokens, longer than the model's context of " +
                                   std::to_string(config.n_positions) + " (use eval ppl for long texts)");
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= config.vocab_size) {
      return Status::InvalidArgument("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                                     std::to_string(config.vocab_size) + ")");
    }
  }
  return Status::OK();
}

Status ScoreIds(Gpt& net, const std::vector<int32_t>& ids, std::vector<float>* logprobs) {
  MNEMO_RETURN_IF_ERROR(CheckScorable(net->config(), ids));
  return ScoreLongSequence(net, ids, {}, logprobs);
}

Status PlanWindows(int64_t num_tokens, int64_t n_positions, const WindowOptions& options,
                   std::vector<Window>* windows) {
  const int64_t window = options.window > 0 ? options.window : n_positions;
  const int64_t stride = options.stride > 0 ? options.stride : std::max<int64_t>(1, window / 2);
  if (window > n_positions) {
    return Status::InvalidArgument("window " + std::to_string(window) + " exceeds the model's context of " +
                                   std::to_string(n_positions));
  }
  // A window's first token is context only: no position inside the window predicts it. A window of one
  // token therefore scores nothing, and a window that started exactly where the previous one ended would
  // be handed a target it cannot score (stride == window: non-overlapping chunks). So consecutive windows
  // share at least one token, and stride == window advances by window - 1.
  if (window < 2) return Status::InvalidArgument("window must be at least 2 tokens (its first token is context only)");
  if (stride > window) return Status::InvalidArgument("stride must not exceed the window");
  const int64_t step = std::min(stride, window - 1);
  windows->clear();
  int64_t scored_until = 1;  // Token 0 has no context and is never scored.
  for (int64_t begin = 0; scored_until < num_tokens; begin += step) {
    const int64_t end = std::min(begin + window, num_tokens);
    windows->push_back({begin, end, end - scored_until});
    scored_until = end;
  }
  return Status::OK();
}

Status ForEachScoredSpan(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                         const SpanRequest& request, const std::function<Status(const ScoredSpan&)>& fn) {
  return ForEachScoredBatch(net, ids, options, request, [&fn](const std::vector<ScoredSpan>& spans) {
    for (const ScoredSpan& span : spans) MNEMO_RETURN_IF_ERROR(fn(span));
    return Status::OK();
  });
}

Status ForEachScoredBatch(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                          const SpanRequest& request,
                          const std::function<Status(const std::vector<ScoredSpan>&)>& fn,
                          WindowOptions::Placement* placed) {
  std::vector<Window> windows;
  MNEMO_RETURN_IF_ERROR(PlanWindows(static_cast<int64_t>(ids.size()), net->config().n_positions, options, &windows));
  torch::InferenceMode inference;
  // With a memory every batch row would read its own lane: one window at a time, all reading lane 0.
  const int64_t window = options.window > 0 ? options.window : net->config().n_positions;
  const int64_t batch = request.memory != nullptr ? 1
                        : options.batch_size > 0 ? options.batch_size
                                                 : std::max<int64_t>(1, kScoringBatchTokens / window);
  ForwardOptions forward;
  forward.want_knn_key = request.knn_keys;
  // The head runs on each span's scored positions only (a window after the first scores half its
  // positions): the pass returns ln_f's output, left on the model's device for the head.
  forward.want_logits = false;
  forward.want_hidden = request.logprobs;
  forward.keep_on_device = true;
  if (request.memory != nullptr) {
    if (!net->config().has_memory()) return Status::InvalidArgument("the model has no memory layer to read a memory with");
    forward.memory.memory = request.memory;
    forward.memory.topk = request.memory_topk;
    forward.memory.write = false;
  }
  // The callback of the previous batch, when it runs beside this batch's forward pass. Declared after
  // everything the task uses, so an early return waits for it before those go away.
  std::future<Status> pending;
  auto finish_pending = [&pending]() { return pending.valid() ? pending.get() : Status::OK(); };
  using Placement = WindowOptions::Placement;
  using Clock = std::chrono::steady_clock;
  const int threads = torch::get_num_threads();
  // OpenBLAS's threads as the caller left them, given back on the way out. Its count is global: it is set
  // only when a batch needs another one, so callers that score side by side with one fixed placement (the
  // server's workers) never touch it.
  const int blas_threads = BlasThreads();
  struct RestoreBlas {
    int n, now;
    ~RestoreBlas() {
      if (now != n) SetBlasThreads(n);
    }
  } blas{blas_threads, blas_threads};
  // Where the callback runs and how many threads OpenBLAS gives the pass. Beside the pass, the callback's
  // threads are OpenBLAS's fewer (it busy-waits on every core it has).
  struct Setup {
    Placement placement;
    int blas;
  };
  const Setup beside{Placement::kBeside, std::max(1, blas_threads - threads)};
  Setup chosen = options.placement == Placement::kBeside ? beside : Setup{Placement::kAfter, blas_threads};
  // kAuto: batch 0 warms up after the pass; batch 1, after the pass, times the pass and the callback and
  // picks OpenBLAS's threads for placing it after; batch 2 runs so and is timed; batches 3 and 4 run beside,
  // batch 4's callback timed from its start until batch 5's pass and it are both done; at batch 5 the cheaper
  // placement is kept. After the pass, OpenBLAS with every core computes the pass faster but its idle
  // threads keep spinning into the callback's parallel search (on 2 cores the default model's Flat search
  // ran 14% faster with one OpenBLAS thread, and its batches took 0.15 s steadily instead of 0.14 to
  // 0.22 s), so it keeps every core only where the pass costs more than the callback; with one, the
  // pass's element-wise ops take the callback's OpenMP threads instead.
  const bool deciding = options.placement == Placement::kAuto;
  constexpr int64_t kSplitTimed = 1, kAfterTimed = 2, kDecidingBatch = 5;
  double after_cost = 0;
  Clock::time_point trial_start;
  int64_t batch_index = 0;
  torch::Tensor logits;  // the head's output, reused from window to window (GptImpl::LogitsInto)
  for (size_t first = 0; first < windows.size(); ++batch_index) {
    Setup setup = chosen;
    if (deciding && batch_index <= kSplitTimed) {
      setup = {Placement::kAfter, blas_threads};
    } else if (deciding && batch_index > kAfterTimed && batch_index <= kDecidingBatch) {
      setup = beside;  // the last of these passes runs beside the trial's callback, then the choice is made
    }
    if (setup.blas != blas.now) {
      SetBlasThreads(setup.blas);
      blas.now = setup.blas;
    }
    const Clock::time_point started = Clock::now();
    // Batch consecutive windows of equal length (all but possibly the last).
    size_t last = first + 1;
    const int64_t len = windows[first].end - windows[first].begin;
    while (last < windows.size() && static_cast<int64_t>(last - first) < batch &&
           windows[last].end - windows[last].begin == len) {
      ++last;
    }
    const int64_t rows = static_cast<int64_t>(last - first);
    torch::Tensor input = torch::empty({rows, len}, torch::kLong);
    auto acc = input.accessor<int64_t, 2>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = 0; t < len; ++t) acc[r][t] = ids[windows[first + r].begin + t];
    }
    ForwardResult out;
    {
      // With OpenBLAS on one thread after the pass (kAuto's choice where the search costs more), no pool
      // spins beside OpenMP's: the pass's element-wise ops get the callback's threads too.
      const bool blas_alone = setup.placement == Placement::kAfter && setup.blas == 1 && blas_threads > 1;
      OmpThreadsScope pass_threads(blas_alone ? options.callback_threads : 0);
      out = net->Forward(input, forward);
    }
    std::vector<ScoredSpan> spans(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const Window& w = windows[first + r];
      // Row position p predicts token begin + p + 1; the span's contexts end at positions p0 .. len - 2.
      const int64_t p0 = len - 1 - w.score_count;
      ScoredSpan& span = spans[r];
      span.first_target = w.end - w.score_count;
      span.count = w.score_count;
      if (request.logprobs) {
        span.logprobs =
            torch::log_softmax(net->LogitsInto(out.hidden[r].slice(0, p0, len - 1), &logits), -1).to(torch::kCPU);
      }
      if (request.knn_keys) span.knn_keys = out.knn_key[r].slice(0, p0, len - 1).to(torch::kCPU);
    }
    first = last;
    const Clock::time_point passed = Clock::now();
    MNEMO_RETURN_IF_ERROR(finish_pending());
    if (deciding && batch_index == kDecidingBatch) {
      const double beside_cost = std::chrono::duration<double>(Clock::now() - trial_start).count();
      if (beside_cost < after_cost) chosen = beside;
      setup = chosen;
    }
    if (placed != nullptr) *placed = setup.placement;
    if (setup.placement == Placement::kAfter) {
      OmpThreadsScope callback_threads(options.callback_threads);
      MNEMO_RETURN_IF_ERROR(fn(spans));
      const Clock::time_point done = Clock::now();
      if (deciding && batch_index == kSplitTimed) {
        const double pass = std::chrono::duration<double>(passed - started).count();
        const double callback = std::chrono::duration<double>(done - passed).count();
        chosen = {Placement::kAfter, callback > pass ? 1 : blas_threads};
      } else if (deciding && batch_index == kAfterTimed) {
        after_cost = std::chrono::duration<double>(done - started).count();
      }
      continue;
    }
    trial_start = Clock::now();
    // A new thread starts with OpenMP's default thread count, not the caller's: pass it on.
    pending = std::async(std::launch::async, [&fn, threads, spans = std::move(spans)]() -> Status {
      torch::set_num_threads(threads);
      torch::InferenceMode inference;
      return fn(spans);
    });
  }
  return finish_pending();
}

Status ScoreLongSequence(Gpt& net, const std::vector<int32_t>& ids, const WindowOptions& options,
                         std::vector<float>* logprobs) {
  logprobs->assign(ids.empty() ? 0 : ids.size() - 1, 0.0f);
  return ForEachScoredSpan(net, ids, options, {}, [&](const ScoredSpan& span) {
    std::vector<int64_t> targets(ids.begin() + span.first_target, ids.begin() + span.first_target + span.count);
    torch::Tensor picked =
        span.logprobs.gather(1, torch::tensor(targets, torch::kLong).unsqueeze(1)).squeeze(1).contiguous();
    std::copy(picked.data_ptr<float>(), picked.data_ptr<float>() + span.count,
              logprobs->begin() + (span.first_target - 1));
    return Status::OK();
  });
}

double PerplexityReport::perplexity() const { return tokens > 0 ? std::exp(nll / tokens) : 0.0; }

double PerplexityReport::bits_per_byte() const { return bytes > 0 ? nll / std::log(2.0) / bytes : 0.0; }

PerplexityReport PerplexityReport::FromLogprobs(const std::vector<float>& logprobs, int64_t bytes) {
  PerplexityReport r;
  r.tokens = static_cast<int64_t>(logprobs.size());
  r.bytes = bytes;
  for (float lp : logprobs) r.nll -= lp;
  return r;
}

}  // namespace mnemo
