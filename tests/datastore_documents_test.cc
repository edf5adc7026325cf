// Deleting documents from a base datastore: after a delete the datastore answers exactly as one built
// from the remaining documents from the start (bit-identical kNN-LM log-probs for Flat, IVF-Flat and
// IVF-PQ, with every training pool), no file keeps the document's bytes, bad input changes nothing, and a
// deletion killed at any stage is finished by the next open.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "lm/scorer.h"
#include "retriever/datastore_builder.h"
#include "retriever/deletion_verifier.h"
#include "retriever/knn_lm.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

// The toy corpus's paragraphs as documents "d0", "d1", ... (about 44 of them).
std::vector<DatastoreDocumentInput> ToyDocuments() {
  std::vector<DatastoreDocumentInput> docs;
  for (const std::string& text : testing::ToyParagraphs()) {
    DatastoreDocumentInput d;
    d.id = "d" + std::to_string(docs.size());
    d.text = text;
    d.metadata_json = "{\"n\":" + std::to_string(docs.size()) + "}";
    docs.push_back(d);
  }
  return docs;
}

std::vector<DatastoreDocumentInput> Without(const std::vector<DatastoreDocumentInput>& docs,
                                            const std::set<std::string>& ids) {
  std::vector<DatastoreDocumentInput> out;
  for (const auto& d : docs) {
    if (ids.count(d.id) == 0) out.push_back(d);
  }
  return out;
}

struct Variant {
  std::string name;
  std::string spec;
  std::string pool;  // "external", "marked", "all" (retrain), "none"
};

// A text that is not among the documents, for the external training pool.
std::string TrainText() {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "The sailor walks to a green field and a dog sleeps near the bridge. ";
  return text;
}

Status Build(LanguageModel& model, std::vector<DatastoreDocumentInput> docs, const Variant& v, const std::string& dir) {
  DatastoreBuildOptions options;
  options.finish.progress = false;
  options.finish.index_spec = v.spec;
  options.finish.train_sample = 100000;
  if (v.pool == "marked") {
    for (auto& d : docs) d.train = std::stoi(d.id.substr(1)) % 3 == 0;  // d0, d3, d6, ...
  }
  const std::string train = TrainText();
  DatastoreBuildReport report;
  return BuildDatastoreFromDocuments(model, docs, "toy", v.pool == "external" ? &train : nullptr, "train.txt", dir,
                                     options, &report);
}

// kNN-LM log-probs of every token of the corpus, and the neighbours (token, distance) behind them.
void Score(LanguageModel& model, const Datastore& ds, std::vector<float>* logprobs,
           std::vector<std::pair<int32_t, float>>* neighbours) {
  const std::vector<int32_t> ids = model.tokenizer->Encode(testing::ToyCorpus());
  KnnLm knn(ds);
  KnnOptions o;
  o.k = 16;
  o.lambda = 0.5;
  o.skip_confidence = 0;
  logprobs->clear();
  neighbours->clear();
  SpanRequest request;
  request.knn_keys = true;
  ASSERT_TRUE(ForEachScoredSpan(model.net, ids, {}, request, [&](const ScoredSpan& span) {
    std::vector<float> lp;
    MNEMO_RETURN_IF_ERROR(knn.ScoreTargets(span.knn_keys, span.logprobs, ids.data() + span.first_target, o, &lp,
                                           nullptr));
    logprobs->insert(logprobs->end(), lp.begin(), lp.end());
    torch::Tensor keys = span.knn_keys.to(torch::kFloat32).contiguous();
    std::vector<Neighbor> nb;
    MNEMO_RETURN_IF_ERROR(knn.Search(keys.data_ptr<float>(), span.count, o, &nb));
    for (const Neighbor& n : nb) neighbours->emplace_back(n.token, n.distance);
    return Status::OK();
  }).ok());
}

class DocumentDeletionTest : public ::testing::TestWithParam<Variant> {};

TEST_P(DocumentDeletionTest, AnswersExactlyAsARebuildWithoutTheDocuments) {
  const Variant& v = GetParam();
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  const auto docs = ToyDocuments();
  ASSERT_GT(docs.size(), 30u);
  ScratchDir dir;
  ASSERT_TRUE(Build(model, docs, v, dir.File("ds")).ok());
  // Unmarked documents for "marked" (d1, d2, d4 are not multiples of 3); any for the others.
  const std::set<std::string> gone = {"d1", "d2", "d4", "d20"};
  {
    std::unique_ptr<Datastore> ds;
    ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());
    EXPECT_EQ(ds->manifest().training_pool, v.pool == "all" ? (v.spec == "Flat" ? "none" : "all") : v.pool);
    DocumentDeleteOptions options;
    options.retrain = v.pool == "all";
    DocumentDeleteReport report;
    Status s = ds->DeleteDocuments({"d1", "d2"}, options, &report);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(report.deleted.size(), 2u);
    EXPECT_EQ(report.seq, 1);
    EXPECT_EQ(report.retrained, v.pool == "all" && v.spec != "Flat");
    s = ds->DeleteDocuments({"d4", "d20"}, options, &report);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(report.seq, 2);
  }
  ScratchDir ref;
  ASSERT_TRUE(Build(model, Without(docs, gone), v, ref.File("ds")).ok());
  std::unique_ptr<Datastore> deleted, rebuilt;
  DatastoreOpenOptions open;
  open.verify_checksums = true;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), open, &deleted).ok());
  ASSERT_TRUE(Datastore::Open(ref.File("ds"), open, &rebuilt).ok());
  EXPECT_EQ(deleted->size(), rebuilt->size());
  EXPECT_EQ(deleted->index().TrainedFingerprint(), rebuilt->index().TrainedFingerprint());
  std::vector<float> a, b;
  std::vector<std::pair<int32_t, float>> na, nb;
  ASSERT_NO_FATAL_FAILURE(Score(model, *deleted, &a, &na));
  ASSERT_NO_FATAL_FAILURE(Score(model, *rebuilt, &b, &nb));
  ASSERT_EQ(a.size(), b.size());
  int64_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
  EXPECT_EQ(differing, 0) << "log-probs differ from the rebuild at " << differing << " of " << a.size();
  EXPECT_TRUE(na == nb) << "neighbours differ from the rebuild";

  for (const std::string& id : gone) {
    DocumentDeletionVerdict verdict;
    std::string text;
    for (const auto& d : docs) {
      if (d.id == id) text = d.text;
    }
    Status s = VerifyDocumentDeleted(&model, *deleted, id, &text, &verdict);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(verdict.passed) << id << ": " << verdict.reason;
    EXPECT_GT(verdict.keys_probed, 0);
    EXPECT_EQ(verdict.key_rows_found, 0);
  }
  // A live document is not "deleted".
  DocumentTraces live;
  EXPECT_TRUE(deleted->FindDocumentTraces("d5", &live).IsFailedPrecondition());
}

INSTANTIATE_TEST_SUITE_P(Indexes, DocumentDeletionTest,
                         ::testing::Values(Variant{"Flat", "Flat", "all"},
                                           Variant{"IvfFlatExternal", "IVF8,Flat", "external"},
                                           Variant{"IvfPqExternal", "IVF8,PQ4", "external"},
                                           Variant{"IvfFlatMarked", "IVF4,Flat", "marked"},
                                           Variant{"IvfFlatRetrained", "IVF8,Flat", "all"},
                                           Variant{"IvfPqRetrained", "IVF8,PQ4", "all"}),
                         [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

// verify-deleted recomputes a document's keys with the build's windows: a stray copy of the old keys file
// left in the directory is found, every one of the document's keys in it.
TEST(DocumentDeletionVerifyTest, FindsEveryKeyOfTheDocumentInAStrayCopy) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  auto docs = ToyDocuments();
  // Toy paragraphs repeat each other's 16-token contexts; this one shares none.
  docs[7].text = "Quillon ledger 7: lanterns 9381, ropes 2274, barrels 5521, gulls 8810, oars 3197, sails 6643.";
  ScratchDir dir;
  DatastoreBuildOptions options;
  options.finish.progress = false;
  options.window.window = 16;  // several windows per document: keys depend on the windowing
  options.window.stride = 8;
  DatastoreBuildReport report;
  ASSERT_TRUE(BuildDatastoreFromDocuments(model, docs, "toy", nullptr, "", dir.File("ds"), options, &report).ok());
  std::string keys;
  ASSERT_TRUE(ReadFileToString(dir.File("ds/keys.f16"), &keys).ok());
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());
  EXPECT_EQ(ds->manifest().window, 16);
  DocumentDeleteReport deleted;
  ASSERT_TRUE(ds->DeleteDocuments({"d7"}, {}, &deleted).ok());
  ASSERT_GT(model.tokenizer->Encode(docs[7].text).size(), 40u);
  DocumentDeletionVerdict clean, stray;
  ASSERT_TRUE(VerifyDocumentDeleted(&model, *ds, "d7", &docs[7].text, &clean).ok());
  EXPECT_TRUE(clean.passed) << clean.reason;
  ASSERT_TRUE(WriteFileAtomically(dir.File("ds/keys-copy.f16"), keys).ok());
  ASSERT_TRUE(VerifyDocumentDeleted(&model, *ds, "d7", &docs[7].text, &stray).ok());
  EXPECT_FALSE(stray.passed) << stray.keys_probed << " " << stray.keys_shared_with_live << " " << stray.key_rows_found << " " << stray.files_scanned;
  EXPECT_EQ(stray.keys_probed, deleted.entries);
  EXPECT_GE(stray.key_rows_found, stray.keys_probed - stray.keys_shared_with_live);
  EXPECT_GT(stray.key_rows_found, 0);
}

// The bytes of every regular file in `dir` except LOCK, by name.
std::map<std::string, std::string> Files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename() == "LOCK") continue;
    std::string data;
    EXPECT_TRUE(ReadFileToString(e.path().string(), &data).ok());
    out[e.path().filename().string()] = data;
  }
  return out;
}

TEST(DocumentDeletionErrorsTest, BadRequestsChangeNothing) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  ScratchDir dir;
  ASSERT_TRUE(Build(model, ToyDocuments(), {"m", "IVF4,Flat", "marked"}, dir.File("ds")).ok());
  const auto before = Files(dir.File("ds"));
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());
  DocumentDeleteReport report;
  Status s = ds->DeleteDocuments({"nope"}, {}, &report);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("nope"), std::string::npos);
  // An id that is not UTF-8 (a command line's --id) is NotFound, quoted with its bad byte replaced:
  // quoting it used to throw (fuzz/regressions/routes/datastore-id-not-utf8).
  s = ds->DeleteDocuments({"d\x8e"}, {}, &report);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("\"d\xef\xbf\xbd\""), std::string::npos) << s.message();
  DatastoreDocument doc;
  EXPECT_TRUE(ds->GetDocument("d\x8e", &doc).IsNotFound());
  EXPECT_TRUE(ds->DeleteDocuments({"d1", "d1"}, {}, &report).IsInvalidArgument());
  EXPECT_TRUE(ds->DeleteDocuments({}, {}, &report).IsInvalidArgument());
  s = ds->DeleteDocuments({"d1", "d3"}, {}, &report);  // d3 is marked "train"
  EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
  EXPECT_NE(s.message().find("--retrain"), std::string::npos) << s.message();
  // Another open of the same datastore (here: in this process) blocks deletions.
  {
    std::unique_ptr<Datastore> second;
    ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &second).ok());
    s = ds->DeleteDocuments({"d1"}, {}, &report);
    EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
    EXPECT_NE(s.message().find("open elsewhere"), std::string::npos) << s.message();
  }
  EXPECT_EQ(Files(dir.File("ds")), before);
  EXPECT_EQ(ds->size(), ds->slots());
  // Once the other holder is gone it works, and a second delete of the same document is NotFound.
  ASSERT_TRUE(ds->DeleteDocuments({"d1"}, {}, &report).ok());
  s = ds->DeleteDocuments({"d1"}, {}, &report);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("already deleted"), std::string::npos);
  EXPECT_EQ(ds->size(), ds->slots() - report.entries);
  // The tombstone keeps the id and range only; the metadata is gone from the file.
  std::string documents;
  ASSERT_TRUE(ReadFileToString(dir.File("ds/documents.jsonl"), &documents).ok());
  EXPECT_EQ(documents.find("{\"n\":1}"), std::string::npos);
  EXPECT_NE(documents.find("{\"n\":2}"), std::string::npos);
}

TEST(DocumentDeletionErrorsTest, DatastoresWithoutProvenanceRefuse) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  ScratchDir dir;
  ASSERT_TRUE(Build(model, ToyDocuments(), {"f", "Flat", "all"}, dir.File("ds")).ok());
  // A datastore from before provenance: no documents.jsonl, no "documents" in the manifest.
  std::string text;
  ASSERT_TRUE(ReadFileToString(dir.File("ds/manifest.json"), &text).ok());
  auto j = nlohmann::json::parse(text);
  j.erase("documents");
  j.erase("live");
  j.erase("training");
  ASSERT_TRUE(WriteFileAtomically(dir.File("ds/manifest.json"), j.dump(2)).ok());
  ASSERT_TRUE(RemoveFileDurably(dir.File("ds/documents.jsonl")).ok());
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());
  DocumentDeleteReport report;
  Status s = ds->DeleteDocuments({"d1"}, {}, &report);
  EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
  EXPECT_NE(s.message().find("--documents"), std::string::npos) << s.message();
  EXPECT_FALSE(ds->has_provenance());
}

// Runs `mnemo datastore rm` with MNEMO_DATASTORE_CRASH_AT=stage; returns whether SIGKILL ended it.
bool KilledAt(const std::string& ds, const std::string& id, const std::string& stage) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("MNEMO_DATASTORE_CRASH_AT", stage.c_str(), 1);
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(MNEMO_BINARY, MNEMO_BINARY, "datastore", "rm", "--datastore", ds.c_str(), "--document", id.c_str(),
            "--quiet", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

TEST(DocumentDeletionCrashTest, AKilledDeletionIsFinishedByTheNextOpen) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  const auto docs = ToyDocuments();
  const Variant v{"pq", "IVF8,PQ4", "external"};
  ScratchDir dir;
  ASSERT_TRUE(Build(model, docs, v, dir.File("ds")).ok());
  std::set<std::string> gone;
  for (const std::string stage : {"committed", "index_saved", "punched"}) {
    const std::string id = "d" + std::to_string(3 + gone.size());
    ASSERT_TRUE(KilledAt(dir.File("ds"), id, stage)) << stage;
    gone.insert(id);
    std::unique_ptr<Datastore> ds;
    DatastoreOpenOptions read_only;
    read_only.read_only = true;
    Status s = Datastore::Open(dir.File("ds"), read_only, &ds);
    EXPECT_TRUE(s.IsFailedPrecondition()) << stage << ": " << s.ToString();  // an unfinished deletion
    DatastoreOpenOptions open;
    open.verify_checksums = true;
    s = Datastore::Open(dir.File("ds"), open, &ds);
    ASSERT_TRUE(s.ok()) << stage << ": " << s.ToString();
    DocumentTraces traces;
    ASSERT_TRUE(ds->FindDocumentTraces(id, &traces).ok());
    EXPECT_TRUE(traces.clean()) << stage << ": index " << traces.index_entries << " key bytes "
                                << traces.nonzero_key_bytes << " stray " << traces.stray_files.size();
  }
  // Without a crash point the command runs to the end.
  ASSERT_FALSE(KilledAt(dir.File("ds"), "d10", "never"));
  gone.insert("d10");
  std::unique_ptr<Datastore> deleted, rebuilt;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &deleted).ok());
  ScratchDir ref;
  ASSERT_TRUE(Build(model, Without(docs, gone), v, ref.File("ds")).ok());
  ASSERT_TRUE(Datastore::Open(ref.File("ds"), DatastoreOpenOptions(), &rebuilt).ok());
  std::vector<float> a, b;
  std::vector<std::pair<int32_t, float>> na, nb;
  ASSERT_NO_FATAL_FAILURE(Score(model, *deleted, &a, &na));
  ASSERT_NO_FATAL_FAILURE(Score(model, *rebuilt, &b, &nb));
  EXPECT_TRUE(a == b);
  EXPECT_TRUE(na == nb);
}

}  // namespace
}  // namespace mnemo
