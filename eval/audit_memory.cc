// The audit's memory section: canaries read into memories of the memorizing layer (memory/layer_memories.h),
// their forgetting as a FIFO memory reads on (against the kNN-LM datastore, which keeps what it stores),
// and their deletion (against a memory that never read them). docs/AUDIT.md, "Memory".
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "eval/audit_internal.h"
#include "eval/roc.h"
#include "memory/layer_memories.h"
#include "retriever/dual_scorer.h"

namespace mnemo::audit_internal {

namespace {

json Measured(const Expo& e, const Rate& extraction) {
  return {{"exposure", ExpoJson(e)}, {"extraction_rate", extraction.rate()}};
}

}  // namespace

Status Auditor::ReadIntoMemories(StateService* scratch, const std::vector<int64_t>& memories, const std::string& text,
                                 const std::string& kind, std::vector<int64_t>* documents, int64_t* tokens) {
  NewMemoryDocument doc;
  doc.text = text;
  doc.metadata_json = json{{"audit", kind}}.dump();
  MNEMO_RETURN_IF_ERROR(scratch->DocumentPairs(text, &doc.tokens, &doc.keys, &doc.values));
  for (int64_t id : memories) {
    MemoryDocument added;
    MNEMO_RETURN_IF_ERROR(scratch->memories()->AddDocument(id, doc, &added, nullptr));
    if (documents != nullptr) documents->push_back(added.id);
  }
  if (tokens != nullptr) *tokens += static_cast<int64_t>(doc.tokens.size());
  return Status::OK();
}

Status Auditor::ReadFillers(StateService* scratch, const std::vector<int64_t>& memories, bool facts, int64_t target,
                            int64_t* read) {
  while (*read < target) {
    // Documents of about M/8 tokens (a synthetic fact is about 12), so the points are not overshot by much.
    const std::vector<std::string> lines = MakeFacts(static_cast<int>(std::max<int64_t>(1, o_.memory_capacity / 96)));
    if (lines.empty()) return Status::FailedPrecondition("could not draw enough distinct synthetic facts");
    std::string text;
    for (const std::string& l : lines) text += (text.empty() ? "" : " ") + l;
    MNEMO_RETURN_IF_ERROR(ReadIntoMemories(scratch, memories, text, "filler", nullptr, read));
    if (facts) MNEMO_RETURN_IF_ERROR(AddTexts(scratch, lines, 1, "memory-filler", nullptr));
    if (o_.cancel != nullptr && o_.cancel->load()) return Status::Cancelled("audit cancelled");
  }
  return Status::OK();
}

// Forgetting: canaries read into a FIFO memory of capacity M, then N more tokens (N = 0, M/4, M/2, M, 2M).
// At each point the canaries' exposure and secret extraction with that memory, with a memory that read the
// same fillers but never the canaries (once the canaries have left the ring the two must score bit for bit
// alike), and under the kNN-LM with the canaries and the same filler facts stored as facts.
Status Auditor::MemorySection(StateService* scratch, json* out) {
  LayerMemories* memories = scratch->memories();
  const int64_t M = o_.memory_capacity;
  MemoryInfo read, never;
  MNEMO_RETURN_IF_ERROR(memories->Create("audit-forgetting", M, &read));
  MNEMO_RETURN_IF_ERROR(memories->Create("audit-never-read", M, &never));
  std::vector<Canary> tracked;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &tracked));
  std::vector<int64_t> canary_docs, canary_facts;
  int64_t canary_tokens = 0;
  for (const Canary& c : tracked) {
    MNEMO_RETURN_IF_ERROR(ReadIntoMemories(scratch, {read.id}, c.text, "canary", &canary_docs, &canary_tokens));
  }
  std::vector<std::string> texts;
  for (const Canary& c : tracked) texts.push_back(c.text);
  MNEMO_RETURN_IF_ERROR(AddTexts(scratch, texts, 1, "memory-canary", &canary_facts));

  // The model alone: no memory, no datastore.
  Expo base;
  Rate base_rate;
  MNEMO_RETURN_IF_ERROR(Exposure(model_, nullptr, tracked, nullptr, &base, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, nullptr, tracked, &base_rate, nullptr));

  const std::vector<int64_t> targets = {0, M / 4, M / 2, M, 2 * M};
  json points = json::array();
  int64_t read_after = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    MNEMO_RETURN_IF_ERROR(ReadFillers(scratch, {read.id, never.id}, /*facts=*/true, targets[i], &read_after));
    int64_t resident = 0;
    for (int64_t doc : canary_docs) {
      MemoryDocument d;
      MNEMO_RETURN_IF_ERROR(memories->GetDocument(read.id, doc, false, &d));
      resident += d.resident_tokens;
    }
    json point = {{"target", targets[i]}, {"read_after", read_after}, {"canary_tokens_resident", resident}};
    std::vector<float> raw[2];
    std::vector<bool> outcomes[2];
    for (int m = 0; m < 2; ++m) {
      std::unique_ptr<KvMemory> reader;
      MNEMO_RETURN_IF_ERROR(memories->Reader(m == 0 ? read.id : never.id, &reader));
      layer_ = reader.get();
      Expo e;
      Rate rate;
      Status s = Exposure(model_, nullptr, tracked, nullptr, &e, &raw[m]);
      if (s.ok()) s = SecretExtraction(model_, nullptr, tracked, &rate, &outcomes[m]);
      layer_ = nullptr;
      MNEMO_RETURN_IF_ERROR(s);
      point[m == 0 ? "memory" : "never_read"] = Measured(e, rate);
    }
    point["matches_never_read"] = SameBits(raw[0], raw[1], nullptr) && outcomes[0] == outcomes[1];
    Expo knn;
    Rate knn_rate;
    MNEMO_RETURN_IF_ERROR(Exposure(model_, &scratch->store(), tracked, &knn, nullptr, nullptr));
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, &scratch->store(), tracked, &knn_rate, nullptr));
    point["knn_lm"] = Measured(knn, knn_rate);
    points.push_back(point);
    MNEMO_RETURN_IF_ERROR(Step("memory: forgetting", 0.7 + 0.05 * (i + 1) / targets.size()));
  }
  MNEMO_RETURN_IF_ERROR(scratch->store().Delete(canary_facts, nullptr));
  Expo knn_deleted;
  Rate knn_deleted_rate;
  MNEMO_RETURN_IF_ERROR(Exposure(model_, &scratch->store(), tracked, &knn_deleted, nullptr, nullptr));
  MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, &scratch->store(), tracked, &knn_deleted_rate, nullptr));
  MNEMO_RETURN_IF_ERROR(memories->Delete(read.id, nullptr));
  MNEMO_RETURN_IF_ERROR(memories->Delete(never.id, nullptr));

  json& r = *out;
  r["measured"] = true;
  r["capacity"] = M;
  r["layer"] = model_.config.memory_layer;
  r["topk"] = model_.config.memory_topk;
  json& f = r["forgetting"];
  f["canaries"] = tracked.size();
  f["canary_tokens"] = canary_tokens;
  f["base_lm"] = Measured(base, base_rate);
  f["points"] = points;
  f["knn_lm_after_deletion"] = Measured(knn_deleted, knn_deleted_rate);

  json deletion = json::array();
  for (int64_t capacity : {M, int64_t{0}}) {
    json d;
    MNEMO_RETURN_IF_ERROR(MemoryDeletion(scratch, capacity, &d));
    deletion.push_back(d);
  }
  r["deletion"] = deletion;
  return Status::OK();
}

// Deletion from a memory of `capacity` tokens (0: unbounded) that read fillers (M/2 tokens), then members and
// canaries, then more fillers (M/4 tokens): the canaries' exposure and extraction and the members'
// membership inference before the members and canaries are deleted, after, and with a memory that read only
// the same fillers (the gold standard: recomputed by the model, not rebuilt from the database).
Status Auditor::MemoryDeletion(StateService* scratch, int64_t capacity, json* out) {
  LayerMemories* memories = scratch->memories();
  const int64_t M = o_.memory_capacity;
  const std::string policy = capacity > 0 ? "fifo" : "unbounded";
  MemoryInfo read, gold;
  MNEMO_RETURN_IF_ERROR(memories->Create("audit-deletion-" + policy, capacity, &read));
  MNEMO_RETURN_IF_ERROR(memories->Create("audit-rebuilt-" + policy, capacity, &gold));
  std::vector<Canary> canaries;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &canaries));
  // At most 64 members and as many non-members, and no more than fill half of M (a synthetic fact is about
  // 12 tokens), so the FIFO memory holds them all when they are measured.
  const size_t n = std::min<size_t>({members_.size(), 64, static_cast<size_t>(M / 24)});
  int64_t tokens = 0;
  MNEMO_RETURN_IF_ERROR(ReadFillers(scratch, {read.id, gold.id}, false, M / 2, &tokens));
  std::vector<int64_t> deleted;
  int64_t deleted_tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    MNEMO_RETURN_IF_ERROR(ReadIntoMemories(scratch, {read.id}, members_[i], "member", &deleted, &deleted_tokens));
  }
  for (const Canary& c : canaries) {
    MNEMO_RETURN_IF_ERROR(ReadIntoMemories(scratch, {read.id}, c.text, "canary", &deleted, &deleted_tokens));
  }
  tokens = 0;
  MNEMO_RETURN_IF_ERROR(ReadFillers(scratch, {read.id, gold.id}, false, M / 4, &tokens));

  // Members and non-members under the model alone (the reference of the membership scores).
  std::vector<std::vector<int32_t>> seqs(member_ids_.begin(), member_ids_.begin() + n);
  seqs.insert(seqs.end(), non_member_ids_.begin(), non_member_ids_.begin() + std::min(n, non_member_ids_.size()));
  std::vector<DualScores> base;
  MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model_, nullptr, o_.knn, seqs, &base));

  auto measure = [&](int64_t memory_id, DeletionMeasure* m) -> Status {
    std::unique_ptr<KvMemory> reader;
    MNEMO_RETURN_IF_ERROR(memories->Reader(memory_id, &reader));
    layer_ = reader.get();
    Status s = Exposure(model_, nullptr, canaries, nullptr, &m->exposure, &m->raw);
    if (s.ok()) s = SecretExtraction(model_, nullptr, canaries, &m->extraction, &m->outcomes);
    ScoreControls controls;
    controls.layer_memory = layer_;
    controls.cancel = o_.cancel;
    for (size_t i = 0; s.ok() && i < seqs.size(); ++i) {
      DualScores d;
      s = ScoreBoth(model_, nullptr, o_.knn, seqs[i], WindowOptions(), &d, controls);
      if (!s.ok()) break;
      const bool member = i < n;
      const std::string& text = member ? members_[i] : non_members_[i - n];
      const MembershipScores ms = MembershipFromLogprobs(text, d.lm, base[i].lm);
      for (const char* name : kScores) (member ? m->members : m->non_members)[name].push_back(ScoreField(ms, name));
      m->raw.insert(m->raw.end(), d.lm.begin(), d.lm.end());
    }
    layer_ = nullptr;
    return s;
  };
  DeletionMeasure before, after, rebuilt;
  MNEMO_RETURN_IF_ERROR(measure(read.id, &before));
  MNEMO_RETURN_IF_ERROR(Step("memory: deleting from the " + policy + " memory", 0.76 + (capacity > 0 ? 0 : 0.02)));
  const auto start = std::chrono::steady_clock::now();
  for (int64_t doc : deleted) MNEMO_RETURN_IF_ERROR(memories->DeleteDocument(read.id, doc, nullptr));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t verified = 0, passed = 0;
  for (size_t i = 0; i < canaries.size(); ++i) {  // the canaries' documents are the last ones deleted
    MemoryDeletionVerdict v;
    MNEMO_RETURN_IF_ERROR(scratch->VerifyMemoryDocumentDeleted(read.id, deleted[n + i], &canaries[i].text, &v));
    ++verified;
    passed += v.passed ? 1 : 0;
  }
  MNEMO_RETURN_IF_ERROR(measure(read.id, &after));
  MNEMO_RETURN_IF_ERROR(measure(gold.id, &rebuilt));
  MNEMO_RETURN_IF_ERROR(memories->Delete(read.id, nullptr));
  MNEMO_RETURN_IF_ERROR(memories->Delete(gold.id, nullptr));

  json& r = *out;
  r["policy"] = policy;
  r["capacity"] = capacity;
  r["deleted_documents"] = deleted.size();
  r["deleted_tokens"] = deleted_tokens;
  r["members"] = n;
  r["non_members"] = seqs.size() - n;
  r["canaries"] = canaries.size();
  r["delete_seconds"] = seconds;
  r["verified"] = {{"documents", verified}, {"passed", passed}};
  MNEMO_RETURN_IF_ERROR(DeletionComparisonJson(before, after, rebuilt, &r));
  return Status::OK();
}

}  // namespace mnemo::audit_internal
