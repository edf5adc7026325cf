#include "eval/roc.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace mnemo {
namespace {

Status CheckScores(const std::vector<double>& members, const std::vector<double>& non_members) {
  if (members.empty() || non_members.empty()) {
    return Status::InvalidArgument("ROC: needs at least one member and one non-member score (have " +
                                   std::to_string(members.size()) + " and " + std::to_string(non_members.size()) + ")");
  }
  auto has_nan = [](const std::vector<double>& v) {
    return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
  };
  // std::sort with NaN breaks its ordering contract (undefined behaviour, not just a wrong curve).
  if (has_nan(members) || has_nan(non_members)) return Status::InvalidArgument("ROC: a score is NaN");
  return Status::OK();
}

// The curve of checked scores. The bootstrap calls these directly: its resamples of checked scores are
// never empty and hold no NaN.
std::vector<RocPoint> Curve(const std::vector<double>& members, const std::vector<double>& non_members) {
  // (score, is_member), highest score first: lowering the threshold admits examples in this order.
  std::vector<std::pair<double, bool>> all;
  for (double s : members) all.emplace_back(s, true);
  for (double s : non_members) all.emplace_back(s, false);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  const double p = static_cast<double>(members.size()), n = static_cast<double>(non_members.size());
  std::vector<RocPoint> curve = {{0, 0}};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    for (; j < all.size() && all[j].first == all[i].first; ++j) (all[j].second ? tp : fp) += 1;
    curve.push_back({fp / n, tp / p});
    i = j;
  }
  return curve;
}

double Area(const std::vector<RocPoint>& curve) {
  double area = 0;
  for (size_t i = 1; i < curve.size(); ++i) {
    area += (curve[i].fpr - curve[i - 1].fpr) * (curve[i].tpr + curve[i - 1].tpr) / 2;  // trapezoids: ties = 0.5
  }
  return area;
}

}  // namespace

Status RocCurve(const std::vector<double>& members, const std::vector<double>& non_members,
                std::vector<RocPoint>* curve) {
  MNEMO_RETURN_IF_ERROR(CheckScores(members, non_members));
  *curve = Curve(members, non_members);
  return Status::OK();
}

Status RocAuc(const std::vector<double>& members, const std::vector<double>& non_members, double* auc) {
  MNEMO_RETURN_IF_ERROR(CheckScores(members, non_members));
  *auc = Area(Curve(members, non_members));
  return Status::OK();
}

double TprAtFpr(const std::vector<RocPoint>& curve, double max_fpr) {
  double best = 0;
  for (const RocPoint& pt : curve) {
    if (pt.fpr <= max_fpr + 1e-12) best = std::max(best, pt.tpr);
  }
  return best;
}

Status SummarizeMembership(const std::vector<double>& members, const std::vector<double>& non_members,
                           int resamples, uint64_t seed, MembershipSummary* out) {
  MNEMO_RETURN_IF_ERROR(CheckScores(members, non_members));
  MembershipSummary s;
  s.curve = Curve(members, non_members);
  s.auc = Area(s.curve);
  s.tpr_at_0_1pct_fpr = TprAtFpr(s.curve, 0.001);
  s.tpr_at_1pct_fpr = TprAtFpr(s.curve, 0.01);
  MNEMO_RETURN_IF_ERROR(Bootstrap(
      members, non_members, [](const auto& m, const auto& n) { return Area(Curve(m, n)); }, resamples, 0.95, seed,
      &s.auc_ci));
  MNEMO_RETURN_IF_ERROR(Bootstrap(
      members, non_members, [](const auto& m, const auto& n) { return TprAtFpr(Curve(m, n), 0.001); }, resamples,
      0.95, seed + 1, &s.tpr_at_0_1pct_fpr_ci));
  MNEMO_RETURN_IF_ERROR(Bootstrap(
      members, non_members, [](const auto& m, const auto& n) { return TprAtFpr(Curve(m, n), 0.01); }, resamples,
      0.95, seed + 2, &s.tpr_at_1pct_fpr_ci));
  *out = std::move(s);
  return Status::OK();
}

}  // namespace mnemo
