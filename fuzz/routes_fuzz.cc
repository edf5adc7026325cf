// api/server*.cc: every route of Server::Impl::Routes(), its handler and the parsers behind it (ParseBody
// and JsonDepth, /tokenize, /detokenize, ParseCompletion, ParseKnn, CompletionRequest::Validate, streaming,
// /v1/score, ParseFact, ParseFilter, MetadataMatchValue, ParseLayerMemory and the memory routes,
// ParseAuditOptions and OptionalIntList, the datastore document routes, the log query), on a real server
// state: a tiny GPT (d=32, 2 layers, 64 positions, a memorizing layer) with a base datastore built from
// documents (with provenance), a memory holding a document, facts, a finished and an interrupted audit.
// Built by fuzz/routes/CMakeLists.txt (api/ compiled by clang, instrumented; the rest linked from the main
// build, with LibTorch).
//
// At start-up (LLVMFuzzerInitialize) the state is made on tmpfs and a Server::Impl loaded on it, as
// Server::Run does, without a listener: requests go to cpp-httplib's routing as its process_request does
// (pre-routing handler: roles, then the regex routes with req.matches, then the error handler for >= 400,
// then the logger), taken from the server's own httplib::Server members, so the handlers are the ones
// Routes() registered. A streamed completion's chunked content provider is driven to its end.
//
// Input: byte 0 chooses the route (below; the last is a raw target with any method), byte 1 the caller
// (bits 0-2: admin by Authorization or X-Api-Key, read, no key, a wrong key), whether a streaming client
// leaves after its first event (bit 3) and the raw route's method (bits 4-6). Then "ARGS\nBODY": ARGS are
// the path ids, space-separated, then an optional "?query" (for the raw route: the whole target); BODY is
// the request body. Without a newline the whole rest is the body. The target is percent-decoded and its
// query parsed with cpp-httplib's own functions, as for a real request.
//
// Checked for every request: the status is one the server documents (2xx, 400, 401, 403, 404, 405, 409,
// 503, 504, 507; never 500, and no handler throws); 401 and 403 exactly when the key's role is below what
// the route needs; every non-2xx body is {"error": {"message": string, "type": string, ...}}; every body
// that says it is JSON parses; a stream is "data: <JSON>" events ending with "data: [DONE]".
//
// State: a started audit is cancelled at once and joined (and forgotten), so no audit runs between inputs;
// the state (facts, memories, documents, deletions, the action log) is put back to its start every 10,000
// inputs (MNEMO_FUZZ_ROUTES_RESET=<n> overrides), so it does not grow without bound. FUZZ_ROUTES_PROFILE=1
// prints the time spent per route at exit.
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "api/server_impl.h"
#include "fuzz/fuzz_util.h"
#include "lm/bpe_trainer.h"
#include "lm/checkpoint.h"
#include "retriever/datastore_builder.h"
#include "retriever/state_service.h"
#include "tests/toy_corpus.h"
#include "util/blas_threads.h"

// ---- Access to httplib::Server's routing tables ------------------------------------------------------
// fuzz_util.h, MNEMO_FUZZ_ROB: an explicit instantiation may name private members.
MNEMO_FUZZ_ROB(GetHandlersTag, &httplib::Server::get_handlers_)
MNEMO_FUZZ_ROB(PostHandlersTag, &httplib::Server::post_handlers_)
MNEMO_FUZZ_ROB(DeleteHandlersTag, &httplib::Server::delete_handlers_)
MNEMO_FUZZ_ROB(PreRoutingTag, &httplib::Server::pre_routing_handler_)
MNEMO_FUZZ_ROB(ErrorHandlerTag, &httplib::Server::error_handler_)
MNEMO_FUZZ_ROB(LoggerTag, &httplib::Server::logger_)

namespace {

using namespace mnemo_fuzz;  // the tags and Field

using mnemo::Role;
using mnemo::Status;
using Json = nlohmann::json;

constexpr char kReadKey[] = "fuzz-read-key-0123456789abcdef";
constexpr char kAdminKey[] = "fuzz-admin-key-0123456789abcdef";

void CheckOk(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "routes_fuzz: %s: %s\n", what, s.ToString().c_str());
    std::abort();
  }
}

// ---- The routes ----------------------------------------------------------------------------------------
struct RouteSpec {
  const char* method;
  const char* path;  // "{}" for each path id
  const char* defaults[2];
};
// Every route of Server::Impl::Routes() (api/server.cc), in its order; then the raw target.
constexpr RouteSpec kRoutes[] = {
    {"GET", "/health", {}},
    {"GET", "/v1/models", {}},
    {"GET", "/metrics", {}},
    {"POST", "/tokenize", {}},
    {"POST", "/detokenize", {}},
    {"POST", "/v1/completions", {}},
    {"POST", "/v1/score", {}},
    {"POST", "/v1/facts", {}},
    {"GET", "/v1/facts", {}},
    {"POST", "/v1/facts/delete", {}},
    {"GET", "/v1/log", {}},
    {"POST", "/v1/audits", {}},
    {"GET", "/v1/audits", {}},
    {"GET", "/v1/audits/{}", {"audit-1-1"}},
    {"DELETE", "/v1/audits/{}", {"audit-1-1"}},
    {"GET", "/v1/audits/{}/report.{}", {"audit-1-1", "json"}},
    {"POST", "/v1/memories", {}},
    {"GET", "/v1/memories", {}},
    {"GET", "/v1/memories/{}", {"2"}},
    {"DELETE", "/v1/memories/{}", {"3"}},
    {"POST", "/v1/memories/{}/documents", {"2"}},
    {"GET", "/v1/memories/{}/documents", {"2"}},
    {"GET", "/v1/memories/{}/documents/{}", {"2", "4"}},
    {"DELETE", "/v1/memories/{}/documents/{}", {"2", "4"}},
    {"POST", "/v1/memories/{}/documents/{}/verify-deleted", {"2", "5"}},
    {"GET", "/v1/datastore/documents", {}},
    {"POST", "/v1/datastore/documents/{}/verify-deleted", {"p0"}},
    {"GET", "/v1/datastore/documents/{}", {"p0"}},
    {"DELETE", "/v1/datastore/documents/{}", {"p0"}},
    {"GET", "/v1/facts/{}", {"1"}},
    {"DELETE", "/v1/facts/{}", {"1"}},
    {"POST", "/v1/facts/{}/verify-deleted", {"1"}},
};
constexpr size_t kNumRoutes = sizeof(kRoutes) / sizeof(kRoutes[0]);
constexpr size_t kRawRoute = kNumRoutes;  // route byte % (kNumRoutes + 1) == kNumRoutes
constexpr size_t kStartAudit = 11;
constexpr const char* kRawMethods[] = {"GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "GET"};

// The role a path needs: api/server.cc's RequiredRole, restated.
Role Needs(const std::string& method, const std::string& path) {
  if (path == "/health") return Role::kNone;
  if (path.rfind("/v1/facts", 0) == 0 || path.rfind("/v1/audits", 0) == 0 || path.rfind("/v1/datastore", 0) == 0 ||
      path == "/v1/log") {
    return Role::kAdmin;
  }
  if (path.rfind("/v1/memories", 0) == 0) {
    return method == "GET" && std::count(path.begin(), path.end(), '/') <= 3 ? Role::kRead : Role::kAdmin;
  }
  return Role::kRead;
}

// ---- The server state ----------------------------------------------------------------------------------
struct World {
  std::string root, model, datastore, state, audits, keys;
  std::string pristine_datastore, pristine_state, pristine_audits;
};
World g_world;
mnemo::Server::Impl* g_impl = nullptr;
int64_t g_inputs = 0;
int64_t g_reset_every = 10000;
// FUZZ_ROUTES_PROFILE=1: time spent per route, printed at exit (to see where executions go).
bool g_profile = false;
double g_route_seconds[64] = {};
int64_t g_route_count[64] = {};

mnemo::Server::Impl* OpenServer() {
  mnemo::ServeOptions o;
  o.state = g_world.state;
  o.audit_dir = g_world.audits;
  o.api_key_file = g_world.keys;
  o.threads = 1;
  o.queue = 4;
  o.log_requests = false;
  o.request_timeout_s = 20;
  // Small, so that any valid completion or score is cheap with the tiny model (and a score longer than the
  // 64-token context, the long-score path, is still possible).
  o.max_tokens_cap = 8;
  o.max_response_items = 4096;
  o.max_score_tokens = 160;
  o.knn.k = 8;
  o.knn.nprobe = 8;
  auto* impl = new mnemo::Server::Impl(o);
  CheckOk(mnemo::ApiKeys::Load(o.api_key_file, &impl->keys), "api keys");
  impl->Routes();
  impl->work = std::make_unique<mnemo::WorkQueue>(o.threads, o.queue, [] { torch::set_num_threads(1); });
  CheckOk(impl->Load(), "loading the state");
  impl->is_ready = true;
  return impl;
}

// What Server::Run does after serving.
void CloseServer(mnemo::Server::Impl* impl) {
  impl->StopAudits();
  impl->batcher.reset();
  impl->work->Shutdown();
  impl->work.reset();
  CheckOk(impl->store->Close(), "closing the state");
  delete impl;
}

void CopyTree(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::remove_all(to, ec);
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive, ec);
  if (ec) {
    std::fprintf(stderr, "routes_fuzz: copying %s: %s\n", from.c_str(), ec.message().c_str());
    std::abort();
  }
}

// ---- One request, routed as cpp-httplib routes it ---------------------------------------------------
struct Outcome {
  int status = 0;
  std::string body;
  std::string content_type;
  bool streamed = false;
  std::string path;
};

Outcome Dispatch(const std::string& method, const std::string& target, const std::string& body, uint8_t caller,
                 bool client_leaves) {
  mnemo::Server::Impl& impl = *g_impl;
  httplib::Server& server = impl.http;
  httplib::Request req;
  req.method = method;
  req.target = target;
  req.version = "HTTP/1.1";
  req.remote_addr = "127.0.0.1";
  const size_t q = target.find('?');
  req.path = httplib::detail::decode_url(target.substr(0, q), false);
  if (q != std::string::npos) httplib::detail::parse_query_text(target.substr(q + 1), req.params);
  // cpp-httplib reads a body for these methods only; the front guarantees one Content-Length.
  if (method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE") {
    req.body = body;
    req.set_header("Content-Length", std::to_string(body.size()));
  }
  switch (caller & 7) {
    case 4: req.set_header("X-Api-Key", kAdminKey); break;
    case 5: req.set_header("Authorization", std::string("Bearer ") + kReadKey); break;
    case 6: break;
    case 7: req.set_header("Authorization", "Bearer fuzz-wrong-key-0123456789abcdef"); break;
    default: req.set_header("Authorization", std::string("Bearer ") + kAdminKey); break;
  }

  httplib::Response res;
  bool routed = false;
  try {
    if (Field<PreRoutingTag>(server) &&
        Field<PreRoutingTag>(server)(req, res) == httplib::Server::HandlerResponse::Handled) {
      routed = true;
    } else {
      auto* handlers = method == "GET" || method == "HEAD" ? &Field<GetHandlersTag>(server)
                       : method == "POST"                  ? &Field<PostHandlersTag>(server)
                       : method == "DELETE"                ? &Field<DeleteHandlersTag>(server)
                                                           : nullptr;
      if (handlers != nullptr) {
        for (const auto& [pattern, handler] : *handlers) {
          if (std::regex_match(req.path, req.matches, pattern)) {
            handler(req, res);
            routed = true;
            break;
          }
        }
      }
    }
  } catch (const std::exception& e) {
    // The server would answer 500 (its exception handler); for a client's input that is a bug.
    std::fprintf(stderr, "routes_fuzz: %s %s: the handler threw: %s\n", method.c_str(), target.c_str(), e.what());
    std::abort();
  }
  if (res.status == -1) res.status = routed ? 200 : 404;
  if (res.status >= 400 && Field<ErrorHandlerTag>(server)) Field<ErrorHandlerTag>(server)(req, res);

  Outcome out;
  if (res.content_provider_ && res.is_chunked_content_provider_) {
    // A streamed completion: pull events until the provider is done, as cpp-httplib's chunked writer does
    // (a client that leaves makes the next write fail).
    out.streamed = true;
    bool done = false, left = false;
    httplib::DataSink sink;
    sink.write = [&](const char* d, size_t n) {
      if (left) return false;
      out.body.append(d, n);
      if (client_leaves) left = true;
      return true;
    };
    sink.is_writable = [&] { return !left; };
    sink.done = [&] { done = true; };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done) {
      if (!res.content_provider_(out.body.size(), 0, sink)) break;
      FUZZ_CHECK(std::chrono::steady_clock::now() < deadline && "a stream did not end");
    }
    res.content_provider_success_ = done;
    FUZZ_CHECK(done || left);
  } else {
    out.body = res.body;
  }
  out.status = res.status;
  out.content_type = res.get_header_value("Content-Type");
  out.path = req.path;
  if (Field<LoggerTag>(server)) Field<LoggerTag>(server)(req, res);
  return out;
}

void Fail(const char* why, const std::string& method, const std::string& target, const Outcome& out) {
  std::fprintf(stderr, "routes_fuzz: %s: %s %s -> %d %s\n%.2000s\n", why, method.c_str(), target.c_str(), out.status,
               out.content_type.c_str(), out.body.c_str());
  std::abort();
}

void CheckOutcome(const std::string& method, const std::string& target, Role have, const Outcome& out) {
  static const int kDocumented[] = {200, 202, 400, 401, 403, 404, 405, 409, 503, 504, 507};
  if (std::find(std::begin(kDocumented), std::end(kDocumented), out.status) == std::end(kDocumented)) {
    Fail("undocumented status", method, target, out);
  }
  const Role need = Needs(method, out.path);
  if (need != Role::kNone && have == Role::kNone) {
    if (out.status != 401) Fail("no key, but not 401", method, target, out);
  } else if (have < need) {
    if (out.status != 403) Fail("the key's role is too low, but not 403", method, target, out);
  } else if (out.status == 401 || out.status == 403) {
    Fail("401/403 for a key with the role", method, target, out);
  }
  if (out.streamed) {
    if (out.status != 200) Fail("a stream that is not 200", method, target, out);
    size_t at = 0;
    bool ended = false;
    while (at < out.body.size()) {
      if (ended) Fail("events after data: [DONE]", method, target, out);
      if (out.body.compare(at, 6, "data: ") != 0) Fail("a stream event is not \"data: \"", method, target, out);
      const size_t end = out.body.find("\n\n", at);
      if (end == std::string::npos) Fail("a stream event does not end with a blank line", method, target, out);
      const std::string data = out.body.substr(at + 6, end - at - 6);
      if (data == "[DONE]") {
        ended = true;
      } else {
        const Json e = Json::parse(data, nullptr, false);
        if (e.is_discarded() || !e.is_object()) Fail("a stream event is not a JSON object", method, target, out);
      }
      at = end + 2;
    }
    return;
  }
  const bool json = out.content_type.rfind("application/json", 0) == 0;
  if (out.status >= 300 && !json) Fail("an error that is not JSON", method, target, out);
  if (!json) return;
  const Json j = Json::parse(out.body, nullptr, false);
  if (j.is_discarded()) Fail("a JSON body that does not parse", method, target, out);
  if (out.status >= 300) {
    const bool shaped = j.is_object() && j.contains("error") && j["error"].is_object() &&
                        j["error"].contains("message") && j["error"]["message"].is_string() &&
                        j["error"].contains("type") && j["error"]["type"].is_string();
    if (!shaped) Fail("an error body without {\"error\": {\"message\", \"type\"}}", method, target, out);
  }
}

// ---- Start-up ------------------------------------------------------------------------------------------
Json Setup(const std::string& method, const std::string& path, const Json& body) {
  const Outcome out = Dispatch(method, path, body.is_null() ? "" : body.dump(), 0, false);
  if (out.status / 100 != 2) Fail("setting up the state", method, path, out);
  if (std::getenv("FUZZ_DEBUG")) std::fprintf(stderr, "setup: %s %s -> %s", method.c_str(), path.c_str(), out.body.c_str());
  return Json::parse(out.body);
}

void MakeWorld() {
  World& w = g_world;
  w.root = mnemo_fuzz::ScratchDir() + "/routes";
  w.model = w.root + "/model";
  w.datastore = w.root + "/ds";
  w.state = w.root + "/state";
  w.audits = w.root + "/audits";
  w.keys = w.root + "/keys";
  w.pristine_datastore = w.root + "/pristine-ds";
  w.pristine_state = w.root + "/pristine-state";
  w.pristine_audits = w.root + "/pristine-audits";
  std::filesystem::create_directories(w.root);
  mnemo_fuzz::WriteFileOrDie(w.keys, std::string("read ") + kReadKey + "\nadmin " + kAdminKey + "\n");

  // The model: tests/lm_fixture.cc's SaveRandomTinyModel with a memorizing layer.
  const std::string corpus = mnemo::testing::ToyCorpus();
  std::unique_ptr<mnemo::BpeTokenizer> tokenizer;
  CheckOk(mnemo::TrainBpe(corpus, 300, &tokenizer), "training the tokenizer");
  mnemo::GptConfig config;
  CheckOk(mnemo::GptConfig::Preset("tiny", tokenizer->vocab_size(), &config), "the tiny preset");
  config.memory_layer = 1;
  config.memory_mode = "joint";
  config.memory_topk = 8;
  mnemo::Gpt net(config);
  net->InitWeights(11);
  net->eval();
  CheckOk(mnemo::SaveCheckpoint(w.model, net, tokenizer.get()), "saving the model");

  // The base datastore, from documents (provenance: the document routes work), Flat.
  std::unique_ptr<mnemo::LanguageModel> lm;
  CheckOk(mnemo::LoadLanguageModel(w.model, &lm), "loading the model");
  std::vector<mnemo::DatastoreDocumentInput> docs;
  docs.push_back({"secret doc/1", "The cat sees the golden bridge of Quillon at dawn.", R"({"owner":"u7"})", false});
  for (size_t at = 0, i = 0; at < 2400; at += 300, ++i) {
    docs.push_back({"p" + std::to_string(i), corpus.substr(at, 300), i % 2 ? R"({"n":1})" : "", false});
  }
  mnemo::DatastoreBuildOptions build;
  build.finish.index_spec = "Flat";
  build.finish.progress = false;
  mnemo::DatastoreBuildReport report;
  CheckOk(mnemo::BuildDatastoreFromDocuments(*lm, docs, "fuzz", nullptr, "", w.datastore, build, &report),
          "building the datastore");
  CheckOk(mnemo::StateService::Create(w.state, w.model, w.datastore, nullptr), "creating the state");

  // A finished audit of an "earlier run" (its report on disk) and an interrupted one (no report).
  std::filesystem::create_directories(w.audits + "/audit-1-1");
  std::filesystem::create_directories(w.audits + "/audit-2-2");
  mnemo_fuzz::WriteFileOrDie(w.audits + "/audit-1-1/report.json", R"({"format": "mnemo-audit/1"})");
  mnemo_fuzz::WriteFileOrDie(w.audits + "/audit-1-1/report.html", "<!doctype html><title>audit</title>\n");

  // Facts, a memory with two documents (one deleted), through the routes themselves.
  g_impl = OpenServer();
  Setup("POST", "/v1/facts",
        {{"facts", {{{"text", "Alice lives in Paris."}, {"client_id", "c1"}, {"metadata", {{"topic", "home"}}}},
                    {{"text", "Bob's code is 4242."}, {"client_id", "c2"}, {"metadata", {{"n", 2}}}},
                    {{"text", "The harbour opens at six."}}}}});
  Setup("DELETE", "/v1/facts/3", nullptr);
  // Memory 1 is the facts memory (its documents are facts 1-3); 2 and 3 are made here, with documents 4
  // (kept) and 5 (deleted) in memory 2.
  FUZZ_CHECK(Setup("POST", "/v1/memories", {{"name", "notes"}, {"capacity", 0}})["id"] == 2);
  FUZZ_CHECK(Setup("POST", "/v1/memories", {{"name", "fifo"}, {"capacity", 64}})["id"] == 3);
  const Json d1 = Setup("POST", "/v1/memories/2/documents",
                        {{"text", "The old sailor remembers the quiet harbour."}, {"metadata", {{"k", "v"}}}});
  const Json d2 = Setup("POST", "/v1/memories/2/documents", {{"text", "A dog finds a red ball."}});
  FUZZ_CHECK(d1["id"] == 4 && d2["id"] == 5);
  Setup("DELETE", "/v1/memories/2/documents/5", nullptr);
  Setup("DELETE", "/v1/datastore/documents/p7", nullptr);
  CloseServer(g_impl);
  g_impl = nullptr;

  CopyTree(w.datastore, w.pristine_datastore);
  CopyTree(w.state, w.pristine_state);
  CopyTree(w.audits, w.pristine_audits);
  g_impl = OpenServer();
}

// Puts the state back to how MakeWorld left it.
void ResetWorld() {
  CloseServer(g_impl);
  CopyTree(g_world.pristine_datastore, g_world.datastore);
  CopyTree(g_world.pristine_state, g_world.state);
  CopyTree(g_world.pristine_audits, g_world.audits);
  g_impl = OpenServer();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  mnemo::SetBlasThreads(1);
  if (const char* every = std::getenv("MNEMO_FUZZ_ROUTES_RESET")) g_reset_every = std::max(1L, std::atol(every));
  MakeWorld();
  g_profile = std::getenv("FUZZ_ROUTES_PROFILE") != nullptr;
  std::atexit([] {
    for (size_t r = 0; g_profile && r <= kNumRoutes; ++r) {
      std::fprintf(stderr, "route %2zu %-8s %-44s %8ld inputs %8.2f s %8.3f ms each\n", r,
                   r < kNumRoutes ? kRoutes[r].method : "*", r < kNumRoutes ? kRoutes[r].path : "(raw)",
                   static_cast<long>(g_route_count[r]), g_route_seconds[r],
                   g_route_count[r] ? 1e3 * g_route_seconds[r] / g_route_count[r] : 0.0);
    }
    if (g_impl != nullptr) CloseServer(g_impl);
    g_impl = nullptr;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  if (++g_inputs % g_reset_every == 0) ResetWorld();
  const size_t route = data[0] % (kNumRoutes + 1);
  const uint8_t flags = data[1];
  const std::string rest = std::string(mnemo_fuzz::AsText(data + 2, size - 2));
  const size_t newline = rest.find('\n');
  const std::string args = newline == std::string::npos ? "" : rest.substr(0, newline);
  const std::string body = newline == std::string::npos ? rest : rest.substr(newline + 1);

  std::string method, target;
  if (route == kRawRoute) {
    method = kRawMethods[(flags >> 4) & 7];
    target = args;
    if (target.empty() || target[0] != '/') target = "/" + target;
  } else {
    const RouteSpec& r = kRoutes[route];
    method = r.method;
    const size_t q = args.find('?');
    const std::string ids = args.substr(0, q);
    std::vector<std::string> given;
    for (size_t at = 0; at <= ids.size() && !ids.empty();) {
      const size_t space = std::min(ids.find(' ', at), ids.size());
      given.push_back(ids.substr(at, space - at));
      at = space + 1;
    }
    int slot = 0;
    for (const char* p = r.path; *p != '\0'; ++p) {
      if (p[0] == '{' && p[1] == '}') {
        target += slot < static_cast<int>(given.size()) && !given[slot].empty() ? given[slot] : r.defaults[slot];
        ++slot;
        ++p;
      } else {
        target += *p;
      }
    }
    if (q != std::string::npos) target += args.substr(q);
  }
  // Target strings are what a request line carries: no NUL, CR, LF, space (the front refuses them).
  for (char& c : target) {
    if (c == '\0' || c == '\r' || c == '\n' || c == ' ') c = '_';
  }
  const uint8_t caller = flags & 7;
  const Role have = caller == 5 ? Role::kRead : caller >= 6 ? Role::kNone : Role::kAdmin;
  const auto started = std::chrono::steady_clock::now();
  const Outcome out = Dispatch(method, target, body, caller, (flags & 8) != 0);
  CheckOutcome(method, target, have, out);
  if (g_profile) {
    g_route_seconds[route] += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ++g_route_count[route];
  }

  if (route == kStartAudit && out.status == 202) {
    // An audit started: cancel it through its route, wait for it, and forget it, so that no audit runs
    // between inputs (its directory goes with it: a cancelled audit leaves none).
    const Json started = Json::parse(out.body);
    const std::string path = "/v1/audits/" + started["id"].get<std::string>();
    const Outcome cancelled = Dispatch("DELETE", path, "", 0, false);
    CheckOutcome("DELETE", path, Role::kAdmin, cancelled);
    FUZZ_CHECK(cancelled.status == 200);
    g_impl->StopAudits();
    std::lock_guard<std::mutex> lock(g_impl->audit_mu);
    FUZZ_CHECK(g_impl->running_audit == nullptr);
    g_impl->audits.clear();
  }
  return 0;
}
