#include "eval/exposure.h"

#include <algorithm>
#include <cmath>

namespace mnemo {
namespace {

constexpr double kPi = 3.14159265358979323846;

double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// Owen's T function T(h, a) = 1/(2 pi) * integral_0^a exp(-h^2 (1 + x^2) / 2) / (1 + x^2) dx, by Simpson's
// rule (the integrand is smooth and bounded; 400 panels give ~1e-10 for the |a| a fit can produce).
double OwensT(double h, double a) {
  if (a == 0) return 0;
  const int n = 400;
  const double step = a / n;
  auto f = [h](double x) { return std::exp(-h * h * (1 + x * x) / 2) / (1 + x * x); };
  double sum = f(0) + f(a);
  for (int i = 1; i < n; ++i) sum += f(i * step) * (i % 2 == 1 ? 4 : 2);
  return sum * step / 3 / (2 * kPi);
}

}  // namespace

double RankExposure(double canary_bits, const std::vector<double>& reference_bits) {
  int64_t at_most = 0;
  for (double r : reference_bits) at_most += r <= canary_bits;
  return std::log2(static_cast<double>(reference_bits.size()) + 1) - std::log2(1.0 + static_cast<double>(at_most));
}

double SkewNormal::Cdf(double x) const {
  const double z = (x - location) / scale;
  return std::clamp(NormalCdf(z) - 2 * OwensT(z, shape), 0.0, 1.0);
}

SkewNormal FitSkewNormal(const std::vector<double>& samples) {
  const double n = static_cast<double>(samples.size());
  double mean = 0;
  for (double x : samples) mean += x;
  mean /= n;
  double m2 = 0, m3 = 0;
  for (double x : samples) {
    m2 += (x - mean) * (x - mean);
    m3 += (x - mean) * (x - mean) * (x - mean);
  }
  m2 /= n;
  m3 /= n;
  const double variance = std::max(m2, 1e-12);
  double skew = m3 / std::pow(variance, 1.5);
  skew = std::clamp(skew, -0.99, 0.99);
  const double g = std::pow(std::fabs(skew), 2.0 / 3.0);
  const double delta = std::copysign(std::sqrt(kPi / 2 * g / (g + std::pow((4 - kPi) / 2, 2.0 / 3.0))), skew);
  SkewNormal fit;
  fit.shape = delta / std::sqrt(1 - delta * delta);
  fit.scale = std::sqrt(variance / (1 - 2 * delta * delta / kPi));
  fit.location = mean - fit.scale * delta * std::sqrt(2 / kPi);
  return fit;
}

double ExtrapolatedExposure(double canary_bits, const std::vector<double>& reference_bits, double max_bits) {
  const double cdf = FitSkewNormal(reference_bits).Cdf(canary_bits);
  if (cdf <= 0) return max_bits;
  return std::min(max_bits, -std::log2(cdf));
}

}  // namespace mnemo
