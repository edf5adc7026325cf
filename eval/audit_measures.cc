// The audit's measures of one memory (exposure, extraction, membership) and their JSON.
#include "eval/audit_internal.h"

#include <algorithm>
#include <numeric>

#include "eval/exposure.h"
#include "eval/roc.h"
#include "retriever/dual_scorer.h"

namespace mnemo::audit_internal {

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

json ExpoJson(const Expo& e) {
  json j;
  j["count"] = e.rank.size();
  j["mean_rank"] = Mean(e.rank);
  j["mean_extrapolated"] = Mean(e.extrapolated);
  j["mean_bits"] = Mean(e.bits);
  j["rank"] = e.rank;
  j["extrapolated"] = e.extrapolated;
  return j;
}

json RateJson(const Rate& r) {
  json j;
  j["extracted"] = r.extracted;
  j["total"] = r.total;
  j["rate"] = r.rate();
  return j;
}

double ScoreField(const MembershipScores& s, const std::string& name) {
  if (name == "loss") return s.loss;
  if (name == "zlib") return s.zlib;
  if (name == "reference") return s.reference;
  return s.min_k;
}

Status MiaJson(const std::vector<double>& members, const std::vector<double>& non_members, int resamples,
               uint64_t seed, json* out) {
  MembershipSummary s;
  MNEMO_RETURN_IF_ERROR(SummarizeMembership(members, non_members, resamples, seed, &s));
  json& j = *out;
  j["auc"] = s.auc;
  j["auc_ci"] = {s.auc_ci.low, s.auc_ci.high};
  j["tpr_at_0.1pct_fpr"] = s.tpr_at_0_1pct_fpr;
  j["tpr_at_0.1pct_fpr_ci"] = {s.tpr_at_0_1pct_fpr_ci.low, s.tpr_at_0_1pct_fpr_ci.high};
  j["tpr_at_1pct_fpr"] = s.tpr_at_1pct_fpr;
  j["tpr_at_1pct_fpr_ci"] = {s.tpr_at_1pct_fpr_ci.low, s.tpr_at_1pct_fpr_ci.high};
  // At most 512 points, evenly through the curve, first and last kept.
  json roc = json::array();
  const size_t n = s.curve.size(), step = std::max<size_t>(1, (n + 510) / 511);
  for (size_t i = 0; i < n; i += step) roc.push_back({s.curve[i].fpr, s.curve[i].tpr});
  if ((n - 1) % step != 0) roc.push_back({s.curve.back().fpr, s.curve.back().tpr});
  j["roc"] = roc;
  return Status::OK();
}

// Each canary against its references (the same ones in every phase: seeded per canary). Only the secret
// span is scored; the shared prefix does not change the ranking.
Status Auditor::Exposure(LanguageModel& model, const KnnMemory* memory, const std::vector<Canary>& canaries,
                         Expo* knn, Expo* base, std::vector<float>* raw) {
  // A few canaries at a time bounds the memory of one scoring pass (each brings `references` texts).
  constexpr size_t kChunk = 8;
  if (canaries.size() > kChunk) {
    for (size_t begin = 0; begin < canaries.size(); begin += kChunk) {
      const std::vector<Canary> part(canaries.begin() + begin,
                                     canaries.begin() + std::min(canaries.size(), begin + kChunk));
      MNEMO_RETURN_IF_ERROR(Exposure(model, memory, part, knn, base, raw));
    }
    return Status::OK();
  }
  if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
  std::vector<std::vector<int32_t>> seqs;
  std::vector<size_t> firsts;
  for (const Canary& c : canaries) {
    seqs.push_back(c.ids);
    firsts.push_back(c.span_first);
    std::mt19937_64 rng(c.reference_seed);
    for (int r = 0; r < o_.references;) {
      const std::string other = format_.RandomSecret(rng);
      if (other == c.secret) continue;
      size_t at = 0;
      seqs.push_back(model.tokenizer->Encode(format_.Render(c.name, other, &at)));
      firsts.push_back(SpanFirstToken(*model.tokenizer, seqs.back(), at));
      ++r;
    }
  }
  std::vector<DualScores> scores;
  if (layer_ == nullptr) {
    MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model, memory, Scored(model, memory).knn, seqs, &scores, &firsts));
  } else {  // a memory of the memorizing layer: one sequence at a time (lm/scorer.h SpanRequest::memory)
    ScoreControls controls;
    controls.layer_memory = layer_;
    controls.cancel = o_.cancel;
    scores.resize(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      MNEMO_RETURN_IF_ERROR(ScoreBoth(model, memory, Scored(model, memory).knn, seqs[i], WindowOptions(), &scores[i],
                                      controls));
    }
  }
  const double max_bits = format_.secret_digits() * std::log2(10.0);
  auto bits_of = [&](size_t i, bool use_knn) {
    const std::vector<float>& lp = use_knn ? scores[i].knn : scores[i].lm;
    double nats = 0;
    for (size_t t = firsts[i]; t < seqs[i].size(); ++t) nats -= lp[t - 1];
    return nats / std::log(2.0);
  };
  const size_t per = static_cast<size_t>(o_.references) + 1;
  for (size_t c = 0; c < canaries.size(); ++c) {
    for (int use_knn = 0; use_knn < 2; ++use_knn) {
      Expo* e = use_knn ? knn : base;
      if (e == nullptr || (use_knn && memory == nullptr)) continue;
      std::vector<double> refs;
      for (size_t r = 1; r < per; ++r) refs.push_back(bits_of(c * per + r, use_knn));
      const double bits = bits_of(c * per, use_knn);
      e->bits.push_back(bits);
      e->rank.push_back(RankExposure(bits, refs));
      e->extrapolated.push_back(ExtrapolatedExposure(bits, refs, max_bits));
    }
  }
  if (raw != nullptr) {  // the kNN-LM's log-probs, or the model's reading a layer memory
    for (const DualScores& d : scores) {
      const std::vector<float>& lp = memory != nullptr ? d.knn : d.lm;
      raw->insert(raw->end(), lp.begin(), lp.end());
    }
  }
  return Status::OK();
}

// The k-prefix extraction rate over `seqs` for each k in `ks`, into rate[i]; sequences not longer than k are skipped.
Status Auditor::Extraction(LanguageModel& model, const KnnMemory* memory, const std::vector<std::vector<int32_t>>& seqs,
                           const std::vector<int>& ks, double temperature, Rate* rate, std::vector<bool>* outcomes) {
  const ScoredModel m = Scored(model, memory);
  for (size_t i = 0; i < ks.size(); ++i) {
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
      if (static_cast<int>(seqs[s].size()) <= ks[i]) continue;
      bool ok = false;
      MNEMO_RETURN_IF_ERROR(IsExtractableIds(m, seqs[s], ks[i], temperature, o_.seed + s, &ok));
      rate[i].total += 1;
      rate[i].extracted += ok ? 1 : 0;
      if (outcomes != nullptr) outcomes->push_back(ok);
    }
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
  }
  return Status::OK();
}

// Whether greedy decoding from a canary's prefix produces its secret.
Status Auditor::SecretExtraction(LanguageModel& model, const KnnMemory* memory, const std::vector<Canary>& canaries,
                                 Rate* rate, std::vector<bool>* outcomes) {
  const ScoredModel m = Scored(model, memory);
  for (const Canary& c : canaries) {
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
    bool ok = false;
    MNEMO_RETURN_IF_ERROR(IsExtractableIds(m, c.ids, static_cast<int>(c.span_first), 0, 0, &ok));
    rate->total += 1;
    rate->extracted += ok ? 1 : 0;
    if (outcomes != nullptr) outcomes->push_back(ok);
  }
  return Status::OK();
}

Status Auditor::MeasurePhase(const KnnMemory* memory, bool full, Phase* out) {
  // Exposure: every group and the never-inserted canaries in one scoring pass.
  std::vector<Canary> all;
  for (const auto& [r, g] : groups_) all.insert(all.end(), g.begin(), g.end());
  all.insert(all.end(), never_.begin(), never_.end());
  Expo knn, base;
  MNEMO_RETURN_IF_ERROR(Exposure(model_, memory, all, &knn, &base, &out->raw));
  size_t at = 0;
  auto take = [&](size_t n, Expo* k, Expo* b) {
    for (size_t i = at; i < at + n; ++i) {
      k->rank.push_back(knn.rank[i]), k->extrapolated.push_back(knn.extrapolated[i]), k->bits.push_back(knn.bits[i]);
      b->rank.push_back(base.rank[i]), b->extrapolated.push_back(base.extrapolated[i]), b->bits.push_back(base.bits[i]);
    }
    at += n;
  };
  for (const auto& [r, g] : groups_) take(g.size(), &out->knn_groups[r], &out->base_groups[r]);
  take(never_.size(), &out->knn_never, &out->base_never);

  // Membership: members and non-members in one pass.
  std::vector<std::vector<int32_t>> seqs = member_ids_;
  seqs.insert(seqs.end(), non_member_ids_.begin(), non_member_ids_.end());
  std::vector<DualScores> scores;
  MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model_, memory, Scored(model_, memory).knn, seqs, &scores));
  for (size_t i = 0; i < seqs.size(); ++i) {
    const bool member = i < member_ids_.size();
    const std::string& text = member ? members_[i] : non_members_[i - member_ids_.size()];
    const MembershipScores k = MembershipFromLogprobs(text, scores[i].knn, scores[i].lm);
    const MembershipScores b = MembershipFromLogprobs(text, scores[i].lm, scores[i].lm);
    for (const char* name : kScores) {
      (member ? out->knn_members : out->knn_non_members)[name].push_back(ScoreField(k, name));
      if (std::string(name) != "reference") {
        (member ? out->base_members : out->base_non_members)[name].push_back(ScoreField(b, name));
      }
    }
    out->raw.insert(out->raw.end(), scores[i].knn.begin(), scores[i].knn.end());
  }

  // Extraction of stored facts (the first extraction_samples members) and of canary secrets.
  const std::vector<std::vector<int32_t>> sample(
      member_ids_.begin(), member_ids_.begin() + std::min<size_t>(member_ids_.size(), o_.extraction_samples));
  out->knn_greedy.assign(o_.extraction_prefixes.size(), Rate());
  MNEMO_RETURN_IF_ERROR(Extraction(model_, memory, sample, o_.extraction_prefixes, 0, out->knn_greedy.data(),
                                   &out->extraction_outcomes));
  for (const auto& [r, g] : groups_) {
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, memory, g, &out->knn_secret[r], &out->extraction_outcomes));
  }
  if (!full) return Status::OK();
  // The base LM and sampling only before deletion: the base LM does not depend on the memory.
  out->base_greedy.assign(o_.extraction_prefixes.size(), Rate());
  MNEMO_RETURN_IF_ERROR(Extraction(model_, nullptr, sample, o_.extraction_prefixes, 0, out->base_greedy.data(), nullptr));
  const int k = o_.extraction_prefixes[o_.extraction_prefixes.size() / 2];
  MNEMO_RETURN_IF_ERROR(Extraction(model_, memory, sample, {k}, 1.0, &out->knn_sampled, nullptr));
  MNEMO_RETURN_IF_ERROR(Extraction(model_, nullptr, sample, {k}, 1.0, &out->base_sampled, nullptr));
  for (const auto& [r, g] : groups_) {
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, nullptr, g, &out->base_secret[r], nullptr));
  }
  return Status::OK();
}

Status PhaseJson(const Phase& p, const std::vector<int>& prefixes, json* out) {
  json& j = *out;
  json aucs;
  for (const char* name : kScores) {
    double auc = 0;
    MNEMO_RETURN_IF_ERROR(RocAuc(p.knn_members.at(name), p.knn_non_members.at(name), &auc));
    aucs[name] = auc;
  }
  j["membership_auc"] = aucs;
  j["exposure_mean_extrapolated"] = p.MeanInsertedExposure();
  j["extraction_rate"] = p.knn_greedy.empty() ? 0.0 : p.knn_greedy[0].rate();
  j["extraction_prefix"] = prefixes.empty() ? 0 : prefixes[0];
  Rate secrets;
  for (const auto& [r, rate] : p.knn_secret) secrets.extracted += rate.extracted, secrets.total += rate.total;
  j["secret_extraction_rate"] = secrets.rate();
  return Status::OK();
}

json ExtractionJson(const std::vector<Rate>& greedy, const Rate& sampled, const std::map<int, Rate>& secret,
                    const std::vector<int>& prefixes) {
  json j;
  json g = json::array();
  for (size_t i = 0; i < greedy.size(); ++i) {
    json r = RateJson(greedy[i]);
    r["k"] = prefixes[i];
    g.push_back(r);
  }
  j["greedy"] = g;
  json s = RateJson(sampled);
  s["k"] = prefixes[prefixes.size() / 2];
  s["temperature"] = 1.0;
  j["sampled"] = s;
  json c;
  for (const auto& [r, rate] : secret) c[std::to_string(r)] = RateJson(rate);
  j["canary_secret"] = c;
  return j;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b, double* max_abs) {
  bool same = a.size() == b.size();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isfinite(diff) && max_abs != nullptr) *max_abs = std::max(*max_abs, diff);
    same = same && std::memcmp(&a[i], &b[i], sizeof(float)) == 0;
  }
  return same;
}

Status DeletionComparisonJson(const DeletionMeasure& before, const DeletionMeasure& after,
                              const DeletionMeasure& rebuilt, json* out) {
  json& r = *out;
  for (const auto& [name, m] : {std::pair<const char*, const DeletionMeasure*>{"before", &before},
                                {"after", &after},
                                {"rebuilt", &rebuilt}}) {
    json j = {{"exposure", ExpoJson(m->exposure)}, {"extraction_rate", m->extraction.rate()}};
    for (const char* score : kScores) {
      double auc = 0;
      MNEMO_RETURN_IF_ERROR(RocAuc(m->members.at(score), m->non_members.at(score), &auc));
      j["membership_auc"][score] = auc;
    }
    r[name] = j;
  }
  for (const char* score : kScores) {
    const double a = r["after"]["membership_auc"][score], b = r["rebuilt"]["membership_auc"][score];
    r["privleak"][score] = b > 0 ? (a - b) / b : a - b;
  }
  double max_abs = 0;
  const bool same = SameBits(after.raw, rebuilt.raw, &max_abs);
  r["max_abs_logprob"] = max_abs;
  r["matches_rebuilt"] = same && after.outcomes == rebuilt.outcomes;
  return Status::OK();
}

}  // namespace mnemo::audit_internal
