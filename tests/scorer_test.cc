// Scoring, sliding windows, sampling and generation on a tiny random model.
#include "lm/scorer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <string>

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

// Every (window, stride, length) in a small range against a brute-force enumeration of the recipe: windows
// start at multiples of the advance (the stride, but at most window - 1, so that consecutive windows share a
// token) and run for `window` tokens or to the end of the text; each target is scored by the first of them
// that holds it after its first token, which is the window that gives it the most context.
TEST(PlanWindowsTest, MatchesBruteForceForEveryWindowStrideAndLength) {
  constexpr int64_t kPositions = 12;
  for (int64_t window = 0; window <= kPositions; ++window) {  // 0: the model's n_positions
    for (int64_t stride = 0; stride <= (window > 0 ? window : kPositions); ++stride) {  // 0: window / 2
      for (int64_t n = 0; n <= 40; ++n) {
        SCOPED_TRACE("window=" + std::to_string(window) + " stride=" + std::to_string(stride) + " n=" + std::to_string(n));
        std::vector<Window> windows;
        const Status s = PlanWindows(n, kPositions, {window, stride, 1}, &windows);
        if (window == 1) {  // one token is context only: nothing to score
          EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
          continue;
        }
        ASSERT_TRUE(s.ok()) << s.ToString();
        const int64_t w = window > 0 ? window : kPositions;
        const int64_t st = stride > 0 ? stride : std::max<int64_t>(1, w / 2);
        const int64_t advance = std::min(st, w - 1);

        // Brute force: which window scores each target.
        std::vector<int64_t> want_begin(n, -1);
        for (int64_t t = 1; t < n; ++t) {
          for (int64_t b = 0; b < t; b += advance) {
            if (t < b + w) {
              want_begin[t] = b;
              break;
            }
          }
          ASSERT_GE(want_begin[t], 0) << "no window of the recipe holds target " << t;
        }

        // The plan: which window scores each target, and how often.
        std::vector<int64_t> got_begin(n, -1), got_end(n, -1);
        std::vector<int> times(n, 0);
        int64_t next_target = 1;
        for (const Window& win : windows) {
          ASSERT_GE(win.score_count, 1) << "a window that scores nothing";
          ASSERT_LT(win.score_count, win.end - win.begin) << "a window's first token has no context";
          EXPECT_EQ(win.end - win.begin, std::min(w, n - win.begin)) << "windows are full length up to the text's end";
          EXPECT_EQ(win.end - win.score_count, next_target) << "scored spans are consecutive, in order";
          next_target = win.end;
          for (int64_t t = win.end - win.score_count; t < win.end; ++t) {
            ASSERT_GE(t, 1);
            ASSERT_LT(t, n);
            ++times[t];
            got_begin[t] = win.begin;
            got_end[t] = win.end;
          }
        }
        EXPECT_EQ(windows.empty(), n < 2);
        for (int64_t t = 1; t < n; ++t) {
          ASSERT_EQ(times[t], 1) << "target " << t << " scored " << times[t] << " times";
          EXPECT_EQ(got_begin[t], want_begin[t]) << "target " << t;
          EXPECT_EQ(got_end[t], std::min(want_begin[t] + w, n)) << "target " << t;
          // The recipe's promise: window - stride tokens of context (at least one), or all of the prefix.
          EXPECT_GE(t - got_begin[t], std::min(t, std::max<int64_t>(w - st, 1))) << "target " << t;
        }
      }
    }
  }
}

TEST(PlanWindowsTest, RejectsWindowsItCannotScore) {
  std::vector<Window> windows;
  EXPECT_TRUE(PlanWindows(100, 64, {128, 32, 1}, &windows).IsInvalidArgument());  // longer than the context
  EXPECT_TRUE(PlanWindows(100, 64, {32, 64, 1}, &windows).IsInvalidArgument());   // stride over the window
  EXPECT_TRUE(PlanWindows(100, 64, {1, 1, 1}, &windows).IsInvalidArgument());     // context only
  EXPECT_TRUE(PlanWindows(100, 1, {0, 0, 1}, &windows).IsInvalidArgument());      // a 1-position model
}

// Non-overlapping windows (stride == window), the case that crashed: every target is scored, each window
// exactly as if its chunk were scored on its own; consecutive chunks share one token, the context of the
// next chunk's first target.
TEST(ScoreTest, StrideEqualToWindowScoresEachChunkIndependently) {
  Gpt net = TinyGpt(100);
  for (int64_t n : {64, 65, 150}) {
    const auto ids = Sequence(static_cast<int>(n), 100);
    for (int64_t window : {2, 5, 32, 63, 64}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " window=" + std::to_string(window));
      std::vector<float> chunked;
      for (int64_t begin = 0; begin + 1 < n; begin += window - 1) {
        std::vector<int32_t> chunk(ids.begin() + begin, ids.begin() + std::min(begin + window, n));
        std::vector<float> lp;
        ASSERT_TRUE(ScoreIds(net, chunk, &lp).ok());
        chunked.insert(chunked.end(), lp.begin(), lp.end());
      }
      ASSERT_EQ(chunked.size(), ids.size() - 1);
      for (int64_t batch : {1, 4}) {
        std::vector<float> strided;
        const Status s = ScoreLongSequence(net, ids, {window, window, batch}, &strided);
        ASSERT_TRUE(s.ok()) << s.ToString();
        ASSERT_EQ(strided.size(), chunked.size());
        for (size_t i = 0; i < chunked.size(); ++i) EXPECT_NEAR(strided[i], chunked[i], 1e-5) << "target " << i + 1;
      }
    }
  }
  std::vector<float> lp;
  EXPECT_TRUE(ScoreLongSequence(net, Sequence(10, 100), {1, 1, 1}, &lp).IsInvalidArgument());
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

// The sampler as it was before it sorted only the head of the vocabulary: every candidate sorted, then
// the same walk. SampleToken must draw the same tokens from the same seeds.
int32_t SampleBySortingAll(const torch::Tensor& logprobs, const SamplingOptions& options, std::mt19937_64& rng) {
  const float* v = logprobs.data_ptr<float>();
  const int64_t n = logprobs.numel();
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  int64_t keep = options.top_k > 0 && options.top_k < n ? options.top_k : n;
  std::vector<double> p(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((v[order[i]] - v[order[0]]) / options.temperature);
  if (options.top_p < 1.0) {
    double mass = 0;
    int64_t cut = 0;
    while (cut < keep && mass < options.top_p * total) mass += p[cut++];
    keep = std::max<int64_t>(1, cut);
    total = mass;
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double r = uniform(rng), acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (r < acc) return order[i];
  }
  return order[keep - 1];
}

TEST(SamplerTest, SortingOnlyTheHeadDrawsWhatSortingAllDraws) {
  torch::manual_seed(5);
  // Peaked (the walk ends in the head), flat (it runs into the tail) and tied distributions, with and
  // without top-k and top-p, over many draws.
  const std::vector<torch::Tensor> dists = {torch::log_softmax(torch::randn({4096}) * 4, 0),
                                            torch::log_softmax(torch::randn({4096}) * 0.1, 0),
                                            torch::log_softmax(torch::zeros({300}), 0),
                                            torch::log_softmax(torch::randn({50}), 0)};
  const std::vector<SamplingOptions> settings = {{1.0, 0, 1.0}, {0.7, 0, 1.0}, {1.3, 0, 0.95}, {1.0, 100, 1.0},
                                                 {1.0, 200, 0.8}, {2.0, 0, 0.999}};
  int draws = 0;
  for (const torch::Tensor& lp : dists) {
    for (const SamplingOptions& o : settings) {
      std::mt19937_64 a(9), b(9);
      for (int i = 0; i < 300; ++i, ++draws) ASSERT_EQ(SampleToken(lp, o, a), SampleBySortingAll(lp, o, b)) << i;
    }
  }
  EXPECT_EQ(draws, 4 * 6 * 300);
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
