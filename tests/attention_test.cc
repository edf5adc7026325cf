// Causal attention over long sequences (lm/gpt.cc): more than 128 queries over 256 keys or more run in
// blocks of queries that never compute the scores above the diagonal band. The blocks must give what the
// single masked product gives: checked against decoding one token at a time (each step is one query, the
// single product over every earlier key), with and without a prefix already in the cache.
#include <gtest/gtest.h>

#include "lm/gpt.h"
#include "tests/lm_fixture.h"

namespace mnemo {
namespace {

class LongAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GptConfig config = testing::TinyConfig(300);
    config.n_positions = 640;
    net_ = Gpt(config);
    net_->InitWeights(11);
    net_->eval();
    ids_ = torch::randint(0, 300, {2, kTokens}, torch::TensorOptions().dtype(torch::kLong));
  }

  // Logits of every position, one token at a time through the cache.
  torch::Tensor StepByStep() {
    torch::InferenceMode inference;
    std::vector<torch::Tensor> rows;
    KvCache cache;
    ForwardOptions options;
    options.cache = &cache;
    for (int64_t t = 0; t < kTokens; ++t) rows.push_back(net_->Forward(ids_.slice(1, t, t + 1), options).logits);
    return torch::cat(rows, 1);
  }

  static constexpr int64_t kTokens = 600;
  Gpt net_{nullptr};
  torch::Tensor ids_;
};

TEST_F(LongAttentionTest, BlocksGiveWhatOneQueryAtATimeGives) {
  torch::InferenceMode inference;
  const torch::Tensor want = StepByStep();
  // One pass over all 600 positions (5 blocks, the last one short).
  const torch::Tensor whole = net_->Forward(ids_).logits;
  ASSERT_EQ(whole.sizes(), want.sizes());
  EXPECT_LT((whole - want).abs().max().item<float>(), 1e-4f);
  // 100 positions, then 500 more after them in the cache (blocks whose keys start at position 0 while
  // their queries start at 100).
  KvCache cache;
  ForwardOptions options;
  options.cache = &cache;
  const torch::Tensor first = net_->Forward(ids_.slice(1, 0, 100), options).logits;
  const torch::Tensor rest = net_->Forward(ids_.slice(1, 100, kTokens), options).logits;
  EXPECT_EQ(cache.length(), kTokens);
  EXPECT_LT((torch::cat({first, rest}, 1) - want).abs().max().item<float>(), 1e-4f);
  // The rows of a batch do not mix.
  const torch::Tensor alone = net_->Forward(ids_.slice(0, 1, 2)).logits;
  EXPECT_LT((alone[0] - whole[1]).abs().max().item<float>(), 1e-4f);
}

TEST_F(LongAttentionTest, TrainingThroughTheBlocksGivesTheSameLossAndFiniteGradients) {
  // The blocks are ordinary differentiable ops: training over long windows takes this path too.
  net_->train();
  const torch::Tensor logits = net_->Forward(ids_.slice(0, 0, 1)).logits;
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      logits.slice(1, 0, kTokens - 1).reshape({-1, 300}), ids_.slice(0, 0, 1).slice(1, 1, kTokens).reshape({-1}));
  loss.backward();
  for (const auto& p : net_->parameters()) {
    if (!p.grad().defined()) continue;
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
  net_->eval();
  torch::InferenceMode inference;
  const torch::Tensor want = StepByStep().slice(0, 0, 1);
  torch::Tensor want_loss = torch::nn::functional::cross_entropy(
      want.slice(1, 0, kTokens - 1).reshape({-1, 300}), ids_.slice(0, 0, 1).slice(1, 1, kTokens).reshape({-1}));
  EXPECT_NEAR(loss.item<float>(), want_loss.item<float>(), 1e-4f);
}

}  // namespace
}  // namespace mnemo
