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

#include "eval/audit_internal.h"
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

using audit_internal::json;

namespace {

std::string IsoTime(std::time_t t) {
  char buf[32];
  std::tm tm;
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

namespace audit_internal {

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
  config["memory_capacity"] = o_.memory_capacity;
  config["datastore_documents"] = o_.datastore_documents;
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
                     {"base_entries", live.base_entries()}};
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
  json memory;
  if (!model_.config.has_memory()) {
    memory = {{"measured", false}, {"reason", "the model has no memorizing layer"}};
  } else if (o_.memory_capacity == 0) {
    memory = {{"measured", false}, {"reason", "left out (memory capacity 0)"}};
  } else {
    MNEMO_RETURN_IF_ERROR(Step("memory: forgetting", 0.7));
    MNEMO_RETURN_IF_ERROR(MemorySection(scratch.get(), &memory));
    lap("memory");
  }
  scratch.reset();
  json datastore_documents;
  if (o_.datastore_documents == 0) {
    datastore_documents = {{"measured", false}, {"reason", "left out (datastore documents 0)"}};
  } else {
    MNEMO_RETURN_IF_ERROR(Step("datastore documents: building", 0.76));
    MNEMO_RETURN_IF_ERROR(DatastoreSection(o_.scratch_dir, &datastore_documents));
    lap("datastore_documents");
  }
  if (o_.finetune_steps > 0) {
    MNEMO_RETURN_IF_ERROR(Step("parametric: fine-tuning a copy of the model", 0.8));
    json parametric;
    MNEMO_RETURN_IF_ERROR(Parametric(&parametric));
    r["parametric_vs_datastore"] = parametric;
    lap("parametric");
  }
  r["forgetting"] = forgetting;
  r["memory"] = memory;
  r["datastore_documents"] = datastore_documents;
  // (ordered_json keeps members in a vector: references into r do not survive insertions.)
  r["config"]["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r["config"]["timings"] = timings;
  MNEMO_RETURN_IF_ERROR(Step("done", 1.0));
  return Status::OK();
}

}  // namespace audit_internal

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
  if (memory_capacity != 0 && (memory_capacity < 64 || memory_capacity > 65536)) {
    return Status::InvalidArgument("memory capacity must be 0 (no memory section) or in [64, 65536] tokens");
  }
  if (datastore_documents < 0 || datastore_documents > 4096) {
    return Status::InvalidArgument("datastore documents must be in [0, 4096] (0: no base-datastore section)");
  }
  if (finetune_steps < 0 || finetune_steps > 5000) return Status::InvalidArgument("finetune steps must be in [0, 5000]");
  if (finetune_repetitions < 1 || finetune_repetitions > 1000) {
    return Status::InvalidArgument("finetune repetitions must be in [1, 1000]");
  }
  if (bootstrap_resamples < 10 || bootstrap_resamples > 100000) {
    return Status::InvalidArgument("bootstrap resamples must be in [10, 100000]");
  }
  // Every canary has its own name from the pool of synthetic names: the groups, the never-inserted ones,
  // the forgetting canaries, the two parametric sets, the memory section's three and the base-datastore
  // section's.
  const size_t names = static_cast<size_t>(canaries) * (repetitions.size() + 8);
  if (names > audit_internal::SyntheticNameCount()) {
    return Status::InvalidArgument("canaries x (repetition counts + 8) must be at most " +
                                   std::to_string(audit_internal::SyntheticNameCount()));
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
    audit_internal::Auditor auditor(model, options);
    s = auditor.Run(live, report);
  } catch (const std::exception& e) {  // LibTorch and FAISS errors, out of memory: the scratch goes anyway
    s = Status::Internal(std::string("audit failed: ") + e.what());
  }
  if (std::filesystem::exists(options.scratch_dir, ec)) std::filesystem::remove_all(options.scratch_dir, ec);
  if (s.ok() && ec) return Status::IOError("cannot remove the audit scratch directory " + options.scratch_dir);
  return s;
}

}  // namespace mnemo
