#include "eval/leakage.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
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
  ScoreControls controls;
  controls.layer_memory = m.layer_memory;
  controls.layer_topk = m.layer_topk;
  MNEMO_RETURN_IF_ERROR(ScoreBoth(*m.model, knn ? m.memory : nullptr, m.knn, ids, WindowOptions(), &scores, controls));
  *lp = knn ? scores.knn : scores.lm;
  if (base_lp != nullptr) *base_lp = scores.lm;
  return Status::OK();
}

// -sum log2 p over the tokens that overlap bytes [begin, end) (never token 0): only the secret, not the
// text after it, whose likelihood the secret also changes.
Status SpanBitsBetween(const ScoredModel& m, const std::string& text, size_t begin, size_t end, double* bits) {
  const std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
  if (ids.size() < 2) return Status::InvalidArgument("text needs at least 2 tokens");
  std::vector<float> lp;
  MNEMO_RETURN_IF_ERROR(TokenLogprobs(m, ids, &lp));
  double nats = 0;
  size_t start = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t stop = start + m.model->tokenizer->TokenBytes(ids[i]).size();
    if (i > 0 && stop > begin && start < end) nats -= lp[i - 1];
    start = stop;
  }
  *bits = nats / std::log(2.0);
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

size_t SpanFirstToken(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t from_byte) {
  size_t end = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    end += tokenizer.TokenBytes(ids[i]).size();
    if (end > from_byte) return std::max<size_t>(i, 1);
  }
  return 1;
}

Status SpanLogPerplexityBits(const ScoredModel& m, const std::string& text, size_t from_byte, double* bits) {
  return SpanBitsBetween(m, text, from_byte, text.size(), bits);
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

MembershipScores MembershipFromLogprobs(const std::string& text, const std::vector<float>& lp,
                                        const std::vector<float>& base_lp) {
  MembershipScores out;
  const double n = static_cast<double>(lp.size());
  double sum = 0, diff = 0;
  for (size_t i = 0; i < lp.size(); ++i) sum += lp[i], diff += lp[i] - base_lp[i];
  out.loss = sum / n;
  out.zlib = (sum / std::log(2.0)) / (8.0 * static_cast<double>(ZlibBytes(text)));
  out.reference = diff / n;
  std::vector<float> sorted = lp;
  std::sort(sorted.begin(), sorted.end());
  const size_t k = std::max<size_t>(1, static_cast<size_t>(0.2 * sorted.size()));
  double low = 0;
  for (size_t i = 0; i < k; ++i) low += sorted[i];
  out.min_k = low / static_cast<double>(k);
  return out;
}

Status ScoreMembership(const ScoredModel& m, const std::string& text, MembershipScores* out) {
  const std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
  if (ids.size() < 2) return Status::InvalidArgument("text needs at least 2 tokens");
  std::vector<float> lp, base;
  MNEMO_RETURN_IF_ERROR(TokenLogprobs(m, ids, &lp, &base));
  *out = MembershipFromLogprobs(text, lp, base);
  return Status::OK();
}

Status SecretExposure(const ScoredModel& m, const std::string& text, size_t secret_begin, size_t secret_size,
                      int references, uint64_t seed, ExposureResult* out) {
  if (secret_size == 0 || secret_begin + secret_size > text.size()) {
    return Status::InvalidArgument("the secret span [" + std::to_string(secret_begin) + ", " +
                                   std::to_string(secret_begin + secret_size) + ") is not inside the text (" +
                                   std::to_string(text.size()) + " bytes)");
  }
  if (references < 1) return Status::InvalidArgument("references must be at least 1");
  const std::string secret = text.substr(secret_begin, secret_size);
  double space_bits = 0;
  for (unsigned char c : secret) {
    if (std::isdigit(c)) space_bits += std::log2(10.0);
    if (std::isalpha(c)) space_bits += std::log2(26.0);
  }
  if (space_bits == 0) return Status::InvalidArgument("the secret has no digit or letter to vary");
  const size_t secret_end = secret_begin + secret_size;
  MNEMO_RETURN_IF_ERROR(SpanBitsBetween(m, text, secret_begin, secret_end, &out->canary_bits));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> digit(0, 9), letter(0, 25);
  std::vector<double> reference_bits;
  int attempts = 0;
  while (static_cast<int>(reference_bits.size()) < references) {
    std::string other = secret;
    for (char& c : other) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (std::isdigit(u)) c = static_cast<char>('0' + digit(rng));
      else if (std::islower(u)) c = static_cast<char>('a' + letter(rng));
      else if (std::isupper(u)) c = static_cast<char>('A' + letter(rng));
    }
    if (other == secret) {
      if (++attempts > 1000) return Status::InvalidArgument("the secret's space is too small for references");
      continue;
    }
    double bits = 0;
    MNEMO_RETURN_IF_ERROR(SpanBitsBetween(m, text.substr(0, secret_begin) + other + text.substr(secret_end),
                                          secret_begin, secret_end, &bits));
    reference_bits.push_back(bits);
  }
  out->rank_exposure = RankExposure(out->canary_bits, reference_bits);
  out->extrapolated_exposure = ExtrapolatedExposure(out->canary_bits, reference_bits, space_bits);
  return Status::OK();
}

Status IsExtractable(const ScoredModel& m, const std::string& text, int k, bool* extractable) {
  return IsExtractableIds(m, m.model->tokenizer->Encode(text), k, 0, 0, extractable);
}

Status IsExtractableIds(const ScoredModel& m, const std::vector<int32_t>& ids, int k, double temperature,
                        uint64_t seed, bool* extractable) {
  if (static_cast<int>(ids.size()) <= k || k < 1) return Status::InvalidArgument("text must be longer than the prefix");
  std::vector<int32_t> prefix(ids.begin(), ids.begin() + k), out;
  GenerateOptions options;
  options.max_tokens = static_cast<int64_t>(ids.size()) - k;
  options.sampling.temperature = temperature;
  options.seed = seed;
  options.memory = m.layer_memory;
  options.memory_topk = m.layer_topk;
  options.memory_write = false;
  std::unique_ptr<KnnLm> knn;
  if (m.memory != nullptr && m.knn.enabled) {
    knn = std::make_unique<KnnLm>(*m.memory);
    options.hook = [&](const torch::Tensor& key, const torch::Tensor& lp, torch::Tensor* dist) {
      return knn->Distribution(key, lp, m.knn, dist, nullptr);
    };
  }
  size_t matched = 0;
  bool diverged = false;
  MNEMO_RETURN_IF_ERROR(Generate(m.model->net, prefix, options, &out, [&](int32_t token, float) {
    if (token != ids[k + matched]) {
      diverged = true;
      return false;
    }
    ++matched;
    return true;
  }));
  *extractable = !diverged && matched == ids.size() - k;
  return Status::OK();
}

}  // namespace mnemo
