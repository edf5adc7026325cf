// Exposure (Carlini et al. 2019, "The Secret Sharer"): how much more likely a model finds an inserted
// canary than other values of the same format. With Px(s) the log-perplexity in bits of a canary s[r],
// rank(s[r]) = |{r' : Px(s[r']) <= Px(s[r])}| and exposure = log2 |R| - log2 rank.
//
// From N sampled references (other random values of the format) the rank estimate gives
// exposure = log2(N + 1) - log2(1 + #{references with Px <= Px(canary)}), so ties count against the canary
// and the maximum is log2(N + 1). The extrapolated estimate fits a skew-normal distribution to the
// references' log-perplexities (method of moments) and reports -log2 CDF(Px(canary)), which can reach
// log2 |R| (tensorflow/privacy secret_sharer does the same). A canary never inserted has expected
// exposure 1/ln 2 = 1.44 bits under both.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace mnemo {

double RankExposure(double canary_bits, const std::vector<double>& reference_bits);

struct SkewNormal {
  double location = 0, scale = 1, shape = 0;  // xi, omega, alpha
  double Cdf(double x) const;
};

// Method-of-moments fit; skewness is clamped inside the family's range (|g| < 0.99).
SkewNormal FitSkewNormal(const std::vector<double>& samples);
// -log2 CDF(canary_bits) under the skew-normal fitted to the references, capped at max_bits (log2 |R|).
double ExtrapolatedExposure(double canary_bits, const std::vector<double>& reference_bits, double max_bits);

}  // namespace mnemo
