#include "retriever/fact_encoder.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "lm/scorer.h"
#include "memory/fact_store.h"
#include "util/half.h"
#include "util/parallel.h"

namespace mnemo {
namespace {

void StoreKeys(const torch::Tensor& keys, std::vector<uint16_t>* out) {
  torch::Tensor k = keys.to(torch::kFloat32).contiguous();
  const float* p = k.data_ptr<float>();
  out->resize(static_cast<size_t>(k.numel()));
  for (size_t i = 0; i < out->size(); ++i) (*out)[i] = FloatToHalf(p[i]);
}

}  // namespace

Status EncodeFacts(LanguageModel& model, const std::vector<FactText>& facts, const FactEncodeOptions& options,
                   std::vector<NewFact>* out) {
  out->assign(facts.size(), NewFact());
  const int64_t context = model.config.n_positions;
  for (size_t i = 0; i < facts.size(); ++i) {
    NewFact& f = (*out)[i];
    f.text = facts[i].text;
    f.client_id = facts[i].client_id;
    f.metadata_json = facts[i].metadata_json;
    f.tokens = model.tokenizer->Encode(f.text);
    if (f.tokens.size() < 2) {
      return Status::InvalidArgument("fact " + std::to_string(i) + ": text must have at least 2 tokens, has " +
                                     std::to_string(f.tokens.size()));
    }
    if (static_cast<int64_t>(f.tokens.size()) - 1 > kMaxFactEntries) {
      return Status::InvalidArgument("fact " + std::to_string(i) + ": " + std::to_string(f.tokens.size()) +
                                     " tokens; at most " + std::to_string(kMaxFactEntries + 1) + " are allowed");
    }
  }
  // Short facts by length, so a batch pads little. A fact of n tokens runs its first n - 1 only: the last
  // token is a value, never a context (causal attention: the keys before it do not depend on it).
  std::vector<size_t> order(facts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return (*out)[a].tokens.size() < (*out)[b].tokens.size(); });
  auto contexts = [&](size_t i) { return static_cast<int64_t>((*out)[order[i]].tokens.size()) - 1; };
  // Batches [begin, end) of `order`: grown while the padded size (longest x count) stays within budget.
  std::vector<std::pair<size_t, size_t>> batches;
  size_t next = 0;
  while (next < order.size() && contexts(next) <= context) {
    size_t end = next + 1;
    while (end < order.size() && contexts(end) <= context &&
           contexts(end) * static_cast<int64_t>(end + 1 - next) <= options.batch_tokens) {
      ++end;
    }
    batches.emplace_back(next, end);
    next = end;
  }
  auto encode_batch = [&](size_t begin, size_t end) {
    const int64_t longest = contexts(end - 1);
    const int64_t batch = static_cast<int64_t>(end - begin);
    std::vector<int64_t> ids(static_cast<size_t>(batch * longest), 0);
    for (int64_t b = 0; b < batch; ++b) {
      const auto& t = (*out)[order[begin + b]].tokens;
      std::copy(t.begin(), t.end() - 1, ids.begin() + b * longest);
    }
    ForwardOptions forward;
    forward.want_knn_key = true;
    forward.want_logits = false;
    forward.want_hidden = false;  // the keys only: the last block's MLP and ln_f are skipped
    ForwardResult r = model.net->Forward(torch::tensor(ids, torch::kLong).view({batch, longest}), forward);
    for (int64_t b = 0; b < batch; ++b) {
      NewFact& f = (*out)[order[begin + b]];
      StoreKeys(r.knn_key[b].slice(0, 0, static_cast<int64_t>(f.tokens.size()) - 1), &f.keys);
    }
  };
  // Batches write disjoint facts, so they may run side by side. (Inference mode is per thread.)
  try {
    ParallelFor(batches.size(), static_cast<size_t>(std::max(1, options.threads)), [&](size_t i) {
      torch::InferenceMode inference;
      encode_batch(batches[i].first, batches[i].second);
    });
  } catch (const std::exception& e) {
    return Status::Internal(std::string("encoding facts: ") + e.what());
  }
  torch::InferenceMode inference;
  for (; next < order.size(); ++next) {
    NewFact& f = (*out)[order[next]];
    const int64_t dim = model.config.n_embd;
    f.keys.assign(static_cast<size_t>((f.tokens.size() - 1) * dim), 0);
    SpanRequest request;
    request.logprobs = false;
    request.knn_keys = true;
    MNEMO_RETURN_IF_ERROR(ForEachScoredSpan(model.net, f.tokens, WindowOptions(), request, [&](const ScoredSpan& span) {
      std::vector<uint16_t> keys;
      StoreKeys(span.knn_keys, &keys);
      // Target t is predicted by entry t - 1.
      std::copy(keys.begin(), keys.end(), f.keys.begin() + (span.first_target - 1) * dim);
      return Status::OK();
    }));
  }
  return Status::OK();
}

}  // namespace mnemo
