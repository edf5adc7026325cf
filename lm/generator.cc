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
  torch::InferenceMode inference;
  std::mt19937_64 rng(options.seed);
  std::vector<int32_t> seq = prompt;
  KvCache cache;
  ForwardOptions fwd;
  fwd.cache = &cache;
  fwd.want_knn_key = static_cast<bool>(options.hook);
  ForwardResult result = net->Forward(ToInput(seq, 0), fwd);
  for (int64_t step = 0; step < options.max_tokens; ++step) {
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
      result = net->Forward(ToInput(seq, seq.size() - keep), fwd);
    } else {
      result = net->Forward(ToInput(seq, seq.size() - 1), fwd);
    }
  }
  return Status::OK();
}

}  // namespace mnemo
