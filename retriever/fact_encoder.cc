#include "retriever/fact_encoder.h"

#include <algorithm>
#include <numeric>

#include "lm/scorer.h"
#include "memory/fact_store.h"
#include "util/half.h"

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
  torch::InferenceMode inference;
  // Short facts by length, so a batch pads little.
  std::vector<size_t> order(facts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return (*out)[a].tokens.size() < (*out)[b].tokens.size(); });
  size_t next = 0;
  while (next < order.size()) {
    NewFact& first = (*out)[order[next]];
    if (static_cast<int64_t>(first.tokens.size()) > context) break;  // the rest are long
    // Grow the batch while the padded size (longest x count) stays within budget.
    size_t end = next + 1;
    while (end < order.size()) {
      const int64_t len = static_cast<int64_t>((*out)[order[end]].tokens.size());
      if (len > context || len * static_cast<int64_t>(end + 1 - next) > options.batch_tokens) break;
      ++end;
    }
    const int64_t longest = static_cast<int64_t>((*out)[order[end - 1]].tokens.size());
    const int64_t batch = static_cast<int64_t>(end - next);
    std::vector<int64_t> ids(static_cast<size_t>(batch * longest), 0);
    for (int64_t b = 0; b < batch; ++b) {
      const auto& t = (*out)[order[next + b]].tokens;
      std::copy(t.begin(), t.end(), ids.begin() + b * longest);
    }
    ForwardOptions forward;
    forward.want_knn_key = true;
    forward.want_logits = false;
    forward.want_hidden = false;  // the keys only: the last block's MLP and ln_f are skipped
    ForwardResult r = model.net->Forward(torch::tensor(ids, torch::kLong).view({batch, longest}), forward);
    for (int64_t b = 0; b < batch; ++b) {
      NewFact& f = (*out)[order[next + b]];
      const int64_t n = static_cast<int64_t>(f.tokens.size());
      StoreKeys(r.knn_key[b].slice(0, 0, n - 1), &f.keys);
    }
    next = end;
  }
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
