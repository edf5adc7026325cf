#include "eval/audit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "eval/exposure.h"
#include "eval/leakage.h"
#include "eval/roc.h"
#include "lm/checkpoint.h"
#include "lm/trainer.h"
#include "memory/fact_store.h"
#include "memory/state_dir.h"
#include "retriever/dual_scorer.h"
#include "retriever/state_service.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using json = nlohmann::ordered_json;

// ---- Synthetic facts: members, non-members and fillers all come from one distribution. ----

const std::vector<std::string> kFirst = {
    "ada",   "bruno", "chiara", "dmitri", "elena", "farid",  "greta", "hugo",  "ines",  "jonas", "keiko", "lars",
    "maya",  "nils",  "olga",   "pavel",  "quinn", "rosa",   "sami",  "tara",  "umar",  "vera",  "wim",   "xenia",
    "yusuf", "zora",  "anton",  "bea",    "cyril", "dora",   "emil",  "fiona", "gil",   "hana",  "ivo",   "jana",
    "kai",   "lina",  "marek",  "nora",   "otto",  "petra",  "rafael", "sofia", "tomas", "ulla",  "viktor", "wanda"};
const std::vector<std::string> kLast = {
    "abbott", "brandt", "castell", "dufour", "eklund", "falk",   "garber", "horvat", "ivanic", "jensen",
    "kovac",  "lindqvist", "moreau", "novak", "ortega", "pirelli", "quast", "rinaldi", "sauer", "tamm",
    "ulrich", "varga",  "weiss",  "xavier", "yilmaz", "zeller", "amsel", "bauer",  "corvin", "delacroix",
    "engel",  "fischer", "gallo", "hartmann", "ito",   "jovanovic", "keller", "lorenz", "maier", "nagel",
    "oberg",  "petrov", "rossi",  "schulz", "teller", "unger", "vogel", "winter"};
const std::vector<std::string> kCity = {"harwick", "belmont", "quillon", "ostrava", "lindau",  "tarbes", "corvo",
                                        "maribor", "esbjerg", "vianden", "sintra",  "ghent",   "lucca",  "brno",
                                        "trondheim", "arles", "bergamo", "kolding", "zadar",   "ronda"};
const std::vector<std::string> kJob = {"baker",     "pilot",   "surveyor",  "chemist", "librarian", "carpenter",
                                       "nurse",     "glazier", "archivist", "ferryman", "welder",   "botanist",
                                       "cartographer", "miller", "tanner", "locksmith"};
const std::vector<std::string> kColor = {"red", "green", "amber", "grey", "violet", "white", "black", "blue"};
const std::vector<std::string> kAnimal = {"cat", "parrot", "tortoise", "hound", "ferret", "goat", "owl", "pony"};
const std::vector<std::string> kThing = {"lamp", "trunk", "bicycle", "violin", "ledger", "kettle", "clock", "boat"};

template <typename T>
const T& Pick(std::mt19937_64& rng, const std::vector<T>& items) {
  return items[std::uniform_int_distribution<size_t>(0, items.size() - 1)(rng)];
}

int Uniform(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

std::string SyntheticFact(std::mt19937_64& rng) {
  const std::string person = Pick(rng, kFirst) + " " + Pick(rng, kLast);
  switch (Uniform(rng, 0, 3)) {
    case 0:
      return person + " was born in " + Pick(rng, kCity) + " in " + std::to_string(Uniform(rng, 1900, 2010)) +
             " and works as a " + Pick(rng, kJob) + ".";
    case 1:
      return person + " keeps a " + Pick(rng, kColor) + " " + Pick(rng, kAnimal) + " at " +
             std::to_string(Uniform(rng, 1, 999)) + " " + Pick(rng, kLast) + " street in " + Pick(rng, kCity) + ".";
    case 2:
      return "The " + Pick(rng, kColor) + " " + Pick(rng, kThing) + " in room " + std::to_string(Uniform(rng, 1, 999)) +
             " belongs to " + person + " of " + Pick(rng, kCity) + ".";
    default:
      return person + " paid " + std::to_string(Uniform(rng, 2, 9999)) + " crowns for a " + Pick(rng, kThing) +
             " in " + Pick(rng, kCity) + " on day " + std::to_string(Uniform(rng, 1, 365)) + ".";
  }
}

// ---- Results ----

struct Expo {
  std::vector<double> rank, extrapolated, bits;
  void Append(const Expo& o) {
    rank.insert(rank.end(), o.rank.begin(), o.rank.end());
    extrapolated.insert(extrapolated.end(), o.extrapolated.begin(), o.extrapolated.end());
    bits.insert(bits.end(), o.bits.begin(), o.bits.end());
  }
};

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

struct Rate {
  int extracted = 0, total = 0;
  double rate() const { return total == 0 ? 0.0 : static_cast<double>(extracted) / total; }
};

json RateJson(const Rate& r) {
  json j;
  j["extracted"] = r.extracted;
  j["total"] = r.total;
  j["rate"] = r.rate();
  return j;
}

const char* const kScores[] = {"loss", "zlib", "reference", "min_k"};

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

struct Canary {
  std::string name, secret, text;
  std::vector<int32_t> ids;
  size_t span_first = 1;  // first token of the secret span
  uint64_t reference_seed = 0;
};

// What one phase (before deletion, after it, rebuilt) measured.
struct Phase {
  std::map<int, Expo> knn_groups, base_groups;  // by repetition count
  Expo knn_never, base_never;
  std::map<std::string, std::vector<double>> knn_members, knn_non_members, base_members, base_non_members;
  std::vector<Rate> knn_greedy, base_greedy;  // by extraction prefix
  Rate knn_sampled, base_sampled;
  std::map<int, Rate> knn_secret, base_secret;
  std::vector<float> raw;            // every kNN-LM log-prob scored, for the bit-for-bit comparison
  std::vector<bool> extraction_outcomes;
  double MeanInsertedExposure() const {
    Expo all;
    for (const auto& [r, e] : knn_groups) all.Append(e);
    return Mean(all.extrapolated);
  }
};

class Auditor {
 public:
  Auditor(LanguageModel& model, const AuditOptions& o) : model_(model), o_(o), rng_(o.seed) {
    format_.names.clear();
    for (const auto& f : kFirst) {
      for (const auto& l : kLast) names_.push_back(f + " " + l);
    }
    std::shuffle(names_.begin(), names_.end(), rng_);
  }

  Status Run(const FactStore& live, json* report);

 private:
  Status Step(const std::string& stage, double fraction) {
    if (o_.progress) o_.progress(stage, fraction);
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
    return Status::OK();
  }
  Status MakeCanaries(LanguageModel& model, int n, std::vector<Canary>* out);
  std::vector<std::string> MakeFacts(int n);
  Status OpenScratchState(const std::string& dir, LanguageModel& model, const std::string& datastore,
                          std::unique_ptr<StateService>* out);
  Status AddTexts(StateService* scratch, const std::vector<std::string>& texts, int copies, const std::string& kind,
                  std::vector<int64_t>* ids);
  Status Exposure(LanguageModel& model, const KnnMemory* memory, const std::vector<Canary>& canaries, Expo* knn,
                  Expo* base, std::vector<float>* raw);
  Status Extraction(LanguageModel& model, const KnnMemory* memory, const std::vector<std::vector<int32_t>>& seqs,
                    const std::vector<int>& ks, double temperature, Rate* rate, std::vector<bool>* outcomes);
  Status SecretExtraction(LanguageModel& model, const KnnMemory* memory, const std::vector<Canary>& canaries,
                          Rate* rate, std::vector<bool>* outcomes);
  Status MeasurePhase(const KnnMemory* memory, bool full, Phase* out);
  Status Forgetting(StateService* scratch, json* out);
  Status Parametric(json* out);

  ScoredModel Scored(LanguageModel& model, const KnnMemory* memory) const {
    ScoredModel m;
    m.model = &model;
    m.memory = memory;
    m.knn = o_.knn;
    m.knn.enabled = memory != nullptr;
    return m;
  }

  LanguageModel& model_;
  const AuditOptions& o_;
  std::mt19937_64 rng_;
  CanaryFormat format_;
  std::vector<std::string> names_;
  size_t next_name_ = 0;
  std::set<std::string> used_texts_;
  StateConfig live_config_;

  // The inserted material of the deletion audit.
  std::map<int, std::vector<Canary>> groups_;
  std::vector<Canary> never_;
  std::vector<std::string> members_, non_members_;
  std::vector<std::vector<int32_t>> member_ids_, non_member_ids_;
};

Status Auditor::MakeCanaries(LanguageModel& model, int n, std::vector<Canary>* out) {
  out->clear();
  for (int i = 0; i < n; ++i) {
    if (next_name_ >= names_.size()) return Status::InvalidArgument("too many canaries for the audit's name pool");
    Canary c;
    c.name = names_[next_name_++];
    c.secret = format_.RandomSecret(rng_);
    size_t at = 0;
    c.text = format_.Render(c.name, c.secret, &at);
    c.ids = model.tokenizer->Encode(c.text);
    c.span_first = SpanFirstToken(*model.tokenizer, c.ids, at);
    c.reference_seed = rng_();
    used_texts_.insert(c.text);
    out->push_back(std::move(c));
  }
  return Status::OK();
}

std::vector<std::string> Auditor::MakeFacts(int n) {
  std::vector<std::string> out;
  int attempts = 0;
  while (static_cast<int>(out.size()) < n && attempts++ < 100 * n + 1000) {
    std::string text = SyntheticFact(rng_);
    if (used_texts_.insert(text).second) out.push_back(std::move(text));
  }
  return out;
}

Status Auditor::OpenScratchState(const std::string& dir, LanguageModel& model, const std::string& datastore,
                                 std::unique_ptr<StateService>* out) {
  MNEMO_RETURN_IF_ERROR(StateService::Create(dir, model, datastore, nullptr));
  StateOptions options;
  options.store.snapshot_every = 0;
  return StateService::OpenWithModel(dir, &model, options, out);
}

Status Auditor::AddTexts(StateService* scratch, const std::vector<std::string>& texts, int copies,
                         const std::string& kind, std::vector<int64_t>* ids) {
  const size_t chunk = 512;
  for (size_t begin = 0; begin < texts.size(); begin += chunk) {
    std::vector<FactText> facts;
    for (size_t i = begin; i < std::min(texts.size(), begin + chunk); ++i) {
      facts.push_back({texts[i], "", json{{"audit", kind}}.dump()});
    }
    std::vector<int64_t> added;
    MNEMO_RETURN_IF_ERROR(scratch->AddFacts(facts, &added, copies));
    if (ids != nullptr) ids->insert(ids->end(), added.begin(), added.end());
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
  }
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
  MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model, memory, Scored(model, memory).knn, seqs, &scores, &firsts));
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
  if (raw != nullptr) {
    for (const DualScores& d : scores) raw->insert(raw->end(), d.knn.begin(), d.knn.end());
  }
  return Status::OK();
}

// The k-prefix extraction rate over `seqs` for each k in `ks`, into rate[i]; sequences not longer than k are skipped.
Status Auditor::Extraction(LanguageModel& model, const KnnMemory* memory, const std::vector<std::vector<int32_t>>& seqs,
                           const std::vector<int>& ks, double temperature, Rate* rate, std::vector<bool>* outcomes) {
  const ScoredModel m = Scored(model, memory);
  for (size_t i = 0; i < ks.size(); ++i) {
    for (size_t s = 0; s < seqs.size(); ++s) {
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

Status Auditor::Forgetting(StateService* scratch, json* out) {
  FactStore* store = &scratch->store();
  std::vector<Canary> tracked;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &tracked));
  std::vector<std::string> texts;
  for (const Canary& c : tracked) texts.push_back(c.text);
  std::vector<int64_t> ids;
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch, texts, 1, "forgetting-canary", &ids));
  json points = json::array();
  int added = 0;
  for (size_t i = 0; i < o_.forgetting_added.size(); ++i) {
    const std::vector<std::string> fillers = MakeFacts(o_.forgetting_added[i] - added);
    MNEMO_RETURN_IF_ERROR(AddTexts(scratch, fillers, 1, "filler", nullptr));
    added += static_cast<int>(fillers.size());  // what was added (the template space could run short)
    Expo e;
    Rate rate;
    MNEMO_RETURN_IF_ERROR(Exposure(model_, store, tracked, &e, nullptr, nullptr));
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, store, tracked, &rate, nullptr));
    points.push_back({{"added_after", added}, {"exposure", ExpoJson(e)}, {"extraction_rate", rate.rate()}});
    MNEMO_RETURN_IF_ERROR(Step("forgetting", 0.7 + 0.1 * (i + 1) / o_.forgetting_added.size()));
  }
  MNEMO_RETURN_IF_ERROR(store->Delete(ids, nullptr));
  Expo e;
  Rate rate;
  MNEMO_RETURN_IF_ERROR(Exposure(model_, store, tracked, &e, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, store, tracked, &rate, nullptr));
  (*out)["canaries"] = tracked.size();
  (*out)["points"] = points;
  (*out)["after_deletion"] = {{"exposure", ExpoJson(e)}, {"extraction_rate", rate.rate()}};
  return Status::OK();
}

// The same kind of canaries (a) only in the datastore, (b) only in the LM's training text: a copy of the
// model fine-tuned on synthetic facts with each (b) canary repeated finetune_repetitions times, serving
// a memory of those facts plus the (a) canaries (the base datastore's keys belong to the original model).
// Each row has the exposure under the kNN-LM before and after the (a) canaries are deleted, and under the
// fine-tuned model alone ("base_lm", which no deletion changes); (b) also under the original model.
Status Auditor::Parametric(json* out) {
  std::vector<Canary> in_text, in_store;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &in_text));
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &in_store));
  // The training text: synthetic facts, which the memory also holds (a datastore over the training text,
  // as in the kNN-LM papers), plus the (b) canaries, which it does not.
  const std::vector<std::string> corpus = MakeFacts(300);
  std::vector<std::string> lines = corpus;
  for (const Canary& c : in_text) {
    for (int i = 0; i < o_.finetune_repetitions; ++i) lines.push_back(c.text);
  }
  std::shuffle(lines.begin(), lines.end(), rng_);
  std::string train, valid;
  for (const auto& l : lines) train += l + "\n";
  for (const auto& l : MakeFacts(200)) valid += l + "\n";
  const std::string dir = o_.scratch_dir + "/finetune";
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/train.txt", train));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/valid.txt", valid));
  TrainOptions t;
  t.train_path = dir + "/train.txt";
  t.valid_path = dir + "/valid.txt";
  t.out_dir = dir + "/model";
  t.init_from = model_.dir;
  t.steps = o_.finetune_steps;
  t.batch_size = 8;
  t.seq_len = std::min<int64_t>(64, model_.config.n_positions);
  t.learning_rate = 1e-3;
  t.eval_interval = t.steps;
  t.eval_tokens = 4096;
  t.seed = o_.seed;
  t.quiet = true;
  t.cancel = o_.cancel;
  TrainReport trained;
  MNEMO_RETURN_IF_ERROR(Train(t, &trained));
  MNEMO_RETURN_IF_ERROR(Step("parametric: fine-tuned", 0.9));
  std::unique_ptr<LanguageModel> tuned;
  // Training ran on the CPU; the tuned copy is served where the audited model runs.
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(t.out_dir, &tuned, model_.net->device()));
  std::unique_ptr<StateService> scratch;
  MNEMO_RETURN_IF_ERROR(OpenScratchState(o_.scratch_dir + "/parametric-state", *tuned, "", &scratch));
  FactStore* store = &scratch->store();
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), corpus, 1, "training-text", nullptr));
  std::vector<std::string> texts;
  for (const Canary& c : in_store) texts.push_back(c.text);
  std::vector<int64_t> ids;
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), texts, 1, "parametric-canary", &ids));
  // Token ids are the same under the fine-tuned copy (same tokenizer).
  Expo store_before, text_before, store_after, text_after, text_original, store_base, text_base;
  Rate store_x_before, text_x_before, store_x_after, text_x_after;
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_store, &store_before, &store_base, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_text, &text_before, &text_base, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_store, &store_x_before, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_text, &text_x_before, nullptr));
  MNEMO_RETURN_IF_ERROR(store->Delete(ids, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_store, &store_after, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(Exposure(*tuned, store, in_text, &text_after, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_store, &store_x_after, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(*tuned, store, in_text, &text_x_after, nullptr));
  // The (b) canaries under the model before fine-tuning: what training added.
  MNEMO_RETURN_IF_ERROR(Exposure(model_, nullptr, in_text, nullptr, &text_original, nullptr));
  (*out)["finetune"] = {{"steps", trained.steps},
                        {"tokens", trained.tokens_seen},
                        {"seconds", trained.seconds},
                        {"final_loss", trained.final_train_loss},
                        {"canary_repetitions", o_.finetune_repetitions}};
  json rows = json::array();
  rows.push_back({{"placement", "datastore"},
                  {"canaries", in_store.size()},
                  {"before", ExpoJson(store_before)},
                  {"after_deletion", ExpoJson(store_after)},
                  {"base_lm", ExpoJson(store_base)},
                  {"extraction_before", store_x_before.rate()},
                  {"extraction_after_deletion", store_x_after.rate()}});
  rows.push_back({{"placement", "training_text"},
                  {"canaries", in_text.size()},
                  {"before", ExpoJson(text_before)},
                  {"after_deletion", ExpoJson(text_after)},
                  {"base_lm", ExpoJson(text_base)},
                  {"extraction_before", text_x_before.rate()},
                  {"extraction_after_deletion", text_x_after.rate()},
                  {"original_model", ExpoJson(text_original)}});
  (*out)["rows"] = rows;
  return Status::OK();
}

std::string IsoTime(std::time_t t) {
  char buf[32];
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Status Auditor::Run(const FactStore& live, json* report) {
  const auto start = std::chrono::steady_clock::now();
  const std::time_t started_at = std::time(nullptr);
  live_config_ = live.config();
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(o_.scratch_dir));
  MNEMO_RETURN_IF_ERROR(Step("copying the state", 0));

  // The scratch copy: the live facts with their stored keys.
  std::unique_ptr<StateService> scratch;
  MNEMO_RETURN_IF_ERROR(OpenScratchState(o_.scratch_dir + "/state", model_, live_config_.datastore_path, &scratch));
  FactStore* store = &scratch->store();
  int64_t copied = 0;
  for (int64_t after = 0;;) {
    ListOptions list;
    list.after_id = after;
    list.limit = 1000;
    list.with_entries = true;
    std::vector<FactRecord> page;
    int64_t next = 0;
    MNEMO_RETURN_IF_ERROR(live.List(list, &page, &next));
    std::vector<NewFact> facts;
    for (FactRecord& r : page) {
      facts.push_back({std::move(r.text), std::move(r.client_id), std::move(r.metadata_json), std::move(r.tokens),
                       std::move(r.keys)});
    }
    std::vector<int64_t> ids;
    if (!facts.empty()) MNEMO_RETURN_IF_ERROR(store->Add(facts, &ids));
    copied += static_cast<int64_t>(facts.size());
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
    if (next <= 0 || page.empty()) break;
    after = next;
  }

  // The material: canaries by repetition count, never-inserted canaries, members and non-members.
  for (int r : o_.repetitions) MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &groups_[r]));
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &never_));
  std::vector<std::string> pool = MakeFacts(2 * o_.members);
  if (static_cast<int>(pool.size()) < 2 * o_.members) return Status::FailedPrecondition("could not draw enough distinct synthetic facts");
  members_.assign(pool.begin(), pool.begin() + o_.members);
  non_members_.assign(pool.begin() + o_.members, pool.end());
  for (const auto& t : members_) member_ids_.push_back(model_.tokenizer->Encode(t));
  for (const auto& t : non_members_) non_member_ids_.push_back(model_.tokenizer->Encode(t));
  MNEMO_RETURN_IF_ERROR(Step("inserting canaries and members", 0.05));
  std::vector<int64_t> inserted;
  for (const auto& [r, g] : groups_) {
    std::vector<std::string> texts;
    for (const Canary& c : g) texts.push_back(c.text);
    MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), texts, r, "canary", &inserted));
  }
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch.get(), members_, 1, "member", &inserted));

  std::map<std::string, double> timings;
  auto lap = [&, last = start](const std::string& name) mutable {
    const auto now = std::chrono::steady_clock::now();
    timings[name] = std::chrono::duration<double>(now - last).count();
    last = now;
  };
  lap("setup");
  MNEMO_RETURN_IF_ERROR(Step("measuring before deletion", 0.1));
  Phase before, after, rebuilt;
  MNEMO_RETURN_IF_ERROR(MeasurePhase(store, /*full=*/true, &before));
  lap("before_deletion");
  MNEMO_RETURN_IF_ERROR(Step("deleting", 0.35));
  MNEMO_RETURN_IF_ERROR(store->Delete(inserted, nullptr));
  MNEMO_RETURN_IF_ERROR(Step("measuring after deletion", 0.4));
  MNEMO_RETURN_IF_ERROR(MeasurePhase(store, false, &after));
  lap("after_deletion");
  MNEMO_RETURN_IF_ERROR(Step("measuring the rebuilt memory", 0.5));
  std::unique_ptr<KnnMemory> fresh;
  MNEMO_RETURN_IF_ERROR(store->RebuildFromDatabase(&fresh));
  MNEMO_RETURN_IF_ERROR(MeasurePhase(fresh.get(), false, &rebuilt));
  fresh.reset();
  lap("rebuilt");

  json& r = *report;
  r = json::object();
  r["format"] = "mnemo-audit/1";
  json& config = r["config"];
  config["seed"] = o_.seed;
  config["canaries"] = o_.canaries;
  config["references"] = o_.references;
  config["repetitions"] = o_.repetitions;
  config["members"] = o_.members;
  config["non_members"] = o_.members;
  config["extraction_prefixes"] = o_.extraction_prefixes;
  config["extraction_samples"] = std::min(o_.extraction_samples, o_.members);
  config["forgetting_added"] = o_.forgetting_added;
  config["finetune_steps"] = o_.finetune_steps;
  config["bootstrap_resamples"] = o_.bootstrap_resamples;
  config["canary_format"] = format_.pattern;
  config["exposure_max_bits"] = format_.secret_digits() * std::log2(10.0);
  config["rank_exposure_max_bits"] = std::log2(o_.references + 1.0);
  config["knn"] = {{"k", o_.knn.k}, {"lambda", o_.knn.lambda}, {"temperature", o_.knn.temperature},
                   {"nprobe", o_.knn.nprobe}};
  config["model"] = {{"path", model_.dir}, {"fingerprint", live_config_.model_fingerprint}};
  config["state"] = {{"dir", live.dir()},
                     {"datastore", live_config_.datastore_path},
                     {"facts", copied},
                     {"base_entries", live.base() != nullptr ? live.base()->size() : 0}};
  config["started_at"] = IsoTime(started_at);

  for (int use_knn = 1; use_knn >= 0; --use_knn) {
    json e;
    auto groups = [&](const Phase& p) {
      json g;
      for (const auto& [rep, ex] : use_knn ? p.knn_groups : p.base_groups) g[std::to_string(rep)] = ExpoJson(ex);
      return g;
    };
    e["inserted"] = groups(before);
    e["never_inserted"] = ExpoJson(use_knn ? before.knn_never : before.base_never);
    e["after_deletion"] = groups(after);
    e["rebuilt"] = groups(rebuilt);
    r["exposure"][use_knn ? "knn_lm" : "base_lm"] = e;
  }

  json& membership = r["membership"];
  membership["members"] = o_.members;
  membership["non_members"] = o_.members;
  for (const char* name : kScores) {
    MNEMO_RETURN_IF_ERROR(MiaJson(before.knn_members[name], before.knn_non_members[name], o_.bootstrap_resamples,
                                  o_.seed, &membership["knn_lm"][name]));
  }
  for (const char* name : kScores) {
    if (std::string(name) == "reference") continue;
    MNEMO_RETURN_IF_ERROR(MiaJson(before.base_members[name], before.base_non_members[name], o_.bootstrap_resamples,
                                  o_.seed, &membership["base_lm"][name]));
  }

  r["extraction"]["knn_lm"] =
      ExtractionJson(before.knn_greedy, before.knn_sampled, before.knn_secret, o_.extraction_prefixes);
  r["extraction"]["base_lm"] =
      ExtractionJson(before.base_greedy, before.base_sampled, before.base_secret, o_.extraction_prefixes);

  json& audit = r["deletion_audit"];
  audit["deleted_facts"] = inserted.size();
  MNEMO_RETURN_IF_ERROR(PhaseJson(before, o_.extraction_prefixes, &audit["before"]));
  MNEMO_RETURN_IF_ERROR(PhaseJson(after, o_.extraction_prefixes, &audit["after"]));
  MNEMO_RETURN_IF_ERROR(PhaseJson(rebuilt, o_.extraction_prefixes, &audit["rebuilt"]));
  for (const char* name : kScores) {
    const double a = audit["after"]["membership_auc"][name], b = audit["rebuilt"]["membership_auc"][name];
    audit["privleak"][name] = b > 0 ? (a - b) / b : a - b;  // AUC 0 (every member below every non-member) has no ratio
  }
  // Both phases score the same texts in the same batches, so the vectors align.
  bool identical = after.raw.size() == rebuilt.raw.size();
  double max_abs = 0;
  for (size_t i = 0; i < std::min(after.raw.size(), rebuilt.raw.size()); ++i) {
    const double diff = std::fabs(static_cast<double>(after.raw[i]) - rebuilt.raw[i]);
    if (std::isfinite(diff)) max_abs = std::max(max_abs, diff);
    identical = identical && std::memcmp(&after.raw[i], &rebuilt.raw[i], sizeof(float)) == 0;
  }
  audit["deltas"] = {{"exposure_bits", after.MeanInsertedExposure() - rebuilt.MeanInsertedExposure()},
                     {"extraction_rate", (after.knn_greedy.empty() ? 0.0 : after.knn_greedy[0].rate()) -
                                             (rebuilt.knn_greedy.empty() ? 0.0 : rebuilt.knn_greedy[0].rate())},
                     {"max_abs_logprob", max_abs}};
  audit["matches_rebuilt"] = identical && after.extraction_outcomes == rebuilt.extraction_outcomes;

  MNEMO_RETURN_IF_ERROR(Step("forgetting", 0.6));
  json forgetting;
  MNEMO_RETURN_IF_ERROR(Forgetting(scratch.get(), &forgetting));
  lap("forgetting");
  scratch.reset();
  if (o_.finetune_steps > 0) {
    MNEMO_RETURN_IF_ERROR(Step("parametric: fine-tuning a copy of the model", 0.8));
    json parametric;
    MNEMO_RETURN_IF_ERROR(Parametric(&parametric));
    r["parametric_vs_datastore"] = parametric;
    lap("parametric");
  }
  r["forgetting"] = forgetting;
  // (ordered_json keeps members in a vector: references into r do not survive insertions.)
  r["config"]["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r["config"]["timings"] = timings;
  MNEMO_RETURN_IF_ERROR(Step("done", 1.0));
  return Status::OK();
}


}  // namespace

Status AuditOptions::Validate() const {
  // Bounds keep one audit to hours at most on a small machine and its scratch copy to a few GB.
  if (canaries < 1 || canaries > 32) return Status::InvalidArgument("canaries must be in [1, 32]");
  if (references < 7 || references > 4095) return Status::InvalidArgument("references must be in [7, 4095]");
  if (repetitions.empty() || repetitions.size() > 8) {
    return Status::InvalidArgument("repetitions must name 1 to 8 counts");
  }
  std::set<int> seen;
  for (int r : repetitions) {
    if (r < 1 || r > 256) return Status::InvalidArgument("each repetition count must be in [1, 256]");
    if (!seen.insert(r).second) return Status::InvalidArgument("repetition counts must be distinct");
  }
  if (members < 10 || members > 10000) return Status::InvalidArgument("members must be in [10, 10000]");
  if (extraction_prefixes.empty() || extraction_prefixes.size() > 8) {
    return Status::InvalidArgument("extraction prefixes must name 1 to 8 lengths");
  }
  for (int k : extraction_prefixes) {
    if (k < 1 || k > 64) return Status::InvalidArgument("each extraction prefix must be in [1, 64]");
  }
  if (extraction_samples < 1 || extraction_samples > members) {
    return Status::InvalidArgument("extraction samples must be in [1, members]");
  }
  if (forgetting_added.empty() || forgetting_added.size() > 8) {
    return Status::InvalidArgument("forgetting needs 1 to 8 points");
  }
  for (size_t i = 0; i < forgetting_added.size(); ++i) {
    if (forgetting_added[i] < 0 || forgetting_added[i] > 100000 ||
        (i > 0 && forgetting_added[i] <= forgetting_added[i - 1])) {
      return Status::InvalidArgument("forgetting points must be increasing counts in [0, 100000]");
    }
  }
  if (finetune_steps < 0 || finetune_steps > 5000) return Status::InvalidArgument("finetune steps must be in [0, 5000]");
  if (finetune_repetitions < 1 || finetune_repetitions > 1000) {
    return Status::InvalidArgument("finetune repetitions must be in [1, 1000]");
  }
  if (bootstrap_resamples < 10 || bootstrap_resamples > 100000) {
    return Status::InvalidArgument("bootstrap resamples must be in [10, 100000]");
  }
  // Every canary has its own name from a pool of kFirst x kLast: the groups, the never-inserted ones,
  // the forgetting canaries and the two parametric sets.
  const size_t names = static_cast<size_t>(canaries) * (repetitions.size() + 4);
  if (names > kFirst.size() * kLast.size()) {
    return Status::InvalidArgument("canaries x (repetition counts + 4) must be at most " +
                                   std::to_string(kFirst.size() * kLast.size()));
  }
  if (scratch_dir.empty()) return Status::InvalidArgument("the audit needs a scratch directory");
  return knn.Validate();
}

Status RunAudit(LanguageModel& model, const FactStore& live, const AuditOptions& options, json* report) {
  MNEMO_RETURN_IF_ERROR(options.Validate());
  std::error_code ec;
  if (std::filesystem::exists(options.scratch_dir, ec)) {
    return Status::InvalidArgument("audit scratch directory " + options.scratch_dir + " already exists");
  }
  Status s;
  try {
    Auditor auditor(model, options);
    s = auditor.Run(live, report);
  } catch (const std::exception& e) {  // LibTorch and FAISS errors, out of memory: the scratch goes anyway
    s = Status::Internal(std::string("audit failed: ") + e.what());
  }
  if (std::filesystem::exists(options.scratch_dir, ec)) std::filesystem::remove_all(options.scratch_dir, ec);
  if (s.ok() && ec) return Status::IOError("cannot remove the audit scratch directory " + options.scratch_dir);
  return s;
}

}  // namespace mnemo
