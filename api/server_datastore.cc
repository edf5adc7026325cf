// The base datastore's documents over HTTP (admin only; the pre-routing handler checks the role): list
// them, see one, delete one while serving, verify a deletion. 409 when the state has no base datastore or
// it was built without provenance, and for a document whose deletion needs retraining (offline only).
#include <algorithm>

#include "api/fact_json.h"
#include "api/server_impl.h"
#include "memory/datastore_shards.h"
#include "util/parse.h"

namespace mnemo {
namespace {

using api::Json;

// The state's base datastore, or FailedPrecondition.
Status BaseDatastore(const FactStore* store, const Datastore** out) {
  if (store->sharded_base() != nullptr) {
    return Status::FailedPrecondition("this state's base datastore is sharded: its documents are managed per shard, "
                                      "offline (mnemo datastore documents|rm|verify-deleted --datastore " +
                                      store->sharded_base()->dir() + "/shard-<i>)");
  }
  if (store->base() == nullptr) return Status::FailedPrecondition("this state has no base datastore");
  *out = store->base();
  return Status::OK();
}

// The id in /v1/datastore/documents/{id} (percent-decoded by the HTTP layer). Document ids come from JSON
// (documents.jsonl), so they are valid UTF-8: an id that is not names no document, and is NotFound here.
// Refusing it here, at the boundary, keeps invalid UTF-8 out of everything that echoes the id as JSON: the
// reply, a verify-deleted receipt, the action log. (The datastore's own messages used nlohmann's strict
// dump() and threw type_error 316 on such ids, so any client's path got a 500:
// fuzz/regressions/routes/datastore-id-not-utf8; they now replace bad bytes.)
Status IdFromPath(const httplib::Request& req, std::string* id) {
  *id = req.matches[1].str();
  try {
    (void)Json(*id).dump();
  } catch (const Json::exception&) {
    return Status::NotFound("no document " + api::Dump(Json(TruncateForMessage(*id))) + " (not valid UTF-8)");
  }
  return Status::OK();
}

}  // namespace

void Server::Impl::HandleListDatastoreDocuments(const httplib::Request& req, httplib::Response& res) {
  const Datastore* ds = nullptr;
  Status s = BaseDatastore(store, &ds);
  int64_t offset = 0, limit = 100;
  auto int_param = [&](const char* name, int64_t min, int64_t max, int64_t* out) {
    if (!s.ok() || !req.has_param(name)) return;
    if (!ParseInt64(req.get_param_value(name), min, max, out).ok()) {
      s = Status::InvalidArgument(std::string(name) + ": must be an integer in [" + std::to_string(min) + ", " +
                                  std::to_string(max) + "]");
    }
  };
  int_param("offset", 0, INT64_MAX, &offset);
  int_param("limit", 1, 10000, &limit);
  if (s.ok() && !ds->has_provenance()) {
    DatastoreDocument none;
    s = ds->GetDocument("", &none);  // the "built without provenance" error
  }
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  const std::vector<DatastoreDocument> all = ds->Documents();
  Json data = Json::array();
  const int64_t total = static_cast<int64_t>(all.size());
  int64_t deleted = 0;
  for (const DatastoreDocument& d : all) deleted += d.deleted();
  // The page's end, computed without offset + limit: ?offset= takes any int64_t, and offset + limit past
  // INT64_MAX was signed overflow (fuzz/regressions/routes/datastore-list-offset-overflow).
  const int64_t end = offset < total ? offset + std::min(limit, total - offset) : total;
  for (int64_t i = offset; i < end; ++i) data.push_back(api::DatastoreDocumentToJson(*ds, all[i]));
  const int64_t next = end;
  SendJson(res, {{"object", "list"},
                 {"data", data},
                 {"total", total},
                 {"deleted", deleted},
                 {"live_entries", ds->size()},
                 {"training_pool", ds->manifest().training_pool},
                 {"next_offset", next < total ? Json(next) : Json(nullptr)}});
}

void Server::Impl::HandleGetDatastoreDocument(const httplib::Request& req, httplib::Response& res) {
  const Datastore* ds = nullptr;
  Status s = BaseDatastore(store, &ds);
  std::string id;
  if (s.ok()) s = IdFromPath(req, &id);
  DatastoreDocument d;
  if (s.ok()) s = ds->GetDocument(id, &d);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  SendJson(res, api::DatastoreDocumentToJson(*ds, d));
}

void Server::Impl::HandleDeleteDatastoreDocument(const httplib::Request& req, httplib::Response& res) {
  DocumentDeleteReport report;
  std::string id;
  Status s = IdFromPath(req, &id);
  if (s.ok()) s = store->DeleteBaseDocuments({id}, &report);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  metrics.GetCounter("mnemo_datastore_documents_deleted_total", "Base datastore documents deleted").Increment();
  LogAction(ActionFor(req, "datastore.documents.delete", {id}, {{"entries", report.entries}, {"deletion", report.seq}}));
  SendJson(res, {{"id", id},
                 {"object", "datastore.document"},
                 {"deleted", true},
                 {"entries", report.entries},
                 {"deletion", report.seq},
                 {"live_entries", store->base()->size()},
                 {"seconds", report.seconds}});
}

void Server::Impl::HandleVerifyDatastoreDocument(const httplib::Request& req, httplib::Response& res) {
  Json body = Json::object();
  if (!req.body.empty() && !ParseBody(req, res, &body)) return;
  std::string text;
  bool has_text = false;
  const Datastore* ds = nullptr;
  std::string id;
  Status s = api::OptionalString(body, "text", &text, &has_text);
  if (s.ok()) s = BaseDatastore(store, &ds);
  if (s.ok()) s = IdFromPath(req, &id);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  DocumentDeletionVerdict verdict;
  Status run;
  if (!RunOnWorker(res, [&](const std::atomic<bool>&) {
        run = VerifyDocumentDeleted(&state->model(), *ds, id, has_text ? &text : nullptr, &verdict);
      })) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  const Json receipt = api::DocumentDeletionVerdictToJson(verdict);
  LogAction(ActionFor(req, "datastore.documents.verify-deleted", {id}, receipt));
  SendJson(res, receipt);
}

}  // namespace mnemo
