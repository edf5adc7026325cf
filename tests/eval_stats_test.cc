// The statistics of eval/: ROC analysis against hand-computed examples and known distributions, and
// exposure's calibration (a canary never inserted averages 1/ln 2 = 1.44 bits).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "eval/exposure.h"
#include "eval/roc.h"

namespace mnemo {
namespace {

TEST(RocTest, HandComputedExample) {
  // Members 0.9 0.8 0.4, non-members 0.7 0.3 0.2 0.1: 11 of 12 pairs ordered right -> AUC 11/12.
  const std::vector<double> members = {0.9, 0.8, 0.4}, non_members = {0.7, 0.3, 0.2, 0.1};
  EXPECT_NEAR(RocAuc(members, non_members), 11.0 / 12.0, 1e-12);
  const auto curve = RocCurve(members, non_members);
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
  EXPECT_DOUBLE_EQ(RocAuc({1, 1}, {1, 1, 1}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc({2, 1}, {1, 0}), (1 + 1 + 0.5 + 1) / 4.0);
}

TEST(RocTest, SameDistributionGivesHalfAndSeparatedGivesOne) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> a(2000), b(2000), c(2000);
  for (double& x : a) x = normal(rng);
  for (double& x : b) x = normal(rng);
  for (double& x : c) x = normal(rng) + 100;
  EXPECT_NEAR(RocAuc(a, b), 0.5, 0.03);
  EXPECT_DOUBLE_EQ(RocAuc(c, b), 1.0);
  const MembershipSummary s = SummarizeMembership(a, b, 100, 7);
  EXPECT_LE(s.auc_ci.low, s.auc);
  EXPECT_GE(s.auc_ci.high, s.auc);
  EXPECT_LT(s.auc_ci.high - s.auc_ci.low, 0.1);
  EXPECT_NEAR(s.tpr_at_1pct_fpr, 0.01, 0.02);  // chance level
  const MembershipSummary again = SummarizeMembership(a, b, 100, 7);
  EXPECT_EQ(again.auc_ci.low, s.auc_ci.low);  // deterministic for a seed
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
