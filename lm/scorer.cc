#include "lm/scorer.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <utility>

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
                          const std::function<Status(const std::vector<ScoredSpan>&)>& fn) {
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
  // With options.overlap, the callbacks of the previous batch, running beside this batch's forward pass.
  // Declared after everything the task uses, so an early return waits for it before those go away.
  std::future<Status> pending;
  auto finish_pending = [&pending]() { return pending.valid() ? pending.get() : Status::OK(); };
  const int threads = torch::get_num_threads();
  for (size_t first = 0; first < windows.size();) {
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
    ForwardResult out = net->Forward(input, forward);
    std::vector<ScoredSpan> spans(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      const Window& w = windows[first + r];
      // Row position p predicts token begin + p + 1; the span's contexts end at positions p0 .. len - 2.
      const int64_t p0 = len - 1 - w.score_count;
      ScoredSpan& span = spans[r];
      span.first_target = w.end - w.score_count;
      span.count = w.score_count;
      if (request.logprobs) {
        span.logprobs = torch::log_softmax(net->Logits(out.hidden[r].slice(0, p0, len - 1)), -1).to(torch::kCPU);
      }
      if (request.knn_keys) span.knn_keys = out.knn_key[r].slice(0, p0, len - 1).to(torch::kCPU);
    }
    first = last;
    if (!options.overlap) {
      MNEMO_RETURN_IF_ERROR(fn(spans));
      continue;
    }
    MNEMO_RETURN_IF_ERROR(finish_pending());
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
