// End-to-end tests of the HTTP server: a tiny model trained through the CLI, a datastore and a state,
// served in-process on a free loopback port and spoken to over HTTP.
#include "api/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using json = nlohmann::json;
using testing::RunCommand;
using testing::ScratchDir;
using testing::kWaitScale;

constexpr char kReadKey[] = "read-key-0123456789abcdef";
constexpr char kAdminKey[] = "admin-key-0123456789abcdef";

std::string Mnemo() { return MNEMO_BINARY; }

// A server over a fresh state in `dir`, running on its own thread until destroyed.
class RunningServer {
 public:
  RunningServer(const std::string& state, const std::string& keys, int workers = 2, size_t queue = 32,
                double timeout_s = 120, const std::function<void(ServeOptions*)>& tweak = {}) {
    ServeOptions o;
    o.request_timeout_s = timeout_s;
    o.state = state;
    o.port = 0;
    o.api_key_file = keys;
    o.threads = workers;
    o.queue = queue;
    o.log_requests = false;
    o.knn.k = 8;
    o.knn.nprobe = 8;
    o.batch_slots = 16;  // the tiny model would get 0 (automatic): the suite serves through the batcher
    if (tweak) tweak(&o);
    server_ = std::make_unique<Server>(o);
    Status s = server_->Bind(&port_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    thread_ = std::thread([this] { run_status_ = server_->Run(); });
    for (int i = 0; i < 600 && !server_->ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(server_->ready());
  }
  ~RunningServer() {
    server_->Stop();
    thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_.ToString();
  }
  int port() const { return port_; }

 private:
  std::unique_ptr<Server> server_;
  std::thread thread_;
  Status run_status_;
  int port_ = 0;
};

// A barely trained tiny model and a state with no datastore in d/state.
void MakeBareState(const ScratchDir& d) {
  std::string out;
  ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(d.path(), /*steps=*/2));
  ASSERT_EQ(RunCommand(Mnemo() + " init --state " + d.File("state") + " --model " + d.File("model"), &out), 0) << out;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::WriteFileOrDie(dir_->File("valid.txt"), testing::ToyCorpus().substr(0, 4000));
    testing::WriteFileOrDie(dir_->File("keys"), std::string("# roles\nread ") + kReadKey + "\nadmin " + kAdminKey + "\n");
    std::string out;
    ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir_->path(), /*steps=*/40, dir_->File("valid.txt")));
    ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + dir_->File("model") + " --text-file " +
                             dir_->File("valid.txt") + " --out " + dir_->File("ds") + " --index IVF8,Flat --quiet", &out), 0)
        << out;
    ASSERT_EQ(RunCommand(Mnemo() + " init --state " + dir_->File("state") + " --model " + dir_->File("model") +
                             " --datastore " + dir_->File("ds"), &out), 0) << out;
    server_ = new RunningServer(dir_->File("state"), dir_->File("keys"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  static httplib::Client Client(const char* key = kAdminKey) {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    if (key != nullptr) c.set_default_headers({{"Authorization", std::string("Bearer ") + key}});
    return c;
  }
  static json Post(const std::string& path, const json& body, int expect = 200, const char* key = kAdminKey) {
    auto c = Client(key);
    auto res = c.Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expect) << path << " " << body.dump() << " -> " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  static json Completion(json body, int expect = 200, const char* key = kAdminKey) {
    body["model"] = "model";
    return Post("/v1/completions", body, expect, key);
  }
  // The concatenated text of a streamed completion (choice 0) and its events.
  static std::string StreamText(json body, std::vector<json>* events = nullptr, const char* key = kAdminKey) {
    body["model"] = "model";
    body["stream"] = true;
    auto c = Client(key);
    auto res = c.Post("/v1/completions", body.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200);
    if (!res) return "";
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    std::string text;
    size_t pos = 0;
    bool done = false;
    while ((pos = res->body.find("data: ", pos)) != std::string::npos) {
      const size_t end = res->body.find("\n\n", pos);
      const std::string data = res->body.substr(pos + 6, end - pos - 6);
      pos = end;
      if (data == "[DONE]") {
        done = true;
        continue;
      }
      json e = json::parse(data);
      text += e["choices"][0]["text"].get<std::string>();
      if (events != nullptr) events->push_back(e);
    }
    EXPECT_TRUE(done) << "stream did not end with data: [DONE]";
    return text;
  }

  static ScratchDir* dir_;
  static RunningServer* server_;
};
ScratchDir* ServerTest::dir_ = nullptr;
RunningServer* ServerTest::server_ = nullptr;

TEST(PlanBatchSlotsTest, AutomaticSlotsFitTheMemoryLimitAndExplicitOnesPastItAreRefused) {
  const int64_t mib = 1 << 20, big = 124'000'000, per_slot = 72 * mib, packed = 496 * mib;
  int slots = -1;
  std::string why;
  ASSERT_TRUE(PlanBatchSlots(0, big, per_slot, packed, 100 * mib, &slots, &why).ok());
  EXPECT_EQ(slots, 0);
  ASSERT_TRUE(PlanBatchSlots(-1, 1'300'000, per_slot, packed, 1 << 30, &slots, &why).ok());
  EXPECT_EQ(slots, 0) << why;  // a small model: one completion per worker
  ASSERT_TRUE(PlanBatchSlots(-1, big, per_slot, packed, int64_t{6} << 30, &slots, &why).ok());
  EXPECT_EQ(slots, ServeOptions::kAutoBatchSlots) << why;
  ASSERT_TRUE(PlanBatchSlots(-1, big, per_slot, packed, packed + 5 * per_slot + per_slot / 2, &slots, &why).ok());
  EXPECT_EQ(slots, 5) << why;
  ASSERT_TRUE(PlanBatchSlots(-1, big, per_slot, packed, packed + per_slot - 1, &slots, &why).ok());
  EXPECT_EQ(slots, 0);
  EXPECT_NE(why.find("do not fit"), std::string::npos) << why;
  const Status refused = PlanBatchSlots(16, big, per_slot, packed, int64_t{1} << 30, &slots, &why);
  ASSERT_TRUE(refused.IsInvalidArgument());
  EXPECT_NE(refused.message().find("--batch-memory-mb"), std::string::npos) << refused.ToString();
  EXPECT_NE(refused.message().find("1648 MiB"), std::string::npos) << refused.ToString();  // 496 + 16 x 72
  ASSERT_TRUE(PlanBatchSlots(16, big, per_slot, packed, int64_t{2} << 30, &slots, &why).ok());
  EXPECT_EQ(slots, 16);
}

TEST_F(ServerTest, HealthModelsAndMetrics) {
  auto c = Client(nullptr);
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto models = Client(kReadKey).Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "model");
  Completion({{"prompt", "The cat"}, {"max_tokens", 3}});
  // The request counter is updated just after the response is sent: give it a moment.
  std::string text;
  for (int i = 0; i < 50; ++i) {
    auto metrics = Client(kReadKey).Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_EQ(metrics->status, 200);
    text = metrics->body;
    if (text.find("endpoint=\"/v1/completions\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const char* want : {"mnemo_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"}",
                           "mnemo_http_request_duration_seconds_bucket", "mnemo_tokens_generated_total",
                           "mnemo_facts ", "mnemo_datastore_entries ", "mnemo_retrieval_seconds_count"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
}

TEST_F(ServerTest, CompletionHasOpenAiShape) {
  // ignore_eos and no stop sequences: the run can only end by length, after exactly max_tokens tokens
  // (the model may well pick <|endoftext|> within 6 tokens otherwise, which would end it by "stop").
  const json body = {{"prompt", "The cat sees"}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true}};
  json r = Completion(body);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], "model");
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_TRUE(r["choices"][0]["text"].is_string());
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 6);
  EXPECT_GT(r["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(r["usage"]["total_tokens"].get<int>(),
            r["usage"]["prompt_tokens"].get<int>() + r["usage"]["completion_tokens"].get<int>());
  // Token-id prompts work too, and greedy decoding is deterministic.
  json again = Completion(body);
  EXPECT_EQ(again["choices"][0]["text"], r["choices"][0]["text"]);
  json ids = Post("/tokenize", {{"text", "The cat sees"}});
  json by_ids_body = body;
  by_ids_body["prompt"] = ids["tokens"];
  json by_ids = Completion(by_ids_body);
  EXPECT_EQ(by_ids["choices"][0]["text"], r["choices"][0]["text"]);
}

TEST_F(ServerTest, StreamingEqualsNonStreamingForASeed) {
  const json body = {{"prompt", "The old sailor"}, {"max_tokens", 14}, {"temperature", 1.0}, {"seed", 7}, {"logprobs", 2}};
  json whole = Completion(body);
  std::vector<json> events;
  const std::string streamed = StreamText(body, &events);
  EXPECT_EQ(streamed, whole["choices"][0]["text"].get<std::string>());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
  // Per-token log-probabilities arrive with the tokens and match the non-streamed ones.
  std::vector<double> streamed_lp;
  for (const json& e : events) {
    if (!e["choices"][0]["logprobs"].is_null()) {
      streamed_lp.push_back(e["choices"][0]["logprobs"]["token_logprobs"][0].get<double>());
    }
  }
  std::vector<double> whole_lp;
  for (const json& x : whole["choices"][0]["logprobs"]["token_logprobs"]) whole_lp.push_back(x.get<double>());
  EXPECT_EQ(streamed_lp, whole_lp);
}

TEST_F(ServerTest, LogprobsEchoAndStop) {
  json r = Completion({{"prompt", "The cat"}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 3}, {"echo", true}});
  const json& lp = r["choices"][0]["logprobs"];
  const size_t n = lp["tokens"].size();
  EXPECT_EQ(lp["token_logprobs"].size(), n);
  EXPECT_EQ(lp["top_logprobs"].size(), n);
  EXPECT_EQ(lp["text_offset"].size(), n);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());  // nothing predicts the first prompt token
  EXPECT_EQ(lp["top_logprobs"][1].size(), 3u);
  EXPECT_EQ(r["choices"][0]["text"].get<std::string>().rfind("The cat", 0), 0u);
  for (size_t i = 1; i < n; ++i) EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);

  // A stop sequence cuts the text before it, streamed or not.
  const std::string free = Completion({{"prompt", "The cat"}, {"max_tokens", 20}, {"temperature", 0}})["choices"][0]["text"];
  ASSERT_GE(free.size(), 6u) << free;
  const std::string stop = free.substr(3, 2);
  json stopped = Completion({{"prompt", "The cat"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", stop}});
  EXPECT_EQ(stopped["choices"][0]["text"], free.substr(0, free.find(stop)));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(StreamText({{"prompt", "The cat"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", json::array({stop, "zzzz"})}}),
            free.substr(0, free.find(stop)));
  json three = Completion({{"prompt", "The cat"}, {"max_tokens", 4}, {"n", 3}, {"seed", 1}});
  EXPECT_EQ(three["choices"].size(), 3u);
}

TEST_F(ServerTest, BadRequestsGetJsonErrorsNamingTheField) {
  struct Case {
    json body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"model", "model"}, {"prompt", "hi"}, {"max_tokens", "5"}}, 400, "max_tokens"},
      {{{"model", "model"}, {"prompt", "hi"}, {"max_tokens", 1.5}}, 400, "max_tokens"},
      {{{"model", "model"}, {"prompt", "hi"}, {"max_tokens", 100000}}, 400, "max_tokens"},
      {{{"model", "model"}, {"prompt", "hi"}, {"temperature", -1}}, 400, "temperature"},
      {{{"model", "model"}, {"prompt", "hi"}, {"n", 0}}, 400, "n"},
      {{{"model", "model"}, {"prompt", "hi"}, {"stream", "yes"}}, 400, "stream"},
      {{{"model", "model"}, {"prompt", "hi"}, {"knn", {{"k", "8"}}}}, 400, "k"},
      {{{"model", "model"}, {"prompt", 5}}, 400, "prompt"},
      {{{"model", "model"}}, 400, "prompt"},
      {{{"prompt", "hi"}}, 400, "model"},
      {{{"model", "gpt-4"}, {"prompt", "hi"}}, 404, "model"},
  };
  for (const Case& c : cases) {
    auto res = Client().Post("/v1/completions", c.body.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, c.status) << c.body.dump() << " -> " << res->body;
    json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << res->body;
    EXPECT_NE(e["error"]["message"].get<std::string>().find(c.param), std::string::npos) << res->body;
  }
  auto c = Client();
  auto not_json = c.Post("/v1/completions", "{not json", "application/json");
  EXPECT_EQ(not_json->status, 400);
  EXPECT_TRUE(json::parse(not_json->body).contains("error"));
  auto bad_utf8 = c.Post("/v1/completions", "{\"model\": \"model\", \"prompt\": \"\xff\xfe\"}", "application/json");
  EXPECT_EQ(bad_utf8->status, 400) << bad_utf8->body;
  auto nowhere = c.Get("/v1/nowhere");
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_TRUE(json::parse(nowhere->body).contains("error")) << nowhere->body;
  // A known path with a method it does not take: 405 naming the methods it does, in the Allow header too.
  auto wrong = c.Get("/v1/completions");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405) << wrong->body;
  EXPECT_EQ(wrong->get_header_value("Allow"), "POST");
  EXPECT_NE(json::parse(wrong->body)["error"]["message"].get<std::string>().find("takes POST"), std::string::npos);
  auto put = c.Put("/v1/facts/12", "{}", "application/json");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 405);
  EXPECT_EQ(put->get_header_value("Allow"), "GET, DELETE");
  EXPECT_EQ(c.Delete("/v1/facts")->get_header_value("Allow"), "POST, GET");
  // Client text in an error is cut: a 500 KB model name comes back as 64 bytes and a count.
  auto long_model = c.Post("/v1/completions", json{{"model", std::string(500000, 'x')}, {"prompt", "hi"}}.dump(),
                           "application/json");
  ASSERT_TRUE(long_model);
  EXPECT_EQ(long_model->status, 404);
  EXPECT_LT(long_model->body.size(), 400u) << long_model->body.size();
  EXPECT_NE(long_model->body.find("(500000 bytes)"), std::string::npos);
  auto huge = c.Post("/v1/completions", std::string(2 << 20, ' '), "application/json");
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 413);
  // A prompt longer than the context: rejected, or truncated when asked.
  std::string long_prompt;
  for (int i = 0; i < 200; ++i) long_prompt += "cat ";
  json too_long = Completion({{"prompt", long_prompt}, {"max_tokens", 2}}, 400);
  EXPECT_NE(too_long["error"]["message"].get<std::string>().find("context"), std::string::npos);
  Completion({{"prompt", long_prompt}, {"max_tokens", 2}, {"truncate_prompt", true}});
}

TEST_F(ServerTest, KeysAndRoles) {
  auto none = Client(nullptr).Post("/v1/completions", json({{"model", "model"}, {"prompt", "hi"}}).dump(), "application/json");
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["type"], "authentication_error");
  auto wrong = Client("wrong-key-0123456789abcdef").Get("/v1/models");
  EXPECT_EQ(wrong->status, 401);
  auto read_facts = Client(kReadKey).Get("/v1/facts");
  EXPECT_EQ(read_facts->status, 403);
  EXPECT_EQ(json::parse(read_facts->body)["error"]["type"], "permission_error");
  Completion({{"prompt", "hi"}, {"max_tokens", 2}}, 200, kReadKey);
  httplib::Client x("127.0.0.1", server_->port());
  auto with_header = x.Get("/v1/models", {{"X-Api-Key", kReadKey}});
  EXPECT_EQ(with_header->status, 200);
  EXPECT_EQ(Client(nullptr).Get("/health")->status, 200);  // health needs no key
}

// Every route x {no key, wrong key, read key, admin key}: no route answers without its role. Bodies are
// invalid or ids absent, so the admin calls change nothing (4xx past authentication, never 401/403).
TEST_F(ServerTest, EveryRouteAnswersOnlyItsRoles) {
  enum Need { kNone, kRead, kAdmin };
  struct Route {
    const char* method;
    const char* path;
    Need need;
  };
  const std::vector<Route> routes = {
      {"GET", "/health", kNone},
      {"GET", "/v1/models", kRead},
      {"GET", "/metrics", kRead},
      {"POST", "/tokenize", kRead},
      {"POST", "/detokenize", kRead},
      {"POST", "/v1/completions", kRead},
      {"POST", "/v1/score", kRead},
      {"POST", "/v1/facts", kAdmin},
      {"GET", "/v1/facts", kAdmin},
      {"POST", "/v1/facts/delete", kAdmin},
      {"GET", "/v1/facts/999999", kAdmin},
      {"DELETE", "/v1/facts/999999", kAdmin},
      {"POST", "/v1/facts/999999/verify-deleted", kAdmin},
      {"POST", "/v1/audits", kAdmin},
      {"GET", "/v1/audits", kAdmin},
      {"GET", "/v1/audits/audit-1-1", kAdmin},
      {"DELETE", "/v1/audits/audit-1-1", kAdmin},
      {"GET", "/v1/audits/audit-1-1/report.json", kAdmin},
      {"GET", "/v1/datastore/documents", kAdmin},
      {"GET", "/v1/datastore/documents/nope", kAdmin},
      {"DELETE", "/v1/datastore/documents/nope", kAdmin},
      {"POST", "/v1/datastore/documents/nope/verify-deleted", kAdmin},
      {"GET", "/v1/log", kAdmin},
  };
  struct Caller {
    const char* name;
    const char* key;
    Need has;
  };
  const std::vector<Caller> callers = {{"no key", nullptr, kNone},
                                       {"wrong key", "wrong-key-0123456789abcdef", kNone},
                                       {"read", kReadKey, kRead},
                                       {"admin", kAdminKey, kAdmin}};
  const std::string bad_body = R"({"seed": "not a number", "prompt": 5, "text": 5, "ids": 5})";
  for (const Route& r : routes) {
    for (const Caller& who : callers) {
      auto c = Client(who.key);
      httplib::Result res = std::string(r.method) == "GET"      ? c.Get(r.path)
                            : std::string(r.method) == "DELETE" ? c.Delete(r.path)
                                                                : c.Post(r.path, bad_body, "application/json");
      ASSERT_TRUE(res) << r.method << " " << r.path;
      const std::string what = std::string(r.method) + " " + r.path + " as " + who.name + " -> " +
                               std::to_string(res->status) + " " + res->body.substr(0, 200);
      const bool writes = std::string(r.method) != "GET";
      if (who.has >= r.need && writes) {
        EXPECT_GE(res->status, 400) << what;  // nothing was written, started or deleted
      }
      if (who.has >= r.need) {
        EXPECT_NE(res->status, 401) << what;
        EXPECT_NE(res->status, 403) << what;
        EXPECT_LT(res->status, 500) << what;
      } else if (who.has == kNone) {
        EXPECT_EQ(res->status, 401) << what;
      } else {
        EXPECT_EQ(res->status, 403) << what;
      }
      EXPECT_TRUE(json::parse(res->body, nullptr, false).is_object() || r.path == std::string("/metrics")) << what;
    }
  }
}

TEST_F(ServerTest, ActionLogNamesWhoDidWhatAndKeepsDeletionReceipts) {
  const std::string fact = "Zebulon Quayle keeps the harbour ledger of Quillon.";
  const int64_t id = Post("/v1/facts", {{"text", fact}})["id"].get<int64_t>();
  ASSERT_EQ(Client().Delete(("/v1/facts/" + std::to_string(id)).c_str())->status, 200);
  json verdict = Post("/v1/facts/" + std::to_string(id) + "/verify-deleted", {{"text", fact}});
  ASSERT_TRUE(verdict["passed"].get<bool>()) << verdict.dump();

  auto res = Client().Get(("/v1/log?id=" + std::to_string(id)).c_str());
  ASSERT_EQ(res->status, 200) << res->body;
  const json log = json::parse(res->body);
  ASSERT_EQ(log["data"].size(), 3u) << res->body;
  const char* actions[] = {"facts.add", "facts.delete", "facts.verify-deleted"};
  for (size_t i = 0; i < 3; ++i) {
    const json& e = log["data"][i];
    EXPECT_EQ(e["action"], actions[i]) << res->body;
    EXPECT_EQ(e["actor"], "admin-3") << res->body;  // the key file's line 3, unnamed
    EXPECT_EQ(e["ids"], json::array({std::to_string(id)})) << res->body;
    EXPECT_GT(e["at_ms"].get<int64_t>(), 0);
  }
  // The receipt is the verdict as it was answered.
  EXPECT_EQ(log["data"][2]["detail"], verdict) << res->body;
  // Never the text, never a key.
  EXPECT_EQ(res->body.find("Zebulon"), std::string::npos) << res->body;
  EXPECT_EQ(res->body.find(kAdminKey), std::string::npos) << res->body;

  // Filters and pages.
  res = Client().Get(("/v1/log?action=facts.delete&id=" + std::to_string(id)).c_str());
  EXPECT_EQ(json::parse(res->body)["data"].size(), 1u) << res->body;
  res = Client().Get(("/v1/log?action=facts&actor=admin-3&limit=1&id=" + std::to_string(id)).c_str());
  json page = json::parse(res->body);
  ASSERT_EQ(page["data"].size(), 1u) << res->body;
  const int64_t next = page["next_after"].get<int64_t>();
  res = Client().Get(("/v1/log?limit=5&id=" + std::to_string(id) + "&after=" + std::to_string(next)).c_str());
  EXPECT_EQ(json::parse(res->body)["data"].size(), 2u) << res->body;
  res = Client().Get("/v1/log?actor=nobody");
  EXPECT_TRUE(json::parse(res->body)["data"].empty()) << res->body;
  for (const char* bad : {"/v1/log?limit=0", "/v1/log?limit=1001", "/v1/log?after=-1", "/v1/log?after=x"}) {
    res = Client().Get(bad);
    EXPECT_EQ(res->status, 400) << bad << " " << res->body;
    EXPECT_TRUE(json::parse(res->body).contains("error")) << res->body;
  }
}

TEST_F(ServerTest, FactAddedUsedDeletedAndVerified) {
  const std::string fact = "The cat sees the golden bridge of Quillon at dawn.";
  json added = Post("/v1/facts", {{"text", fact}, {"client_id", "u7"}, {"metadata", {{"topic", "bridges"}}}});
  const int64_t id = added["id"].get<int64_t>();
  json got = Client().Get(("/v1/facts/" + std::to_string(id)).c_str())->body.empty() ? json() :
      json::parse(Client().Get(("/v1/facts/" + std::to_string(id)).c_str())->body);
  EXPECT_EQ(got["text"], fact);
  EXPECT_EQ(got["metadata"]["topic"], "bridges");
  auto listed = json::parse(Client().Get("/v1/facts?metadata.topic=bridges")->body);
  EXPECT_EQ(listed["total"], 1);

  // The fact steers greedy decoding from its own prefix, and its entries show up as neighbours.
  // The toy vocabulary spells " bridge" in 4 tokens; the fact's entries choose each of them.
  const json body = {{"prompt", "The cat sees the golden"}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 1},
                     {"knn", {{"k", 8}, {"lambda", 0.9}}}, {"return_neighbors", 4}};
  json with = Completion(body);
  EXPECT_EQ(with["choices"][0]["text"], " bridge") << with.dump();
  const json& first = with["choices"][0]["neighbors"][0][0];
  EXPECT_EQ(first["fact_id"], id);
  // The query comes from incremental decoding, the stored key from a full pass (and fp16): nearly equal.
  EXPECT_LT(first["distance"].get<double>(), 1e-3);
  EXPECT_EQ(first["text"], fact);  // admin sees the text
  EXPECT_EQ(first["source"], "fact");
  json as_reader = Completion(body, 200, kReadKey);
  const json& read_first = as_reader["choices"][0]["neighbors"][0][0];
  EXPECT_EQ(read_first["source"], "fact");  // read keys learn that it is a fact, its distance and weight
  EXPECT_EQ(read_first["distance"], first["distance"]);
  for (const char* hidden : {"text", "fact_id", "position", "token", "entry"}) {
    EXPECT_FALSE(read_first.contains(hidden)) << hidden << ": " << read_first.dump();
  }

  auto del = Client().Delete(("/v1/facts/" + std::to_string(id)).c_str());
  EXPECT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(Client().Delete(("/v1/facts/" + std::to_string(id)).c_str())->status, 404);
  auto gone = Client().Get(("/v1/facts/" + std::to_string(id)).c_str());
  EXPECT_EQ(gone->status, 404);
  EXPECT_NE(gone->body.find("was deleted"), std::string::npos);
  json without = Completion(body);
  for (const json& step : without["choices"][0]["neighbors"]) {
    for (const json& nb : step) EXPECT_TRUE(nb["fact_id"].is_null()) << nb.dump();
  }
  json verdict = Post("/v1/facts/" + std::to_string(id) + "/verify-deleted", {{"text", fact}});
  EXPECT_TRUE(verdict["passed"].get<bool>()) << verdict.dump();
  EXPECT_EQ(verdict["probe"]["neighbors_from_deleted_fact"], 0);
  EXPECT_EQ(verdict["probe"]["max_abs_logprob_diff_vs_rebuilt"], 0.0);

  json many = Post("/v1/facts", {{"facts", {{{"text", "Alpha cat."}, {"client_id", "u9"}}, {{"text", "Beta cat."}, {"client_id", "u9"}}}}});
  EXPECT_EQ(many["ids"].size(), 2u);
  json deleted = Post("/v1/facts/delete", {{"client_id", "u9"}});
  EXPECT_EQ(deleted["deleted"].size(), 2u);
  Post("/v1/facts/delete", json::object(), 400);
  Post("/v1/facts", {{"text", 5}}, 400);
  Post("/v1/facts", {{"text", "x y"}, {"metadata", "no"}}, 400);
}

// A base datastore built from documents: one is deleted while serving, leaves the neighbours at once, and
// verify-deleted finds none of its keys in the datastore's files.
TEST(ServerDatastoreDocumentsTest, DocumentDeletedWhileServingAndVerified) {
  ScratchDir d;
  std::string out;
  ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(d.path(), /*steps=*/2));
  const std::string secret = "The cat sees the golden bridge of Quillon at dawn.";
  std::string docs = json({{"text", secret}, {"id", "secret doc/1"}, {"metadata", {{"owner", "u7"}}}}).dump() + "\n";
  const std::string corpus = testing::ToyCorpus().substr(0, 3000);
  for (size_t at = 0, i = 0; at < corpus.size(); at += 300, ++i) {
    docs += json({{"text", corpus.substr(at, 300)}, {"id", "p" + std::to_string(i)}}).dump() + "\n";
  }
  testing::WriteFileOrDie(d.File("docs.jsonl"), docs);
  testing::WriteFileOrDie(d.File("keys"), std::string("read ") + kReadKey + "\nadmin " + kAdminKey + "\n");
  ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + d.File("model") + " --documents " + d.File("docs.jsonl") +
                           " --out " + d.File("ds") + " --index Flat --quiet", &out), 0) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " init --state " + d.File("state") + " --model " + d.File("model") + " --datastore " +
                           d.File("ds"), &out), 0) << out;
  RunningServer server(d.File("state"), d.File("keys"));
  httplib::Client admin("127.0.0.1", server.port()), reader("127.0.0.1", server.port());
  admin.set_default_headers({{"Authorization", std::string("Bearer ") + kAdminKey}});
  reader.set_default_headers({{"Authorization", std::string("Bearer ") + kReadKey}});
  admin.set_read_timeout(60, 0);

  auto list = admin.Get("/v1/datastore/documents?limit=3");
  ASSERT_EQ(list->status, 200) << list->body;
  json l = json::parse(list->body);
  EXPECT_EQ(l["total"], 11);
  EXPECT_EQ(l["data"].size(), 3u);
  EXPECT_EQ(l["next_offset"], 3);
  EXPECT_EQ(l["training_pool"], "none");
  EXPECT_EQ(reader.Get("/v1/datastore/documents")->status, 403);
  EXPECT_EQ(admin.Get("/v1/datastore/documents?limit=0")->status, 400);
  const std::string path = "/v1/datastore/documents/secret%20doc%2F1";
  auto got = admin.Get(path.c_str());
  ASSERT_EQ(got->status, 200) << got->body;
  json doc = json::parse(got->body);
  EXPECT_EQ(doc["metadata"]["owner"], "u7");
  const int64_t first = doc["first_entry"], count = doc["entries"];
  ASSERT_GT(count, 0);

  // The document's own contexts find its entries (distance ~0) until it is deleted.
  const json body = {{"model", "model"}, {"prompt", "The cat sees the golden"}, {"max_tokens", 3},
                     {"temperature", 0}, {"knn", {{"k", 8}, {"lambda", 0.5}}}, {"return_neighbors", 8}};
  auto from_secret = [&]() {
    auto res = admin.Post("/v1/completions", body.dump(), "application/json");
    EXPECT_EQ(res->status, 200) << res->body;
    int found = 0;
    const json reply = json::parse(res->body);
    for (const json& step : reply["choices"][0]["neighbors"]) {
      for (const json& nb : step) {
        if (nb.contains("entry") && nb["entry"].get<int64_t>() >= first && nb["entry"].get<int64_t>() < first + count) {
          ++found;
        }
      }
    }
    return found;
  };
  EXPECT_GT(from_secret(), 0);
  // A read key sees that datastore neighbours are near, not which entries or tokens they are.
  auto as_reader = reader.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_EQ(as_reader->status, 200) << as_reader->body;
  const json read_reply = json::parse(as_reader->body);
  for (const json& step : read_reply["choices"][0]["neighbors"]) {
    for (const json& nb : step) EXPECT_FALSE(nb.contains("entry") || nb.contains("token")) << nb.dump();
  }
  auto del = admin.Delete(path.c_str());
  ASSERT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(json::parse(del->body)["entries"], count);
  EXPECT_EQ(from_secret(), 0);
  EXPECT_EQ(admin.Delete(path.c_str())->status, 404);
  EXPECT_EQ(admin.Delete("/v1/datastore/documents/no-such-doc")->status, 404);
  json gone = json::parse(admin.Get(path.c_str())->body);
  EXPECT_TRUE(gone["deleted"].get<bool>());
  EXPECT_FALSE(gone.contains("metadata"));
  auto verdict = admin.Post((path + "/verify-deleted").c_str(), json({{"text", secret}}).dump(), "application/json");
  ASSERT_EQ(verdict->status, 200) << verdict->body;
  json v = json::parse(verdict->body);
  EXPECT_TRUE(v["passed"].get<bool>()) << v.dump();
  EXPECT_GT(v["probe"]["keys_probed"].get<int64_t>(), 0);
  EXPECT_EQ(v["probe"]["key_rows_found_in_files"], 0);
  EXPECT_EQ(admin.Post("/v1/datastore/documents/p1/verify-deleted", "", "application/json")->status, 409);
  // The action log has the delete and its receipt under the document's id (admin-2: line 2 of the keys).
  auto log = admin.Get("/v1/log?action=datastore.documents&id=secret%20doc%2F1");
  ASSERT_EQ(log->status, 200) << log->body;
  const json entries = json::parse(log->body)["data"];
  ASSERT_EQ(entries.size(), 2u) << log->body;
  EXPECT_EQ(entries[0]["action"], "datastore.documents.delete");
  EXPECT_EQ(entries[0]["actor"], "admin-2");
  EXPECT_EQ(entries[0]["detail"]["entries"], count);
  EXPECT_EQ(entries[1]["action"], "datastore.documents.verify-deleted");
  EXPECT_EQ(entries[1]["detail"], v);
  EXPECT_EQ(log->body.find(secret), std::string::npos) << log->body;
}

TEST_F(ServerTest, ScoreWithAndWithoutKnnAndTokenizeRoundTrip) {
  json s = Post("/v1/score", {{"text", "The cat sees the bridge."}, {"knn", {{"k", 8}, {"lambda", 0.5}}}});
  const size_t n = s["tokens_scored"].get<size_t>();
  EXPECT_EQ(s["logprobs_lm"].size(), n);
  EXPECT_EQ(s["logprobs_knn"].size(), n);
  EXPECT_GT(s["perplexity_lm"].get<double>(), 1.0);
  json off = Post("/v1/score", {{"text", "The cat sees the bridge."}, {"knn", {{"enabled", false}}}});
  EXPECT_FALSE(off.contains("logprobs_knn"));
  EXPECT_EQ(off["logprobs_lm"], s["logprobs_lm"]);
  Post("/v1/score", {{"text", 3}}, 400);
  EXPECT_EQ(s["searched_fraction"].get<double>(), 1.0);

  // RetoMaton pointers: on text the datastore holds, followed pointers replace most searches; asking for
  // more pointers than neighbours searches everywhere and scores as without them.
  const std::string stored = testing::ToyCorpus().substr(0, 600);
  json searched = Post("/v1/score", {{"text", stored}, {"knn", {{"k", 8}, {"lambda", 0.5}, {"nprobe", 8}}}});
  json followed = Post("/v1/score", {{"text", stored}, {"knn", {{"k", 8}, {"lambda", 0.5}, {"nprobe", 8}, {"pointers", 1}}}});
  EXPECT_LT(followed["searched_fraction"].get<double>(), 0.5) << followed.dump();
  json every = Post("/v1/score", {{"text", stored}, {"knn", {{"k", 8}, {"lambda", 0.5}, {"nprobe", 8}, {"pointers", 9}}}});
  EXPECT_EQ(every["searched_fraction"].get<double>(), 1.0);
  ASSERT_EQ(every["logprobs_knn"].size(), searched["logprobs_knn"].size());
  for (size_t i = 0; i < every["logprobs_knn"].size(); ++i) {
    EXPECT_NEAR(every["logprobs_knn"][i].get<double>(), searched["logprobs_knn"][i].get<double>(), 1e-4) << i;
  }
  json bad = Post("/v1/score", {{"text", stored}, {"knn", {{"pointers", -1}}}}, 400);
  EXPECT_NE(bad["error"]["message"].get<std::string>().find("pointers"), std::string::npos) << bad.dump();
  // Completions follow them through the drawn tokens, and count the searches; without kNN no count.
  const std::string start = stored.substr(0, 40);
  json gen = Post("/v1/completions", {{"model", "model"}, {"prompt", start}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true},
                                      {"knn", {{"k", 8}, {"lambda", 0.9}, {"nprobe", 8}, {"pointers", 1}}}});
  EXPECT_EQ(gen["knn"]["queries"], 12) << gen.dump();
  EXPECT_LT(gen["knn"]["searched"].get<int>(), 12) << gen.dump();
  json gen_all = Post("/v1/completions", {{"model", "model"}, {"prompt", start}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true},
                                          {"knn", {{"k", 8}, {"lambda", 0.9}, {"nprobe", 8}}}});
  EXPECT_EQ(gen_all["knn"]["searched_fraction"].get<double>(), 1.0) << gen_all.dump();
  EXPECT_FALSE(Post("/v1/completions", {{"model", "model"}, {"prompt", start}, {"max_tokens", 2}, {"knn", {{"enabled", false}}}}).contains("knn"));
  Post("/v1/completions", {{"model", "model"}, {"prompt", start}, {"knn", {{"pointers", -1}}}}, 400);
  json t = Post("/tokenize", {{"text", "The cat sees."}}, 200, kReadKey);
  json d = Post("/detokenize", {{"tokens", t["tokens"]}}, 200, kReadKey);
  EXPECT_EQ(d["text"], "The cat sees.");
  Post("/detokenize", {{"tokens", {-1}}}, 400, kReadKey);
}

// Door 4 of issue 17: following the neighbours of completions, a read key rebuilt a stored fact's text
// from their (fact_id, position, token). Now a read key learns only that a neighbour is a fact, with its
// distance and weight; an admin key still sees everything, and the same walk rebuilds the fact for it.
TEST_F(ServerTest, ReadKeysCannotRebuildAFactFromNeighbours) {
  const std::string fact = "The dog reads the silver map of Ostrava at noon.";
  const int64_t id = Post("/v1/facts", {{"text", fact}})["id"].get<int64_t>();
  const std::vector<int32_t> ids = Post("/tokenize", {{"text", fact}})["tokens"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 4u);
  // Each prefix t[0..p] of the fact, as token ids, finds the fact's entry p (value t[p+1]) nearest.
  auto walk = [&](const char* key, std::map<int64_t, int32_t>* rebuilt, int* fact_neighbours, json* sample) {
    for (size_t p = 0; p + 1 < ids.size(); ++p) {
      const json body = {{"prompt", std::vector<int32_t>(ids.begin(), ids.begin() + p + 1)}, {"max_tokens", 1},
                         {"temperature", 0}, {"knn", {{"k", 64}, {"lambda", 0.5}}}, {"return_neighbors", 64}};
      const json out = Completion(body, 200, key);
      for (const json& step : out["choices"][0]["neighbors"]) {
        for (const json& nb : step) {
          ASSERT_TRUE(nb.contains("source")) << nb.dump();
          ASSERT_TRUE(nb.contains("distance") && nb.contains("weight")) << nb.dump();
          if (nb["source"] != "fact") continue;
          ++*fact_neighbours;
          *sample = nb;
          if (nb.contains("fact_id") && nb["fact_id"] == id && nb.contains("position") && nb.contains("token")) {
            (*rebuilt)[nb["position"].get<int64_t>()] = nb["token"].get<int32_t>();
          }
        }
      }
    }
  };
  std::map<int64_t, int32_t> admin_rebuilt, read_rebuilt;
  int admin_facts = 0, read_facts = 0;
  json admin_sample, read_sample;
  walk(kAdminKey, &admin_rebuilt, &admin_facts, &admin_sample);
  walk(kReadKey, &read_rebuilt, &read_facts, &read_sample);
  // The admin walk rebuilds every token of the fact after the first (the attack works where it may).
  ASSERT_EQ(admin_rebuilt.size(), ids.size() - 1);
  for (const auto& [position, token] : admin_rebuilt) EXPECT_EQ(token, ids[position + 1]) << position;
  EXPECT_EQ(admin_sample["text"], fact);
  // The read walk sees as many fact neighbours, none of them with anything that locates or spells the fact.
  EXPECT_EQ(read_facts, admin_facts);
  EXPECT_TRUE(read_rebuilt.empty());
  for (const char* hidden : {"text", "fact_id", "position", "token", "entry"}) {
    EXPECT_FALSE(read_sample.contains(hidden)) << hidden << ": " << read_sample.dump();
  }
  // Streamed neighbours follow the same rule.
  std::vector<json> events;
  StreamText({{"prompt", std::vector<int32_t>(ids.begin(), ids.begin() + 3)}, {"max_tokens", 2}, {"temperature", 0},
              {"knn", {{"k", 64}, {"lambda", 0.5}}}, {"return_neighbors", 64}}, &events, kReadKey);
  int streamed_facts = 0;
  for (const json& e : events) {
    if (!e["choices"][0].contains("neighbors")) continue;
    for (const json& nb : e["choices"][0]["neighbors"][0]) {
      if (nb["source"] != "fact") continue;
      ++streamed_facts;
      EXPECT_FALSE(nb.contains("token") || nb.contains("position") || nb.contains("fact_id") || nb.contains("entry"))
          << nb.dump();
    }
  }
  EXPECT_GT(streamed_facts, 0);
  EXPECT_EQ(Client().Delete(("/v1/facts/" + std::to_string(id)).c_str())->status, 200);
}

// Door 6 of issue 17: a 159-byte request (n 16, max_tokens 128, logprobs 20, return_neighbors 64, echo) was
// answered with 14.9 MB. The product of the factors is capped, not each factor.
TEST_F(ServerTest, ResponseSizeIsCappedAsAProductNotPerField) {
  const json attack = {{"model", "model"}, {"prompt", "The cat sees the bridge."}, {"n", 16}, {"max_tokens", 128},
                       {"logprobs", 20}, {"return_neighbors", 64}, {"echo", true}};
  ASSERT_LT(attack.dump().size(), 160u);
  const size_t prompt_tokens = Post("/tokenize", {{"text", "The cat sees the bridge."}})["tokens"].size();
  auto res = Client(kReadKey).Post("/v1/completions", attack.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body.substr(0, 300);
  EXPECT_LT(res->body.size(), 1000u);
  const json e = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(e.contains("error")) << res->body.substr(0, 300);
  EXPECT_EQ(e["error"]["param"], "n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors)");
  const std::string message = e["error"]["message"].get<std::string>();
  const std::string product = std::to_string(16 * (128 + prompt_tokens) * 85);
  EXPECT_NE(message.find("= " + product + " "), std::string::npos) << message;
  EXPECT_NE(message.find("limit of 65536"), std::string::npos) << message;
  // Each factor at its own maximum is still fine when the product is small.
  json many = Completion({{"prompt", "The cat"}, {"n", 16}, {"max_tokens", 4}});
  EXPECT_EQ(many["choices"].size(), 16u);
  auto rich = Client().Post("/v1/completions",
                            json({{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 8}, {"logprobs", 20},
                                  {"return_neighbors", 64}, {"echo", true}, {"knn", {{"k", 64}}}}).dump(),
                            "application/json");
  ASSERT_TRUE(rich);
  EXPECT_EQ(rich->status, 200) << rich->body.substr(0, 300);
  // Stop sequences are capped in length too (each one is searched for at every token).
  json long_stop = Completion({{"prompt", "The cat"}, {"max_tokens", 2}, {"stop", std::string(257, 'x')}}, 400);
  EXPECT_EQ(long_stop["error"]["param"], "stop");
  EXPECT_NE(long_stop["error"]["message"].get<std::string>().find("256 bytes"), std::string::npos) << long_stop.dump();
  Completion({{"prompt", "The cat"}, {"max_tokens", 2}, {"stop", {std::string(256, 'x'), "y"}}});
}

// Door 3 of issue 17 (the cap): /v1/score had no token limit; 65,535 tokens ran 197 s.
TEST_F(ServerTest, ScoreIsCappedAndEqualsTheCli) {
  std::string text;
  while (text.size() < 4096 * 4) text += "The cat sees the bridge. ";
  const size_t tokens = Post("/tokenize", {{"text", text}})["tokens"].size();
  ASSERT_GT(tokens, 4096u);
  json over = Post("/v1/score", {{"text", text}}, 400, kReadKey);
  EXPECT_EQ(over["error"]["param"], "text");
  const std::string message = over["error"]["message"].get<std::string>();
  EXPECT_NE(message.find(std::to_string(tokens) + " tokens exceed the limit of 4096"), std::string::npos) << message;
  std::vector<int> ids(4097, 5);
  json over_ids = Post("/v1/score", {{"ids", ids}}, 400, kReadKey);
  EXPECT_EQ(over_ids["error"]["param"], "ids");
  ids.resize(4096);
  EXPECT_EQ(Post("/v1/score", {{"ids", ids}, {"knn", {{"enabled", false}}}}, 200, kReadKey)["tokens_scored"], 4095);
  // A text of many context windows, scored (cancellably) by the server, scores as `mnemo eval ppl` does
  // (ScoreBoth, the same windows).
  std::string several;
  for (int i = 0; i < 30; ++i) several += "The cat sees the golden bridge at dawn. ";
  testing::WriteFileOrDie(dir_->File("several.txt"), several);
  json served = Post("/v1/score", {{"text", several}, {"knn", {{"enabled", false}}}}, 200, kReadKey);
  ASSERT_GT(served["ids"].size(), 200u);  // the tiny model's context is 64 tokens
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " eval ppl --model " + dir_->File("model") + " --text-file " +
                       dir_->File("several.txt") + " --json", &out), 0) << out;
  const json cli = json::parse(out.substr(out.find('{')));
  EXPECT_EQ(cli["tokens"], served["tokens_scored"]);
  EXPECT_NEAR(cli["perplexity"].get<double>(), served["perplexity_lm"].get<double>(),
              1e-5 * cli["perplexity"].get<double>()) << out;
}

TEST_F(ServerTest, ConcurrentCompletionsWhileFactsChange) {
  // At most 6 requests are in flight (4 completion threads, 2 fact threads), far below the suite server's
  // queue of 32, so none may be refused with 503 (ServerBackPressureTest covers a full queue): every
  // request must succeed.
  std::atomic<int> failures{0}, completions{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        auto c = Client(kReadKey);
        json body = {{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 8}, {"seed", t * 100 + i}};
        auto res = c.Post("/v1/completions", body.dump(), "application/json");
        if (!res || res->status != 200) {
          ++failures;
          continue;
        }
        ++completions;
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        auto c = Client();
        auto res = c.Post("/v1/facts", json({{"text", "Churn fact " + std::to_string(t) + " " + std::to_string(i)}}).dump(),
                          "application/json");
        if (!res || res->status != 200) {
          ++failures;
          continue;
        }
        const int64_t id = json::parse(res->body)["id"];
        auto del = c.Delete(("/v1/facts/" + std::to_string(id)).c_str());
        if (!del || del->status != 200) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(completions, 4 * 6);
}

TEST_F(ServerTest, ConcurrentCompletionsJoinOneBatchAndKeepTheirOutputs) {
  // A sampled kNN completion alone, then again while six others (other seeds, some streamed) decode
  // beside it in the same batch: the same text.
  const json body = {{"prompt", "The cat"}, {"max_tokens", 24}, {"temperature", 1.0}, {"seed", 5},
                     {"knn", {{"k", 8}, {"lambda", 0.5}}}};
  const std::string alone = Completion(body)["choices"][0]["text"];
  std::vector<std::thread> others;
  std::atomic<int> failures{0};
  for (int t = 0; t < 6; ++t) {
    others.emplace_back([&, t] {
      json other = body;
      other["seed"] = 100 + t;
      other["max_tokens"] = 12 + 4 * t;
      if (t % 2 == 1) {
        if (StreamText(other).empty()) ++failures;
      } else if (!Completion(other).contains("choices")) {
        ++failures;
      }
    });
  }
  const std::string together = Completion(body)["choices"][0]["text"];
  for (auto& t : others) t.join();
  EXPECT_EQ(together, alone);
  EXPECT_EQ(failures, 0);
  const std::string metrics = Client().Get("/metrics")->body;
  for (const char* name : {"mnemo_decode_steps ", "mnemo_decode_step_rows ", "mnemo_decode_active ", "mnemo_decode_waiting "}) {
    EXPECT_NE(metrics.find(std::string("\n") + name), std::string::npos) << name;
  }
}

TEST_F(ServerTest, AuditRunsBesideServingAndServesItsReports) {
  auto read = Client(kReadKey).Post("/v1/audits", "{}", "application/json");
  EXPECT_EQ(read->status, 403);
  Post("/v1/audits", {{"canaries", 0}}, 400);
  Post("/v1/audits", {{"bogus", 1}}, 400);
  Post("/v1/audits", {{"repetitions", {1, "x"}}}, 400);
  Post("/v1/audits", {{"knn", {{"k", 0}}}}, 400);
  Post("/v1/audits", {{"memory_capacity", 32}}, 400);
  Post("/v1/audits", {{"memory_capacity", "big"}}, 400);
  const std::string facts_before = Client().Get("/v1/facts?limit=1000")->body;
  const json small = {{"canaries", 1},        {"references", 15},          {"repetitions", {1, 4}},
                      {"members", 10},        {"extraction_prefixes", {4}}, {"extraction_samples", 3},
                      {"forgetting_added", {0, 5}}, {"finetune_steps", 20}, {"seed", 3},
                      {"memory_capacity", 64}};
  json started = Post("/v1/audits", small, 202);
  const std::string id = started["id"];
  EXPECT_EQ(started["status"], "running");
  Post("/v1/audits", small, 409);  // one at a time
  Completion({{"prompt", "The cat"}, {"max_tokens", 4}});  // serving goes on meanwhile
  json status;
  for (int i = 0; i < 1200 * kWaitScale; ++i) {
    status = json::parse(Client().Get(("/v1/audits/" + id).c_str())->body);
    if (status["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(status["status"], "succeeded") << status.dump();
  EXPECT_EQ(status["progress"], 1.0);
  EXPECT_NE(status["summary"].get<std::string>().find("deletion audit"), std::string::npos);
  auto report = Client().Get(status["report_json"].get<std::string>().c_str());
  ASSERT_EQ(report->status, 200);
  const json r = json::parse(report->body);
  EXPECT_EQ(r["format"], "mnemo-audit/1");
  EXPECT_EQ(r["config"]["seed"], 3);
  EXPECT_EQ(r["config"]["knn"]["k"], 8);  // the server's defaults
  EXPECT_EQ(r["config"]["memory_capacity"], 64);
  EXPECT_EQ(r["memory"]["measured"], false);  // this model has no memory layer
  EXPECT_TRUE(r["deletion_audit"]["matches_rebuilt"].get<bool>());
  auto html = Client().Get(status["report_html"].get<std::string>().c_str());
  ASSERT_EQ(html->status, 200);
  EXPECT_EQ(html->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(html->body.find("<svg"), std::string::npos);
  const json list = json::parse(Client().Get("/v1/audits")->body);
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], id);
  EXPECT_EQ(Client().Get("/v1/audits/audit-1-1")->status, 404);
  EXPECT_EQ(Client().Get("/v1/audits/audit-1-1/report.json")->status, 404);
  EXPECT_EQ(Client().Get("/v1/audits/../../state.json")->status, 404);
  EXPECT_EQ(Client().Get("/v1/facts?limit=1000")->body, facts_before);  // the live state was only read

  // Cancelling: the job ends "cancelled", its report is refused and its scratch copy is gone.
  json second = Post("/v1/audits", {{"members", 200}, {"references", 255}}, 202);
  const std::string id2 = second["id"];
  EXPECT_EQ(Client().Delete(("/v1/audits/" + id2).c_str())->status, 200);
  for (int i = 0; i < 1200 * kWaitScale; ++i) {
    status = json::parse(Client().Get(("/v1/audits/" + id2).c_str())->body);
    if (status["status"] != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status["status"], "cancelled") << status.dump();
  EXPECT_EQ(Client().Get(("/v1/audits/" + id2 + "/report.json").c_str())->status, 409);
  EXPECT_FALSE(std::filesystem::exists(dir_->File("state/audits/" + id2)));  // nothing half-written stays
  EXPECT_TRUE(std::filesystem::exists(dir_->File("state/audits/" + id + "/report.html")));
  // Both starts and the cancel are in the action log.
  const json log = json::parse(Client().Get(("/v1/log?action=audits&id=" + id2).c_str())->body);
  ASSERT_EQ(log["data"].size(), 2u) << log.dump();
  EXPECT_EQ(log["data"][0]["action"], "audits.start");
  EXPECT_EQ(log["data"][1]["action"], "audits.cancel");
  EXPECT_EQ(json::parse(Client().Get(("/v1/log?action=audits.start&id=" + id).c_str())->body)["data"].size(), 1u);
}

TEST_F(ServerTest, AnAuditTheServerDidNotFinishIsReportedAsInterrupted) {
  // What a kill during an audit leaves: its directory, without a report (start-up removes its scratch).
  const std::string dir = dir_->File("state/audits/audit-7-7");
  std::filesystem::create_directories(dir);
  auto res = Client().Get("/v1/audits/audit-7-7");
  ASSERT_EQ(res->status, 200);
  const json status = json::parse(res->body);
  EXPECT_EQ(status["status"], "failed");
  EXPECT_EQ(status["stage"], "interrupted");
  EXPECT_NE(status["error"].get<std::string>().find("interrupted"), std::string::npos);
  EXPECT_EQ(Client().Get("/v1/audits/audit-7-7/report.json")->status, 409);
  EXPECT_NE(Client().Get("/v1/audits")->body.find("audit-7-7"), std::string::npos);
  EXPECT_EQ(Client().Get("/v1/audits/audit-8-8")->status, 404);  // never started: no directory
  std::filesystem::remove_all(dir);
}

TEST(ServerBackPressureTest, FullQueueAnswers503WithRetryAfter) {
  ScratchDir d;
  std::string out;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  // Completions decoded one batch of a single slot with one waiting (batch_slots 1), and each alone on
  // the only worker (batch_slots 0): either way 8 at once overflow.
  for (int slots : {1, 0}) {
  SCOPED_TRACE("batch_slots " + std::to_string(slots));
  RunningServer server(d.File("state"), "", /*workers=*/1, /*queue=*/1, 120,
                       [slots](ServeOptions* o) { o->batch_slots = slots; });
  std::atomic<int> ok{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      httplib::Client c("127.0.0.1", server.port());
      c.set_read_timeout(60, 0);
      json body = {{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 60}};
      auto res = c.Post("/v1/completions", body.dump(), "application/json");
      if (res && res->status == 200) {
        ++ok;
      } else if (res && res->status == 503 && res->get_header_value("Retry-After") == "1" &&
                 json::parse(res->body)["error"]["type"] == "overloaded") {
        ++busy;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other, 0);
  EXPECT_GE(ok, 1);
  EXPECT_GE(busy, 1);
  }
}

TEST(ServerProcessTest, SigtermStopsGracefully) {
  ScratchDir d;
  std::string out;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  // Start, wait until healthy, add a fact, SIGTERM, and check the exit and the saved snapshot.
  const std::string script =
      Mnemo() + " serve --state " + d.File("state") + " --port 0 --no-log 2> " + d.File("log") + " & pid=$!; "
      "for i in $(seq 100); do port=$(sed -n 's/.*listening on http:\\/\\/127.0.0.1:\\([0-9]*\\).*/\\1/p' " + d.File("log") +
      "); [ -n \"$port\" ] && curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done; "
      "curl -sf -X POST localhost:$port/v1/facts -d '{\"text\": \"The cat sleeps.\"}'; "
      "kill -TERM $pid; wait $pid; echo \" exit=$?\"";
  ASSERT_EQ(RunCommand("bash -c '" + [&] {
                         std::string s = script;
                         std::string escaped;
                         for (char ch : s) escaped += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
                         return escaped;
                       }() + "'", &out), 0) << out;
  EXPECT_NE(out.find("\"id\":1"), std::string::npos) << out;
  EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
  std::string log;
  RunCommand("cat " + d.File("log"), &log);
  EXPECT_NE(log.find("SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
  RunCommand("ls " + d.File("state/snapshots"), &out);
  EXPECT_NE(out.find("chunk-"), std::string::npos) << out;
}

TEST(ServerLimitsTest, TimedOutGenerationAnswers504) {
  ScratchDir d;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  // 16 choices of up to 1,024 tokens cannot finish in 1 ms (the barely trained model may end a choice
  // early with <|endoftext|>, but not all 16 within a millisecond): 504, and the worker stops.
  RunningServer server(d.File("state"), "", /*workers=*/1, /*queue=*/4, /*timeout_s=*/0.001);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  const json body = {{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 1024}, {"n", 16}, {"seed", 1}};
  auto timed_out = c.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(timed_out);
  EXPECT_EQ(timed_out->status, 504) << timed_out->body;
  EXPECT_EQ(json::parse(timed_out->body)["error"]["type"], "timeout");
  // The server is still healthy afterwards.
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST(ServerLimitsTest, StreamStopsWhenItsClientLeaves) {
  ScratchDir d;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  RunningServer server(d.File("state"), "", /*workers=*/1, /*queue=*/4);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(60, 0);
  // ignore_eos: the full run is exactly 1,024 tokens, so stopping early is visible.
  const json body = {{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 1024}, {"ignore_eos", true},
                     {"stream", true}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  int chunks = 0;
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  c.send(req, res, error);
  EXPECT_EQ(chunks, 2);
  double generated = -1;
  for (int i = 0; i < 200 && generated < 0; ++i) {
    auto metrics = c.Get("/metrics");
    ASSERT_TRUE(metrics);
    const size_t at = metrics->body.find("\nmnemo_tokens_generated_total ");
    if (at != std::string::npos) generated = std::stod(metrics->body.substr(at + 30));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(generated, 1);
  EXPECT_LT(generated, 1024) << "the stream kept generating after its client left";
  // Without leaving, the same request runs to the end.
  json whole = body;
  whole.erase("stream");
  auto full = c.Post("/v1/completions", whole.dump(), "application/json");
  ASSERT_TRUE(full);
  EXPECT_EQ(json::parse(full->body)["usage"]["completion_tokens"], 1024);
}

// Token ids for a score the barely trained tiny model needs about 10 s for (issue 17, door 3; it scored
// 140,000 tokens/s on a busy 2-core machine): about 6 MB of JSON. The servers below raise
// --max-score-tokens and --max-body to take it.
constexpr size_t kLongScoreTokens = 1500000;
void TakeLongScores(ServeOptions* o) {
  o->max_score_tokens = 1 << 21;
  o->max_body_bytes = 8 << 20;
}
json LongScore() {
  std::vector<int> ids(kLongScoreTokens);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(100 + (i * 7919) % 190);
  return {{"ids", ids}, {"knn", {{"enabled", false}}}};
}

// Door 3 of issue 17: the request timeout did not stop a score (128 KB of text ran 197 s and got 200). Now
// the scoring loop polls the cancel flag between batches of windows: 504, with how far it got.
TEST(ServerLimitsTest, TimedOutScoreStopsAndAnswers504) {
  ScratchDir d;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  RunningServer server(d.File("state"), "", /*workers=*/1, /*queue=*/4, /*timeout_s=*/0.5,
                       TakeLongScores);
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(120, 0);
  auto res = c.Post("/v1/score", LongScore().dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 504) << res->body.substr(0, 300);
  const json e = json::parse(res->body);
  EXPECT_EQ(e["error"]["type"], "timeout");
  // Stopped while scoring (not cancelled in the queue), before the end.
  const std::string message = e["error"]["message"].get<std::string>();
  const size_t at = message.find("scoring stopped after ");
  ASSERT_NE(at, std::string::npos) << message;
  const long long done = std::stoll(message.substr(at + 22));
  const long long total = std::stoll(message.substr(message.find(" of ", at) + 4));
  EXPECT_EQ(total, static_cast<long long>(kLongScoreTokens - 1));
  EXPECT_LT(done, total) << message;
  std::printf("timed-out score: %s\n", message.c_str());
  // The worker is free again: a short score is answered.
  json shorter = {{"text", "The cat sees the bridge."}, {"knn", {{"enabled", false}}}};
  auto ok = c.Post("/v1/score", shorter.dump(), "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

// Door 3 of issue 17: while two 32 KB scores ran, a 4-token completion waited 77 s. Scores longer than
// the context now take at most workers - 1 workers, so with 2 workers a completion (and a short score)
// finds one free while two long scores are in flight. The long scores end at the 6 s request timeout;
// before, both workers were theirs and the completion waited for one (measured: 2.9 s with a 4 s timeout).
TEST(ServerLimitsTest, LongScoresLeaveAWorkerForShortRequests) {
  ScratchDir d;
  ASSERT_NO_FATAL_FAILURE(MakeBareState(d));
  RunningServer server(d.File("state"), "", /*workers=*/2, /*queue=*/8, /*timeout_s=*/6,
                       TakeLongScores);
  using Clock = std::chrono::steady_clock;
  const std::string long_body = LongScore().dump();
  std::vector<int> long_status(2, 0);
  std::vector<Clock::time_point> long_end(2);
  std::vector<std::thread> scores;
  for (int i = 0; i < 2; ++i) {
    scores.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", server.port());
      c.set_read_timeout(120, 0);
      auto res = c.Post("/v1/score", long_body, "application/json");
      long_end[i] = Clock::now();
      long_status[i] = res ? res->status : -1;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // both long scores are in
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(120, 0);
  const auto sent = Clock::now();
  auto completion = c.Post("/v1/completions",
                           json({{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 2}}).dump(), "application/json");
  const auto completed = Clock::now();
  auto short_score = c.Post("/v1/score", json({{"text", "The cat sees."}, {"knn", {{"enabled", false}}}}).dump(),
                            "application/json");
  const auto short_scored = Clock::now();
  for (auto& t : scores) t.join();
  ASSERT_TRUE(completion);
  EXPECT_EQ(completion->status, 200) << completion->body;
  ASSERT_TRUE(short_score);
  EXPECT_EQ(short_score->status, 200) << short_score->body;
  // A 2-token completion of the tiny model takes milliseconds; 2 s is the generous bound.
  EXPECT_LT(std::chrono::duration<double>(completed - sent).count(), 2.0);
  EXPECT_LT(std::chrono::duration<double>(short_scored - sent).count(), 2.0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(long_status[i] == 200 || long_status[i] == 504) << long_status[i];
    EXPECT_LT(short_scored, long_end[i]) << "a long score ended before the short requests were answered";
  }
}

}  // namespace
}  // namespace mnemo
