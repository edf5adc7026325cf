// Internals of the HTTP server shared by its .cc files (server.cc: lifecycle, auth, errors, small routes;
// server_generation.cc: completions and scoring; server_facts.cc: fact management). Not a public header.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>

#include "api/api_keys.h"
#include "api/http_front.h"
#include "api/json_fields.h"
#include "api/server.h"
#include "lm/checkpoint.h"
#include "memory/fact_store.h"
#include "retriever/completion_batcher.h"
#include "retriever/state_service.h"
#include "util/metrics.h"
#include "util/work_queue.h"

namespace mnemo {

// Client text quoted in an error message: at most 64 bytes and its size, so a huge field (a model name,
// a path, an id) is not echoed back whole.
std::string TruncateForMessage(const std::string& text);

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  ApiError(int status_, std::string message_, std::string type_ = "invalid_request_error", std::string param_ = "")
      : status(status_), message(std::move(message_)), type(std::move(type_)), param(std::move(param_)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;
};

ApiError ErrorFromStatus(const Status& s);
// Reads the integer query parameter `name` into *out when present (absent: *out unchanged). InvalidArgument
// naming it when it is not an integer in [min, max].
Status QueryInt(const httplib::Request& req, const char* name, int64_t min, int64_t max, int64_t* out);

struct Server::Impl {
  explicit Impl(ServeOptions o) : options(std::move(o)) {}

  ServeOptions options;
  ApiKeys keys;
  HttpFront http;  // cpp-httplib's routing behind our own connection handling (api/http_front.h)
  std::unique_ptr<WorkQueue> work;
  MetricsRegistry metrics;
  std::thread loader;
  std::atomic<bool> is_ready{false};
  std::atomic<bool> stop_requested{false};  // Stop() called, or loading failed
  std::atomic<bool> draining{false};        // Stop() in progress: new requests get 503
  std::atomic<int> in_flight{0};            // requests past pre-routing whose response is not logged yet
  std::mutex load_mu;
  Status load_status;  // guarded by load_mu
  std::string model_id;
  std::unique_ptr<StateService> state;  // the state with its model, once loaded
  LanguageModel* model = nullptr;       // state->model()
  FactStore* store = nullptr;           // state->store()
  std::unique_ptr<KnnMemory> memory;  // the store, timed for the retrieval metric
  std::unique_ptr<CompletionBatcher> batcher;  // completions decoded together; null with batch_slots 0

  // server.cc
  Status Load();
  void Routes();
  void Route(const std::string& method, const std::string& pattern, httplib::Server::Handler handler);
  std::vector<std::pair<std::regex, std::string>> route_methods;  // (path pattern, method), for 405s
  void SendError(httplib::Response& res, const ApiError& e);
  void SendJson(httplib::Response& res, const api::Json& body, int status = 200);
  // Parses the body as a JSON object; false (response written) when it is not one.
  bool ParseBody(const httplib::Request& req, httplib::Response& res, api::Json* body);
  // The role of the request's key; *name (may be null) receives the key's name.
  Role RoleOf(const httplib::Request& req, std::string* name = nullptr) const;
  Role Caller(const httplib::Request& req) const { return keys.empty() ? Role::kAdmin : RoleOf(req); }
  // Runs `fn` on a model worker and waits for it (with the request timeout). False (response written:
  // 503 when the queue is full, 504 on timeout) when it did not complete.
  // `timeout_s` < 0: the request timeout.
  bool RunOnWorker(httplib::Response& res, const std::function<void(const std::atomic<bool>& cancel)>& fn,
                   double timeout_s = -1);
  // Checks the request's "model" field; false (response written) when it is missing or names another model.
  bool CheckModel(const api::Json& body, httplib::Response& res);
  void Record(const std::string& endpoint, int status, double seconds);

  // server_generation.cc
  // Scores longer than the model's context take one of max(1, threads - 1) slots while they wait for and
  // run on a worker, so at least one worker stays free for completions and short scores (with 2+ workers).
  std::mutex score_mu;
  std::condition_variable score_freed;
  int long_scores_running = 0;  // guarded by score_mu
  int long_scores_waiting = 0;  // guarded by score_mu
  void HandleCompletions(const httplib::Request& req, httplib::Response& res);
  void HandleScore(const httplib::Request& req, httplib::Response& res);

  // server_log.cc: the action log
  // Who is calling, as the action log names them: the key's name, or "local" on a server without keys.
  std::string ActorOf(const httplib::Request& req) const;
  ActionRecord ActionFor(const httplib::Request& req, const std::string& action, std::vector<std::string> ids = {},
                         const api::Json& detail = api::Json::object()) const;
  // Logs an action that is not part of a facts transaction, after it succeeded; a failure to log is
  // counted (mnemo_action_log_failures_total) and reported on stderr, not to the client.
  void LogAction(const ActionRecord& action);
  void HandleLog(const httplib::Request& req, httplib::Response& res);

  // server_facts.cc
  void HandleAddFacts(const httplib::Request& req, httplib::Response& res);
  void HandleGetFact(const httplib::Request& req, httplib::Response& res);
  void HandleListFacts(const httplib::Request& req, httplib::Response& res);
  void HandleDeleteFact(const httplib::Request& req, httplib::Response& res);
  void HandleDeleteMatching(const httplib::Request& req, httplib::Response& res);
  void HandleVerifyDeleted(const httplib::Request& req, httplib::Response& res);

  // server_datastore.cc: the base datastore's documents (admin; 409 without a datastore with provenance)
  void HandleListDatastoreDocuments(const httplib::Request& req, httplib::Response& res);
  void HandleGetDatastoreDocument(const httplib::Request& req, httplib::Response& res);
  void HandleDeleteDatastoreDocument(const httplib::Request& req, httplib::Response& res);
  void HandleVerifyDatastoreDocument(const httplib::Request& req, httplib::Response& res);

  // server_memories.cc: the memorizing layer's memories (state->memories(); 409 without a memory layer)
  void HandleCreateMemory(const httplib::Request& req, httplib::Response& res);
  void HandleListMemories(const httplib::Request& req, httplib::Response& res);
  void HandleGetMemory(const httplib::Request& req, httplib::Response& res);
  void HandleDeleteMemory(const httplib::Request& req, httplib::Response& res);
  void HandleReadDocument(const httplib::Request& req, httplib::Response& res);
  void HandleListDocuments(const httplib::Request& req, httplib::Response& res);
  void HandleGetDocument(const httplib::Request& req, httplib::Response& res);
  void HandleDeleteDocument(const httplib::Request& req, httplib::Response& res);
  void HandleVerifyDocumentDeleted(const httplib::Request& req, httplib::Response& res);

  // server_audits.cc
  struct AuditJob;
  std::mutex audit_mu;
  std::map<std::string, std::shared_ptr<AuditJob>> audits;  // guarded by audit_mu
  std::shared_ptr<AuditJob> running_audit;                  // guarded by audit_mu
  int64_t audit_counter = 0;                                // guarded by audit_mu
  std::thread audit_thread;
  std::string AuditDir() const;
  api::Json AuditStatusJson(const AuditJob& job) const;  // callers hold audit_mu
  std::shared_ptr<AuditJob> FindAudit(const std::string& id);
  void HandleStartAudit(const httplib::Request& req, httplib::Response& res);
  void HandleGetAudit(const httplib::Request& req, httplib::Response& res);
  void HandleAuditReport(const httplib::Request& req, httplib::Response& res);
  void HandleCancelAudit(const httplib::Request& req, httplib::Response& res);
  void HandleListAudits(const httplib::Request& req, httplib::Response& res);
  void StopAudits();        // cancels a running audit and waits for it
  void CleanAuditScratch();  // removes scratch copies a crash left behind
};

// A KnnMemory that records each search's duration in a histogram (the retrieval-time metric).
class TimedMemory : public KnnMemory {
 public:
  TimedMemory(const KnnMemory& inner, Histogram& seconds) : inner_(inner), seconds_(seconds) {}
  int dim() const override { return inner_.dim(); }
  int64_t size() const override { return inner_.size(); }
  Status Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                std::vector<Neighbor>* out) const override {
    const auto start = std::chrono::steady_clock::now();
    Status s = inner_.Search(queries, n, options, out);
    seconds_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return s;
  }
  Status Successors(const float* query, const std::vector<Neighbor>& from, std::vector<Neighbor>* out) const override {
    return inner_.Successors(query, from, out);
  }

 private:
  const KnnMemory& inner_;
  Histogram& seconds_;
};

// Reads the request's `memory` object ({"id", "topk"?}) into a reader of that served memory; *reader stays
// null when the body has none. InvalidArgument for a malformed object, NotFound for an unknown memory,
// FailedPrecondition when the model has no memory layer.
Status ParseLayerMemory(const api::Json& body, const StateService& state, std::unique_ptr<KvMemory>* reader,
                        int64_t* topk);

// Reads the `knn` request object into *knn (starting from the server's defaults).
Status ParseKnn(const api::Json& body, const KnnOptions& defaults, KnnOptions* knn);

}  // namespace mnemo
