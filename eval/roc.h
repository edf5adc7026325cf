// ROC analysis for membership inference: from scores of members and non-members (higher = "more likely
// a member"), the ROC curve, its area, the true-positive rate at fixed low false-positive rates (the
// numbers that matter for privacy: Carlini et al. 2022), and bootstrap confidence intervals.
//
// Ties: examples with equal scores are crossed together (the curve gets one diagonal segment), so the AUC
// equals the Mann-Whitney probability P(member score > non-member score) + 0.5 P(equal).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace mnemo {

struct RocPoint {
  double fpr = 0, tpr = 0;
};

// The curve from (0,0) to (1,1), one point per distinct threshold. Needs at least one score of each kind.
std::vector<RocPoint> RocCurve(const std::vector<double>& members, const std::vector<double>& non_members);
double RocAuc(const std::vector<double>& members, const std::vector<double>& non_members);
// The largest TPR reachable at FPR <= max_fpr (thresholds only, no interpolation: a conservative figure).
double TprAtFpr(const std::vector<RocPoint>& curve, double max_fpr);

struct Interval {
  double low = 0, high = 0;
};

// Percentile bootstrap (members and non-members resampled separately) of a statistic of the two score
// sets; `level` e.g. 0.95. Deterministic for a seed.
template <typename Statistic>
Interval Bootstrap(const std::vector<double>& members, const std::vector<double>& non_members, Statistic statistic,
                   int resamples, double level, uint64_t seed);

struct MembershipSummary {
  double auc = 0.5;
  double tpr_at_0_1pct_fpr = 0, tpr_at_1pct_fpr = 0;
  Interval auc_ci, tpr_at_0_1pct_fpr_ci, tpr_at_1pct_fpr_ci;  // 95%
  std::vector<RocPoint> curve;
};

MembershipSummary SummarizeMembership(const std::vector<double>& members, const std::vector<double>& non_members,
                                      int resamples = 200, uint64_t seed = 1);

}  // namespace mnemo

#include "eval/roc_inl.h"
