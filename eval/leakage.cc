#include "eval/leakage.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>

#include "eval/exposure.h"
#include "lm/generator.h"
#include "retriever/dual_scorer.h"

namespace mnemo {
namespace {

// Per-token natural-log probabilities of ids[1..] under the model (kNN-LM when enabled).
Status TokenLogprobs(const ScoredModel& m, const std::vector<int32_t>& ids, std::vector<float>* lp,
                     std::vector<float>* base_lp = nullptr) {
  const bool knn = m.memory != nullptr && m.knn.enabled;
  DualScores scores;
  MNEMO_RETURN_IF_ERROR(ScoreBoth(*m.model, knn ? m.memory : nullptr, m.knn, ids, WindowOptions(), &scores));
  *lp = knn ? scores.knn : scores.lm;
  if (base_lp != nullptr) *base_lp = scores.lm;
  return Status::OK();
}

size_t ZlibBytes(const std::string& text) {
  uLongf size = compressBound(text.size());
  std::vector<Bytef> buffer(size);
  if (compress2(buffer.data(), &size, reinterpret_cast<const Bytef*>(text.data()), text.size(), 9) != Z_OK) {
    return text.size();
  }
  return size;
}

}  // namespace

std::string CanaryFormat::Render(const std::string& name, const std::string& secret, size_t* secret_at) const {
  std::string out = pattern;
  const size_t n = out.find("{name}");
  if (n != std::string::npos) out.replace(n, 6, name);
  const size_t d = out.find("{digits:");
  const size_t close = d == std::string::npos ? d : out.find('}', d);
  if (d != std::string::npos && close != std::string::npos) out.replace(d, close - d + 1, secret);
  if (secret_at != nullptr) *secret_at = d == std::string::npos ? out.size() : d;
  return out;
}

int CanaryFormat::secret_digits() const {
  const size_t d = pattern.find("{digits:");
  return d == std::string::npos ? 0 : std::atoi(pattern.c_str() + d + 8);
}

std::string CanaryFormat::RandomSecret(std::mt19937_64& rng) const {
  std::string s;
  std::uniform_int_distribution<int> digit(0, 9);
  for (int i = 0; i < secret_digits(); ++i) s += static_cast<char>('0' + digit(rng));
  return s;
}

Status SpanLogPerplexityBits(const ScoredModel& m, const std::string& text, size_t from_byte, double* bits) {
  const std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
  if (ids.size() < 2) return Status::InvalidArgument("text needs at least 2 tokens");
  // The span's tokens: every token that ends after from_byte (a token may carry a space and the secret's
  // first digits together), but never the first token, which nothing predicts.
  size_t first = 1, end = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    end += m.model->tokenizer->TokenBytes(ids[i]).size();
    if (end > from_byte) {
      first = std::max<size_t>(i, 1);
      break;
    }
  }
  std::vector<float> lp;
  MNEMO_RETURN_IF_ERROR(TokenLogprobs(m, ids, &lp));
  double nats = 0;
  for (size_t t = first; t < ids.size(); ++t) nats -= lp[t - 1];
  *bits = nats / std::log(2.0);
  return Status::OK();
}

Status CanaryExposure(const ScoredModel& m, const CanaryFormat& format, const std::string& name,
                      const std::string& secret, int references, uint64_t seed, ExposureResult* out) {
  size_t at = 0;
  const std::string canary = format.Render(name, secret, &at);  // before the call: it sets `at`
  MNEMO_RETURN_IF_ERROR(SpanLogPerplexityBits(m, canary, at, &out->canary_bits));
  std::mt19937_64 rng(seed);
  std::vector<double> reference_bits;
  while (static_cast<int>(reference_bits.size()) < references) {
    const std::string other = format.RandomSecret(rng);
    if (other == secret) continue;
    double bits = 0;
    const std::string text = format.Render(name, other, &at);
    MNEMO_RETURN_IF_ERROR(SpanLogPerplexityBits(m, text, at, &bits));
    reference_bits.push_back(bits);
  }
  out->rank_exposure = RankExposure(out->canary_bits, reference_bits);
  out->extrapolated_exposure =
      ExtrapolatedExposure(out->canary_bits, reference_bits, format.secret_digits() * std::log2(10.0));
  return Status::OK();
}

Status ScoreMembership(const ScoredModel& m, const std::string& text, MembershipScores* out) {
  const std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
  if (ids.size() < 2) return Status::InvalidArgument("text needs at least 2 tokens");
  std::vector<float> lp, base;
  MNEMO_RETURN_IF_ERROR(TokenLogprobs(m, ids, &lp, &base));
  const double n = static_cast<double>(lp.size());
  double sum = 0, diff = 0;
  for (size_t i = 0; i < lp.size(); ++i) sum += lp[i], diff += lp[i] - base[i];
  out->loss = sum / n;
  out->zlib = (sum / std::log(2.0)) / (8.0 * static_cast<double>(ZlibBytes(text)));
  out->reference = diff / n;
  std::vector<float> sorted = lp;
  std::sort(sorted.begin(), sorted.end());
  const size_t k = std::max<size_t>(1, static_cast<size_t>(0.2 * sorted.size()));
  double low = 0;
  for (size_t i = 0; i < k; ++i) low += sorted[i];
  out->min_k = low / static_cast<double>(k);
  return Status::OK();
}

Status IsExtractable(const ScoredModel& m, const std::string& text, int k, bool* extractable) {
  const std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
  if (static_cast<int>(ids.size()) <= k || k < 1) return Status::InvalidArgument("text must be longer than the prefix");
  std::vector<int32_t> prefix(ids.begin(), ids.begin() + k), out;
  GenerateOptions options;
  options.max_tokens = static_cast<int64_t>(ids.size()) - k;
  options.sampling.temperature = 0;
  std::unique_ptr<KnnLm> knn;
  if (m.memory != nullptr && m.knn.enabled) {
    knn = std::make_unique<KnnLm>(*m.memory);
    options.hook = [&](const torch::Tensor& key, const torch::Tensor& lp, torch::Tensor* dist) {
      return knn->Distribution(key, lp, m.knn, dist, nullptr);
    };
  }
  MNEMO_RETURN_IF_ERROR(Generate(m.model->net, prefix, options, &out));
  *extractable = std::equal(out.begin(), out.end(), ids.begin() + k, ids.end()) && out.size() == ids.size() - k;
  return Status::OK();
}

}  // namespace mnemo
