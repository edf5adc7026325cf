#include "api/fact_json.h"

namespace mnemo::api {

Json FactToJson(const FactRecord& f) {
  Json j = {{"id", f.id}, {"object", "fact"}, {"text", f.text}};
  j["client_id"] = f.client_id.empty() ? Json(nullptr) : Json(f.client_id);
  j["metadata"] = f.metadata_json.empty() ? Json::object() : Json::parse(f.metadata_json, nullptr, false);
  j["tokens"] = f.num_tokens;
  j["created_at_ms"] = f.created_at_ms;
  return j;
}

std::string MetadataMatchValue(const std::string& text) {
  const Json v = Json::parse(text, nullptr, false);
  return !v.is_discarded() && v.is_primitive() && !v.is_null() ? text : Dump(text);
}

Json DeletionVerdictToJson(const DeletionVerdict& v) {
  const FactTraces& t = v.traces;
  Json j;
  j["fact_id"] = t.fact_id;
  j["verdict"] = v.passed ? "deleted" : "NOT deleted";
  j["passed"] = v.passed;
  if (!v.reason.empty()) j["reason"] = v.reason;
  j["structural"] = {{"tombstone", t.tombstone},       {"deleted_seq", t.deleted_seq},
                     {"entries", t.entries},           {"in_database", t.in_database},
                     {"in_segment", t.in_segment},     {"snapshots_checked", t.snapshots_checked},
                     {"snapshots_holding", t.snapshots_holding}};
  if (t.shard >= 0) {
    j["structural"]["shard"] = t.shard;
    j["structural"]["on_shard"] = t.on_shard;
    j["structural"]["shards_checked"] = t.shards_checked;
  }
  if (v.facts_memory_documents >= 0) j["structural"]["facts_memory_documents"] = v.facts_memory_documents;
  if (v.probed) {
    j["probe"] = {{"text_in_database_files", t.text_in_database_files},
                  {"probes", v.probes},
                  {"neighbors_compared", v.neighbors_compared},
                  {"neighbors_differing_from_rebuilt", v.neighbors_differing},
                  {"neighbors_from_deleted_fact", v.neighbors_from_fact},
                  {"max_abs_logprob_diff_vs_rebuilt", v.max_abs_logprob_diff},
                  {"mean_logprob_knn_lm", v.mean_logprob_live},
                  {"mean_logprob_base_lm", v.mean_logprob_base_lm}};
  } else {
    j["probe"] = "skipped: give the fact's text to probe with its prefixes (mnemo keeps no copy of it)";
  }
  return j;
}

Json MemoryToJson(const MemoryInfo& m) {
  return {{"id", m.id},
          {"object", "memory"},
          {"name", m.name},
          {"capacity", m.capacity > 0 ? Json(m.capacity) : Json(nullptr)},
          {"policy", m.capacity > 0 ? "fifo" : "unbounded"},
          {"documents", m.documents},
          {"stored_tokens", m.stored_tokens},
          {"resident_tokens", m.resident_tokens},
          {"created_at_ms", m.created_at_ms}};
}

Json MemoryDocumentToJson(const MemoryDocument& d) {
  Json j = {{"id", d.id},
            {"object", "memory.document"},
            {"memory_id", d.memory_id},
            {"metadata", d.metadata_json.empty() ? Json::object() : Json::parse(d.metadata_json, nullptr, false)},
            {"tokens", d.tokens},
            {"resident_tokens", d.resident_tokens},
            {"created_at_ms", d.created_at_ms}};
  if (!d.text.empty()) j["text"] = d.text;
  return j;
}

Json MemoryDeletionVerdictToJson(int64_t memory_id, int64_t document_id, const MemoryDeletionVerdict& v) {
  Json j;
  j["memory_id"] = memory_id;
  j["document_id"] = document_id;
  j["verdict"] = v.passed ? "deleted" : "NOT deleted";
  j["passed"] = v.passed;
  if (!v.reason.empty()) j["reason"] = v.reason;
  j["structural"] = {{"tombstone", v.traces.tombstone},
                     {"in_database", v.traces.row},
                     {"tokens_in_memory", v.traces.ring_tokens},
                     {"memory_matches_rebuild", v.traces.ring_matches_rebuild}};
  if (v.probed) {
    j["probe"] = {{"tokens_scored", v.probe_tokens},
                  {"keys_held_by_memory", v.keys_held},
                  {"state_files_with_content", v.files_with_content},
                  {"max_abs_logprob_diff_vs_rebuilt", v.max_abs_logprob_diff},
                  {"mean_logprob_with_memory", v.mean_logprob_memory},
                  {"mean_logprob_without_memory", v.mean_logprob_base}};
  } else {
    j["probe"] = "skipped: give the document's text to probe with it (mnemo keeps no copy of it)";
  }
  return j;
}

Json DatastoreDocumentToJson(const Datastore& datastore, const DatastoreDocument& d) {
  Json j;
  j["id"] = d.id;
  j["object"] = "datastore.document";
  j["first_entry"] = d.first;
  j["entries"] = d.count;
  if (d.deleted()) {
    j["deleted"] = true;
    j["deletion"] = d.deleted_seq;
    return j;
  }
  j["deleted"] = false;
  j["tokens"] = d.tokens;
  j["metadata"] = d.metadata_json.empty() ? Json::object() : Json::parse(d.metadata_json);
  j["train"] = d.train;
  const std::string reason = datastore.RetrainReason(d);
  j["delete_needs_retrain"] = !reason.empty();
  return j;
}

Json DocumentDeletionVerdictToJson(const DocumentDeletionVerdict& v) {
  Json j;
  j["document_id"] = v.traces.id;
  j["verdict"] = v.passed ? "deleted" : "NOT deleted";
  j["passed"] = v.passed;
  if (!v.reason.empty()) j["reason"] = v.reason;
  j["structural"] = {{"tombstone", v.traces.tombstone},
                     {"deletion", v.traces.deleted_seq},
                     {"entries", v.traces.entries},
                     {"metadata_kept", v.traces.metadata_kept},
                     {"entries_in_index", v.traces.index_entries},
                     {"nonzero_key_bytes", v.traces.nonzero_key_bytes},
                     {"nonzero_value_bytes", v.traces.nonzero_value_bytes},
                     {"stray_files", v.traces.stray_files}};
  if (v.probed) {
    j["probe"] = {{"keys_probed", v.keys_probed},
                  {"keys_shared_with_live_documents", v.keys_shared_with_live},
                  {"files_scanned", v.files_scanned},
                  {"key_rows_found_in_files", v.key_rows_found}};
  } else {
    j["probe"] = "skipped: give the document's text (and the model) to scan the files for its keys";
  }
  return j;
}

}  // namespace mnemo::api
