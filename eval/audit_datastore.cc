// The audit's base-datastore section: documents (fillers, member documents and canary documents) are built
// into a scratch IVF-Flat datastore with provenance (its centroids trained on the fillers only), the members and canaries are then deleted as documents
// (memory/datastore.h), and their exposure, extraction and membership inference are compared before the
// deletion, after it, and on a datastore built from the fillers alone from the start (the gold standard).
// docs/AUDIT.md, "Base datastore documents".
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "eval/audit_internal.h"
#include "eval/roc.h"
#include "retriever/datastore_builder.h"
#include "retriever/deletion_verifier.h"
#include "retriever/dual_scorer.h"

namespace mnemo::audit_internal {

namespace {

constexpr int kFactsPerDocument = 4;

}  // namespace

Status Auditor::DatastoreSection(const std::string& scratch_dir, json* out) {
  const int fillers = o_.datastore_documents;
  const int n = std::max(4, std::min(64, fillers / 4));  // member documents, and as many held out
  auto document = [&](const std::string& prefix, int i) {
    DatastoreDocumentInput d;
    d.id = prefix + "-" + std::to_string(i);
    for (const std::string& fact : MakeFacts(kFactsPerDocument)) d.text += (d.text.empty() ? "" : " ") + fact;
    return d;
  };
  std::vector<DatastoreDocumentInput> filler_docs, member_docs, non_member_docs;
  // The fillers are marked "train": the index's centroids come from them alone (pool "marked"), so deleting
  // the members and canaries needs no retraining and the gold standard has the same centroids.
  for (int i = 0; i < fillers; ++i) {
    filler_docs.push_back(document("filler", i));
    filler_docs.back().train = true;
  }
  for (int i = 0; i < n; ++i) member_docs.push_back(document("member", i));
  for (int i = 0; i < n; ++i) non_member_docs.push_back(document("held-out", i));
  std::vector<Canary> canaries;
  MNEMO_RETURN_IF_ERROR(MakeCanaries(model_, o_.canaries, &canaries));

  // The corpus: the first half of the fillers, the members and canaries, the other half.
  std::vector<DatastoreDocumentInput> corpus(filler_docs.begin(), filler_docs.begin() + fillers / 2);
  corpus.insert(corpus.end(), member_docs.begin(), member_docs.end());
  std::vector<std::string> deleted_ids;
  for (const auto& d : member_docs) deleted_ids.push_back(d.id);
  for (size_t i = 0; i < canaries.size(); ++i) {
    DatastoreDocumentInput d;
    d.id = "canary-" + std::to_string(i);
    d.text = canaries[i].text;
    corpus.push_back(d);
    deleted_ids.push_back(d.id);
  }
  corpus.insert(corpus.end(), filler_docs.begin() + fillers / 2, filler_docs.end());
  DatastoreBuildOptions build;
  build.finish.progress = false;
  const std::string spec = "IVF" + std::to_string(std::clamp(fillers / 2, 1, 128)) + ",Flat";
  build.finish.index_spec = spec;
  DatastoreBuildReport report;
  const std::string full_dir = scratch_dir + "/datastore-documents";
  const std::string gold_dir = scratch_dir + "/datastore-rebuilt";
  MNEMO_RETURN_IF_ERROR(BuildDatastoreFromDocuments(model_, corpus, "audit", nullptr, "", full_dir, build, &report));
  const int64_t entries = report.entries;
  MNEMO_RETURN_IF_ERROR(BuildDatastoreFromDocuments(model_, filler_docs, "audit", nullptr, "", gold_dir, build, &report));
  std::unique_ptr<Datastore> full, gold;
  MNEMO_RETURN_IF_ERROR(Datastore::Open(full_dir, DatastoreOpenOptions(), &full));
  MNEMO_RETURN_IF_ERROR(Datastore::Open(gold_dir, DatastoreOpenOptions(), &gold));

  std::vector<std::vector<int32_t>> seqs;
  for (const auto& d : member_docs) seqs.push_back(model_.tokenizer->Encode(d.text));
  for (const auto& d : non_member_docs) seqs.push_back(model_.tokenizer->Encode(d.text));
  std::vector<DualScores> base;
  MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model_, nullptr, o_.knn, seqs, &base));
  auto measure = [&](const Datastore* ds, DeletionMeasure* m) -> Status {
    MNEMO_RETURN_IF_ERROR(Exposure(model_, ds, canaries, &m->exposure, nullptr, &m->raw));
    MNEMO_RETURN_IF_ERROR(SecretExtraction(model_, ds, canaries, &m->extraction, &m->outcomes));
    std::vector<DualScores> scores;
    MNEMO_RETURN_IF_ERROR(ScoreBothBatch(model_, ds, o_.knn, seqs, &scores));
    for (size_t i = 0; i < seqs.size(); ++i) {
      const bool member = static_cast<int>(i) < n;
      const std::string& text = member ? member_docs[i].text : non_member_docs[i - n].text;
      const MembershipScores ms = MembershipFromLogprobs(text, scores[i].knn, base[i].lm);
      for (const char* name : kScores) (member ? m->members : m->non_members)[name].push_back(ScoreField(ms, name));
      m->raw.insert(m->raw.end(), scores[i].knn.begin(), scores[i].knn.end());
    }
    return Status::OK();
  };
  DeletionMeasure before, after, rebuilt;
  MNEMO_RETURN_IF_ERROR(measure(full.get(), &before));
  MNEMO_RETURN_IF_ERROR(Step("datastore documents: deleting", 0.78));
  DocumentDeleteReport deletion;
  MNEMO_RETURN_IF_ERROR(full->DeleteDocuments(deleted_ids, DocumentDeleteOptions(), &deletion));
  int64_t verified = 0, passed = 0;
  for (size_t i = 0; i < canaries.size(); ++i) {
    DocumentDeletionVerdict v;
    MNEMO_RETURN_IF_ERROR(VerifyDocumentDeleted(&model_, *full, "canary-" + std::to_string(i), &canaries[i].text, &v));
    ++verified;
    passed += v.passed ? 1 : 0;
  }
  MNEMO_RETURN_IF_ERROR(measure(full.get(), &after));
  MNEMO_RETURN_IF_ERROR(measure(gold.get(), &rebuilt));

  json& r = *out;
  r["measured"] = true;
  r["index"] = spec;
  r["training_pool"] = "marked";
  r["documents"] = corpus.size();
  r["entries"] = entries;
  r["deleted_documents"] = deletion.deleted.size();
  r["deleted_entries"] = deletion.entries;
  r["members"] = n;
  r["non_members"] = n;
  r["canaries"] = canaries.size();
  r["delete_seconds"] = deletion.seconds;
  r["verified"] = {{"documents", verified}, {"passed", passed}};
  MNEMO_RETURN_IF_ERROR(DeletionComparisonJson(before, after, rebuilt, &r));
  return Status::OK();
}

}  // namespace mnemo::audit_internal
