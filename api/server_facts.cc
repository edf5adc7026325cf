// Fact management over HTTP: add (one or many), get, list (paged, filtered), delete by id or by filter,
// verify a deletion. All admin-only (the pre-routing handler checks the role).
#include "api/fact_json.h"
#include "api/server_impl.h"
#include "util/parse.h"

namespace mnemo {
namespace {

using api::Json;

Status ParseFact(const Json& j, const std::string& where, FactText* out) {
  if (!j.is_object()) return Status::InvalidArgument(where + ": must be an object {\"text\", \"client_id\", \"metadata\"}");
  bool has_text = false;
  MNEMO_RETURN_IF_ERROR(api::OptionalString(j, "text", &out->text, &has_text));
  if (!has_text) return Status::InvalidArgument(where + "text: required");
  MNEMO_RETURN_IF_ERROR(api::OptionalString(j, "client_id", &out->client_id));
  if (j.contains("metadata") && !j["metadata"].is_null()) {
    if (!j["metadata"].is_object()) return Status::InvalidArgument(where + "metadata: must be an object");
    out->metadata_json = api::Dump(j["metadata"]);
  }
  return Status::OK();
}

// A filter from {"client_id": ..., "metadata": {"field": scalar}} (delete) or query parameters (list).
Status ParseFilter(const Json& body, FactFilter* filter) {
  MNEMO_RETURN_IF_ERROR(api::OptionalString(body, "client_id", &filter->client_id));
  if (body.contains("metadata") && !body["metadata"].is_null()) {
    const Json& m = body["metadata"];
    if (!m.is_object() || m.size() != 1) {
      return Status::InvalidArgument("metadata: must be an object with exactly one field to match");
    }
    filter->metadata_field = m.begin().key();
    if (!m.begin().value().is_primitive() || m.begin().value().is_null()) {
      return Status::InvalidArgument("metadata: the value to match must be a string, number or boolean");
    }
    filter->metadata_value_json = api::Dump(m.begin().value());
  }
  return Status::OK();
}

// The id in /v1/facts/{id}; NotFound for digits past any id (the route's pattern admits only digits).
Status IdFromPath(const httplib::Request& req, int64_t* id) {
  const std::string text = req.matches[1].str();
  if (!ParseInt64(text, 1, INT64_MAX, id).ok()) {
    return Status::NotFound("fact " + TruncateForMessage(text) + " does not exist");
  }
  return Status::OK();
}

}  // namespace

void Server::Impl::HandleAddFacts(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body)) return;
  std::vector<FactText> texts;
  Status s;
  const bool many = body.contains("facts");
  if (many) {
    if (!body["facts"].is_array() || body["facts"].empty()) {
      s = Status::InvalidArgument("facts: must be a non-empty array of {\"text\", \"client_id\", \"metadata\"}");
    }
    for (size_t i = 0; s.ok() && i < body["facts"].size(); ++i) {
      FactText f;
      s = ParseFact(body["facts"][i], "facts[" + std::to_string(i) + "].", &f);
      texts.push_back(std::move(f));
    }
  } else {
    FactText f;
    s = ParseFact(body, "", &f);
    texts.push_back(std::move(f));
  }
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  std::vector<int64_t> ids;
  Status run;
  const ActionRecord action = ActionFor(req, "facts.add");
  if (!RunOnWorker(res, [&](const std::atomic<bool>&) { run = state->AddFacts(texts, &ids, 1, &action); })) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  metrics.GetCounter("mnemo_facts_added_total", "Facts added").Increment(static_cast<double>(ids.size()));
  if (many) return SendJson(res, {{"object", "list"}, {"ids", ids}});
  SendJson(res, {{"id", ids[0]}, {"object", "fact"}});
}

void Server::Impl::HandleGetFact(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0;
  if (Status bad = IdFromPath(req, &id); !bad.ok()) return SendError(res, ErrorFromStatus(bad));
  FactRecord f;
  Status s = store->Get(id, false, &f);
  if (s.IsNotFound()) {
    Tombstone t;
    const bool deleted = store->GetTombstone(id, &t).ok();
    return SendError(res, {404, "fact " + std::to_string(id) + (deleted ? " was deleted" : " does not exist")});
  }
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  SendJson(res, api::FactToJson(f));
}

void Server::Impl::HandleListFacts(const httplib::Request& req, httplib::Response& res) {
  ListOptions options;
  Status s = QueryInt(req, "after", 0, INT64_MAX, &options.after_id);
  if (s.ok()) s = QueryInt(req, "limit", 1, 10000, &options.limit);
  if (req.has_param("client_id")) options.filter.client_id = req.get_param_value("client_id");
  // ?metadata.topic=harbour: the value is JSON when it parses as a scalar, else a string.
  for (const auto& [key, value] : req.params) {
    if (key.rfind("metadata.", 0) != 0) continue;
    options.filter.metadata_field = key.substr(9);
    options.filter.metadata_value_json = api::MetadataMatchValue(value);
  }
  std::vector<FactRecord> page;
  int64_t next = 0, total = 0;
  if (s.ok()) s = store->List(options, &page, &next);
  if (s.ok()) s = store->Count(options.filter, &total);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json data = Json::array();
  for (const FactRecord& f : page) data.push_back(api::FactToJson(f));
  SendJson(res, {{"object", "list"}, {"data", data}, {"total", total}, {"next_after", next == 0 ? Json(nullptr) : Json(next)}});
}

void Server::Impl::HandleDeleteFact(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0;
  if (Status bad = IdFromPath(req, &id); !bad.ok()) return SendError(res, ErrorFromStatus(bad));
  std::vector<FactRecord> deleted;
  const ActionRecord action = ActionFor(req, "facts.delete");
  Status s = store->Delete({id}, &deleted, &action);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  if (deleted.empty()) return SendError(res, {404, "fact " + std::to_string(id) + " does not exist"});
  metrics.GetCounter("mnemo_facts_deleted_total", "Facts deleted").Increment();
  SendJson(res, {{"id", id}, {"object", "fact"}, {"deleted", true}});
}

void Server::Impl::HandleDeleteMatching(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body)) return;
  FactFilter filter;
  Status s = ParseFilter(body, &filter);
  if (s.ok() && filter.empty()) s = Status::InvalidArgument("give client_id or metadata to choose the facts to delete");
  std::vector<FactRecord> deleted;
  // The log names the filter's fields, never their values (a metadata value may identify a person).
  Json fields = Json::array();
  if (!filter.client_id.empty()) fields.push_back("client_id");
  if (!filter.metadata_field.empty()) fields.push_back("metadata." + filter.metadata_field);
  const ActionRecord action = ActionFor(req, "facts.delete", {}, {{"filter_fields", fields}});
  if (s.ok()) s = store->DeleteMatching(filter, &deleted, &action);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json ids = Json::array();
  for (const FactRecord& f : deleted) ids.push_back(f.id);
  metrics.GetCounter("mnemo_facts_deleted_total", "Facts deleted").Increment(static_cast<double>(deleted.size()));
  SendJson(res, {{"object", "list"}, {"deleted", ids}});
}

void Server::Impl::HandleVerifyDeleted(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0;
  if (Status bad = IdFromPath(req, &id); !bad.ok()) return SendError(res, ErrorFromStatus(bad));
  Json body = Json::object();
  if (!req.body.empty() && !ParseBody(req, res, &body)) return;
  std::string text;
  bool has_text = false;
  KnnOptions knn;
  Status s = api::OptionalString(body, "text", &text, &has_text);
  if (s.ok()) s = ParseKnn(body, options.knn, &knn);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  DeletionVerdict verdict;
  Status run;
  if (!RunOnWorker(res, [&](const std::atomic<bool>&) {
        run = state->VerifyDeleted(id, has_text ? &text : nullptr, knn, &verdict);
      })) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  // The verdict is kept as the deletion's receipt (no text: the verdict holds none).
  const Json receipt = api::DeletionVerdictToJson(verdict);
  LogAction(ActionFor(req, "facts.verify-deleted", {std::to_string(id)}, receipt));
  SendJson(res, receipt);
}

}  // namespace mnemo
