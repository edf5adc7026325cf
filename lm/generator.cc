#include "lm/generator.h"

namespace mnemo {
namespace {

torch::Tensor ToInput(const std::vector<int32_t>& ids, size_t begin) {
  std::vector<int64_t> v(ids.begin() + begin, ids.end());
  return torch::tensor(v, torch::kLong).unsqueeze(0);
}

}  // namespace

Status Generate(Gpt& net, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                std::vector<int32_t>* output, const TokenCallback& on_token) {
  const int64_t ctx = net->config().n_positions;
  if (prompt.empty()) return Status::InvalidArgument("the prompt has no tokens");
  if (static_cast<int64_t>(prompt.size()) > ctx) {
    return Status::InvalidArgument("prompt has " + std::to_string(prompt.size()) +
                                   " tokens, longer than the model's context of " + std::to_string(ctx));
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= net->config().vocab_size) {
      return Status::InvalidArgument("token id " + std::to_string(id) + " outside the vocabulary");
    }
  }
  if (options.memory != nullptr && !net->config().has_memory()) {
    return Status::InvalidArgument("the model has no memory layer: generation with a memory needs one");
  }
  torch::InferenceMode inference;
  std::mt19937_64 rng(options.seed);
  std::vector<int32_t> seq = prompt;
  KvCache cache;
  ForwardOptions fwd;
  fwd.cache = &cache;
  fwd.want_knn_key = static_cast<bool>(options.hook);
  if (options.memory != nullptr) {
    fwd.memory.memory = options.memory;
    fwd.memory.topk = options.memory_topk;
    fwd.memory.first_lane = options.memory_lane;
    fwd.memory.write = false;  // the window's own tokens are local; they go to memory as they leave it
  }
  torch::Tensor hit_tags, hit_weights;
  if (options.memory != nullptr && options.on_memory_hits) {
    fwd.memory.retrieved_tags = &hit_tags;
    fwd.memory.retrieved_weights = &hit_weights;
  }
  size_t window_begin = 0;  // seq index of the window's first token
  ForwardResult result = net->Forward(ToInput(seq, 0), fwd);
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    if (hit_tags.defined()) options.on_memory_hits(hit_tags[0].select(1, -1), hit_weights[0].select(1, -1));
    torch::Tensor lp = torch::log_softmax(result.logits[0][-1], -1);
    if (options.hook) MNEMO_RETURN_IF_ERROR(options.hook(result.knn_key[0][-1], lp, &lp));
    const int32_t token = SampleToken(lp, options.sampling, rng);
    output->push_back(token);
    seq.push_back(token);
    const bool keep_going = on_token ? on_token(token, lp[token].item<float>()) : true;
    if (!keep_going || token == options.stop_token || step + 1 == options.max_tokens) break;
    if (cache.length() + 1 > ctx) {
      // Window full: restart from the last half window of tokens.
      cache.Clear();
      const size_t keep = static_cast<size_t>(ctx / 2);
      const size_t new_begin = seq.size() - keep;
      if (options.memory != nullptr && options.memory_write) {
        // The leaving tokens' keys and values at the memory layer depend only on the layers below it and
        // their window, so a forward pass over them alone reproduces them; it appends them all.
        ForwardOptions leave;
        leave.want_logits = false;
        leave.memory = fwd.memory;
        leave.memory.write = true;
        std::vector<int64_t> tags;
        for (size_t i = window_begin; i < new_begin; ++i) tags.push_back(options.memory_first_tag + static_cast<int64_t>(i));
        leave.memory.tags = tags.data();
        net->Forward(torch::tensor(std::vector<int64_t>(seq.begin() + window_begin, seq.begin() + new_begin),
                                   torch::kLong).unsqueeze(0),
                     leave);
      }
      window_begin = new_begin;
      result = net->Forward(ToInput(seq, new_begin), fwd);
    } else {
      result = net->Forward(ToInput(seq, seq.size() - 1), fwd);
    }
  }
  return Status::OK();
}

}  // namespace mnemo
