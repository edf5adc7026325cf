// Internals of the audit (audit.h), shared by its files; not a public header.
//   audit_data.cc       the synthetic material: facts, canaries, scratch states and adding texts to them
//   audit_measures.cc   exposure, extraction and membership measures of one memory, and their JSON
//   audit_forgetting.cc exposure as more facts are added after the canaries
//   audit_memory.cc     the memorizing layer's memories: FIFO forgetting and deletion
//   audit_datastore.cc  documents deleted from a base datastore built from documents
//   audit_parametric.cc datastore vs training-text canaries (a fine-tuned copy of the model)
//   audit.cc            the run: scratch copy, phases before/after deletion and rebuilt, the report
#pragma once

#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "eval/audit.h"
#include "eval/leakage.h"
#include "retriever/state_service.h"

namespace mnemo::audit_internal {

using json = nlohmann::ordered_json;

// Synthetic facts: members, non-members and fillers all come from one distribution (audit_data.cc).
std::string SyntheticFact(std::mt19937_64& rng);
// Every "first last" name the synthetic facts use, and how many there are.
std::vector<std::string> SyntheticNames();
size_t SyntheticNameCount();

// ---- Results (audit_measures.cc) ----

struct Expo {
  std::vector<double> rank, extrapolated, bits;
  void Append(const Expo& o) {
    rank.insert(rank.end(), o.rank.begin(), o.rank.end());
    extrapolated.insert(extrapolated.end(), o.extrapolated.begin(), o.extrapolated.end());
    bits.insert(bits.end(), o.bits.begin(), o.bits.end());
  }
};

double Mean(const std::vector<double>& v);
json ExpoJson(const Expo& e);

struct Rate {
  int extracted = 0, total = 0;
  double rate() const { return total == 0 ? 0.0 : static_cast<double>(extracted) / total; }
};

json RateJson(const Rate& r);

inline const char* const kScores[] = {"loss", "zlib", "reference", "min_k"};
double ScoreField(const MembershipScores& s, const std::string& name);
Status MiaJson(const std::vector<double>& members, const std::vector<double>& non_members, int resamples,
               uint64_t seed, json* out);

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

// One phase of a deletion compared with its gold standard (the memory section's deletions, the
// base-datastore documents): canary exposure and secret extraction, membership scores of the deleted
// members and of held-out texts, and every log-prob and extraction outcome for the bit-for-bit check.
struct DeletionMeasure {
  Expo exposure;
  Rate extraction;
  std::map<std::string, std::vector<double>> members, non_members;
  std::vector<float> raw;
  std::vector<bool> outcomes;
};

// Writes "before", "after", "rebuilt" ({"exposure", "extraction_rate", "membership_auc"}), "privleak",
// "max_abs_logprob" and "matches_rebuilt" into *out.
Status DeletionComparisonJson(const DeletionMeasure& before, const DeletionMeasure& after,
                              const DeletionMeasure& rebuilt, json* out);

// Whether two runs of log-probs are the same bits; *max_abs (may be null) gets the largest finite difference.
bool SameBits(const std::vector<float>& a, const std::vector<float>& b, double* max_abs);

Status PhaseJson(const Phase& p, const std::vector<int>& prefixes, json* out);
json ExtractionJson(const std::vector<Rate>& greedy, const Rate& sampled, const std::map<int, Rate>& secret,
                    const std::vector<int>& prefixes);

class Auditor {
 public:
  Auditor(LanguageModel& model, const AuditOptions& o) : model_(model), o_(o), rng_(o.seed) {
    format_.names.clear();
    names_ = SyntheticNames();
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
  // The memory section (audit_memory.cc); the scratch state's model has a memorizing layer.
  Status MemorySection(StateService* scratch, json* out);
  Status MemoryDeletion(StateService* scratch, int64_t capacity, json* out);
  // Reads `text` into each memory (its pairs computed once); *documents gets one id per memory.
  Status ReadIntoMemories(StateService* scratch, const std::vector<int64_t>& memories, const std::string& text,
                          const std::string& kind, std::vector<int64_t>* documents, int64_t* tokens);
  // Filler documents of synthetic facts read into `memories` (and, when `facts`, also stored as facts) until
  // *read reaches `target` tokens.
  Status ReadFillers(StateService* scratch, const std::vector<int64_t>& memories, bool facts, int64_t target,
                     int64_t* read);
  // The base-datastore documents section (audit_datastore.cc), in scratch_dir.
  Status DatastoreSection(const std::string& scratch_dir, json* out);
  Status Parametric(json* out);

  ScoredModel Scored(LanguageModel& model, const KnnMemory* memory) const {
    ScoredModel m;
    m.model = &model;
    m.memory = memory;
    m.knn = o_.knn;
    m.knn.enabled = memory != nullptr;
    m.layer_memory = layer_;
    return m;
  }

  LanguageModel& model_;
  const AuditOptions& o_;
  // The memorizing layer's memory the measures read (the memory section); null elsewhere. Exposure then
  // scores one sequence at a time and its "base" results are the model reading this memory.
  KvMemory* layer_ = nullptr;
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

}  // namespace mnemo::audit_internal
