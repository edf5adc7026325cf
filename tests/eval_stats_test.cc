// The statistics of eval/: ROC analysis against hand-computed examples and known distributions, and
// exposure's calibration (a canary never inserted averages 1/ln 2 = 1.44 bits).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "eval/exposure.h"
#include "eval/roc.h"

namespace mnemo {
namespace {

// RocAuc of scores that must be valid.
double Auc(const std::vector<double>& members, const std::vector<double>& non_members) {
  double auc = -1;
  const Status s = RocAuc(members, non_members, &auc);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return auc;
}

TEST(RocTest, HandComputedExample) {
  // Members 0.9 0.8 0.4, non-members 0.7 0.3 0.2 0.1: 11 of 12 pairs ordered right -> AUC 11/12.
  const std::vector<double> members = {0.9, 0.8, 0.4}, non_members = {0.7, 0.3, 0.2, 0.1};
  EXPECT_NEAR(Auc(members, non_members), 11.0 / 12.0, 1e-12);
  std::vector<RocPoint> curve;
  ASSERT_TRUE(RocCurve(members, non_members, &curve).ok());
  ASSERT_EQ(curve.size(), 8u);  // origin + one point per distinct score
  EXPECT_DOUBLE_EQ(curve[2].tpr, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(curve[2].fpr, 0.0);
  EXPECT_DOUBLE_EQ(curve.back().tpr, 1.0);
  EXPECT_DOUBLE_EQ(curve.back().fpr, 1.0);
  EXPECT_DOUBLE_EQ(TprAtFpr(curve, 0.0), 2.0 / 3.0);
  // Thresholds 0.9, 0.8, 0.7 (the first non-member), 0.4: at FPR 1/4 all three members are in.
  EXPECT_DOUBLE_EQ(TprAtFpr(curve, 0.25), 1.0);
}

TEST(RocTest, TiesCountHalf) {
  EXPECT_DOUBLE_EQ(Auc({1, 1}, {1, 1, 1}), 0.5);
  EXPECT_DOUBLE_EQ(Auc({2, 1}, {1, 0}), (1 + 1 + 0.5 + 1) / 4.0);
}

TEST(RocTest, SameDistributionGivesHalfAndSeparatedGivesOne) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> a(2000), b(2000), c(2000);
  for (double& x : a) x = normal(rng);
  for (double& x : b) x = normal(rng);
  for (double& x : c) x = normal(rng) + 100;
  EXPECT_NEAR(Auc(a, b), 0.5, 0.03);
  EXPECT_DOUBLE_EQ(Auc(c, b), 1.0);
  MembershipSummary s;
  ASSERT_TRUE(SummarizeMembership(a, b, 100, 7, &s).ok());
  EXPECT_LE(s.auc_ci.low, s.auc);
  EXPECT_GE(s.auc_ci.high, s.auc);
  EXPECT_LT(s.auc_ci.high - s.auc_ci.low, 0.1);
  EXPECT_NEAR(s.tpr_at_1pct_fpr, 0.01, 0.02);  // chance level
  MembershipSummary again;
  ASSERT_TRUE(SummarizeMembership(a, b, 100, 7, &again).ok());
  EXPECT_EQ(again.auc_ci.low, s.auc_ci.low);  // deterministic for a seed
}

// A side with no scores (an audit with no members, say) or a NaN score is the caller's error: an
// InvalidArgument naming the problem, and the outputs are left alone.
TEST(RocTest, EmptySidesAndNanScoresAreInvalidArguments) {
  const std::vector<double> some = {0.3, 0.7}, none;
  const double nan = std::nan("");
  struct Case {
    std::vector<double> members, non_members;
    std::string needle;
  };
  const std::vector<Case> cases = {{none, some, "member"}, {some, none, "non-member"}, {none, none, "member"},
                                   {{0.1, nan}, some, "NaN"}, {some, {nan}, "NaN"}};
  for (const Case& c : cases) {
    std::vector<RocPoint> curve = {{0.25, 0.75}};
    Status s = RocCurve(c.members, c.non_members, &curve);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.message().find(c.needle), std::string::npos) << s.message();
    ASSERT_EQ(curve.size(), 1u);
    EXPECT_EQ(curve[0].tpr, 0.75);
    double auc = -1;
    EXPECT_TRUE(RocAuc(c.members, c.non_members, &auc).IsInvalidArgument());
    EXPECT_EQ(auc, -1);
    MembershipSummary summary;
    summary.auc = -1;
    EXPECT_TRUE(SummarizeMembership(c.members, c.non_members, 10, 1, &summary).IsInvalidArgument());
    EXPECT_EQ(summary.auc, -1);
  }
  // The bootstrap has its own guards: an empty side, no resamples, a level outside (0, 1).
  auto mean = [](const std::vector<double>& m, const std::vector<double>&) { return m[0]; };
  Interval ci;
  EXPECT_TRUE(Bootstrap(none, some, mean, 10, 0.95, 1, &ci).IsInvalidArgument());
  EXPECT_TRUE(Bootstrap(some, none, mean, 10, 0.95, 1, &ci).IsInvalidArgument());
  EXPECT_TRUE(Bootstrap(some, some, mean, 0, 0.95, 1, &ci).IsInvalidArgument());
  EXPECT_TRUE(Bootstrap(some, some, mean, 10, 1.0, 1, &ci).IsInvalidArgument());
  EXPECT_TRUE(Bootstrap(some, some, mean, 10, 0.0, 1, &ci).IsInvalidArgument());
  ASSERT_TRUE(Bootstrap(some, some, mean, 10, 0.95, 1, &ci).ok());
  EXPECT_GE(ci.low, 0.3);
  EXPECT_LE(ci.high, 0.7);
  // One score of each kind is enough.
  double auc = 0;
  ASSERT_TRUE(RocAuc({1.0}, {0.0}, &auc).ok());
  EXPECT_EQ(auc, 1.0);
}

TEST(ExposureTest, RankExposureCountsTiesAgainstTheCanary) {
  const std::vector<double> refs = {10, 20, 30};
  EXPECT_DOUBLE_EQ(RankExposure(5, refs), 2.0);        // below all: rank 1 of 4 -> log2 4
  EXPECT_DOUBLE_EQ(RankExposure(10, refs), 1.0);       // tie with one reference: rank 2
  EXPECT_DOUBLE_EQ(RankExposure(100, refs), 0.0);      // worst
}

TEST(ExposureTest, NeverInsertedCanariesAverageOneOverLn2) {
  // References and canaries from one distribution (a skewed one, as log-perplexities are).
  std::mt19937_64 rng(11);
  std::gamma_distribution<double> gamma(4.0, 3.0);
  std::vector<double> refs(999);
  for (double& x : refs) x = 40 + gamma(rng);
  double rank_sum = 0, extrapolated_sum = 0;
  const int canaries = 4000;
  for (int i = 0; i < canaries; ++i) {
    const double c = 40 + gamma(rng);
    rank_sum += RankExposure(c, refs);
    extrapolated_sum += ExtrapolatedExposure(c, refs, 19.9);
  }
  EXPECT_NEAR(rank_sum / canaries, 1 / std::log(2.0), 0.08);
  EXPECT_NEAR(extrapolated_sum / canaries, 1 / std::log(2.0), 0.12);
}

TEST(ExposureTest, MemorizedCanaryReachesTheExtrapolatedMaximum) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(60, 4);
  std::vector<double> refs(999);
  for (double& x : refs) x = normal(rng);
  EXPECT_NEAR(RankExposure(1, refs), std::log2(1000.0), 1e-9);
  EXPECT_GT(ExtrapolatedExposure(20, refs, 19.9), 19.0);  // 10 sigma below the references
  EXPECT_LE(ExtrapolatedExposure(20, refs, 19.9), 19.9);
}

TEST(ExposureTest, SkewNormalFitRecoversAKnownDistribution) {
  // Samples of a skew-normal (xi 2, omega 3, alpha 4) by the standard construction.
  std::mt19937_64 rng(9);
  std::normal_distribution<double> normal;
  const double alpha = 4, delta = alpha / std::sqrt(1 + alpha * alpha);
  std::vector<double> xs(20000);
  for (double& x : xs) {
    const double u0 = normal(rng), v = normal(rng);
    const double u1 = delta * std::fabs(u0) + std::sqrt(1 - delta * delta) * v;
    x = 2 + 3 * u1;
  }
  const SkewNormal fit = FitSkewNormal(xs);
  EXPECT_NEAR(fit.location, 2, 0.3);
  EXPECT_NEAR(fit.scale, 3, 0.3);
  // The fitted CDF matches the empirical one.
  std::sort(xs.begin(), xs.end());
  for (double q : {0.1, 0.5, 0.9}) EXPECT_NEAR(fit.Cdf(xs[static_cast<size_t>(q * xs.size())]), q, 0.02) << q;
}

}  // namespace
}  // namespace mnemo
