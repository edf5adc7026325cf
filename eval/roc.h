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

#include "util/status.h"

namespace mnemo {

struct RocPoint {
  double fpr = 0, tpr = 0;
};

// The curve from (0,0) to (1,1), one point per distinct threshold. InvalidArgument unless there is at least
// one score of each kind and none is NaN (an empty side has no rate; NaN has no order). These are caller
// errors that an audit can reach with odd options, so they are values, not exceptions.
Status RocCurve(const std::vector<double>& members, const std::vector<double>& non_members,
                std::vector<RocPoint>* curve);
// The area under RocCurve (the Mann-Whitney statistic); the same errors.
Status RocAuc(const std::vector<double>& members, const std::vector<double>& non_members, double* auc);
// The largest TPR reachable at FPR <= max_fpr (thresholds only, no interpolation: a conservative figure).
double TprAtFpr(const std::vector<RocPoint>& curve, double max_fpr);

struct Interval {
  double low = 0, high = 0;
};

// Percentile bootstrap (members and non-members resampled separately) of a statistic of the two score
// sets; `level` e.g. 0.95. Deterministic for a seed. InvalidArgument for an empty score set, resamples < 1
// or a level outside (0, 1). `statistic` sees resamples of the same sizes as the inputs.
template <typename Statistic>
Status Bootstrap(const std::vector<double>& members, const std::vector<double>& non_members, Statistic statistic,
                 int resamples, double level, uint64_t seed, Interval* out);

struct MembershipSummary {
  double auc = 0.5;
  double tpr_at_0_1pct_fpr = 0, tpr_at_1pct_fpr = 0;
  Interval auc_ci, tpr_at_0_1pct_fpr_ci, tpr_at_1pct_fpr_ci;  // 95%
  std::vector<RocPoint> curve;
};

// RocCurve, RocAuc, TPR at 0.1% and 1% FPR and their bootstrap intervals (e.g. 200 resamples); the errors
// of RocCurve and Bootstrap.
Status SummarizeMembership(const std::vector<double>& members, const std::vector<double>& non_members,
                           int resamples, uint64_t seed, MembershipSummary* out);

}  // namespace mnemo

#include "eval/roc_inl.h"
