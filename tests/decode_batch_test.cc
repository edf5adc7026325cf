// Batched decoding (lm/decode_batch.h): a step over many slots computes what the model computes for each
// sequence alone through its KV cache, and a slot's results do not depend on the other slots.
#include "lm/decode_batch.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "tests/lm_fixture.h"

namespace mnemo {
namespace {

std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return ids;
}

// The reference: logits and kNN keys of every position of `ids`, one forward pass over the whole sequence.
ForwardResult Reference(Gpt& net, const std::vector<int32_t>& ids) {
  torch::InferenceMode inference;
  ForwardOptions o;
  o.want_knn_key = true;
  return net->Forward(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).unsqueeze(0), o);
}

TEST(DecodeBatchTest, StepsOverSlotsOfDifferentLengthsMatchWholeSequences) {
 for (bool smeared : {false, true}) {
  SCOPED_TRACE(smeared ? "memory layer with smeared keys" : "plain");
  GptConfig config = testing::TinyConfig(97);
  if (smeared) config.memory_layer = 1, config.memory_mode = "joint", config.memory_smear = true;
  Gpt net(config);
  net->InitWeights(3);
  if (smeared) {
    torch::NoGradGuard no_grad;
    for (auto& p : net->blocks[1]->attn->parameters()) p.normal_(0, 0.3);  // attention far from uniform
    net->named_parameters()["h.1.attn.mem_smear"].copy_(torch::tensor({0.7f, 0.4f}));
  }
  net->eval();
  const int64_t ctx = net->config().n_positions;
  DecodeBatch batch(net, 4);
  // Three sequences with prompts of 1, 9 and 30 tokens, decoded together in slots 3, 0 and 2 until the
  // longest fills the context; every step's logits and keys must match the whole-sequence pass.
  const std::vector<int64_t> slots = {3, 0, 2};
  const std::vector<int64_t> prompt = {1, 9, 30};
  std::vector<std::vector<int32_t>> seqs;
  for (size_t i = 0; i < slots.size(); ++i) {
    seqs.push_back(RandomIds(ctx, 97, 10 + i));
    DecodeOutput first = batch.Prefill(slots[i], std::vector<int32_t>(seqs[i].begin(), seqs[i].begin() + prompt[i]), true);
    ForwardResult ref = Reference(net, std::vector<int32_t>(seqs[i].begin(), seqs[i].begin() + prompt[i]));
    EXPECT_TRUE(torch::allclose(first.logits[0], ref.logits[0][prompt[i] - 1], 1e-5, 1e-5));
    EXPECT_EQ(batch.length(slots[i]), prompt[i]);
  }
  double worst = 0;
  for (int64_t step = 0; prompt[2] + step < ctx; ++step) {
    std::vector<int32_t> tokens;
    for (size_t i = 0; i < slots.size(); ++i) tokens.push_back(seqs[i][static_cast<size_t>(prompt[i] + step)]);
    DecodeOutput out = batch.Step(slots, tokens, true);
    ASSERT_EQ(out.logits.size(0), 3);
    for (size_t i = 0; i < slots.size(); ++i) {
      const int64_t len = prompt[i] + step + 1;
      ASSERT_EQ(batch.length(slots[i]), len);
      ForwardResult ref = Reference(net, std::vector<int32_t>(seqs[i].begin(), seqs[i].begin() + len));
      worst = std::max(worst, (out.logits[static_cast<int64_t>(i)] - ref.logits[0][len - 1]).abs().max().item<double>());
      worst = std::max(worst, (out.knn_key[static_cast<int64_t>(i)] - ref.knn_key[0][len - 1]).abs().max().item<double>());
    }
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(batch.length(2), ctx);
  // A full slot cannot step; an unused or repeated slot is refused.
  EXPECT_THROW(batch.Step({2}, {1}, false), c10::Error);
  EXPECT_THROW(batch.Step({1}, {1}, false), c10::Error);
  EXPECT_THROW(batch.Step({0, 0}, {1, 2}, false), c10::Error);
  EXPECT_THROW(batch.Prefill(0, RandomIds(ctx + 1, 97, 1), false), c10::Error);
  batch.Release(3);
  EXPECT_EQ(batch.length(3), 0);
 }
}

TEST(DecodeBatchTest, PromptChunksRideInTheStepsOfDecodingSlots) {
  // Slot 1 decodes one token a step while slot 3's prompt arrives in chunks of 5, 4 and 1 (restarting with
  // the first), slot 0 restarts from a one-token prompt and slot 2 restarts mid-way from a new prompt in one
  // run: every row of every run is the whole-sequence pass at that segment's last token.
  Gpt net = testing::TinyGpt(97, 5);
  net->eval();
  DecodeBatch batch(net, 4);
  const std::vector<int32_t> a = RandomIds(30, 97, 1), b = RandomIds(30, 97, 2), c = RandomIds(30, 97, 3),
                             d = RandomIds(30, 97, 4);
  auto segment = [](int64_t slot, const std::vector<int32_t>& ids, size_t from, size_t to, bool restart) {
    DecodeSegment s;
    s.slot = slot, s.tokens.assign(ids.begin() + static_cast<int64_t>(from), ids.begin() + static_cast<int64_t>(to));
    s.restart = restart;
    return s;
  };
  double worst = 0;
  auto check = [&](const DecodeOutput& out, int64_t row, const std::vector<int32_t>& ids, size_t len) {
    ForwardResult ref = Reference(net, std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<int64_t>(len)));
    worst = std::max(worst, (out.logits[row] - ref.logits[0][static_cast<int64_t>(len) - 1]).abs().max().item<double>());
    worst = std::max(worst, (out.knn_key[row] - ref.knn_key[0][static_cast<int64_t>(len) - 1]).abs().max().item<double>());
  };
  batch.Prefill(1, std::vector<int32_t>(a.begin(), a.begin() + 7), true);
  batch.Prefill(2, std::vector<int32_t>(b.begin(), b.begin() + 3), true);
  // Run 1: slot 1 steps, slot 3's first chunk, slot 2 steps.
  DecodeOutput out = batch.Run({segment(1, a, 7, 8, false), segment(3, c, 0, 5, true), segment(2, b, 3, 4, false)}, true);
  ASSERT_EQ(out.logits.size(0), 3);
  check(out, 0, a, 8), check(out, 1, c, 5), check(out, 2, b, 4);
  // Run 2: slot 3's second chunk first, slot 0 starts from one token, slot 2 restarts from 6 tokens of d.
  out = batch.Run({segment(3, c, 5, 9, false), segment(0, a, 0, 1, true), segment(1, a, 8, 9, false),
                   segment(2, d, 0, 6, true)},
                  true);
  check(out, 0, c, 9), check(out, 1, a, 1), check(out, 2, a, 9), check(out, 3, d, 6);
  EXPECT_EQ(batch.length(2), 6);
  // Run 3: slot 3's last chunk of one token among steps.
  out = batch.Run({segment(0, a, 1, 2, false), segment(3, c, 9, 10, false), segment(2, d, 6, 7, false)}, true);
  check(out, 0, a, 2), check(out, 1, c, 10), check(out, 2, d, 7);
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(batch.length(3), 10);
  EXPECT_EQ(batch.length(1), 9);
  // Refused: no segment, an empty one, extending an empty slot, a repeated slot, past the context.
  EXPECT_THROW(batch.Run({}, false), c10::Error);
  EXPECT_THROW(batch.Run({segment(0, a, 2, 2, false)}, false), c10::Error);
  batch.Release(0);
  EXPECT_THROW(batch.Run({segment(0, a, 2, 3, false)}, false), c10::Error);
  EXPECT_THROW(batch.Run({segment(1, a, 9, 10, false), segment(1, a, 10, 11, false)}, false), c10::Error);
  const std::vector<int32_t> too_long = RandomIds(net->config().n_positions, 97, 5);
  EXPECT_THROW(batch.Run({segment(1, too_long, 0, too_long.size(), false)}, false), c10::Error);
  EXPECT_NO_THROW(batch.Run({segment(1, too_long, 0, too_long.size(), true)}, false));
}

TEST(DecodeBatchTest, ASlotsResultsDoNotDependOnTheOtherSlots) {
  Gpt net = testing::TinyGpt(97, 5);
  net->eval();
  const std::vector<int32_t> seq = RandomIds(40, 97, 99);
  // Alone in slot 0, then in slot 2 among three other sequences (their slots gathered out of order).
  auto run = [&](int64_t slot, const std::vector<int64_t>& others) {
    DecodeBatch batch(net, 5);
    std::vector<int64_t> slots = others;
    const int64_t at = static_cast<int64_t>(others.size() / 2);
    slots.insert(slots.begin() + at, slot);
    for (int64_t s : others) batch.Prefill(s, RandomIds(3 + s, 97, 7 * s), false);
    std::vector<torch::Tensor> rows = {batch.Prefill(slot, std::vector<int32_t>(seq.begin(), seq.begin() + 5), false).logits[0]};
    for (size_t t = 5; t < seq.size(); ++t) {
      std::vector<int32_t> tokens(slots.size(), 11);
      tokens[static_cast<size_t>(at)] = seq[t];
      rows.push_back(batch.Step(slots, tokens, false).logits[at]);
    }
    return torch::stack(rows);
  };
  const torch::Tensor alone = run(0, {});
  const torch::Tensor among = run(2, {4, 0, 1});
  // The rows of one matrix product do not mix and attention spans the same columns; only the BLAS may
  // round a row differently at another batch size (OpenBLAS 0.3.21 does for some shapes: a [4, 768] x
  // [768, 97] product's row 0 differs from the [1, 768] one's in the last bit).
  EXPECT_TRUE(torch::allclose(alone, among, 0, 1e-5)) << (alone - among).abs().max().item<double>();
  EXPECT_TRUE(torch::equal(alone.argmax(1), among.argmax(1)));
  // A row that did mix with the others would be far off: the other slots' tokens change it.
  const torch::Tensor shifted = run(2, {4, 0});
  EXPECT_TRUE(torch::allclose(alone, shifted, 0, 1e-5));
}

}  // namespace
}  // namespace mnemo
