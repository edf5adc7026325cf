// The memorizing layer's memories over HTTP: create, list, get and delete memories; read documents into
// them, list, get and delete documents, verify a deletion. Reading a document runs the model (on a
// worker); everything else is bookkeeping. Roles: api/server.cc RequiredRole.
#include "api/fact_json.h"
#include "api/server_impl.h"
#include "util/parse.h"

namespace mnemo {
namespace {

using api::Json;

// Path ids: NotFound for digits past any id (the routes admit only digits).
Status PathId(const httplib::Request& req, int group, const char* what, int64_t* id) {
  const std::string text = req.matches[group].str();
  if (!ParseInt64(text, 1, INT64_MAX, id).ok()) {
    return Status::NotFound(std::string(what) + " " + TruncateForMessage(text) + " does not exist");
  }
  return Status::OK();
}

}  // namespace

Status ParseLayerMemory(const Json& body, const StateService& state, std::unique_ptr<KvMemory>* reader,
                        int64_t* topk) {
  reader->reset();
  *topk = 0;
  if (!body.contains("memory") || body["memory"].is_null()) return Status::OK();
  const Json& m = body["memory"];
  if (!m.is_object()) return Status::InvalidArgument("memory: must be an object {\"id\", \"topk\"?}");
  for (const auto& [key, value] : m.items()) {
    if (key != "id" && key != "topk") return Status::InvalidArgument("memory." + TruncateForMessage(key) + ": unknown field");
  }
  int64_t id = 0;
  bool has_id = false;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(m, "id", 1, INT64_MAX, &id, &has_id));
  if (!has_id) return Status::InvalidArgument("memory.id: required");
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(m, "topk", 1, 1024, topk));
  MNEMO_RETURN_IF_ERROR(state.RequireMemories());
  return state.memories()->Reader(id, reader);
}

void Server::Impl::HandleCreateMemory(const httplib::Request& req, httplib::Response& res) {
  Json body;
  if (!ParseBody(req, res, &body)) return;
  std::string name;
  int64_t capacity = 0;
  Status s = api::OptionalString(body, "name", &name);
  if (s.ok()) s = api::OptionalInt(body, "capacity", 0, INT32_MAX, &capacity);
  if (s.ok()) s = state->RequireMemories();
  MemoryInfo info;
  if (s.ok()) s = state->memories()->Create(name, capacity, &info);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  LogAction(ActionFor(req, "memories.create", {std::to_string(info.id)}, {{"capacity", info.capacity}}));
  SendJson(res, api::MemoryToJson(info));
}

void Server::Impl::HandleListMemories(const httplib::Request&, httplib::Response& res) {
  std::vector<MemoryInfo> all;
  Status s = state->RequireMemories();
  if (s.ok()) s = state->memories()->List(&all);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json data = Json::array();
  for (const MemoryInfo& m : all) data.push_back(api::MemoryToJson(m));
  SendJson(res, {{"object", "list"}, {"data", data}});
}

void Server::Impl::HandleGetMemory(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0;
  MemoryInfo info;
  Status s = PathId(req, 1, "memory", &id);
  if (s.ok()) s = state->RequireMemories();
  if (s.ok()) s = state->memories()->Get(id, &info);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  SendJson(res, api::MemoryToJson(info));
}

void Server::Impl::HandleDeleteMemory(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0, documents = 0;
  Status s = PathId(req, 1, "memory", &id);
  if (s.ok()) s = state->RequireMemories();
  if (s.ok()) s = state->memories()->Delete(id, &documents);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  LogAction(ActionFor(req, "memories.delete", {std::to_string(id)}, {{"documents_deleted", documents}}));
  SendJson(res, {{"id", id}, {"object", "memory"}, {"deleted", true}, {"documents_deleted", documents}});
}

void Server::Impl::HandleReadDocument(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0;
  Status s = PathId(req, 1, "memory", &id);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json body;
  if (!ParseBody(req, res, &body)) return;
  std::string text, metadata;
  bool has_text = false;
  s = api::OptionalString(body, "text", &text, &has_text);
  if (s.ok() && !has_text) s = Status::InvalidArgument("text: required");
  if (s.ok() && body.contains("metadata") && !body["metadata"].is_null()) {
    if (!body["metadata"].is_object()) s = Status::InvalidArgument("metadata: must be an object");
    else metadata = api::Dump(body["metadata"]);
  }
  if (s.ok()) s = state->RequireMemories();
  MemoryInfo info;
  if (s.ok()) s = state->memories()->Get(id, &info);  // unknown ids fail before a worker is taken
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  MemoryDocument doc;
  int64_t evicted = 0;
  Status run;
  if (!RunOnWorker(res, [&](const std::atomic<bool>&) { run = state->ReadDocument(id, text, metadata, &doc, &evicted); })) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  metrics.GetCounter("mnemo_memory_tokens_read_total", "Tokens read into memories").Increment(static_cast<double>(doc.tokens));
  LogAction(ActionFor(req, "memories.documents.add", {std::to_string(id) + "/" + std::to_string(doc.id)},
                      {{"tokens", doc.tokens}, {"evicted_tokens", evicted}}));
  Json j = api::MemoryDocumentToJson(doc);
  j["evicted_tokens"] = evicted;
  SendJson(res, j);
}

void Server::Impl::HandleListDocuments(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0, after = 0, limit = 100;
  Status s = PathId(req, 1, "memory", &id);
  auto int_param = [&](const char* name, int64_t min, int64_t max, int64_t* out) {
    if (!s.ok() || !req.has_param(name)) return;
    if (!ParseInt64(req.get_param_value(name), min, max, out).ok()) {
      s = Status::InvalidArgument(std::string(name) + ": must be an integer in [" + std::to_string(min) + ", " +
                                  std::to_string(max) + "]");
    }
  };
  int_param("after", 0, INT64_MAX, &after);
  int_param("limit", 1, 10000, &limit);
  if (s.ok()) s = state->RequireMemories();
  std::vector<MemoryDocument> page;
  int64_t next = 0;
  if (s.ok()) s = state->memories()->ListDocuments(id, after, limit, &page, &next);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json data = Json::array();
  for (const MemoryDocument& d : page) data.push_back(api::MemoryDocumentToJson(d));
  SendJson(res, {{"object", "list"}, {"data", data}, {"next_after", next == 0 ? Json(nullptr) : Json(next)}});
}

void Server::Impl::HandleGetDocument(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0, doc_id = 0;
  Status s = PathId(req, 1, "memory", &id);
  if (s.ok()) s = PathId(req, 2, "document", &doc_id);
  if (s.ok()) s = state->RequireMemories();
  MemoryDocument doc;
  if (s.ok()) s = state->memories()->GetDocument(id, doc_id, /*with_text=*/true, &doc);
  if (s.IsNotFound() && state->memories() != nullptr) {
    MemoryDocumentTombstone t;
    if (state->memories()->GetTombstone(doc_id, &t).ok() && t.memory_id == id) {
      s = Status::NotFound("document " + std::to_string(doc_id) + " of memory " + std::to_string(id) + " was deleted");
    }
  }
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  SendJson(res, api::MemoryDocumentToJson(doc));
}

void Server::Impl::HandleDeleteDocument(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0, doc_id = 0;
  Status s = PathId(req, 1, "memory", &id);
  if (s.ok()) s = PathId(req, 2, "document", &doc_id);
  if (s.ok()) s = state->RequireMemories();
  MemoryDocument doc;
  if (s.ok()) s = state->memories()->DeleteDocument(id, doc_id, &doc);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  metrics.GetCounter("mnemo_memory_documents_deleted_total", "Documents deleted from memories").Increment();
  LogAction(ActionFor(req, "memories.documents.delete", {std::to_string(id) + "/" + std::to_string(doc_id)},
                      {{"tokens", doc.tokens}}));
  SendJson(res, {{"id", doc_id}, {"object", "memory.document"}, {"memory_id", id}, {"deleted", true}, {"tokens", doc.tokens}});
}

void Server::Impl::HandleVerifyDocumentDeleted(const httplib::Request& req, httplib::Response& res) {
  int64_t id = 0, doc_id = 0;
  Status s = PathId(req, 1, "memory", &id);
  if (s.ok()) s = PathId(req, 2, "document", &doc_id);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json body = Json::object();
  if (!req.body.empty() && !ParseBody(req, res, &body)) return;
  std::string text;
  bool has_text = false;
  s = api::OptionalString(body, "text", &text, &has_text);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  MemoryDeletionVerdict verdict;
  Status run;
  if (!RunOnWorker(res, [&](const std::atomic<bool>&) {
        run = state->VerifyMemoryDocumentDeleted(id, doc_id, has_text ? &text : nullptr, &verdict);
      })) {
    return;
  }
  if (!run.ok()) return SendError(res, ErrorFromStatus(run));
  const Json receipt = api::MemoryDeletionVerdictToJson(id, doc_id, verdict);
  LogAction(ActionFor(req, "memories.documents.verify-deleted", {std::to_string(id) + "/" + std::to_string(doc_id)},
                      receipt));
  SendJson(res, receipt);
}

}  // namespace mnemo
