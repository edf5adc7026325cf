// Scoring, sliding windows, sampling and generation on a tiny random model.
#include "lm/scorer.h"

#include <gtest/gtest.h>

#include <set>

#include "lm/generator.h"
#include "lm/sampler.h"
#include "tests/lm_fixture.h"

namespace mnemo {
namespace {

using testing::TinyGpt;

std::vector<int32_t> Sequence(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (i * 37 + 11) % vocab;
  return ids;
}

TEST(PlanWindowsTest, EveryTokenAfterTheFirstIsScoredExactlyOnce) {
  for (int64_t n : {2, 10, 64, 65, 100, 1000}) {
    for (auto [window, stride] : std::vector<std::pair<int64_t, int64_t>>{{64, 32}, {64, 64}, {16, 5}, {64, 1}}) {
      std::vector<Window> windows;
      ASSERT_TRUE(PlanWindows(n, 64, {window, stride, 1}, &windows).ok());
      std::vector<int> seen(n, 0);
      for (const Window& w : windows) {
        ASSERT_LE(w.end - w.begin, window);
        for (int64_t t = w.end - w.score_count; t < w.end; ++t) seen[t]++;
        // Each scored token after the first window has at least window - stride tokens of context.
        if (w.begin > 0) {
          EXPECT_GE(w.end - w.score_count - w.begin, window - stride);
        }
      }
      EXPECT_EQ(seen[0], 0);
      for (int64_t t = 1; t < n; ++t) ASSERT_EQ(seen[t], 1) << "n=" << n << " token " << t;
    }
  }
  std::vector<Window> windows;
  EXPECT_TRUE(PlanWindows(100, 64, {128, 32, 1}, &windows).IsInvalidArgument());
  EXPECT_TRUE(PlanWindows(100, 64, {32, 64, 1}, &windows).IsInvalidArgument());
}

TEST(ScoreTest, SlidingWindowMatchesDirectScoringOfEachWindow) {
  Gpt net = TinyGpt(100);
  auto ids = Sequence(150, 100);
  std::vector<float> windowed;
  ASSERT_TRUE(ScoreLongSequence(net, ids, {64, 32, 4}, &windowed).ok());
  ASSERT_EQ(windowed.size(), ids.size() - 1);
  std::vector<Window> windows;
  ASSERT_TRUE(PlanWindows(150, 64, {64, 32, 4}, &windows).ok());
  for (const Window& w : windows) {
    std::vector<int32_t> slice(ids.begin() + w.begin, ids.begin() + w.end);
    std::vector<float> direct;
    ASSERT_TRUE(ScoreIds(net, slice, &direct).ok());
    for (int64_t t = w.end - w.score_count; t < w.end; ++t) {
      EXPECT_NEAR(windowed[t - 1], direct[t - w.begin - 1], 1e-5) << "token " << t;
    }
  }
  // Batching windows does not change results.
  std::vector<float> unbatched;
  ASSERT_TRUE(ScoreLongSequence(net, ids, {64, 32, 1}, &unbatched).ok());
  for (size_t i = 0; i < windowed.size(); ++i) EXPECT_NEAR(windowed[i], unbatched[i], 1e-5);
}

TEST(ScoreTest, LogProbsAreNormalisedAndMatchForward) {
  Gpt net = TinyGpt(100);
  auto ids = Sequence(20, 100);
  std::vector<float> lp;
  ASSERT_TRUE(ScoreIds(net, ids, &lp).ok());
  torch::NoGradGuard no_grad;
  std::vector<int64_t> v(ids.begin(), ids.end());
  auto logits = net->Forward(torch::tensor(v).unsqueeze(0)).logits[0];
  auto probs = torch::softmax(logits, -1);
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_NEAR(std::exp(lp[i - 1]), probs[i - 1][ids[i]].item<float>(), 1e-5);
    EXPECT_LT(lp[i - 1], 0.0f);
  }
}

TEST(SamplerTest, GreedyAndFilters) {
  auto lp = torch::log_softmax(torch::tensor({0.1f, 2.0f, 1.9f, -3.0f}), 0);
  std::mt19937_64 rng(1);
  EXPECT_EQ(SampleToken(lp, {0.0, 0, 1.0}, rng), 1);
  EXPECT_EQ(SampleToken(lp, {1.0, 1, 1.0}, rng), 1);    // top-k 1 is greedy
  EXPECT_EQ(SampleToken(lp, {1.0, 0, 1e-6}, rng), 1);   // tiny nucleus is greedy
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(SampleToken(lp, {1.0, 2, 1.0}, rng));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2}));           // top-k 2 never leaves the two best
}

TEST(SamplerTest, SameSeedSameTokens) {
  auto lp = torch::log_softmax(torch::randn({50}), 0);
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(SampleToken(lp, {1.0, 0, 0.9}, a), SampleToken(lp, {1.0, 0, 0.9}, b));
}

TEST(GenerateTest, GreedyEqualsArgmaxOfFullForward) {
  Gpt net = TinyGpt(100);
  std::vector<int32_t> prompt = {3, 14, 15};
  GenerateOptions options;
  options.max_tokens = 12;
  options.sampling.temperature = 0;
  std::vector<int32_t> out;
  ASSERT_TRUE(Generate(net, prompt, options, &out).ok());
  ASSERT_EQ(out.size(), 12u);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (int32_t token : out) {
    auto logits = net->Forward(torch::tensor(seq).unsqueeze(0)).logits[0][-1];
    EXPECT_EQ(token, logits.argmax().item<int64_t>());
    seq.push_back(token);
  }
}

TEST(GenerateTest, RunsPastTheContextWindowAndStopsAtStopToken) {
  Gpt net = TinyGpt(100);
  GenerateOptions options;
  options.max_tokens = 150;  // More than n_positions = 64.
  options.seed = 3;
  std::vector<int32_t> out;
  ASSERT_TRUE(Generate(net, {1, 2}, options, &out).ok());
  EXPECT_EQ(out.size(), 150u);

  options.stop_token = out[5];
  std::vector<int32_t> stopped;
  ASSERT_TRUE(Generate(net, {1, 2}, options, &stopped).ok());
  EXPECT_LE(stopped.size(), 6u);
  EXPECT_EQ(stopped.back(), options.stop_token);
}

TEST(GenerateTest, BadPromptsAreRejected) {
  Gpt net = TinyGpt(100);
  std::vector<int32_t> out;
  EXPECT_TRUE(Generate(net, {}, {}, &out).IsInvalidArgument());
  EXPECT_TRUE(Generate(net, std::vector<int32_t>(65, 1), {}, &out).IsInvalidArgument());
  EXPECT_TRUE(Generate(net, {1, 100}, {}, &out).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
