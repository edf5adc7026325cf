#include "retriever/completion.h"

#include <algorithm>
#include <random>

#include "lm/generator.h"
#include "lm/scorer.h"

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

// Log-probabilities of the prompt's tokens (echo), from the same distributions generation would use.
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
  return ForEachScoredSpan(model.net, ids, WindowOptions(), span_request, [&](const ScoredSpan& span) {
    for (int64_t r = 0; r < span.count; ++r) {
      torch::Tensor distribution = span.logprobs[r];
      if (knn) MNEMO_RETURN_IF_ERROR(knn_lm->Distribution(span.knn_keys[r], distribution, request.knn, &distribution, nullptr));
      out->push_back(MakeLogprob(ids[span.first_target + r], distribution, std::max(request.logprobs, 0)));
    }
    return Status::OK();
  });
}

}  // namespace

Status Complete(LanguageModel& model, const KnnMemory* memory, const CompletionRequest& request,
                const CompletionEventFn& on_event, const std::atomic<bool>* cancel, CompletionResult* out) {
  const Tokenizer& tokenizer = *model.tokenizer;
  if (request.prompt.empty()) return Status::InvalidArgument("prompt: has no tokens");
  if (request.n < 1 || request.n > 16) return Status::InvalidArgument("n: must be in [1, 16]");
  if (request.logprobs < -1 || request.logprobs > 20) return Status::InvalidArgument("logprobs: must be in [0, 20]");
  if (request.max_tokens < 0) return Status::InvalidArgument("max_tokens: must not be negative");
  if (request.stop.size() > 4) return Status::InvalidArgument("stop: at most 4 sequences");
  for (const std::string& s : request.stop) {
    if (s.empty()) return Status::InvalidArgument("stop: sequences must not be empty");
  }
  const bool knn = request.knn.enabled && request.knn.lambda > 0 && memory != nullptr;
  if (knn) MNEMO_RETURN_IF_ERROR(request.knn.Validate());
  if (static_cast<int64_t>(request.prompt.size()) > model.config.n_positions) {
    return Status::InvalidArgument("prompt: " + std::to_string(request.prompt.size()) +
                                   " tokens, longer than the model's context of " +
                                   std::to_string(model.config.n_positions));
  }
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= model.config.vocab_size) {
      return Status::InvalidArgument("prompt: token id " + std::to_string(id) + " outside the vocabulary");
    }
  }
  out->choices.assign(request.n, CompletionChoice());
  out->prompt_tokens = static_cast<int64_t>(request.prompt.size());
  out->completion_tokens = 0;
  const std::string prompt_text = request.echo ? tokenizer.Decode(request.prompt) : std::string();
  std::vector<TokenLogprob> prompt_logprobs;
  if (request.echo && request.logprobs >= 0) {
    MNEMO_RETURN_IF_ERROR(PromptLogprobs(model, knn ? memory : nullptr, request, &prompt_logprobs));
  }
  size_t longest_stop = 0;
  for (const std::string& s : request.stop) longest_stop = std::max(longest_stop, s.size());
  std::unique_ptr<KnnLm> knn_lm;
  if (knn) knn_lm = std::make_unique<KnnLm>(*memory);

  for (int c = 0; c < request.n; ++c) {
    CompletionChoice& choice = out->choices[c];
    if (request.echo) {
      choice.logprobs = prompt_logprobs;
      CompletionEvent e;
      e.choice = c;
      e.text = prompt_text;
      if (on_event && !on_event(e)) return Status::Cancelled("client went away");
    }
    GenerateOptions options;
    options.max_tokens = request.max_tokens;
    options.sampling = request.sampling;
    options.seed = request.has_seed ? request.seed + static_cast<uint64_t>(c) : std::random_device{}();
    options.stop_token = request.ignore_eos ? -1 : tokenizer.eot_id();
    torch::Tensor step_distribution;
    std::vector<Neighbor> step_neighbors;
    options.hook = [&](const torch::Tensor& key, const torch::Tensor& lp, torch::Tensor* dist) {
      if (knn) {
        MNEMO_RETURN_IF_ERROR(knn_lm->Distribution(key, lp, request.knn, dist, &step_neighbors));
      } else {
        *dist = lp;
      }
      step_distribution = *dist;
      return Status::OK();
    };
    std::string generated;  // decoded generated tokens
    size_t emitted = 0;     // bytes of `generated` already sent in events
    std::string finish_reason;
    size_t stop_at = std::string::npos;
    bool cancelled = false;
    auto on_token = [&](int32_t token, float) -> bool {
      if (cancel != nullptr && cancel->load()) {
        cancelled = true;
        return false;
      }
      ++out->completion_tokens;
      if (token == options.stop_token) {
        finish_reason = "stop";
        return false;
      }
      const std::string before = generated;
      generated += tokenizer.TokenBytes(token);
      // A stop sequence may straddle earlier tokens: search from where one could have started.
      const size_t from = before.size() >= longest_stop ? before.size() - longest_stop + 1 : 0;
      for (const std::string& s : request.stop) {
        const size_t at = generated.find(s, from);
        if (at != std::string::npos && at < stop_at) stop_at = at;
      }
      if (stop_at != std::string::npos) {
        finish_reason = "stop";
        return false;
      }
      choice.tokens.push_back(token);
      if (request.logprobs >= 0) choice.logprobs.push_back(MakeLogprob(token, step_distribution, request.logprobs));
      if (request.return_neighbors > 0) {
        std::vector<Neighbor> top(step_neighbors.begin(),
                                  step_neighbors.begin() + std::min<size_t>(step_neighbors.size(), request.return_neighbors));
        choice.neighbors.push_back(std::move(top));
      }
      // Hold back what could still become a stop sequence, and partial UTF-8 characters.
      const size_t hold = longest_stop > 0 ? longest_stop - 1 : 0;
      const size_t safe = Utf8SafeEnd(generated, generated.size() >= hold ? generated.size() - hold : 0);
      CompletionEvent e;
      e.choice = c;
      if (safe > emitted) {
        e.text = generated.substr(emitted, safe - emitted);
        emitted = safe;
      }
      if (request.logprobs >= 0) e.logprob = &choice.logprobs.back();
      if (request.return_neighbors > 0) e.neighbors = &choice.neighbors.back();
      if (on_event && !on_event(e)) {
        cancelled = true;
        return false;
      }
      return true;
    };
    std::vector<int32_t> sampled;
    if (request.max_tokens > 0) {
      MNEMO_RETURN_IF_ERROR(Generate(model.net, request.prompt, options, &sampled, on_token));
    }
    if (cancelled) return Status::Cancelled("request cancelled");
    if (finish_reason.empty()) finish_reason = "length";
    if (stop_at != std::string::npos) generated.resize(stop_at);
    choice.finish_reason = finish_reason;
    choice.text = prompt_text + generated;
    // Byte offsets of each logprobs token in the choice's text.
    int64_t offset = 0;
    for (const TokenLogprob& t : choice.logprobs) {
      choice.text_offset.push_back(std::min<int64_t>(offset, static_cast<int64_t>(choice.text.size())));
      offset += static_cast<int64_t>(tokenizer.TokenBytes(t.token).size());
    }
    CompletionEvent last;
    last.choice = c;
    last.text = emitted < generated.size() ? generated.substr(emitted) : std::string();
    last.finished = true;
    last.finish_reason = finish_reason;
    if (on_event && !on_event(last)) return Status::Cancelled("client went away");
  }
  return Status::OK();
}

}  // namespace mnemo
