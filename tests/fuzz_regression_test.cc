// Regression tests for what the libFuzzer targets found (fuzz/, docs/FUZZING.md). Each test replays the
// shape of one finding; the exact inputs are kept under fuzz/regressions/<target>/ and replay with
// build-fuzz/<target>_fuzz fuzz/regressions/<target>/*. Some findings were undefined behaviour that only a
// sanitizer build reports (misaligned loads, a bool that is neither true nor false, signed overflow): their
// tests pin the behaviour around it, and crash under the fuzz build's sanitizers if it comes back.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "api/http_front.h"
#include "indexes/index_file_format.h"
#include "indexes/vector_index.h"
#include "lm/gpt_config.h"
#include "memory/datastore.h"
#include "memory/state_dir.h"
#include "tests/test_util.h"
#include "util/file_util.h"
#include "util/hash.h"

#ifdef MNEMO_BINARY  // the main build's test binary (LibTorch); build-fuzz's fuzz_regression_test is torch-free
#include <httplib.h>

#include "api/server.h"
#include "lm/checkpoint.h"
#include "retriever/datastore_builder.h"
#include "retriever/state_service.h"
#include "tests/lm_fixture.h"
#endif

namespace mnemo {
namespace {

using json = nlohmann::json;

// ---- JSON numbers in manifest.json, state.json, documents.jsonl -------------------------------------
// nlohmann's get<int>() converted any number: 4.5 became 4, 2^32 + 4 became 4, and 1e30 (a float out of
// range) was undefined behaviour (fuzz/regressions/datastore_manifest/crc32-float-out-of-range,
// fuzz/regressions/state_json/float-out-of-range).

json ValidManifest() {
  DatastoreManifest m;
  m.model_fingerprint = "f";
  m.key_layer = "h.0";
  m.dim = 4;
  m.count = 6;
  m.index_spec = "Flat";
  m.source = "s";
  m.source_tokens = 7;
  m.provenance = true;
  return json::parse(m.ToJson());
}

TEST(FuzzRegressionTest, ManifestNumbersMustBeIntegersThatFit) {
  DatastoreManifest out;
  ASSERT_TRUE(DatastoreManifest::FromJson(ValidManifest().dump(), "manifest.json", &out).ok());
  const std::vector<std::pair<json::json_pointer, json>> bad = {
      {json::json_pointer("/keys/crc32"), json::parse("6092233720368547758072995070")},
      {json::json_pointer("/keys/crc32"), 4294967296},
      {json::json_pointer("/values/crc32"), -1},
      {json::json_pointer("/dim"), 4.5},
      {json::json_pointer("/dim"), 4294967300},
      {json::json_pointer("/format_version"), 1e300},
      {json::json_pointer("/count"), 6.0},
      {json::json_pointer("/live"), 1e30},
      {json::json_pointer("/source_tokens"), 9223372036854775808ull},
      {json::json_pointer("/training/seed"), -1},
      {json::json_pointer("/training/sample"), "5"},
      {json::json_pointer("/windows/window"), 0.5},
      {json::json_pointer("/documents/deletions_applied"), -1e19},
  };
  for (const auto& [where, value] : bad) {
    json j = ValidManifest();
    j[where] = value;
    const Status s = DatastoreManifest::FromJson(j.dump(), "manifest.json", &out);
    EXPECT_TRUE(s.IsCorruption()) << where.to_string() << " = " << value.dump() << ": " << s.ToString();
  }
}

// j.value("format", "") threw (outside FromJson's try) when "format" was not a string: an uncaught
// exception ended the process (fuzz/regressions/datastore_manifest/format-not-a-string).
TEST(FuzzRegressionTest, ManifestFormatOfAnotherTypeIsCorruption) {
  for (const json& format : {json::object(), json::array(), json(1), json(nullptr), json(true)}) {
    json j = ValidManifest();
    j["format"] = format;
    DatastoreManifest out;
    const Status s = DatastoreManifest::FromJson(j.dump(), "manifest.json", &out);
    EXPECT_TRUE(s.IsCorruption()) << format.dump() << ": " << s.ToString();
  }
}

TEST(FuzzRegressionTest, StateJsonNumbersMustBeIntegersThatFit) {
  StateConfig c;
  c.model_path = "/m";
  c.model_fingerprint = "f";
  c.dim = 8;
  StateConfig out;
  ASSERT_TRUE(StateConfig::FromJson(c.ToJson(), "state.json", &out).ok());
  const std::vector<std::pair<std::string, json>> bad = {
      {"format_version", json::parse("77777777777777777777777777777777777777777777777777771")},
      {"format_version", 0.5},
      {"dim", 2.5},
      {"dim", 4294967297},
      {"dim", 1e300},
      {"created_at_ms", 1e19},
      {"created_at_ms", 18446744073709551615ull},
  };
  for (const auto& [field, value] : bad) {
    json j = json::parse(c.ToJson());
    j[field] = value;
    const Status s = StateConfig::FromJson(j.dump(), "state.json", &out);
    EXPECT_TRUE(s.IsCorruption()) << field << " = " << value.dump() << ": " << s.ToString();
  }
}

// documents.jsonl: entry ranges whose end first + count passes INT64_MAX (signed overflow while checking
// that the ranges tile the datastore), and non-integer numbers.
TEST(FuzzRegressionTest, DocumentRangesThatOverflowOrAreNotIntegersAreCorruption) {
  testing::ScratchDir dir;
  const std::string ds_dir = dir.File("ds");
  {
    std::unique_ptr<DatastoreWriter> w;
    ASSERT_TRUE(DatastoreWriter::Create(ds_dir, 2, &w).ok());
    const std::vector<float> keys = {0, 1, 2, 3, 4, 5};
    const std::vector<int32_t> values = {1, 2, 3};
    // A document id must be UTF-8 (documents.jsonl holds it as a JSON string; writing it threw).
    EXPECT_TRUE(w->BeginDocument("\xff", 2, "", false).IsInvalidArgument());
    ASSERT_TRUE(w->BeginDocument("a", 2, "", false).ok());
    ASSERT_TRUE(w->Append(1, keys.data(), values.data()).ok());
    ASSERT_TRUE(w->BeginDocument("b", 3, "", false).ok());
    ASSERT_TRUE(w->Append(2, keys.data() + 2, values.data() + 1).ok());
    DatastoreManifest manifest;
    manifest.model_fingerprint = "f";
    DatastoreFinishOptions options;
    options.progress = false;
    ASSERT_TRUE(w->Finish(manifest, options).ok());
  }
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(ds_dir, DatastoreOpenOptions(), &ds).ok());
  ds.reset();
  const std::string header = R"({"format":"mnemo-datastore-documents","deletions":0,"retrain":false})";
  const std::vector<std::string> bad = {
      R"({"id":"a","first":0,"count":9223372036854775807})" "\n" R"({"id":"b","first":9223372036854775807,"count":2})",
      R"({"id":"a","first":0,"count":1.5})" "\n" R"({"id":"b","first":1,"count":2})",
      R"({"id":"a","first":0,"count":1,"tokens":2e30})" "\n" R"({"id":"b","first":1,"count":2})",
      R"({"id":"a","first":0,"count":1,"deleted":0.5})" "\n" R"({"id":"b","first":1,"count":2})",
  };
  for (const std::string& lines : bad) {
    testing::WriteFileOrDie(ds_dir + "/documents.jsonl", header + "\n" + lines + "\n");
    DatastoreOpenOptions options;
    options.read_only = true;
    const Status s = Datastore::Open(ds_dir, options, &ds);
    EXPECT_TRUE(s.IsCorruption()) << lines << ": " << s.ToString();
  }
}

// config.json's n_inner was read with get<int64_t>() unchecked: a float out of range was undefined
// behaviour, a string made FromJson throw; and 4 * n_embd could overflow
// (fuzz/regressions/gpt_config/n-inner-float-out-of-range).
TEST(FuzzRegressionTest, GptConfigNInnerMustBeAnIntegerEqualToFourTimesNEmbd) {
  const json base = {{"model_type", "gpt2"}, {"vocab_size", 512}, {"n_ctx", 128}, {"n_embd", 64},
                     {"n_layer", 2},         {"n_head", 4}};
  GptConfig c;
  for (const json& ok : {json(nullptr), json(256)}) {
    json j = base;
    j["n_inner"] = ok;
    EXPECT_TRUE(GptConfig::FromJson(j.dump(), "config.json", &c).ok()) << ok.dump();
  }
  for (const json& bad : {json::parse("2592233720368547758076"), json(256.5), json("256"), json::array(), json(255)}) {
    json j = base;
    j["n_inner"] = bad;
    const Status s = GptConfig::FromJson(j.dump(), "config.json", &c);
    EXPECT_TRUE(s.IsCorruption() || s.IsInvalidArgument()) << bad.dump() << ": " << s.ToString();
  }
  json huge = base;
  huge["n_embd"] = int64_t{4611686018427387905};  // 4 * n_embd passes INT64_MAX
  huge["n_inner"] = 4;
  const Status s = GptConfig::FromJson(huge.dump(), "config.json", &c);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

// ---- The HTTP front -----------------------------------------------------------------------------------
// A refusal quoting a Content-Encoding that is not UTF-8 made nlohmann's dump throw on the reactor thread:
// the exception ended the server (fuzz/regressions/http_front/content-encoding-not-utf8).
TEST(FuzzRegressionTest, NonUtf8ContentEncodingIsRefusedAndTheServerStaysUp) {
  HttpFront front;
  ASSERT_TRUE(front.Configure(HttpFrontOptions{}).ok());
  front.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
  const int port = front.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  Status served;
  std::thread serving([&] { served = front.Serve(); });

  auto exchange = [port](const std::string& request) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string response;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      ::shutdown(fd, SHUT_WR);
      char buf[4096];
      for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) break;
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        response.append(buf, static_cast<size_t>(n));
      }
    }
    ::close(fd);
    return response;
  };

  const std::string refused = exchange(std::string("POST /g HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\x9c") +
                                       "\r\nContent-Length: 4\r\n\r\nbody");
  EXPECT_EQ(refused.rfind("HTTP/1.1 415 ", 0), 0u) << refused;
  const size_t body = refused.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos) << refused;
  const json error = json::parse(refused.substr(body + 4), nullptr, false);
  ASSERT_TRUE(error.is_object()) << refused;
  EXPECT_NE(error["error"]["message"].get<std::string>().find("gzip\xEF\xBF\xBD"), std::string::npos)
      << "the byte is replaced by U+FFFD: " << refused;
  // The same for a Transfer-Encoding that names a coding.
  const std::string te = exchange(std::string("POST /g HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \xff\xfe, chunked") +
                                  "\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(te.rfind("HTTP/1.1 415 ", 0), 0u) << te;

  const std::string health = exchange("GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(health.rfind("HTTP/1.1 200 ", 0), 0u) << "the server went down: " << health;
  front.Stop();
  serving.join();
  EXPECT_TRUE(served.ok()) << served.ToString();
}

// ---- Index files ------------------------------------------------------------------------------------

std::vector<float> Gaussian(int n, int dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (float& x : v) x = normal(rng);
  return v;
}

// The lists of a memory-mapped IVF index point into the file, where FAISS's layout puts codes and ids at
// any byte offset; IvfSearch and CopyIdRange read them through misaligned float and int64 pointers
// (undefined; fuzz/regressions/index_file/ivf-mmap-misaligned-ids,
// fuzz/regressions/datastore_open/ivf-mmap-misaligned-list). Odd dimensions and list sizes that are not a
// multiple of 4 put the entries at odd offsets and through the scalar tails.
TEST(FuzzRegressionTest, MappedIvfListsAtAnyOffsetSearchAndCopyLikeInMemory) {
  testing::ScratchDir dir;
  struct Case {
    const char* spec;
    int dim;
    int train;
  };
  for (const Case& c : {Case{"IVF3,Flat", 3, 30}, Case{"IVF2,Flat", 5, 20}, Case{"IVF2,PQ1", 2, 256},
                        Case{"IVF2,PQ3", 3, 256}}) {
    SCOPED_TRACE(c.spec);
    std::unique_ptr<VectorIndex> index;
    ASSERT_TRUE(VectorIndex::Create(c.dim, c.spec, Metric::kL2, &index).ok());
    ASSERT_TRUE(index->Train(c.train, Gaussian(c.train, c.dim, 1).data()).ok());
    std::vector<int64_t> ids;
    for (int i = 0; i < 11; ++i) ids.push_back(100 + 7 * i);
    ASSERT_TRUE(index->Add(11, Gaussian(11, c.dim, 2).data(), ids.data()).ok());
    const std::string path = dir.File(std::string(c.spec) + ".idx");
    ASSERT_TRUE(index->Save(path).ok());

    std::unique_ptr<VectorIndex> in_memory, mapped;
    ASSERT_TRUE(VectorIndex::Load(path, LoadOptions(), &in_memory).ok());
    LoadOptions mmap;
    mmap.mmap = true;
    ASSERT_TRUE(VectorIndex::Load(path, mmap, &mapped).ok());
    const std::vector<float> queries = Gaussian(5, c.dim, 3);
    const int k = 7;
    SearchOptions all_lists;
    all_lists.nprobe = 8;
    std::vector<float> d1(5 * k), d2(5 * k);
    std::vector<int64_t> i1(5 * k), i2(5 * k);
    ASSERT_TRUE(in_memory->Search(5, queries.data(), k, d1.data(), i1.data(), all_lists).ok());
    ASSERT_TRUE(mapped->Search(5, queries.data(), k, d2.data(), i2.data(), all_lists).ok());
    EXPECT_EQ(i1, i2);
    EXPECT_EQ(d1, d2);
    for (int64_t id : i2) EXPECT_TRUE(id == -1 || mapped->Contains(id)) << id;

    std::unique_ptr<VectorIndex> copy;
    ASSERT_TRUE(mapped->CopyIdRange(0, INT64_MAX, &copy).ok());
    EXPECT_EQ(copy->Ids(), in_memory->Ids());
    ASSERT_TRUE(copy->Search(5, queries.data(), k, d2.data(), i2.data(), all_lists).ok());
    EXPECT_EQ(i1, i2);
    EXPECT_EQ(d1, d2);
  }
}

// Writes `payload` after `file`'s header with the payload size and both CRC32s made to match, as a crafted
// file would be (index_file_format.h: payload size at 96, payload CRC at 104, header CRC at 124).
std::string WithChecksums(std::string file) {
  auto put = [&file](size_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) file[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  const size_t payload = file.size() - kIndexFileHeaderSize;
  put(96, payload, 8);
  put(104, Crc32(file.data() + kIndexFileHeaderSize, payload), 4);
  put(124, Crc32(file.data(), 124), 4);
  return file;
}

// FAISS copies bool and enum fields straight from the file's bytes: a byte 0xF9 in is_trained made a bool
// that is neither true nor false, which Load then read (fuzz/regressions/index_file_crafted/
// is-trained-not-a-bool). And the Flat storage's own metric was never compared with the index's.
TEST(FuzzRegressionTest, IndexFlagsAndMetricsFromTheFileAreChecked) {
  testing::ScratchDir dir;
  std::unique_ptr<VectorIndex> index;
  ASSERT_TRUE(VectorIndex::Create(4, "Flat", Metric::kL2, &index).ok());
  const std::vector<int64_t> ids = {1, 2, 3};
  ASSERT_TRUE(index->Add(3, Gaussian(3, 4, 4).data(), ids.data()).ok());
  const std::string path = dir.File("flat.idx");
  ASSERT_TRUE(index->Save(path).ok());
  std::string file;
  ASSERT_TRUE(ReadFileToString(path, &file).ok());
  // FAISS 1.7.3's layout: "IxM2", d (4), ntotal (8), two dummies (16), is_trained (1), metric (4), then the
  // storage "IxF2" with the same header.
  const size_t p = kIndexFileHeaderSize;
  ASSERT_EQ(file.compare(p, 4, "IxM2"), 0);
  ASSERT_EQ(file.compare(p + 37, 4, "IxF2"), 0);
  ASSERT_EQ(file[p + 32], 1);   // is_trained
  ASSERT_EQ(file[p + 33], 1);   // METRIC_L2
  ASSERT_EQ(file[p + 70], 1);   // the storage's metric

  std::unique_ptr<VectorIndex> loaded;
  ASSERT_TRUE(VectorIndex::Load(path, LoadOptions(), &loaded).ok());  // untouched, with rewritten checksums
  testing::WriteFileOrDie(path, WithChecksums(file));
  ASSERT_TRUE(VectorIndex::Load(path, LoadOptions(), &loaded).ok());

  struct Edit {
    size_t at;
    char byte;
    const char* what;
  };
  for (const Edit& e : {Edit{p + 32, '\xF9', "is_trained 0xF9"}, Edit{p + 33, '\x07', "metric 7"},
                        Edit{p + 70, '\x00', "storage metric IP"}, Edit{p + 70, '\x05', "storage metric 5"}}) {
    std::string bad = file;
    bad[e.at] = e.byte;
    testing::WriteFileOrDie(path, WithChecksums(bad));
    const Status s = VectorIndex::Load(path, LoadOptions(), &loaded);
    EXPECT_TRUE(s.IsCorruption()) << e.what << ": " << s.ToString();
  }
}

// The PQ's M and nbits were compared after a cast to int, so nbits = 0xFB00000000000008 passed as 8 and
// was then a shift by more than 63 bits (fuzz/regressions/index_file_crafted/pq-nbits-huge).
TEST(FuzzRegressionTest, PqParametersFromTheFileAreComparedWhole) {
  testing::ScratchDir dir;
  std::unique_ptr<VectorIndex> index;
  ASSERT_TRUE(VectorIndex::Create(4, "IVF2,PQ2", Metric::kL2, &index).ok());
  ASSERT_TRUE(index->Train(256, Gaussian(256, 4, 5).data()).ok());
  const std::string path = dir.File("pq.idx");
  ASSERT_TRUE(index->Save(path).ok());
  std::string file;
  ASSERT_TRUE(ReadFileToString(path, &file).ok());
  // FAISS writes the ProductQuantizer as d, M, nbits (size_t each) before its centroids.
  std::string pq_header(24, '\0');
  for (int i = 0; i < 3; ++i) {
    const uint64_t v = i == 0 ? 4 : i == 1 ? 2 : 8;
    std::memcpy(&pq_header[8 * i], &v, 8);
  }
  const size_t at = file.find(pq_header, kIndexFileHeaderSize);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(file.find(pq_header, at + 1), std::string::npos);
  std::unique_ptr<VectorIndex> loaded;
  for (const uint64_t field : {uint64_t{1}, uint64_t{2}}) {  // M, then nbits
    for (const uint64_t high : {uint64_t{0xFB} << 56, uint64_t{1} << 32}) {
      std::string bad = file;
      uint64_t v;
      std::memcpy(&v, &bad[at + 8 * field], 8);
      v |= high;
      std::memcpy(&bad[at + 8 * field], &v, 8);
      testing::WriteFileOrDie(path, WithChecksums(bad));
      const Status s = VectorIndex::Load(path, LoadOptions(), &loaded);
      EXPECT_TRUE(s.IsCorruption()) << "field " << field << " | " << high << ": " << s.ToString();
    }
  }
}

#ifdef MNEMO_BINARY
// ---- The server's datastore document routes (fuzz target `routes`) -----------------------------------
// GET /v1/datastore/documents?offset=9223372036854775000&limit=10000: offset + limit overflowed int64_t
// (undefined; in practice a negative next_offset) (fuzz/regressions/routes/datastore-list-offset-overflow).
// /v1/datastore/documents/{id} with an id that is not UTF-8 (p%8E): the datastore quoted it with nlohmann's
// strict dump(), which threw, and the route answered 500 (fuzz/regressions/routes/datastore-*-not-utf8).
TEST(FuzzRegressionTest, DatastoreDocumentRoutesTakeAnyOffsetAndAnyIdBytes) {
  testing::ScratchDir dir;
  ASSERT_NO_FATAL_FAILURE(testing::SaveRandomTinyModel(dir.File("model"), 11, /*memory_layer=*/false));
  std::unique_ptr<LanguageModel> model;
  ASSERT_TRUE(LoadLanguageModel(dir.File("model"), &model).ok());
  const std::string corpus = testing::ToyCorpus();
  const std::vector<DatastoreDocumentInput> docs = {{"p0", corpus.substr(0, 300), "", false},
                                                    {"p1", corpus.substr(300, 300), "", false},
                                                    {"p2", corpus.substr(600, 300), "", false}};
  DatastoreBuildOptions build;
  build.finish.progress = false;
  DatastoreBuildReport report;
  ASSERT_TRUE(BuildDatastoreFromDocuments(*model, docs, "test", nullptr, "", dir.File("ds"), build, &report).ok());
  ASSERT_TRUE(StateService::Create(dir.File("state"), dir.File("model"), dir.File("ds"), nullptr).ok());

  ServeOptions o;
  o.state = dir.File("state");
  o.port = 0;
  o.threads = 1;
  o.log_requests = false;
  Server server(o);
  int port = 0;
  ASSERT_TRUE(server.Bind(&port).ok());
  Status run;
  std::thread serving([&] { run = server.Run(); });
  for (int i = 0; i < 600 && !server.ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(server.ready());
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  auto expect = [&](const char* method, const std::string& path, int status) {
    auto res = std::string(method) == "GET"      ? client.Get(path.c_str())
               : std::string(method) == "DELETE" ? client.Delete(path.c_str())
                                                 : client.Post(path.c_str(), "{}", "application/json");
    EXPECT_TRUE(res) << method << " " << path;
    if (!res) return json();
    EXPECT_EQ(res->status, status) << method << " " << path << " -> " << res->body;
    json body = json::parse(res->body, nullptr, false);
    EXPECT_FALSE(body.is_discarded()) << res->body;
    if (status != 200) {
      EXPECT_TRUE(body["error"]["message"].is_string()) << res->body;
    }
    return body;
  };
  for (const char* offset : {"9223372036854775000", "9223372036854775807", "3", "2"}) {
    const json page = expect("GET", std::string("/v1/datastore/documents?limit=10000&offset=") + offset, 200);
    EXPECT_EQ(page["data"].size(), std::string(offset) == "2" ? 1u : 0u) << page.dump();
    EXPECT_TRUE(page["next_offset"].is_null()) << page.dump();
  }
  EXPECT_EQ(expect("GET", "/v1/datastore/documents?offset=1&limit=1", 200)["next_offset"], 2);
  expect("GET", "/v1/datastore/documents/p%FF%FE", 404);
  expect("DELETE", "/v1/datastore/documents/p%8E", 404);
  expect("POST", "/v1/datastore/documents/p%C3/verify-deleted", 404);
  expect("GET", "/v1/datastore/documents/p1", 200);  // still answering, ids that exist too
  server.Stop();
  serving.join();
  EXPECT_TRUE(run.ok()) << run.ToString();
}
#endif

}  // namespace
}  // namespace mnemo
