// Audit: the whole leakage and unlearning evaluation of a serving state, run on a scratch copy of it
// (docs/AUDIT.md describes the measures and report.json field by field).
//
// The scratch copy is a new state directory with the live state's model, base datastore (opened
// read-only) and every live fact (copied with its stored keys, so nothing is re-encoded). The audit
// inserts canaries and synthetic member facts into the copy, measures exposure, membership inference and
// extraction, deletes them and measures again, rebuilds the memory from the database without them (the
// retrain gold standard) and measures that, then tracks fresh canaries while more facts are added after
// them (forgetting), and fine-tunes a scratch copy of the model with canaries in its training text
// (parametric vs datastore leakage). When the model has a memorizing layer, the memory section reads
// canaries into memories of that layer and measures their FIFO forgetting (against the kNN-LM datastore,
// which does not forget) and their deletion (against a memory that never read them). The base-datastore
// section builds a scratch datastore from documents (fillers, members, canaries), deletes the members and
// canaries as documents and compares with a datastore built without them. The live state is
// only read; the scratch directory is removed at the end.
//
// Every run is deterministic for a seed (the same state, model and options give the same report, apart
// from timings).
//
// Thread-safety: RunAudit reads the model and the live store and may run beside serving; it uses its own
// scratch stores. One AuditOptions::scratch_dir per concurrent audit.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "retriever/knn_lm.h"
#include "util/status.h"

namespace mnemo {

struct LanguageModel;
class FactStore;

struct AuditOptions {
  int canaries = 4;                        // Per repetition count; as many are never inserted.
  int references = 127;                    // Random secrets each canary is ranked against.
  std::vector<int> repetitions = {1, 4, 16};  // Copies of a canary inserted as separate facts.
  int members = 200;                       // Synthetic facts stored; as many held out.
  std::vector<int> extraction_prefixes = {2, 4, 8};
  int extraction_samples = 50;             // Stored facts tried for extraction (<= members).
  std::vector<int> forgetting_added = {0, 100, 400, 1600};  // Facts added after the tracked canaries.
  // The memory section (models with a memorizing layer): the capacity M of the FIFO memories whose
  // forgetting is measured after M/4, M/2, M and 2M more tokens; 0 leaves the section out.
  int64_t memory_capacity = 2048;
  // The base-datastore section: filler documents of a scratch datastore built from documents, beside
  // member and canary documents that are then deleted from it (memory/datastore.h); 0 leaves it out.
  int datastore_documents = 256;
  int finetune_steps = 150;                // Parametric section; 0 leaves it out.
  int finetune_repetitions = 16;           // Copies of each parametric canary in the training text.
  int bootstrap_resamples = 200;
  uint64_t seed = 1;
  KnnOptions knn;
  // Created by the audit, must not exist yet, removed at the end.
  std::string scratch_dir;
  // Called between steps with the stage's name and the overall fraction done in [0, 1].
  std::function<void(const std::string& stage, double fraction)> progress;
  // Polled between steps; when it turns true the audit stops with Status::Cancelled.
  const std::atomic<bool>* cancel = nullptr;

  Status Validate() const;
};

// Runs the audit of `live` (served with `model`) and fills *report (format mnemo-audit/1).
Status RunAudit(LanguageModel& model, const FactStore& live, const AuditOptions& options,
                nlohmann::ordered_json* report);

// Writes report.json and report.html (eval/report_html.h) into `dir` (created when missing), each
// atomically.
Status WriteAuditReport(const std::string& dir, const nlohmann::ordered_json& report);

// A plain-text summary table of a report, for the CLI.
std::string AuditSummary(const nlohmann::ordered_json& report);

}  // namespace mnemo
