#include "retriever/completion.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>

#include "lm/generator.h"
#include "lm/scorer.h"
#include "memory/layer_memories.h"

namespace mnemo {
namespace {

// The longest prefix of text[0..limit) that does not end inside a UTF-8 character.
size_t Utf8SafeEnd(const std::string& text, size_t limit) {
  size_t end = std::min(limit, text.size());
  // Walk back over continuation bytes to the lead byte of the last character.
  size_t lead = end;
  while (lead > 0 && (static_cast<unsigned char>(text[lead - 1]) & 0xC0) == 0x80) --lead;
  if (lead == 0) return end;
  const unsigned char c = static_cast<unsigned char>(text[lead - 1]);
  const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  const size_t have = end - (lead - 1);
  return have >= need ? end : lead - 1;
}

// The length of the longest suffix of text[from..] that is a proper prefix of a stop sequence: bytes that
// may yet become one. O(sum of |stop|^2) per call at worst, like the search in Append.
size_t StopPrefixSuffix(const std::string& text, size_t from, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const std::string& s : stop) {
    for (size_t k = std::min(s.size() - 1, text.size() - from); k > held; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        held = k;
        break;
      }
    }
  }
  return held;
}

TokenLogprob MakeLogprob(int32_t token, const torch::Tensor& distribution, int top_n) {
  TokenLogprob t;
  t.token = token;
  t.logprob = distribution[token].item<float>();
  if (top_n > 0) {
    auto [values, indices] = distribution.topk(std::min<int64_t>(top_n, distribution.size(0)));
    for (int64_t i = 0; i < values.size(0); ++i) {
      t.top.emplace_back(static_cast<int32_t>(indices[i].item<int64_t>()), values[i].item<float>());
    }
  }
  return t;
}

// The `count` retrieved pairs with the largest attention weights over all heads (tags and weights
// [n_head, topk]), heaviest first; empty slots (tag -1) are skipped.
std::vector<MemoryHit> TopMemoryHits(const torch::Tensor& tags, const torch::Tensor& weights, int count) {
  torch::Tensor t = tags.contiguous().to(torch::kLong), w = weights.contiguous().to(torch::kFloat32);
  const int64_t H = t.size(0), K = t.size(1);
  const int64_t* tp = t.data_ptr<int64_t>();
  const float* wp = w.data_ptr<float>();
  std::vector<MemoryHit> hits;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t tag = tp[h * K + k];
      if (tag < 0) continue;
      hits.push_back({TagDocument(tag), TagPosition(tag), static_cast<int>(h), wp[h * K + k]});
    }
  }
  std::stable_sort(hits.begin(), hits.end(), [](const MemoryHit& a, const MemoryHit& b) { return a.weight > b.weight; });
  if (static_cast<int>(hits.size()) > count) hits.resize(static_cast<size_t>(count));
  return hits;
}

}  // namespace

StreamedText::StreamedText(std::vector<std::string> stop) : stop_(std::move(stop)) {
  // An empty sequence would match before anything (Complete rejects them): ignored rather than trusted.
  stop_.erase(std::remove(stop_.begin(), stop_.end(), std::string()), stop_.end());
  for (const std::string& s : stop_) longest_stop_ = std::max(longest_stop_, s.size());
}

bool StreamedText::Append(const std::string& bytes) {
  if (stopped_) return true;
  const size_t before = text_.size();
  text_ += bytes;
  // No stop sequence lies wholly in the old text (it would have stopped there), so the search starts where
  // one straddling the old end could begin.
  const size_t from = before >= longest_stop_ ? before - longest_stop_ + 1 : 0;
  size_t stop_at = std::string::npos;
  for (const std::string& s : stop_) stop_at = std::min(stop_at, text_.find(s, from));
  if (stop_at == std::string::npos) return false;
  // Nothing at or after stop_at was taken: it was either new or a held-back stop prefix.
  text_.resize(stop_at);
  stopped_ = true;
  return true;
}

std::string StreamedText::TakeSafe() {
  const size_t held = stopped_ ? 0 : StopPrefixSuffix(text_, taken_, stop_);
  const size_t safe = Utf8SafeEnd(text_, text_.size() - held);
  if (safe <= taken_) return std::string();
  std::string out = text_.substr(taken_, safe - taken_);
  taken_ = safe;
  return out;
}

std::string StreamedText::TakeRest() {
  std::string out = text_.substr(std::min(taken_, text_.size()));
  taken_ = text_.size();
  return out;
}

Status CompletionRequest::Validate(int64_t vocab_size, int64_t context) const {
  auto range = [](const char* field, int64_t lo, int64_t hi) {
    return Status::InvalidArgument(std::string(field) + ": must be in [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "]");
  };
  if (prompt.empty()) return Status::InvalidArgument("prompt: must not be empty");
  if (static_cast<int64_t>(prompt.size()) > context) {
    return Status::InvalidArgument("prompt: " + std::to_string(prompt.size()) + " tokens exceed the context of " +
                                   std::to_string(context));
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= vocab_size) {
      return Status::InvalidArgument("prompt: token ids must be integers in [0, " + std::to_string(vocab_size) +
                                     ") (got " + std::to_string(id) + ")");
    }
  }
  if (max_tokens < 0) return Status::InvalidArgument("max_tokens: must not be negative");
  if (n < 1 || n > kMaxChoices) return range("n", 1, kMaxChoices);
  if (logprobs < -1 || logprobs > kMaxLogprobs) return range("logprobs", 0, kMaxLogprobs);
  if (return_neighbors < 0 || return_neighbors > kMaxReturnNeighbors) {
    return range("return_neighbors", 0, kMaxReturnNeighbors);
  }
  if (!(sampling.temperature >= 0 && sampling.temperature <= kMaxTemperature)) {
    return Status::InvalidArgument("temperature: must be in [0, " + std::to_string(kMaxTemperature).substr(0, 3) + "]");
  }
  if (!(sampling.top_p > 0 && sampling.top_p <= 1)) return Status::InvalidArgument("top_p: must be in (0, 1]");
  if (stop.size() > kMaxStops) {
    return Status::InvalidArgument("stop: at most " + std::to_string(kMaxStops) + " sequences");
  }
  for (const std::string& s : stop) {
    if (s.empty()) return Status::InvalidArgument("stop: sequences must not be empty");
    if (s.size() > kMaxStopBytes) {
      return Status::InvalidArgument("stop: each sequence at most " + std::to_string(kMaxStopBytes) + " bytes (got " +
                                     std::to_string(s.size()) + ")");
    }
  }
  if (knn.enabled) MNEMO_RETURN_IF_ERROR(knn.Validate());
  if (ResponseItems() > static_cast<double>(max_response_items)) {
    const int64_t echoed = echo ? static_cast<int64_t>(prompt.size()) : 0;
    const int64_t per_token = 1 + std::max(logprobs, 0) + return_neighbors;
    char items[32];
    std::snprintf(items, sizeof(items), "%.0f", ResponseItems());
    return Status::InvalidArgument(
        "n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors): " + std::to_string(n) + " * (" +
        std::to_string(max_tokens) + " + " + std::to_string(echoed) + ") * " + std::to_string(per_token) + " = " +
        items + " tokens, alternatives and neighbours would exceed the response limit of " +
        std::to_string(max_response_items) + "; lower n, max_tokens, logprobs or return_neighbors");
  }
  return Status::OK();
}

double CompletionRequest::ResponseItems() const {
  const double echoed = echo ? static_cast<double>(prompt.size()) : 0;
  const double per_token =
      1.0 + std::max(logprobs, 0) + std::max(return_neighbors, 0) * (layer_memory != nullptr ? 2 : 1);
  return static_cast<double>(n) * (static_cast<double>(max_tokens) + echoed) * per_token;
}

Status PromptLogprobs(LanguageModel& model, const KnnMemory* memory, const CompletionRequest& request,
                      std::vector<TokenLogprob>* out) {
  const auto& ids = request.prompt;
  out->clear();
  TokenLogprob first;
  first.token = ids[0];
  first.has_logprob = false;
  out->push_back(first);
  if (ids.size() < 2) return Status::OK();
  const bool knn = request.knn.enabled && memory != nullptr;
  std::unique_ptr<KnnLm> knn_lm;
  if (knn) knn_lm = std::make_unique<KnnLm>(*memory);
  SpanRequest span_request;
  span_request.knn_keys = knn;
  span_request.memory = request.layer_memory;
  span_request.memory_topk = request.layer_memory_topk;
  return ForEachScoredSpan(model.net, ids, WindowOptions(), span_request, [&](const ScoredSpan& span) {
    for (int64_t r = 0; r < span.count; ++r) {
      torch::Tensor distribution = span.logprobs[r];
      if (knn) MNEMO_RETURN_IF_ERROR(knn_lm->Distribution(span.knn_keys[r], distribution, request.knn, &distribution, nullptr));
      out->push_back(MakeLogprob(ids[span.first_target + r], distribution, std::max(request.logprobs, 0)));
    }
    return Status::OK();
  });
}

uint64_t ChoiceSeed(const CompletionRequest& request, int c) {
  return request.has_seed ? request.seed + static_cast<uint64_t>(c) : std::random_device{}();
}

ChoiceBuilder::ChoiceBuilder(const Tokenizer& tokenizer, const CompletionRequest& request, int index,
                             std::string prompt_text, const std::vector<TokenLogprob>& prompt_logprobs,
                             CompletionChoice* choice, const CompletionEventFn& on_event)
    : tokenizer_(tokenizer),
      request_(request),
      index_(index),
      prompt_text_(std::move(prompt_text)),
      choice_(choice),
      on_event_(on_event),
      stop_token_(request.ignore_eos ? -1 : tokenizer.eot_id()),
      generated_(request.stop) {
  if (request.echo) choice_->logprobs = prompt_logprobs;
}

bool ChoiceBuilder::Begin() {
  if (!request_.echo) return true;
  CompletionEvent e;
  e.choice = index_;
  e.text = prompt_text_;
  cancelled_ = on_event_ && !on_event_(e);
  return !cancelled_;
}

bool ChoiceBuilder::Add(int32_t token, const torch::Tensor& distribution, const std::vector<Neighbor>& neighbors,
                        const std::vector<MemoryHit>& hits) {
  ++seen_;
  if (token == stop_token_ || generated_.Append(tokenizer_.TokenBytes(token))) {
    finish_reason_ = "stop";
    return false;
  }
  CompletionChoice& choice = *choice_;
  choice.tokens.push_back(token);
  if (request_.logprobs >= 0) choice.logprobs.push_back(MakeLogprob(token, distribution, request_.logprobs));
  if (request_.return_neighbors > 0) {
    choice.neighbors.emplace_back(neighbors.begin(),
                                  neighbors.begin() + std::min<size_t>(neighbors.size(), request_.return_neighbors));
    if (request_.layer_memory != nullptr) choice.memory_hits.push_back(hits);
  }
  CompletionEvent e;
  e.choice = index_;
  e.text = generated_.TakeSafe();
  if (request_.logprobs >= 0) e.logprob = &choice.logprobs.back();
  if (request_.return_neighbors > 0) e.neighbors = &choice.neighbors.back();
  if (request_.return_neighbors > 0 && request_.layer_memory != nullptr) e.memory_hits = &choice.memory_hits.back();
  cancelled_ = on_event_ && !on_event_(e);
  return !cancelled_;
}

bool ChoiceBuilder::Finish() {
  CompletionChoice& choice = *choice_;
  choice.finish_reason = finish_reason_.empty() ? "length" : finish_reason_;
  choice.text = prompt_text_ + generated_.text();
  // Byte offsets of each logprobs token in the choice's text.
  int64_t offset = 0;
  for (const TokenLogprob& t : choice.logprobs) {
    choice.text_offset.push_back(std::min<int64_t>(offset, static_cast<int64_t>(choice.text.size())));
    offset += static_cast<int64_t>(tokenizer_.TokenBytes(t.token).size());
  }
  CompletionEvent last;
  last.choice = index_;
  last.text = generated_.TakeRest();
  last.finished = true;
  last.finish_reason = choice.finish_reason;
  cancelled_ = on_event_ && !on_event_(last);
  return !cancelled_;
}

Status Complete(LanguageModel& model, const KnnMemory* memory, const CompletionRequest& request,
                const CompletionEventFn& on_event, const std::atomic<bool>* cancel, CompletionResult* out) {
  MNEMO_RETURN_IF_ERROR(request.Validate(model.config.vocab_size, model.config.n_positions));
  const bool knn = request.UsesKnn(memory);
  out->choices.assign(request.n, CompletionChoice());
  out->prompt_tokens = static_cast<int64_t>(request.prompt.size());
  out->completion_tokens = 0;
  out->knn = KnnStats();
  const std::string prompt_text = request.echo ? model.tokenizer->Decode(request.prompt) : std::string();
  std::vector<TokenLogprob> prompt_logprobs;
  if (request.echo && request.logprobs >= 0) {
    MNEMO_RETURN_IF_ERROR(PromptLogprobs(model, knn ? memory : nullptr, request, &prompt_logprobs));
  }
  std::unique_ptr<KnnLm> knn_lm;
  if (knn) knn_lm = std::make_unique<KnnLm>(*memory);

  for (int c = 0; c < request.n; ++c) {
    ChoiceBuilder choice(*model.tokenizer, request, c, prompt_text, prompt_logprobs, &out->choices[c], on_event);
    if (!choice.Begin()) return Status::Cancelled("client went away");
    GenerateOptions options;
    options.max_tokens = request.max_tokens;
    options.sampling = request.sampling;
    options.seed = ChoiceSeed(request, c);
    options.stop_token = choice.stop_token();
    options.memory = request.layer_memory;
    options.memory_topk = request.layer_memory_topk;
    options.memory_write = false;  // a served memory is shared: a request only reads it
    std::vector<MemoryHit> step_hits;
    if (request.layer_memory != nullptr && request.return_neighbors > 0) {
      options.on_memory_hits = [&](const torch::Tensor& tags, const torch::Tensor& weights) {
        step_hits = TopMemoryHits(tags, weights, request.return_neighbors);
      };
    }
    torch::Tensor step_distribution;
    std::vector<Neighbor> step_neighbors, pointers;
    options.hook = [&](const torch::Tensor& key, const torch::Tensor& lp, torch::Tensor* dist) {
      if (knn) {
        MNEMO_RETURN_IF_ERROR(knn_lm->Distribution(key, lp, request.knn, dist, &step_neighbors, &pointers, &out->knn));
      } else {
        *dist = lp;
      }
      step_distribution = *dist;
      return Status::OK();
    };
    auto on_token = [&](int32_t token, float) -> bool {
      if (cancel != nullptr && cancel->load()) {
        choice.Cancel();
        return false;
      }
      if (knn && request.knn.min_pointers > 0) NextPointers(step_neighbors, token, &pointers);
      return choice.Add(token, step_distribution, step_neighbors, step_hits);
    };
    std::vector<int32_t> sampled;
    Status run;
    if (request.max_tokens > 0) run = Generate(model.net, request.prompt, options, &sampled, on_token);
    out->completion_tokens += choice.tokens_seen();
    MNEMO_RETURN_IF_ERROR(run);
    if (choice.cancelled()) return Status::Cancelled("request cancelled");
    if (!choice.Finish()) return Status::Cancelled("client went away");
  }
  return Status::OK();
}

}  // namespace mnemo
