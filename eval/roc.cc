#include "eval/roc.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace mnemo {

std::vector<RocPoint> RocCurve(const std::vector<double>& members, const std::vector<double>& non_members) {
  if (members.empty() || non_members.empty()) throw std::invalid_argument("RocCurve: needs members and non-members");
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

double RocAuc(const std::vector<double>& members, const std::vector<double>& non_members) {
  const std::vector<RocPoint> curve = RocCurve(members, non_members);
  double area = 0;
  for (size_t i = 1; i < curve.size(); ++i) {
    area += (curve[i].fpr - curve[i - 1].fpr) * (curve[i].tpr + curve[i - 1].tpr) / 2;  // trapezoids: ties = 0.5
  }
  return area;
}

double TprAtFpr(const std::vector<RocPoint>& curve, double max_fpr) {
  double best = 0;
  for (const RocPoint& pt : curve) {
    if (pt.fpr <= max_fpr + 1e-12) best = std::max(best, pt.tpr);
  }
  return best;
}

MembershipSummary SummarizeMembership(const std::vector<double>& members, const std::vector<double>& non_members,
                                      int resamples, uint64_t seed) {
  MembershipSummary s;
  s.curve = RocCurve(members, non_members);
  s.auc = RocAuc(members, non_members);
  s.tpr_at_0_1pct_fpr = TprAtFpr(s.curve, 0.001);
  s.tpr_at_1pct_fpr = TprAtFpr(s.curve, 0.01);
  s.auc_ci = Bootstrap(members, non_members, [](const auto& m, const auto& n) { return RocAuc(m, n); }, resamples, 0.95, seed);
  s.tpr_at_0_1pct_fpr_ci = Bootstrap(
      members, non_members, [](const auto& m, const auto& n) { return TprAtFpr(RocCurve(m, n), 0.001); }, resamples,
      0.95, seed + 1);
  s.tpr_at_1pct_fpr_ci = Bootstrap(
      members, non_members, [](const auto& m, const auto& n) { return TprAtFpr(RocCurve(m, n), 0.01); }, resamples,
      0.95, seed + 2);
  return s;
}

}  // namespace mnemo
