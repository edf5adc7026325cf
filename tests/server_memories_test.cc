// End-to-end tests of the memorizing layer's memories over HTTP (api/server_memories.cc, the "memory"
// field of /v1/completions and /v1/score): a tiny randomly initialised model with a memory layer, saved as
// a model directory, a state made for it, served in-process on a free loopback port.
//
// The key contract: deleting a document leaves a memory answering exactly (bit for bit) as a memory that
// never read it, for unbounded and FIFO memories, across a restart too.
#include "api/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "lm/checkpoint.h"
#include "retriever/state_service.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using json = nlohmann::json;
using testing::ScratchDir;

constexpr char kReadKey[] = "memories-read-key-0123456789abcdef";
constexpr char kAdminKey[] = "memories-admin-key-0123456789abcdef";

// A server over `state`, running on its own thread until destroyed.
class LocalServer {
 public:
  LocalServer(const std::string& state, const std::string& keys) {
    ServeOptions o;
    o.state = state;
    o.port = 0;
    o.api_key_file = keys;
    o.threads = 2;
    o.log_requests = false;
    server_ = std::make_unique<Server>(o);
    Status s = server_->Bind(&port_);
    EXPECT_TRUE(s.ok()) << s.ToString();
    thread_ = std::thread([this] { run_status_ = server_->Run(); });
    for (int i = 0; i < 600 && !server_->ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_TRUE(server_->ready());
  }
  ~LocalServer() {
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

struct Reply {
  int status = 0;
  json body;
};

// HTTP calls to one server, as one key (null: none).
class Api {
 public:
  explicit Api(int port, const char* key = kAdminKey) : port_(port), key_(key) {}
  Api As(const char* key) const { return Api(port_, key); }

  Reply Send(const std::string& method, const std::string& path, const json& body = json()) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    if (key_ != nullptr) c.set_default_headers({{"Authorization", std::string("Bearer ") + key_}});
    httplib::Result res = method == "GET"      ? c.Get(path)
                          : method == "DELETE" ? c.Delete(path)
                                               : c.Post(path, body.is_null() ? std::string() : body.dump(),
                                                        "application/json");
    Reply r;
    EXPECT_TRUE(res) << method << " " << path;
    if (!res) return r;
    r.status = res->status;
    r.body = json::parse(res->body, nullptr, false);
    return r;
  }
  // Sends and expects `expect`; returns the body.
  json Call(const std::string& method, const std::string& path, const json& body = json(), int expect = 200) const {
    Reply r = Send(method, path, body);
    EXPECT_EQ(r.status, expect) << method << " " << path << " " << (body.is_null() ? "" : body.dump()) << " -> "
                                << r.body.dump();
    return r.body;
  }
  // Sends and expects an error `status` with a JSON {"error": {"message": ...}} naming `needle`.
  void ExpectError(const std::string& method, const std::string& path, const json& body, int status,
                   const std::string& needle = "") const {
    Reply r = Send(method, path, body);
    const std::string what = method + " " + path + " " + (body.is_null() ? "" : body.dump()) + " -> " +
                             std::to_string(r.status) + " " + r.body.dump();
    EXPECT_EQ(r.status, status) << what;
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error") && r.body["error"].is_object()) << what;
    ASSERT_TRUE(r.body["error"]["message"].is_string()) << what;
    if (!needle.empty()) {
      EXPECT_NE(r.body["error"]["message"].get<std::string>().find(needle), std::string::npos) << what;
    }
  }

  // Memory and document helpers (admin).
  json CreateMemory(const std::string& name, int64_t capacity) const {
    return Call("POST", "/v1/memories", {{"name", name}, {"capacity", capacity}});
  }
  json ReadDocument(int64_t memory, const std::string& text, const json& metadata = json()) const {
    json body = {{"text", text}};
    if (!metadata.is_null()) body["metadata"] = metadata;
    return Call("POST", MemoryPath(memory) + "/documents", body);
  }
  json GetMemory(int64_t memory) const { return Call("GET", MemoryPath(memory)); }
  json GetDocument(int64_t memory, int64_t doc) const { return Call("GET", DocumentPath(memory, doc)); }
  json DeleteDocument(int64_t memory, int64_t doc) const { return Call("DELETE", DocumentPath(memory, doc)); }
  json Documents(int64_t memory) const { return Call("GET", MemoryPath(memory) + "/documents"); }

  // A greedy completion with log-probabilities, reading `memory` (0: none); returns choice 0.
  json Complete(const std::string& prompt, int64_t memory, int return_neighbors = 0, int expect = 200) const {
    json body = {{"model", "model"}, {"prompt", prompt},  {"max_tokens", 8},     {"temperature", 0},
                 {"logprobs", 5},    {"seed", 1234},      {"ignore_eos", true}};
    if (memory > 0) body["memory"] = {{"id", memory}};
    if (return_neighbors > 0) body["return_neighbors"] = return_neighbors;
    json r = Call("POST", "/v1/completions", body, expect);
    if (expect != 200) return r;
    EXPECT_EQ(r["choices"].size(), 1u) << r.dump();
    return r["choices"][0];
  }
  // /v1/score's logprobs_lm of `text` reading `memory` (0: none).
  json Score(const std::string& text, int64_t memory) const {
    json body = {{"text", text}};
    if (memory > 0) body["memory"] = {{"id", memory}};
    json r = Call("POST", "/v1/score", body);
    EXPECT_TRUE(r["logprobs_lm"].is_array()) << r.dump();
    if (memory > 0) {
      EXPECT_EQ(r["memory"]["id"], memory) << r.dump();
    } else {
      EXPECT_TRUE(r["memory"].is_null()) << r.dump();
    }
    return r["logprobs_lm"];
  }

  static std::string MemoryPath(int64_t memory) { return "/v1/memories/" + std::to_string(memory); }
  static std::string DocumentPath(int64_t memory, int64_t doc) {
    return MemoryPath(memory) + "/documents/" + std::to_string(doc);
  }

 private:
  int port_;
  const char* key_;
};

// The parts of a completion choice that depend on the model's computation.
json Computed(const json& choice) { return {{"text", choice["text"]}, {"logprobs", choice["logprobs"]}}; }

void MakeState(const std::string& state, const std::string& model_dir) {
  Status s = StateService::Create(state, model_dir, "", nullptr);
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Three documents (distinct from every other test's, so the deletion verifier's file scan sees only its own).
struct Texts {
  std::string d1, d2, d3, prompt;
};

class ServerMemoriesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    std::filesystem::create_directories(dir_->File("mem"));
    std::filesystem::create_directories(dir_->File("plain"));
    testing::WriteFileOrDie(dir_->File("keys"), std::string("read ") + kReadKey + "\nadmin " + kAdminKey + "\n");
    ASSERT_NO_FATAL_FAILURE(testing::SaveRandomTinyModel(dir_->File("mem/model"), 11, true));
    ASSERT_NO_FATAL_FAILURE(testing::SaveRandomTinyModel(dir_->File("plain/model"), 11, false));
    ASSERT_NO_FATAL_FAILURE(MakeState(dir_->File("state"), dir_->File("mem/model")));
    server_ = new LocalServer(dir_->File("state"), dir_->File("keys"));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  static Api Admin() { return Api(server_->port(), kAdminKey); }

  static ScratchDir* dir_;
  static LocalServer* server_;
};
ScratchDir* ServerMemoriesTest::dir_ = nullptr;
LocalServer* ServerMemoriesTest::server_ = nullptr;

// The memory with `id` in GET /v1/memories (null when absent).
json Listed(const Api& api, int64_t id) {
  json list = api.Call("GET", "/v1/memories");
  EXPECT_EQ(list["object"], "list");
  for (const json& m : list["data"]) {
    if (m["id"] == id) return m;
  }
  return json();
}

TEST_F(ServerMemoriesTest, Lifecycle) {
  const Api api = Admin();
  const std::string t1 = "The cat follows the long road to the quiet harbour.";
  const std::string t2 = "A dog remembers an open door by the old river bridge.";
  json m = api.CreateMemory("notes", 0);
  ASSERT_TRUE(m["id"].is_number_integer()) << m.dump();
  const int64_t id = m["id"];
  EXPECT_EQ(m["object"], "memory");
  EXPECT_EQ(m["name"], "notes");
  EXPECT_TRUE(m["capacity"].is_null());
  EXPECT_EQ(m["policy"], "unbounded");
  EXPECT_EQ(m["documents"], 0);
  EXPECT_EQ(m["stored_tokens"], 0);
  EXPECT_EQ(m["resident_tokens"], 0);

  json a = api.ReadDocument(id, t1, {{"source", "a.txt"}, {"n", 1}});
  json b = api.ReadDocument(id, t2);
  const int64_t a_id = a["id"], b_id = b["id"];
  const int64_t na = a["tokens"], nb = b["tokens"];
  EXPECT_GT(na, 5);
  EXPECT_GT(nb, 5);
  EXPECT_NE(a_id, b_id);
  EXPECT_EQ(a["object"], "memory.document");
  EXPECT_EQ(a["memory_id"], id);
  EXPECT_EQ(a["resident_tokens"], na);
  EXPECT_EQ(a["evicted_tokens"], 0);
  EXPECT_EQ(a["metadata"], json({{"source", "a.txt"}, {"n", 1}}));
  EXPECT_EQ(b["metadata"], json::object());
  EXPECT_FALSE(a.contains("text")) << "reading echoes no text: " << a.dump();
  // The tokens are the tokenizer's.
  json tok = api.Call("POST", "/tokenize", {{"text", t1}});
  EXPECT_EQ(static_cast<int64_t>(tok["tokens"].size()), na) << tok.dump();

  json got = api.GetMemory(id);
  EXPECT_EQ(got["documents"], 2);
  EXPECT_EQ(got["stored_tokens"], na + nb);
  EXPECT_EQ(got["resident_tokens"], na + nb);
  EXPECT_EQ(got["name"], "notes");
  json listed = Listed(api, id);
  ASSERT_FALSE(listed.is_null());
  EXPECT_EQ(listed, got);

  json docs = api.Documents(id);
  EXPECT_EQ(docs["object"], "list");
  ASSERT_EQ(docs["data"].size(), 2u) << docs.dump();
  EXPECT_EQ(docs["data"][0]["id"], a_id);
  EXPECT_EQ(docs["data"][1]["id"], b_id);
  EXPECT_EQ(docs["data"][0]["tokens"], na);
  EXPECT_EQ(docs["data"][0]["metadata"]["source"], "a.txt");
  EXPECT_TRUE(docs["next_after"].is_null());
  // Pages.
  json page1 = api.Call("GET", Api::MemoryPath(id) + "/documents?limit=1");
  ASSERT_EQ(page1["data"].size(), 1u);
  EXPECT_EQ(page1["data"][0]["id"], a_id);
  EXPECT_EQ(page1["next_after"], a_id);
  json page2 = api.Call("GET", Api::MemoryPath(id) + "/documents?limit=1&after=" + std::to_string(a_id));
  ASSERT_EQ(page2["data"].size(), 1u);
  EXPECT_EQ(page2["data"][0]["id"], b_id);
  EXPECT_TRUE(page2["next_after"].is_null()) << page2.dump();

  json da = api.GetDocument(id, a_id);
  EXPECT_EQ(da["text"], t1);
  EXPECT_EQ(da["tokens"], na);
  EXPECT_EQ(da["resident_tokens"], na);
  EXPECT_EQ(da["metadata"]["n"], 1);
  EXPECT_EQ(api.GetDocument(id, b_id)["text"], t2);

  // Delete a document: it is gone, and says so.
  json del = api.DeleteDocument(id, a_id);
  EXPECT_EQ(del["deleted"], true);
  EXPECT_EQ(del["id"], a_id);
  EXPECT_EQ(del["tokens"], na);
  api.ExpectError("GET", Api::DocumentPath(id, a_id), json(), 404, "was deleted");
  api.ExpectError("DELETE", Api::DocumentPath(id, a_id), json(), 404);
  got = api.GetMemory(id);
  EXPECT_EQ(got["documents"], 1);
  EXPECT_EQ(got["stored_tokens"], nb);
  EXPECT_EQ(got["resident_tokens"], nb);
  docs = api.Documents(id);
  ASSERT_EQ(docs["data"].size(), 1u);
  EXPECT_EQ(docs["data"][0]["id"], b_id);

  // Delete the memory: it and its documents are gone.
  json gone = api.Call("DELETE", Api::MemoryPath(id));
  EXPECT_EQ(gone["deleted"], true);
  EXPECT_EQ(gone["documents_deleted"], 1);
  api.ExpectError("GET", Api::MemoryPath(id), json(), 404);
  api.ExpectError("GET", Api::DocumentPath(id, b_id), json(), 404);
  api.ExpectError("GET", Api::MemoryPath(id) + "/documents", json(), 404);
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", {{"text", t1}}, 404);
  api.ExpectError("DELETE", Api::MemoryPath(id), json(), 404);
  EXPECT_TRUE(Listed(api, id).is_null());
  // A deleted memory cannot be read by completions or scores.
  api.ExpectError("POST", "/v1/completions", {{"model", "model"}, {"prompt", "The cat"}, {"memory", {{"id", id}}}}, 404);
  api.ExpectError("POST", "/v1/score", {{"text", t1}, {"memory", {{"id", id}}}}, 404);
}

// Memory A reads d1, d2, d3; memory B reads d1, d3. Before d2's deletion A answers differently from B;
// after it, exactly as B: completions (text and every log-prob) and scores, bit for bit.
void CheckDeletionIsExact(const Api& api, const Texts& t, bool fifo) {
  SCOPED_TRACE(fifo ? "fifo" : "unbounded");
  // Token counts, for the FIFO capacity.
  auto count = [&](const std::string& text) {
    return static_cast<int64_t>(api.Call("POST", "/tokenize", {{"text", text}})["tokens"].size());
  };
  const int64_t n1 = count(t.d1), n2 = count(t.d2), n3 = count(t.d3);
  // FIFO: A's ring keeps half of d1 after d2 and d3 (d2 pushed the rest out); B's holds d1 and d3 whole.
  const int64_t capacity = fifo ? n2 + n3 + n1 / 2 : 0;
  if (fifo) {
    ASSERT_GT(n1 / 2, 0);
    ASSERT_LE(n1 + n3, capacity) << "d2 must be at least half as long as d1 for B to hold d1 and d3 whole";
  }
  const int64_t a = api.CreateMemory("A", capacity)["id"], b = api.CreateMemory("B", capacity)["id"];
  json a1 = api.ReadDocument(a, t.d1), a2 = api.ReadDocument(a, t.d2), a3 = api.ReadDocument(a, t.d3);
  json b1 = api.ReadDocument(b, t.d1), b3 = api.ReadDocument(b, t.d3);
  EXPECT_EQ(a1["tokens"], n1);
  EXPECT_EQ(a2["tokens"], n2);
  EXPECT_EQ(a3["tokens"], n3);
  const int64_t a1_id = a1["id"], a2_id = a2["id"];
  const int64_t evicted = a1["evicted_tokens"].get<int64_t>() + a2["evicted_tokens"].get<int64_t>() +
                          a3["evicted_tokens"].get<int64_t>();
  EXPECT_EQ(b1["evicted_tokens"].get<int64_t>() + b3["evicted_tokens"].get<int64_t>(), 0);
  json ma = api.GetMemory(a), mb = api.GetMemory(b);
  EXPECT_EQ(ma["stored_tokens"], n1 + n2 + n3);
  EXPECT_EQ(mb["resident_tokens"], n1 + n3);
  if (fifo) {
    EXPECT_EQ(ma["policy"], "fifo");
    EXPECT_EQ(ma["capacity"], capacity);
    EXPECT_EQ(evicted, n1 - n1 / 2);
    EXPECT_EQ(ma["resident_tokens"], capacity);
    EXPECT_EQ(api.GetDocument(a, a1_id)["resident_tokens"], n1 / 2);
  } else {
    EXPECT_EQ(evicted, 0);
    EXPECT_EQ(ma["resident_tokens"], n1 + n2 + n3);
  }

  // The memory matters: A (with d2) scores d2's text and continues its prompt differently from B.
  const json score_a = api.Score(t.d2, a), score_b = api.Score(t.d2, b), score_none = api.Score(t.d2, 0);
  ASSERT_EQ(score_a.size(), score_b.size());
  EXPECT_NE(score_a, score_b) << "A holds d2 and B does not, yet they score d2 identically";
  EXPECT_NE(score_b, score_none) << "a memory of d1 and d3 changed nothing";
  const json comp_a = Computed(api.Complete(t.prompt, a)), comp_b = Computed(api.Complete(t.prompt, b));
  EXPECT_NE(comp_a, comp_b) << "A holds d2 and B does not, yet their completions are identical";
  // Reading is deterministic: the same request twice gives the same numbers.
  EXPECT_EQ(api.Score(t.d2, a), score_a);
  EXPECT_EQ(Computed(api.Complete(t.prompt, a)), comp_a);

  // Delete d2 from A: A now answers exactly as B.
  api.DeleteDocument(a, a2_id);
  ma = api.GetMemory(a);
  EXPECT_EQ(ma["documents"], 2);
  EXPECT_EQ(ma["stored_tokens"], n1 + n3);
  EXPECT_EQ(ma["resident_tokens"], n1 + n3);
  // FIFO: d1's evicted tokens came back, as they would be had d2 never been read.
  EXPECT_EQ(api.GetDocument(a, a1_id)["resident_tokens"], n1);
  EXPECT_EQ(api.Score(t.d2, a), score_b) << "after deleting d2, A scores d2's text unlike a memory that never read it";
  EXPECT_EQ(api.Score(t.d1, a), api.Score(t.d1, b));
  EXPECT_EQ(api.Score(t.d3 + " " + t.prompt, a), api.Score(t.d3 + " " + t.prompt, b));
  EXPECT_EQ(Computed(api.Complete(t.prompt, a)), comp_b)
      << "after deleting d2, A's completion differs from a memory that never read it";
  EXPECT_EQ(Computed(api.Complete("The river", a)), Computed(api.Complete("The river", b)));
}

TEST_F(ServerMemoriesTest, DeletionIsExactThroughHttp) {
  const Texts t = {"The old sailor crosses the bridge. My neighbour sees a red ball.",
                   "A dog finds the quiet harbour and follows the long road home.",
                   "The river remembers an open door. The cat crosses the bridge.", "A dog finds the"};
  ASSERT_NO_FATAL_FAILURE(CheckDeletionIsExact(Admin(), t, /*fifo=*/false));
  ASSERT_NO_FATAL_FAILURE(CheckDeletionIsExact(Admin(), t, /*fifo=*/true));
}

TEST_F(ServerMemoriesTest, VerifyDeleted) {
  // A state of its own: the verifier scans the whole memories database, and other tests' documents must
  // not share this one's first token (see VerifyDeletedIgnoresLiveDocumentsSharingAPrefix).
  ScratchDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeState(dir.File("state"), dir_->File("mem/model")));
  LocalServer server(dir.File("state"), "");
  const Api api(server.port(), nullptr);
  const std::string keep = "My neighbour crosses the long road and sees the old sailor.";
  const std::string secret = "The cat follows a red ball to the open door of the harbour.";
  for (int64_t capacity : {int64_t{0}, int64_t{20}}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    const int64_t id = api.CreateMemory("verify", capacity)["id"];
    const int64_t keep_id = api.ReadDocument(id, keep)["id"];
    const int64_t doc = api.ReadDocument(id, secret)["id"];
    const std::string verify = Api::DocumentPath(id, doc) + "/verify-deleted";
    // A live document: delete it first.
    api.ExpectError("POST", verify, {{"text", secret}}, 409, "delete it first");
    // A document that never was.
    api.ExpectError("POST", Api::DocumentPath(id, doc + 1000) + "/verify-deleted", {{"text", secret}}, 404);
    api.DeleteDocument(id, doc);

    json v = api.Call("POST", verify, {{"text", secret}});
    EXPECT_EQ(v["passed"], true) << v.dump();
    EXPECT_EQ(v["verdict"], "deleted") << v.dump();
    EXPECT_EQ(v["memory_id"], id);
    EXPECT_EQ(v["document_id"], doc);
    EXPECT_FALSE(v.contains("reason")) << v.dump();
    EXPECT_EQ(v["structural"]["tombstone"], true) << v.dump();
    EXPECT_EQ(v["structural"]["in_database"], false) << v.dump();
    EXPECT_EQ(v["structural"]["tokens_in_memory"], 0) << v.dump();
    EXPECT_EQ(v["structural"]["memory_matches_rebuild"], true) << v.dump();
    ASSERT_TRUE(v["probe"].is_object()) << v.dump();
    EXPECT_EQ(v["probe"]["max_abs_logprob_diff_vs_rebuilt"], 0) << v.dump();
    EXPECT_EQ(v["probe"]["keys_held_by_memory"], 0) << v.dump();
    EXPECT_EQ(v["probe"]["state_files_with_content"], 0) << v.dump();
    EXPECT_GT(v["probe"]["tokens_scored"].get<int64_t>(), 0) << v.dump();
    // Without the text: the structural evidence only.
    json s = api.Call("POST", verify, json::object());
    EXPECT_EQ(s["passed"], true) << s.dump();
    EXPECT_TRUE(s["probe"].is_string()) << s.dump();
    json empty_body = api.Call("POST", verify);
    EXPECT_EQ(empty_body["passed"], true) << empty_body.dump();
    // The document is named with its own memory only; a still-live one stays 409.
    api.ExpectError("POST", Api::DocumentPath(id + 100000, doc) + "/verify-deleted", {{"text", secret}}, 404);
    api.ExpectError("POST", Api::DocumentPath(id, keep_id) + "/verify-deleted", json::object(), 409);
    api.ExpectError("POST", verify, {{"text", 5}}, 400);
  }
}

// A deleted document that shares its first tokens with a document still stored (in the same memory or
// another one) is deleted all the same: those identical keys are the live document's, not traces of it.
TEST_F(ServerMemoriesTest, VerifyDeletedIgnoresLiveDocumentsSharingAPrefix) {
  ScratchDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeState(dir.File("state"), dir_->File("mem/model")));
  LocalServer server(dir.File("state"), "");
  const Api api(server.port(), nullptr);
  const std::string secret = "The cat sees a red ball at the quiet harbour.";
  struct Case {
    const char* name;
    bool same_memory;
  };
  for (const Case& c : {Case{"the same memory", true}, Case{"another memory", false}}) {
    SCOPED_TRACE(std::string("live document in ") + c.name);
    const int64_t id = api.CreateMemory("m", 0)["id"];
    const int64_t other = c.same_memory ? id : api.CreateMemory("other", 0)["id"].get<int64_t>();
    api.ReadDocument(other, "The cat sees the long road.");
    const int64_t doc = api.ReadDocument(id, secret)["id"];
    api.DeleteDocument(id, doc);
    json v = api.Call("POST", Api::DocumentPath(id, doc) + "/verify-deleted", {{"text", secret}});
    // Everything the verifier can see says the document is gone: no row, no token in the ring, the ring
    // equal to a rebuild, the log-probs equal to a rebuild's. Its verdict must say so.
    EXPECT_EQ(v["structural"]["in_database"], false) << v.dump();
    EXPECT_EQ(v["structural"]["tokens_in_memory"], 0) << v.dump();
    EXPECT_EQ(v["structural"]["memory_matches_rebuild"], true) << v.dump();
    EXPECT_EQ(v["probe"]["max_abs_logprob_diff_vs_rebuilt"], 0) << v.dump();
    EXPECT_EQ(v["passed"], true) << v.dump();
    EXPECT_EQ(v["verdict"], "deleted") << v.dump();
    // The action log: the document read, deleted and verified (the receipt), then the memory deleted.
    const std::string doc_id = std::to_string(id) + "/" + std::to_string(doc);
    json log = api.Call("GET", "/v1/log?id=" + doc_id, json());
    ASSERT_EQ(log["data"].size(), 3u) << log.dump();
    EXPECT_EQ(log["data"][0]["action"], "memories.documents.add");
    EXPECT_EQ(log["data"][1]["action"], "memories.documents.delete");
    EXPECT_EQ(log["data"][2]["detail"], v);
    EXPECT_EQ(log.dump().find("red ball"), std::string::npos) << log.dump();
    api.Call("DELETE", Api::MemoryPath(id));
    log = api.Call("GET", "/v1/log?action=memories.delete&id=" + std::to_string(id), json());
    ASSERT_EQ(log["data"].size(), 1u) << log.dump();
    EXPECT_TRUE(log["data"][0]["detail"].contains("documents_deleted")) << log.dump();
    if (!c.same_memory) api.Call("DELETE", Api::MemoryPath(other));
  }
}

TEST_F(ServerMemoriesTest, Durability) {
  ScratchDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeState(dir.File("state"), dir_->File("mem/model")));
  const std::string d1 = "The river sees the long road. A dog crosses the quiet harbour.";
  const std::string d2 = "My neighbour remembers the bridge and an open door at the harbour.";
  const std::string d3 = "The old sailor finds a red ball and follows the cat home.";
  const std::string prompt = "The old sailor";
  int64_t unbounded = 0, fifo = 0, u2 = 0, f1 = 0;
  json memories, docs_u, docs_f, doc_u1, comp_u, comp_f, score_u, score_f;
  {
    LocalServer server(dir.File("state"), "");
    const Api api(server.port(), nullptr);
    unbounded = api.CreateMemory("u", 0)["id"];
    fifo = api.CreateMemory("f", 30)["id"];
    api.ReadDocument(unbounded, d1, {{"k", "v"}});
    u2 = api.ReadDocument(unbounded, d2)["id"];
    api.ReadDocument(unbounded, d3);
    f1 = api.ReadDocument(fifo, d1)["id"];
    api.ReadDocument(fifo, d2);
    api.ReadDocument(fifo, d3);
    api.DeleteDocument(unbounded, u2);
    memories = api.Call("GET", "/v1/memories");
    docs_u = api.Documents(unbounded);
    docs_f = api.Documents(fifo);
    doc_u1 = api.GetDocument(unbounded, docs_u["data"][0]["id"]);
    comp_u = Computed(api.Complete(prompt, unbounded));
    comp_f = Computed(api.Complete(prompt, fifo));
    score_u = api.Score(d3, unbounded);
    score_f = api.Score(d1, fifo);
    EXPECT_EQ(memories["data"].size(), 2u) << memories.dump();
    EXPECT_EQ(docs_u["data"].size(), 2u);
    EXPECT_EQ(docs_f["data"].size(), 3u);
    EXPECT_EQ(api.GetMemory(fifo)["resident_tokens"], 30);
  }
  // A new server on the same state: everything is there, and answers as before.
  LocalServer server(dir.File("state"), "");
  const Api api(server.port(), nullptr);
  EXPECT_EQ(api.Call("GET", "/v1/memories"), memories);
  EXPECT_EQ(api.Documents(unbounded), docs_u);
  EXPECT_EQ(api.Documents(fifo), docs_f);
  EXPECT_EQ(api.GetDocument(unbounded, docs_u["data"][0]["id"]), doc_u1);
  EXPECT_EQ(doc_u1["text"], d1);
  EXPECT_EQ(doc_u1["metadata"]["k"], "v");
  api.ExpectError("GET", Api::DocumentPath(unbounded, u2), json(), 404, "was deleted");
  EXPECT_EQ(Computed(api.Complete(prompt, unbounded)), comp_u);
  EXPECT_EQ(Computed(api.Complete(prompt, fifo)), comp_f);
  EXPECT_EQ(api.Score(d3, unbounded), score_u);
  EXPECT_EQ(api.Score(d1, fifo), score_f);
  // The FIFO memory's ring is what it was: d1's evicted part is still out, and comes back when the later
  // documents go.
  const int64_t d1_tokens = api.GetDocument(fifo, f1)["tokens"];
  EXPECT_EQ(api.GetDocument(fifo, f1)["resident_tokens"], docs_f["data"][0]["resident_tokens"]);
  EXPECT_LT(docs_f["data"][0]["resident_tokens"].get<int64_t>(), d1_tokens);
  api.DeleteDocument(fifo, docs_f["data"][1]["id"]);
  api.DeleteDocument(fifo, docs_f["data"][2]["id"]);
  EXPECT_EQ(api.GetDocument(fifo, f1)["resident_tokens"], std::min<int64_t>(d1_tokens, 30));
  // Writes after the restart work too.
  EXPECT_EQ(api.ReadDocument(fifo, d3)["memory_id"], fifo);
}

TEST_F(ServerMemoriesTest, BadInput) {
  const Api api = Admin();
  const int64_t id = api.CreateMemory("bad-input", 0)["id"];
  const std::string text = "A dog sees the bridge and the long road.";
  const int64_t doc = api.ReadDocument(id, text)["id"];
  const json list_before = api.Call("GET", "/v1/memories");
  const json docs_before = api.Documents(id);
  const json memory_before = api.GetMemory(id);

  // Creating memories.
  api.ExpectError("POST", "/v1/memories", {{"capacity", -1}}, 400, "capacity");
  api.ExpectError("POST", "/v1/memories", {{"capacity", "x"}}, 400, "capacity");
  api.ExpectError("POST", "/v1/memories", {{"capacity", 1.5}}, 400, "capacity");
  api.ExpectError("POST", "/v1/memories", {{"name", std::string(300, 'n')}}, 400, "name");
  api.ExpectError("POST", "/v1/memories", {{"name", 5}}, 400, "name");
  api.ExpectError("POST", "/v1/memories", json::array({1, 2}), 400);
  // Reading documents.
  api.ExpectError("POST", "/v1/memories/99999999/documents", {{"text", text}}, 404);
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", json::object(), 400, "text");
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", {{"text", ""}}, 400, "no tokens");
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", {{"text", 7}}, 400, "text");
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", {{"text", text}, {"metadata", "x"}}, 400, "metadata");
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents", {{"text", text}, {"metadata", json::array({1})}}, 400,
                  "metadata");
  // Listing documents.
  api.ExpectError("GET", Api::MemoryPath(id) + "/documents?limit=0", json(), 400, "limit");
  api.ExpectError("GET", Api::MemoryPath(id) + "/documents?after=x", json(), 400, "after");
  // Ids past any id: 404, never 400 or 500.
  for (const std::string& path : {std::string("/v1/memories/99999999999999999999"),
                                  Api::MemoryPath(id) + "/documents/99999999999999999999",
                                  Api::MemoryPath(id) + "/documents/0", std::string("/v1/memories/0")}) {
    api.ExpectError("GET", path, json(), 404);
    api.ExpectError("DELETE", path, json(), 404);
  }
  api.ExpectError("POST", "/v1/memories/99999999999999999999/documents", {{"text", text}}, 404);
  api.ExpectError("POST", Api::MemoryPath(id) + "/documents/99999999999999999999/verify-deleted", json::object(), 404);
  api.ExpectError("GET", Api::DocumentPath(id + 1000, doc), json(), 404);  // a document of another memory
  api.ExpectError("DELETE", Api::DocumentPath(id + 1000, doc), json(), 404);
  // The "memory" field of completions and scores.
  const json completion = {{"model", "model"}, {"prompt", "The cat"}, {"max_tokens", 2}};
  const json score = {{"text", text}};
  const std::vector<std::pair<json, int>> memory_fields = {
      {{{"id", 99999}}, 404},
      {5, 400},
      {"1", 400},
      {json::array({id}), 400},
      {{{"id", id}, {"bogus", 1}}, 400},
      {json::object(), 400},
      {{{"id", "1"}}, 400},
      {{{"id", 0}}, 400},
      {{{"id", -1}}, 400},
      {{{"id", id}, {"topk", 0}}, 400},
      {{{"id", id}, {"topk", "4"}}, 400},
  };
  for (const auto& [field, status] : memory_fields) {
    for (json body : {completion, score}) {
      body["memory"] = field;
      api.ExpectError("POST", body.contains("prompt") ? "/v1/completions" : "/v1/score", body, status);
    }
  }

  // Nothing changed.
  EXPECT_EQ(api.Call("GET", "/v1/memories"), list_before);
  EXPECT_EQ(api.Documents(id), docs_before);
  EXPECT_EQ(api.GetMemory(id), memory_before);
  EXPECT_EQ(api.GetDocument(id, doc)["text"], text);
  // And the valid forms work: "memory": null is no memory, a topk in range is taken.
  json body = completion;
  body["memory"] = nullptr;
  api.Call("POST", "/v1/completions", body);
  body["memory"] = {{"id", id}, {"topk", 4}};
  api.Call("POST", "/v1/completions", body);
}

TEST_F(ServerMemoriesTest, Roles) {
  const Api admin = Admin();
  const Api reader = admin.As(kReadKey);
  const Api nobody = admin.As(nullptr);
  const std::string text = "The cat remembers the old sailor and the quiet harbour bridge.";
  const int64_t id = admin.CreateMemory("roles", 0)["id"];
  const int64_t doc = admin.ReadDocument(id, text, {{"owner", "admin"}})["id"];
  const json before = admin.GetMemory(id);

  // A read key sees memories' summaries and reads them in completions and scores.
  json list = reader.Call("GET", "/v1/memories");
  bool found = false;
  for (const json& m : list["data"]) found = found || m["id"] == id;
  EXPECT_TRUE(found) << list.dump();
  EXPECT_EQ(reader.GetMemory(id), before);
  const json mine = Computed(reader.Complete("The cat", id));
  EXPECT_EQ(mine, Computed(admin.Complete("The cat", id)));
  EXPECT_EQ(reader.Score(text, id), admin.Score(text, id));

  // Everything else is admin's.
  const std::string docs = Api::MemoryPath(id) + "/documents";
  const std::string one = Api::DocumentPath(id, doc);
  const std::vector<std::tuple<std::string, std::string, json>> admin_only = {
      {"POST", "/v1/memories", {{"name", "x"}}},
      {"POST", docs, {{"text", "A dog sees the bridge."}}},
      {"GET", docs, json()},
      {"GET", one, json()},
      {"DELETE", one, json()},
      {"DELETE", Api::MemoryPath(id), json()},
      {"POST", one + "/verify-deleted", {{"text", text}}},
  };
  for (const auto& [method, path, body] : admin_only) {
    Reply r = reader.Send(method, path, body);
    EXPECT_EQ(r.status, 403) << method << " " << path << " -> " << r.body.dump();
    EXPECT_TRUE(r.body.contains("error")) << r.body.dump();
    EXPECT_EQ(r.body["error"]["type"], "permission_error") << r.body.dump();
    EXPECT_EQ(nobody.Send(method, path, body).status, 401) << method << " " << path;
  }
  EXPECT_EQ(nobody.Send("GET", "/v1/memories").status, 401);
  EXPECT_EQ(nobody.Send("GET", Api::MemoryPath(id)).status, 401);
  // Nothing changed.
  EXPECT_EQ(admin.GetMemory(id), before);
  EXPECT_EQ(admin.GetDocument(id, doc)["text"], text);
  EXPECT_EQ(admin.Documents(id)["data"].size(), 1u);

  // Memory hits: admin keys see each hit's document and position; read keys only head and weight.
  const json as_admin = admin.Complete("The cat", id, /*return_neighbors=*/4);
  const json as_reader = reader.Complete("The cat", id, /*return_neighbors=*/4);
  ASSERT_TRUE(as_admin["memory_hits"].is_array()) << as_admin.dump();
  ASSERT_EQ(as_admin["memory_hits"].size(), 8u) << "one list per generated token";
  ASSERT_EQ(as_reader["memory_hits"].size(), 8u);
  const int64_t tokens = before["stored_tokens"];
  for (size_t step = 0; step < 8; ++step) {
    const json& ha = as_admin["memory_hits"][step];
    const json& hr = as_reader["memory_hits"][step];
    ASSERT_EQ(ha.size(), 4u) << ha.dump();
    ASSERT_EQ(hr.size(), ha.size());
    for (size_t i = 0; i < ha.size(); ++i) {
      EXPECT_EQ(ha[i]["source"], "memory");
      EXPECT_EQ(ha[i]["document_id"], doc) << ha[i].dump();
      EXPECT_GE(ha[i]["position"].get<int64_t>(), 0);
      EXPECT_LT(ha[i]["position"].get<int64_t>(), tokens);
      EXPECT_TRUE(ha[i].contains("head") && ha[i].contains("weight")) << ha[i].dump();
      if (i > 0) {
        EXPECT_GE(ha[i - 1]["weight"].get<double>(), ha[i]["weight"].get<double>());
      }
      EXPECT_FALSE(hr[i].contains("document_id")) << hr[i].dump();
      EXPECT_FALSE(hr[i].contains("position")) << hr[i].dump();
      EXPECT_EQ(hr[i]["head"], ha[i]["head"]);
      EXPECT_EQ(hr[i]["weight"], ha[i]["weight"]);
    }
  }
  // Without a memory there are no memory hits.
  EXPECT_FALSE(admin.Complete("The cat", 0, 4).contains("memory_hits"));
}

TEST_F(ServerMemoriesTest, NoMemoryLayer) {
  ScratchDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeState(dir.File("state"), dir_->File("plain/model")));
  LocalServer server(dir.File("state"), "");
  const Api api(server.port(), nullptr);
  api.ExpectError("POST", "/v1/memories", {{"name", "x"}}, 409, "memory layer");
  api.ExpectError("GET", "/v1/memories", json(), 409, "memory layer");
  api.ExpectError("GET", "/v1/memories/1", json(), 409, "memory layer");
  api.ExpectError("POST", "/v1/memories/1/documents", {{"text", "The cat sees the bridge."}}, 409, "memory layer");
  api.ExpectError("POST", "/v1/completions", {{"model", "model"}, {"prompt", "The cat"}, {"memory", {{"id", 1}}}}, 409,
                  "memory layer");
  api.ExpectError("POST", "/v1/score", {{"text", "The cat sees the bridge."}, {"memory", {{"id", 1}}}}, 409,
                  "memory layer");
  // The rest of the server works as ever.
  api.Complete("The cat", 0);
}

}  // namespace
}  // namespace mnemo
