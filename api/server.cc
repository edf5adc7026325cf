// Server lifecycle, authentication, errors and the small routes (health, models, metrics, tokenize).
#include "api/server.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <limits>
#include <thread>

#include "api/server_impl.h"
#include "memory/datastore_shards.h"
#include "memory/mpi_shards.h"
#include "util/blas_threads.h"
#include "util/parse.h"

namespace mnemo {

std::string TruncateForMessage(const std::string& text) {
  if (text.size() <= 64) return text;
  return text.substr(0, 64) + "... (" + std::to_string(text.size()) + " bytes)";
}

namespace {

using api::Json;
using Clock = std::chrono::steady_clock;

bool IsLoopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

// The metric label for a request: the route, not the raw path (ids would make unbounded label sets).
std::string EndpointOf(const std::string& path) {
  if (path.rfind("/v1/facts", 0) == 0) {
    if (path == "/v1/facts" || path == "/v1/facts/delete") return path;
    if (path.size() > 16 && path.compare(path.size() - 15, 15, "/verify-deleted") == 0) return "/v1/facts/{id}/verify-deleted";
    return "/v1/facts/{id}";
  }
  if (path.rfind("/v1/memories", 0) == 0) {
    if (path == "/v1/memories") return path;
    const bool verify = path.size() > 16 && path.compare(path.size() - 15, 15, "/verify-deleted") == 0;
    if (verify) return "/v1/memories/{id}/documents/{doc}/verify-deleted";
    const size_t docs = path.find("/documents");
    if (docs == std::string::npos) return "/v1/memories/{id}";
    return path.size() == docs + 10 ? "/v1/memories/{id}/documents" : "/v1/memories/{id}/documents/{doc}";
  }
  if (path.rfind("/v1/datastore/documents", 0) == 0) {
    if (path == "/v1/datastore/documents") return path;
    if (path.size() > 16 && path.compare(path.size() - 15, 15, "/verify-deleted") == 0) {
      return "/v1/datastore/documents/{id}/verify-deleted";
    }
    return "/v1/datastore/documents/{id}";
  }
  if (path.rfind("/v1/audits", 0) == 0) {
    if (path == "/v1/audits") return path;
    if (path.size() > 12 && path.compare(path.size() - 12, 12, "/report.json") == 0) return "/v1/audits/{id}/report.json";
    if (path.size() > 12 && path.compare(path.size() - 12, 12, "/report.html") == 0) return "/v1/audits/{id}/report.html";
    return "/v1/audits/{id}";
  }
  for (const char* known : {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/score", "/tokenize", "/detokenize",
                            "/v1/log"}) {
    if (path == known) return path;
  }
  return "other";
}

// When the current request arrived: set by the pre-routing handler, read by the logger, which cpp-httplib
// runs on the same thread after the response is written.
thread_local Clock::time_point t_request_start;
thread_local bool t_request_started = false;

Role RequiredRole(const std::string& method, const std::string& path) {
  if (path == "/health") return Role::kNone;
  if (path.rfind("/v1/facts", 0) == 0 || path.rfind("/v1/audits", 0) == 0 || path.rfind("/v1/datastore", 0) == 0 ||
      path == "/v1/log") {
    return Role::kAdmin;
  }
  // Memories: read keys may list them and see one (names and sizes); reading documents into them, their
  // documents (metadata, text), deletes and verification are admin's.
  if (path.rfind("/v1/memories", 0) == 0) {
    const bool summary = method == "GET" && std::count(path.begin(), path.end(), '/') <= 3;
    return summary ? Role::kRead : Role::kAdmin;
  }
  return Role::kRead;
}

}  // namespace

Status QueryInt(const httplib::Request& req, const char* name, int64_t min, int64_t max, int64_t* out) {
  if (!req.has_param(name)) return Status::OK();
  if (ParseInt64(req.get_param_value(name), min, max, out).ok()) return Status::OK();
  return Status::InvalidArgument(std::string(name) + ": must be an integer in [" + std::to_string(min) + ", " +
                                 std::to_string(max) + "]");
}

ApiError ErrorFromStatus(const Status& s) {
  ApiError e(400, s.message());
  switch (s.code()) {
    case Status::Code::kInvalidArgument: e.status = 400; break;
    case Status::Code::kNotFound: e.status = 404; break;
    case Status::Code::kFailedPrecondition: e.status = 409; break;
    // Non-streaming work is only ever cancelled by the request timeout (a stream's client is gone).
    case Status::Code::kCancelled: e.status = 504; e.type = "timeout"; break;
    case Status::Code::kUnavailable: e.status = 503; e.type = "unavailable"; break;
    default: e.status = 500; e.type = "server_error"; e.message = s.ToString(); break;
  }
  if (s.IsIOError()) {
    // A full disk, or the database locked by another process past the busy timeout: nothing was
    // acknowledged, and the same request may succeed later (tests/fault_injection_test.cc).
    const std::string& m = s.message();
    if (m.find("No space left on device") != std::string::npos || m.find("database or disk is full") != std::string::npos) {
      e.status = 507;
      e.type = "insufficient_storage";
    } else if (m.find("database is locked") != std::string::npos) {
      e.status = 503;
      e.type = "unavailable";
    }
  }
  return e;
}

void Server::Impl::SendJson(httplib::Response& res, const Json& body, int status) {
  res.status = status;
  res.set_content(api::Dump(body) + "\n", "application/json");
}

void Server::Impl::SendError(httplib::Response& res, const ApiError& e) {
  Json err = {{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
              {"code", nullptr}};
  SendJson(res, {{"error", err}}, e.status);
}

// Nesting depth of a JSON text (brackets outside strings). Copying or dumping a JSON value recurses, so a
// body nested hundreds of thousands deep would overflow the stack of whoever copies it.
int JsonDepth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

bool Server::Impl::ParseBody(const httplib::Request& req, httplib::Response& res, Json* body) {
  if (JsonDepth(req.body) > 32) {
    SendError(res, {400, "request body is nested more than 32 levels deep"});
    return false;
  }
  // nlohmann rejects invalid UTF-8 in strings, so a prompt with broken UTF-8 is a 400 here.
  Json parsed = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    SendError(res, {400, "request body is not valid JSON (or not valid UTF-8)"});
    return false;
  }
  if (!parsed.is_object()) {
    SendError(res, {400, "request body must be a JSON object"});
    return false;
  }
  *body = std::move(parsed);
  return true;
}

bool Server::Impl::CheckModel(const Json& body, httplib::Response& res) {
  std::string model;
  bool present = false;
  Status s = api::OptionalString(body, "model", &model, &present);
  if (!s.ok()) {
    SendError(res, {400, s.message(), "invalid_request_error", "model"});
    return false;
  }
  if (!present) {
    SendError(res, {400, "model: required; GET /v1/models lists it (\"" + model_id + "\")", "invalid_request_error", "model"});
    return false;
  }
  if (model != model_id) {
    SendError(res, {404, "The model `" + TruncateForMessage(model) + "` does not exist; this server serves `" + model_id + "`",
                    "invalid_request_error", "model"});
    return false;
  }
  return true;
}

Role Server::Impl::RoleOf(const httplib::Request& req, std::string* name) const {
  std::string key;
  const std::string auth = req.get_header_value("Authorization");
  if (auth.rfind("Bearer ", 0) == 0) {
    key = auth.substr(7);
  } else if (req.has_header("X-Api-Key")) {
    key = req.get_header_value("X-Api-Key");
  }
  if (key.empty()) {
    if (name != nullptr) name->clear();
    return Role::kNone;
  }
  return keys.Authenticate(key, name);
}

bool Server::Impl::RunOnWorker(httplib::Response& res, const std::function<void(const std::atomic<bool>&)>& fn,
                               double timeout_s) {
  if (timeout_s < 0) timeout_s = options.request_timeout_s;
  struct Job {
    std::atomic<bool> cancel{false};
    bool ran = false;     // fn ran (to its end, or to an exception)
    std::string failure;  // what it threw
    std::promise<void> done;
  };
  auto job = std::make_shared<Job>();
  std::future<void> finished = job->done.get_future();
  const bool queued = work->TrySubmit([job, fn] {
    if (!job->cancel) {
      try {
        fn(job->cancel);
      } catch (const std::exception& e) {
        job->failure = e.what();
      } catch (...) {
        job->failure = "unknown exception";
      }
      job->ran = true;
    }
    job->done.set_value();
  });
  if (!queued) {
    res.set_header("Retry-After", "1");
    SendError(res, {503, "server is busy: the work queue is full; retry shortly", "overloaded"});
    return false;
  }
  if (finished.wait_for(std::chrono::duration<double>(timeout_s)) != std::future_status::ready) {
    // `fn` refers to this handler's locals: wait for the worker to let go of them. Generation stops at
    // its next token (and reports Cancelled, answered 504); work that ignores `cancel` (encoding, a
    // commit) finishes, and then its real result is the answer.
    job->cancel = true;
    finished.wait();
    if (!job->ran) {
      SendError(res, {504, "request timed out after " + std::to_string(options.request_timeout_s) + " s in the queue",
                      "timeout"});
      return false;
    }
  }
  if (!job->failure.empty()) {
    SendError(res, {500, "internal error: " + job->failure, "server_error"});
    return false;
  }
  return true;
}

void Server::Impl::Record(const std::string& endpoint, int status, double seconds) {
  metrics.GetCounter("mnemo_http_requests_total", "HTTP requests by endpoint and status",
                     {{"endpoint", endpoint}, {"status", std::to_string(status)}})
      .Increment();
  metrics.GetHistogram("mnemo_http_request_duration_seconds", "HTTP request latency by endpoint",
                       DefaultLatencyBuckets(), {{"endpoint", endpoint}})
      .Observe(seconds);
}

Status PlanBatchSlots(int requested, int64_t parameters, int64_t cache_bytes_per_slot, int64_t packed_bytes,
                      int64_t budget_bytes, int* slots, std::string* why) {
  auto mb = [](int64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; };
  const std::string limit = mb(budget_bytes) + " (--batch-memory-mb)";
  *slots = 0;
  if (requested == 0) {
    *why = "--batch-slots 0";
    return Status::OK();
  }
  if (requested > 0) {
    const int64_t need = packed_bytes + requested * cache_bytes_per_slot;
    if (need > budget_bytes) {
      return Status::InvalidArgument(
          "--batch-slots " + std::to_string(requested) + " needs " + mb(need) + " (" + mb(cache_bytes_per_slot) +
          " of key/value cache per slot" + (packed_bytes > 0 ? " and " + mb(packed_bytes) + " of packed weights" : "") +
          "), over the limit of " + limit + "; lower --batch-slots or raise --batch-memory-mb");
    }
    *slots = requested;
    *why = "--batch-slots " + std::to_string(requested) + ", " + mb(need);
    return Status::OK();
  }
  if (parameters < ServeOptions::kAutoBatchFromParameters) {
    *why = "automatic: a model under " + std::to_string(ServeOptions::kAutoBatchFromParameters / 1'000'000) +
           "M parameters";
    return Status::OK();
  }
  const int64_t room = budget_bytes - packed_bytes;
  const int64_t fit = room <= 0 ? 0 : cache_bytes_per_slot > 0 ? room / cache_bytes_per_slot : ServeOptions::kAutoBatchSlots;
  *slots = static_cast<int>(std::min<int64_t>(ServeOptions::kAutoBatchSlots, fit));
  if (*slots == 0) {
    *why = "automatic: the packed weights and one slot's cache (" + mb(packed_bytes + cache_bytes_per_slot) +
           ") do not fit " + limit;
  } else {
    *why = "automatic, " + mb(packed_bytes + *slots * cache_bytes_per_slot) + " of " + limit;
  }
  return Status::OK();
}

Status Server::Impl::Load() {
  StateOptions open;
  open.device = options.device;
  open.store.base_gpu_device = options.gpu_index;
  open.memory_nprobe = options.memory_nprobe;
  open.memory_ivf_from = options.memory_ivf_from;
  MNEMO_RETURN_IF_ERROR(StateService::Open(options.state, open, &state));
  model = &state->model();
  store = &state->store();
  memory = std::make_unique<TimedMemory>(
      *store, metrics.GetHistogram("mnemo_retrieval_seconds", "kNN search time per call (datastore + facts)",
                                   DefaultLatencyBuckets()));
  int64_t parameters = 0;
  for (const auto& p : model->net->parameters()) parameters += p.numel();
  const GptConfig& c = model->config;
  const bool on_cpu = model->net->device().is_cpu();
  const int64_t per_slot = c.n_layer * 2 * c.n_positions * c.n_embd * static_cast<int64_t>(sizeof(float));
  const int64_t packed =
      PackedWeightCache::Applies(model->net->wte->weight) ? parameters * static_cast<int64_t>(sizeof(float)) : 0;
  const int64_t budget =
      options.batch_memory_mb > 0 ? options.batch_memory_mb << 20 : PhysicalMemoryBytes() / 4;
  int slots = 0;
  std::string why;
  // On a GPU the cache is the device's memory and nothing is packed: the limit is for host memory.
  MNEMO_RETURN_IF_ERROR(PlanBatchSlots(options.batch_slots, parameters, on_cpu ? per_slot : 0, packed,
                                       budget > 0 ? budget : std::numeric_limits<int64_t>::max(), &slots, &why));
  std::fprintf(stderr, "mnemo serve: %s (%s)\n",
               slots > 0 ? ("completions decoded together, up to " + std::to_string(slots) + " at a time").c_str()
                         : "each completion decoded alone on a worker",
               why.c_str());
  if (slots > 0) {
    BatcherOptions batching;
    batching.slots = slots;
    batching.queue = options.queue;
    batching.prefill_tokens = static_cast<size_t>(options.batch_prefill_tokens);
    batcher = std::make_unique<CompletionBatcher>(*model, memory.get(), batching);
    CompletionBatcher* b = batcher.get();
    metrics.AddGaugeCallback("mnemo_decode_steps", "Batched decoding steps so far (one forward pass each)",
                             [b] { return static_cast<double>(b->stats().steps); });
    metrics.AddGaugeCallback("mnemo_decode_step_rows", "Sequences advanced by batched decoding steps so far",
                             [b] { return static_cast<double>(b->stats().rows); });
    metrics.AddGaugeCallback("mnemo_decode_active", "Completions holding a decoding slot",
                             [b] { return static_cast<double>(b->stats().active); });
    metrics.AddGaugeCallback("mnemo_decode_waiting", "Completions waiting for a decoding slot",
                             [b] { return static_cast<double>(b->stats().waiting); });
  }
  CleanAuditScratch();
  model_id = std::filesystem::path(store->config().model_path).filename().string();
  if (model_id.empty()) model_id = "mnemo";
  FactStore* s = store;
  metrics.AddGaugeCallback("mnemo_facts", "Facts stored", [s] {
    int64_t n = 0;
    return s->Count(FactFilter(), &n).ok() ? static_cast<double>(n) : -1.0;
  });
  metrics.AddGaugeCallback("mnemo_fact_entries", "Datastore entries derived from facts",
                           [s] { return static_cast<double>(s->fact_entries()); });
  metrics.AddGaugeCallback("mnemo_datastore_entries", "Entries searched: base datastore plus facts",
                           [s] { return static_cast<double>(s->size()); });
  return Status::OK();
}

// Registers a route and remembers its method for 405 answers.
void Server::Impl::Route(const std::string& method, const std::string& pattern, httplib::Server::Handler handler) {
  route_methods.emplace_back(std::regex(pattern), method);
  if (method == "GET") {
    http.Get(pattern, std::move(handler));
  } else if (method == "POST") {
    http.Post(pattern, std::move(handler));
  } else {
    http.Delete(pattern, std::move(handler));
  }
}

void Server::Impl::Routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    t_request_start = Clock::now();
    t_request_started = true;
    ++in_flight;
    // The front has read the whole body (within the limit) before this runs, so none of it can be taken
    // for a next request; a refusal of a request with a body still closes the connection, so a client
    // sending bodies it may not send pays a new connection (and its caps) for each try.
    const std::string length = req.get_header_value("Content-Length");
    const bool has_body = (!length.empty() && length != "0") || req.has_header("Transfer-Encoding");
    auto reject = [&](const ApiError& e) {
      if (has_body) res.set_header("Connection", "close");
      SendError(res, e);
      return httplib::Server::HandlerResponse::Handled;
    };
    if (draining) {
      res.set_header("Retry-After", "5");
      return reject({503, "the server is shutting down", "unavailable"});
    }
    const Role need = RequiredRole(req.method, req.path);
    if (need != Role::kNone && !keys.empty()) {
      const Role have = RoleOf(req);
      if (have == Role::kNone) {
        return reject({401, "missing or invalid API key (Authorization: Bearer <key> or X-Api-Key)", "authentication_error"});
      }
      if (have < need) {
        return reject({403, std::string("this key has role ") + RoleName(have) + "; " + req.path + " needs " +
                                RoleName(need), "permission_error"});
      }
    }
    if (!is_ready && req.path != "/health") {
      res.set_header("Retry-After", "5");
      return reject({503, "the model is still loading", "loading"});
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Statuses cpp-httplib sets itself (no route, body too large, malformed request) get a JSON body too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "error";
    if (res.status == 404) {
      // A known path asked with a method it does not take: 405 with the methods it does (RFC 9110 15.5.6).
      std::string allow;
      for (const auto& [pattern, method] : route_methods) {
        if (std::regex_match(req.path, pattern) && allow.find(method) == std::string::npos) {
          allow += (allow.empty() ? "" : ", ") + method;
        }
      }
      if (!allow.empty()) {
        res.status = 405;
        res.set_header("Allow", allow);
        message = req.method.substr(0, 16) + " is not allowed here; " + TruncateForMessage(req.path) + " takes " + allow;
      } else {
        message = "no route for " + req.method.substr(0, 16) + " " + TruncateForMessage(req.path);
      }
    }
    if (res.status == 413) message = "request body exceeds " + std::to_string(options.max_body_bytes) + " bytes";
    if (res.status == 400) message = "malformed HTTP request";
    SendError(res, {res.status, message});
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = std::string("internal error: ") + e.what();
    } catch (...) {
    }
    SendError(res, {500, what, "server_error"});
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const double seconds =
        t_request_started ? std::chrono::duration<double>(Clock::now() - t_request_start).count() : 0.0;
    if (t_request_started) --in_flight;
    t_request_started = false;
    Record(EndpointOf(req.path), res.status, seconds);
    if (options.log_requests) {
      std::fprintf(stderr, "%s %s %d %.1f ms\n", req.method.c_str(), req.path.c_str(), res.status, seconds * 1e3);
    }
  });

  Route("GET", "/health", [this](const httplib::Request&, httplib::Response& res) {
    if (is_ready) {
      // A sharded base datastore served by other ranks (memory/mpi_shards.h): which shards answer. One that
      // does not makes kNN requests fail with 503, and health says so with 503 too.
      const std::vector<ShardHealth> shards =
          store != nullptr && store->sharded_base() != nullptr ? ShardsHealth(store->sharded_base()->shards())
                                                               : std::vector<ShardHealth>();
      if (shards.empty()) return SendJson(res, {{"status", "ok"}, {"model", model_id}});
      Json list = Json::array();
      bool all_up = true;
      for (const ShardHealth& h : shards) {
        Json one = {{"shard", h.shard}, {"rank", h.rank}, {"up", h.up}};
        if (!h.up) one["problem"] = h.problem;
        list.push_back(one);
        all_up = all_up && h.up;
      }
      return SendJson(res, {{"status", all_up ? "ok" : "degraded"}, {"model", model_id}, {"shards", list}},
                      all_up ? 200 : 503);
    }
    std::lock_guard<std::mutex> lock(load_mu);
    if (!load_status.ok()) return SendJson(res, {{"status", "error"}, {"error", load_status.ToString()}}, 503);
    SendJson(res, {{"status", "loading"}}, 503);
  });
  Route("GET", "/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    SendJson(res, {{"object", "list"},
                   {"data", Json::array({{{"id", model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "mnemo"}}})}});
  });
  Route("GET", "/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.RenderText(), "text/plain; version=0.0.4");
  });
  Route("POST", "/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    Json body;
    if (!ParseBody(req, res, &body)) return;
    std::string text;
    bool present = false;
    Status s = api::OptionalString(body, "text", &text, &present);
    if (s.ok() && !present) s = Status::InvalidArgument("text: required");
    if (!s.ok()) return SendError(res, {400, s.message(), "invalid_request_error", "text"});
    const std::vector<int32_t> ids = model->tokenizer->Encode(text);
    Json pieces = Json::array();
    for (int32_t id : ids) pieces.push_back(model->tokenizer->TokenBytes(id));
    SendJson(res, {{"tokens", ids}, {"pieces", pieces}, {"count", ids.size()}});
  });
  Route("POST", "/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    Json body;
    if (!ParseBody(req, res, &body)) return;
    if (!body.contains("tokens") || !body["tokens"].is_array()) {
      return SendError(res, {400, "tokens: must be an array of token ids", "invalid_request_error", "tokens"});
    }
    std::vector<int32_t> ids;
    for (const Json& t : body["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= model->config.vocab_size) {
        return SendError(res, {400, "tokens: every element must be a token id in [0, " +
                                        std::to_string(model->config.vocab_size) + ")", "invalid_request_error", "tokens"});
      }
      ids.push_back(t.get<int32_t>());
    }
    SendJson(res, {{"text", model->tokenizer->Decode(ids)}});
  });
  Route("POST", "/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { HandleCompletions(req, res); });
  Route("POST", "/v1/score", [this](const httplib::Request& req, httplib::Response& res) { HandleScore(req, res); });
  Route("POST", "/v1/facts", [this](const httplib::Request& req, httplib::Response& res) { HandleAddFacts(req, res); });
  Route("GET", "/v1/facts", [this](const httplib::Request& req, httplib::Response& res) { HandleListFacts(req, res); });
  Route("POST", "/v1/facts/delete", [this](const httplib::Request& req, httplib::Response& res) { HandleDeleteMatching(req, res); });
  Route("GET", "/v1/log", [this](const httplib::Request& req, httplib::Response& res) { HandleLog(req, res); });
  Route("POST", "/v1/audits", [this](const httplib::Request& req, httplib::Response& res) { HandleStartAudit(req, res); });
  Route("GET", "/v1/audits", [this](const httplib::Request& req, httplib::Response& res) { HandleListAudits(req, res); });
  Route("GET", R"(/v1/audits/(audit-[0-9]+-[0-9]+))",
           [this](const httplib::Request& req, httplib::Response& res) { HandleGetAudit(req, res); });
  Route("DELETE", R"(/v1/audits/(audit-[0-9]+-[0-9]+))",
              [this](const httplib::Request& req, httplib::Response& res) { HandleCancelAudit(req, res); });
  Route("GET", R"(/v1/audits/(audit-[0-9]+-[0-9]+)/report\.(json|html))",
           [this](const httplib::Request& req, httplib::Response& res) { HandleAuditReport(req, res); });
  Route("POST", "/v1/memories", [this](const httplib::Request& req, httplib::Response& res) { HandleCreateMemory(req, res); });
  Route("GET", "/v1/memories", [this](const httplib::Request& req, httplib::Response& res) { HandleListMemories(req, res); });
  Route("GET", R"(/v1/memories/(\d+))", [this](const httplib::Request& req, httplib::Response& res) { HandleGetMemory(req, res); });
  Route("DELETE", R"(/v1/memories/(\d+))",
        [this](const httplib::Request& req, httplib::Response& res) { HandleDeleteMemory(req, res); });
  Route("POST", R"(/v1/memories/(\d+)/documents)",
        [this](const httplib::Request& req, httplib::Response& res) { HandleReadDocument(req, res); });
  Route("GET", R"(/v1/memories/(\d+)/documents)",
        [this](const httplib::Request& req, httplib::Response& res) { HandleListDocuments(req, res); });
  Route("GET", R"(/v1/memories/(\d+)/documents/(\d+))",
        [this](const httplib::Request& req, httplib::Response& res) { HandleGetDocument(req, res); });
  Route("DELETE", R"(/v1/memories/(\d+)/documents/(\d+))",
        [this](const httplib::Request& req, httplib::Response& res) { HandleDeleteDocument(req, res); });
  Route("POST", R"(/v1/memories/(\d+)/documents/(\d+)/verify-deleted)",
        [this](const httplib::Request& req, httplib::Response& res) { HandleVerifyDocumentDeleted(req, res); });
  Route("GET", "/v1/datastore/documents",
        [this](const httplib::Request& req, httplib::Response& res) { HandleListDatastoreDocuments(req, res); });
  Route("POST", R"(/v1/datastore/documents/(.+)/verify-deleted)",
        [this](const httplib::Request& req, httplib::Response& res) { HandleVerifyDatastoreDocument(req, res); });
  Route("GET", R"(/v1/datastore/documents/(.+))",
        [this](const httplib::Request& req, httplib::Response& res) { HandleGetDatastoreDocument(req, res); });
  Route("DELETE", R"(/v1/datastore/documents/(.+))",
        [this](const httplib::Request& req, httplib::Response& res) { HandleDeleteDatastoreDocument(req, res); });
  Route("GET", R"(/v1/facts/(\d+))", [this](const httplib::Request& req, httplib::Response& res) { HandleGetFact(req, res); });
  Route("DELETE", R"(/v1/facts/(\d+))", [this](const httplib::Request& req, httplib::Response& res) { HandleDeleteFact(req, res); });
  Route("POST", R"(/v1/facts/(\d+)/verify-deleted)",
            [this](const httplib::Request& req, httplib::Response& res) { HandleVerifyDeleted(req, res); });
}

Server::Server(ServeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  Stop();
  if (impl_->loader.joinable()) impl_->loader.join();
}

bool Server::ready() const { return impl_->is_ready; }

Status Server::Bind(int* port) {
  Impl& m = *impl_;
  ServeOptions& o = m.options;
  if (o.threads < 1) return Status::InvalidArgument("--threads must be at least 1");
  if (o.max_score_tokens < 2) return Status::InvalidArgument("--max-score-tokens must be at least 2");
  if (o.max_response_items < 1) return Status::InvalidArgument("--max-response-items must be at least 1");
  if (!o.api_key_file.empty()) {
    MNEMO_RETURN_IF_ERROR(ApiKeys::Load(o.api_key_file, &m.keys));
  } else if (!IsLoopback(o.host)) {
    std::fprintf(stderr, "mnemo serve: no --api-key-file: binding to 127.0.0.1 instead of %s (anyone who can reach "
                         "the port could use and edit the model)\n", o.host.c_str());
    o.host = "127.0.0.1";
  }
  if (m.keys.empty()) std::fprintf(stderr, "mnemo serve: no API keys: loopback only, every client is admin\n");
  MNEMO_RETURN_IF_ERROR(o.knn.Validate());
  HttpFrontOptions front;
  front.threads = o.http_threads;
  front.max_body_bytes = o.max_body_bytes;
  front.header_timeout_s = o.header_timeout_s;
  front.body_timeout_s = o.body_timeout_s;
  front.idle_timeout_s = o.keep_alive_timeout_s;
  front.write_timeout_s = o.write_timeout_s;
  front.max_connections = o.max_connections;
  front.max_connections_per_ip = o.max_connections_per_ip;
  front.max_requests_per_connection = 1000;  // cpp-httplib's default of 5 makes busy clients reconnect constantly
  MNEMO_RETURN_IF_ERROR(m.http.Configure(front, [&m](int status, const std::string& reason, const std::string& ip) {
    m.metrics.GetCounter("mnemo_http_refused_total", "Requests and connections refused by the HTTP front",
                         {{"status", std::to_string(status)}})
        .Increment();
    if (m.options.log_requests) std::fprintf(stderr, "%s refused: %d %s\n", ip.c_str(), status, reason.c_str());
  }));
  m.metrics.AddGaugeCallback("mnemo_http_connections", "Open HTTP connections",
                             [&m] { return static_cast<double>(m.http.connections()); });
  m.Routes();
  if (o.port == 0) {
    const int bound = m.http.bind_to_any_port(o.host);
    if (bound <= 0) return Status::IOError("cannot bind " + o.host + " to any port");
    *port = bound;
  } else {
    if (!m.http.bind_to_port(o.host, o.port)) {
      return Status::IOError("cannot bind " + o.host + ":" + std::to_string(o.port) + " (in use, or not permitted)");
    }
    *port = o.port;
  }
  return Status::OK();
}

Status Server::Run() {
  Impl& m = *impl_;
  const int workers = m.options.threads;
  const int cores = HardwareThreads();
  SetBlasThreads(std::max(1, cores / workers));
  m.work = std::make_unique<WorkQueue>(workers, m.options.queue, [] { torch::set_num_threads(1); });
  m.loader = std::thread([&m] {
    Status s = m.Load();
    std::lock_guard<std::mutex> lock(m.load_mu);
    m.load_status = s;
    if (s.ok()) {
      m.is_ready = true;
      std::fprintf(stderr, "mnemo serve: ready: model %s, %ld datastore entries, %ld fact entries\n", m.model_id.c_str(),
                   static_cast<long>(m.store->size()), static_cast<long>(m.store->fact_entries()));
    } else {
      std::fprintf(stderr, "mnemo serve: loading failed: %s\n", s.ToString().c_str());
      m.stop_requested = true;
      m.http.Stop();
    }
  });
  // Returns at once when a stop came first (a signal during start-up, a failed load).
  const Status served = m.http.Serve();
  if (!served.ok()) std::fprintf(stderr, "mnemo serve: the listener failed: %s\n", served.ToString().c_str());
  m.loader.join();
  m.StopAudits();
  m.batcher.reset();  // ends what still decodes (Stop drained in-flight requests first)
  m.work->Shutdown();
  m.work.reset();  // joins the workers after they finish what was queued
  if (m.store != nullptr) MNEMO_RETURN_IF_ERROR(m.store->Close());
  std::lock_guard<std::mutex> lock(m.load_mu);
  return m.load_status.ok() ? served : m.load_status;
}

void Server::Stop() {
  Impl& m = *impl_;
  if (m.stop_requested.exchange(true)) return;
  // Drain: new requests get 503 while in-flight ones (streams included) finish, for up to 30 s; then the
  // front closes the listener and every connection. Idle and half-read connections are not in flight
  // (no handler has seen them), so nothing waits for them.
  m.draining = true;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (m.in_flight > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  m.http.Stop();
}

}  // namespace mnemo
