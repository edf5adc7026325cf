// Template definitions of roc.h.
#pragma once

#include <algorithm>
#include <random>

namespace mnemo {

template <typename Statistic>
Status Bootstrap(const std::vector<double>& members, const std::vector<double>& non_members, Statistic statistic,
                 int resamples, double level, uint64_t seed, Interval* out) {
  // Checked here because an empty side would make the uniform distributions below [0, SIZE_MAX].
  if (members.empty() || non_members.empty()) {
    return Status::InvalidArgument("bootstrap: needs at least one member and one non-member score");
  }
  if (resamples < 1) return Status::InvalidArgument("bootstrap: needs at least one resample");
  if (!(level > 0 && level < 1)) return Status::InvalidArgument("bootstrap: the level must be in (0, 1)");
  std::mt19937_64 rng(seed);
  std::vector<double> values;
  values.reserve(resamples);
  std::vector<double> m(members.size()), n(non_members.size());
  for (int r = 0; r < resamples; ++r) {
    std::uniform_int_distribution<size_t> pick_m(0, members.size() - 1), pick_n(0, non_members.size() - 1);
    for (double& x : m) x = members[pick_m(rng)];
    for (double& x : n) x = non_members[pick_n(rng)];
    values.push_back(statistic(m, n));
  }
  std::sort(values.begin(), values.end());
  const double tail = (1 - level) / 2;
  auto at = [&](double q) {
    const size_t i = std::min(values.size() - 1, static_cast<size_t>(q * (values.size() - 1) + 0.5));
    return values[i];
  };
  *out = {at(tail), at(1 - tail)};
  return Status::OK();
}

}  // namespace mnemo
