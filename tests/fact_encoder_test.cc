// Fact encoding: the keys are those of the whole text's forward pass (entry p is the context t[0..p]),
// whatever the batching, the thread count or the path (batched, or strided windows past the context).
#include "retriever/fact_encoder.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/lm_fixture.h"
#include "util/half.h"

namespace mnemo {
namespace {

class FactEncoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model_));
    corpus_ = model_.tokenizer->Encode(testing::ToyCorpus());
    ASSERT_GT(corpus_.size(), 400u);
  }

  // A text of exactly `n` tokens, cut from the corpus at `from` (decoding a slice may re-encode
  // differently, so the slice is widened or narrowed until it round-trips to n tokens).
  std::string TextOfTokens(size_t from, size_t n) {
    for (size_t len = n; len < n + 8; ++len) {
      const std::string text = model_.tokenizer->Decode(
          std::vector<int32_t>(corpus_.begin() + from, corpus_.begin() + from + len));
      if (model_.tokenizer->Encode(text).size() == n) return text;
    }
    ADD_FAILURE() << "no text of " << n << " tokens at " << from;
    return "";
  }

  // The keys of entries 0..n-2 from one forward pass over the fact's first min(n, context) tokens. Past
  // context + 1 tokens only the first window's entries (0..context-2) are compared: the windows that score
  // later targets see a shifted context.
  std::vector<float> WholeTextKeys(const std::vector<int32_t>& tokens) {
    torch::InferenceMode inference;
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(tokens.size()), model_.config.n_positions);
    std::vector<int64_t> ids(tokens.begin(), tokens.begin() + n);
    ForwardOptions forward;
    forward.want_knn_key = true;
    ForwardResult r = model_.net->Forward(torch::tensor(ids, torch::kLong).view({1, n}), forward);
    const int64_t entries = static_cast<int64_t>(tokens.size()) - 1;
    torch::Tensor k = r.knn_key[0].slice(0, 0, entries <= n ? entries : n - 1).contiguous();
    return std::vector<float>(k.data_ptr<float>(), k.data_ptr<float>() + k.numel());
  }

  LanguageModel model_;
  std::vector<int32_t> corpus_;
};

TEST_F(FactEncoderTest, KeysAreTheWholeTextsKeysAtEveryLength) {
  const int64_t context = model_.config.n_positions;  // 64
  // 2 tokens (one entry), short ones of mixed lengths, exactly context + 1 (the last token is only a value,
  // so it still runs as one pass), and longer than that (the strided windows).
  const std::vector<size_t> lengths = {2, 7, 13, 30, 5, static_cast<size_t>(context),
                                       static_cast<size_t>(context + 1), static_cast<size_t>(context + 40)};
  std::vector<FactText> facts;
  for (size_t i = 0; i < lengths.size(); ++i) facts.push_back({TextOfTokens(11 * i, lengths[i]), "", ""});
  FactEncodeOptions options;
  options.batch_tokens = 64;  // several batches
  std::vector<NewFact> encoded;
  ASSERT_TRUE(EncodeFacts(model_, facts, options, &encoded).ok());
  ASSERT_EQ(encoded.size(), facts.size());
  const int64_t dim = model_.config.n_embd;
  for (size_t i = 0; i < facts.size(); ++i) {
    const NewFact& f = encoded[i];
    ASSERT_EQ(f.tokens.size(), lengths[i]) << i;
    ASSERT_EQ(f.keys.size(), (f.tokens.size() - 1) * static_cast<size_t>(dim)) << i;
    EXPECT_EQ(f.text, facts[i].text);
    // Within the context, the keys are those of one pass over the whole text (to fp16 rounding).
    const std::vector<float> want = WholeTextKeys(f.tokens);
    ASSERT_LE(want.size(), f.keys.size());
    double worst = 0;
    for (size_t j = 0; j < want.size(); ++j) {
      worst = std::max(worst, std::fabs(static_cast<double>(HalfToFloat(f.keys[j]) - want[j])) /
                                  std::max(1.0, std::fabs(static_cast<double>(want[j]))));
    }
    EXPECT_LT(worst, 2e-3) << "fact " << i << " of " << lengths[i] << " tokens";
  }
}

TEST_F(FactEncoderTest, ThreadsAndBatchSizeDoNotChangeTheKeys) {
  std::vector<FactText> facts;
  for (size_t i = 0; i < 40; ++i) facts.push_back({TextOfTokens(7 * i, 3 + (i * 5) % 40), "c", "{}"});
  FactEncodeOptions one;
  one.batch_tokens = 96;
  std::vector<NewFact> serial, parallel;
  ASSERT_TRUE(EncodeFacts(model_, facts, one, &serial).ok());
  FactEncodeOptions three = one;
  three.threads = 3;
  ASSERT_TRUE(EncodeFacts(model_, facts, three, &parallel).ok());
  ASSERT_EQ(serial.size(), parallel.size());
  for (size_t i = 0; i < serial.size(); ++i) {
    EXPECT_EQ(serial[i].tokens, parallel[i].tokens) << i;
    EXPECT_EQ(serial[i].keys, parallel[i].keys) << i;  // the same passes: bit for bit
    EXPECT_EQ(parallel[i].client_id, "c");
  }
  // More threads than batches, and one large batch.
  FactEncodeOptions many;
  many.threads = 64;
  std::vector<NewFact> wide;
  ASSERT_TRUE(EncodeFacts(model_, facts, many, &wide).ok());
  for (size_t i = 0; i < serial.size(); ++i) {
    ASSERT_EQ(wide[i].keys.size(), serial[i].keys.size());
    for (size_t j = 0; j < wide[i].keys.size(); ++j) {
      ASSERT_NEAR(HalfToFloat(wide[i].keys[j]), HalfToFloat(serial[i].keys[j]),
                  2e-3 * std::max(1.0f, std::fabs(HalfToFloat(serial[i].keys[j]))));
    }
  }
}

TEST_F(FactEncoderTest, ATextOfOneTokenIsRefusedNamingTheFact) {
  std::vector<NewFact> encoded;
  FactEncodeOptions options;
  options.threads = 2;
  Status s = EncodeFacts(model_, {{TextOfTokens(0, 5), "", ""}, {TextOfTokens(3, 1), "", ""}}, options, &encoded);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("fact 1"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace mnemo
