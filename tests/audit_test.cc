// The whole audit (eval/audit.h) on a tiny model: the report follows docs/AUDIT.md, inserted canaries
// are exposed and deletion brings every measure back to the rebuilt memory's bit for bit, membership
// inference separates stored facts only under the kNN-LM, deleting from the datastore does not remove
// what fine-tuning put in the weights, forgetting is flat until deletion, and the live state is only read.
#include "eval/audit.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "lm/checkpoint.h"
#include "eval/report_html.h"
#include "memory/fact_store.h"
#include "retriever/state_service.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using json = nlohmann::ordered_json;
using testing::RunCommand;
using testing::ScratchDir;

AuditOptions SmallAudit(const std::string& scratch) {
  AuditOptions o;
  o.canaries = 2;
  o.references = 31;
  o.repetitions = {1, 8};
  o.members = 30;
  o.extraction_prefixes = {4, 8};
  o.extraction_samples = 8;
  o.forgetting_added = {0, 40};
  o.finetune_steps = 30;
  o.datastore_documents = 32;
  o.bootstrap_resamples = 50;
  o.knn.k = 8;
  o.knn.lambda = 0.9;  // the kNN part decides greedy decoding: stored facts become extractable
  // A tiny model's keys lie close together on text unlike its corpus; a lower temperature lets the exact
  // neighbour win (with T = 1 the neighbours' weights are almost uniform).
  o.knn.temperature = 0.1;
  o.scratch_dir = scratch;
  return o;
}

// Names and sizes of every file under dir, but the lock file (it holds the pid of whoever opened the
// state last, whose digits vary).
std::map<std::string, uintmax_t> Listing(const std::string& dir) {
  std::map<std::string, uintmax_t> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.path().filename() == "LOCK") continue;
    out[e.path().string()] = e.is_regular_file() ? e.file_size() : 0;
  }
  return out;
}

class AuditTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir_->path(), /*steps=*/40));
    std::string out;
    ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " init --state " + dir_->File("state") + " --model " +
                             dir_->File("model"), &out), 0) << out;
    ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " facts add --state " + dir_->File("state") +
                             " --text 'The old sailor remembers the quiet harbour.'", &out), 0) << out;
    listing_before_ = new std::map<std::string, uintmax_t>(Listing(dir_->File("state")));
    ASSERT_TRUE(LoadLanguageModel(dir_->File("model"), &model_).ok());
    std::unique_ptr<FactStore> store;
    ASSERT_TRUE(FactStore::Open(dir_->File("state"), FactStoreOptions(), &store).ok());
    report_ = new json();
    std::vector<std::string> stages;
    AuditOptions o = SmallAudit(dir_->File("scratch"));
    o.progress = [&](const std::string& stage, double) { stages.push_back(stage); };
    Status s = RunAudit(*model_, *store, o, report_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_FALSE(stages.empty());
    EXPECT_EQ(stages.back(), "done");
    store.reset();
    std::printf("%s", AuditSummary(*report_).c_str());
  }
  static void TearDownTestSuite() {
    delete report_;
    delete listing_before_;
    model_.reset();
    delete dir_;
  }

  static ScratchDir* dir_;
  static std::unique_ptr<LanguageModel> model_;
  static json* report_;
  static std::map<std::string, uintmax_t>* listing_before_;
};
ScratchDir* AuditTest::dir_ = nullptr;
std::unique_ptr<LanguageModel> AuditTest::model_;
json* AuditTest::report_ = nullptr;
std::map<std::string, uintmax_t>* AuditTest::listing_before_ = nullptr;

TEST_F(AuditTest, ReportHasEverySectionOfTheContract) {
  const json& r = *report_;
  EXPECT_EQ(r["format"], "mnemo-audit/1");
  for (const char* section : {"config", "exposure", "membership", "extraction", "deletion_audit",
                              "parametric_vs_datastore", "forgetting"}) {
    EXPECT_TRUE(r.contains(section)) << section;
  }
  EXPECT_EQ(r["config"]["seed"], 1);
  EXPECT_EQ(r["config"]["state"]["facts"], 1);
  EXPECT_GT(r["config"]["seconds"].get<double>(), 0);
  for (const char* model : {"knn_lm", "base_lm"}) {
    for (const char* phase : {"inserted", "after_deletion", "rebuilt"}) {
      for (const char* rep : {"1", "8"}) {
        const json& e = r["exposure"][model][phase][rep];
        EXPECT_EQ(e["count"], 2) << model << " " << phase << " " << rep;
        EXPECT_EQ(e["extrapolated"].size(), 2u);
      }
    }
    EXPECT_EQ(r["exposure"][model]["never_inserted"]["count"], 2);
  }
  for (const char* score : {"loss", "zlib", "reference", "min_k"}) {
    const json& m = r["membership"]["knn_lm"][score];
    for (const char* key : {"auc", "auc_ci", "tpr_at_0.1pct_fpr", "tpr_at_0.1pct_fpr_ci", "tpr_at_1pct_fpr",
                            "tpr_at_1pct_fpr_ci", "roc"}) {
      EXPECT_TRUE(m.contains(key)) << score << " " << key;
    }
    EXPECT_LE(m["auc_ci"][0].get<double>(), m["auc"].get<double>());
    EXPECT_GE(m["auc_ci"][1].get<double>(), m["auc"].get<double>());
    EXPECT_EQ(m["roc"].front(), json::array({0.0, 0.0}));
    EXPECT_EQ(m["roc"].back(), json::array({1.0, 1.0}));
  }
  EXPECT_FALSE(r["membership"]["base_lm"].contains("reference"));  // the base LM is the reference
  EXPECT_EQ(r["extraction"]["knn_lm"]["greedy"].size(), 2u);
  EXPECT_EQ(r["extraction"]["knn_lm"]["greedy"][0]["total"], 8);
  EXPECT_EQ(r["deletion_audit"]["deleted_facts"], 2 * 1 + 2 * 8 + 30);
  EXPECT_EQ(r["forgetting"]["points"].size(), 2u);
  EXPECT_EQ(r["parametric_vs_datastore"]["rows"].size(), 2u);
  EXPECT_EQ(r["memory"], json({{"measured", false}, {"reason", "the model has no memorizing layer"}}));
}

TEST_F(AuditTest, InsertedCanariesAreExposedAndDeletionMatchesTheRebuiltMemory) {
  const json& e = (*report_)["exposure"]["knn_lm"];
  const double never = e["never_inserted"]["mean_extrapolated"];
  EXPECT_GT(e["inserted"]["8"]["mean_extrapolated"].get<double>(), never + 5);
  EXPECT_GT(e["inserted"]["1"]["mean_extrapolated"].get<double>(), never + 3);
  // Rank exposure of a canary stored 8 times: first among the 32 (log2 32 = 5 bits).
  EXPECT_DOUBLE_EQ(e["inserted"]["8"]["mean_rank"].get<double>(), 5.0);
  for (const char* rep : {"1", "8"}) {
    EXPECT_EQ(e["after_deletion"][rep], e["rebuilt"][rep]) << rep;
    EXPECT_LT(e["after_deletion"][rep]["mean_extrapolated"].get<double>(), never + 3) << rep;
  }
  const json& d = (*report_)["deletion_audit"];
  EXPECT_TRUE(d["matches_rebuilt"].get<bool>());
  EXPECT_EQ(d["deltas"]["max_abs_logprob"], 0.0);
  for (const auto& [score, leak] : d["privleak"].items()) EXPECT_EQ(leak.get<double>(), 0.0) << score;
  EXPECT_EQ(d["after"], d["rebuilt"]);
  EXPECT_GT(d["before"]["exposure_mean_extrapolated"].get<double>(),
            d["after"]["exposure_mean_extrapolated"].get<double>() + 5);
}

// Members and canaries built into a datastore as documents and deleted from it: everything after the
// deletion equals a datastore built without them, bit for bit, and verify-deleted passes for each canary.
TEST_F(AuditTest, DatastoreDocumentsDeletedMatchADatastoreBuiltWithoutThem) {
  const json& d = (*report_)["datastore_documents"];
  ASSERT_TRUE(d["measured"].get<bool>()) << d.dump();
  EXPECT_EQ(d["canaries"], 2);
  EXPECT_EQ(d["members"], 8);  // 32 fillers / 4
  EXPECT_EQ(d["deleted_documents"], 10);
  EXPECT_EQ(d["documents"], 42);
  EXPECT_TRUE(d["matches_rebuilt"].get<bool>());
  EXPECT_EQ(d["max_abs_logprob"], 0.0);
  for (const auto& [score, leak] : d["privleak"].items()) EXPECT_EQ(leak.get<double>(), 0.0) << score;
  EXPECT_EQ(d["after"], d["rebuilt"]);
  EXPECT_EQ(d["verified"]["passed"], 2);
  EXPECT_GT(d["before"]["exposure"]["mean_extrapolated"].get<double>(),
            d["after"]["exposure"]["mean_extrapolated"].get<double>());
  EXPECT_NE(RenderAuditHtml(*report_).find("Deletion of documents from an IVF16,Flat datastore"), std::string::npos);
  EXPECT_NE(AuditSummary(*report_).find("base datastore documents (10 of 42 deleted from an IVF16,Flat"), std::string::npos);
}

TEST_F(AuditTest, MembershipInferenceSeparatesStoredFactsOnlyUnderTheKnnLm) {
  const json& m = (*report_)["membership"];
  EXPECT_GT(m["knn_lm"]["loss"]["auc"].get<double>(), 0.9);
  EXPECT_GT(m["knn_lm"]["reference"]["auc"].get<double>(), 0.9);
  // The base LM never saw members or non-members: chance, within the noise of 30 + 30 examples.
  EXPECT_GT(m["base_lm"]["loss"]["auc"].get<double>(), 0.25);
  EXPECT_LT(m["base_lm"]["loss"]["auc"].get<double>(), 0.75);
  const json& d = (*report_)["deletion_audit"];
  EXPECT_LT(d["after"]["membership_auc"]["loss"].get<double>(), 0.75);
}

// Greedy decoding from a canary's prefix produces its secret while the canary is stored, never after.
// (Whole synthetic facts are rarely extractable with a tiny model: its keys do not tell apart contexts
// such as "crowns for a " in different facts, so neighbours from other facts take over.)
TEST_F(AuditTest, SecretsAreExtractableOnlyWhileStored) {
  const json& x = (*report_)["extraction"];
  EXPECT_EQ(x["knn_lm"]["canary_secret"]["8"]["rate"].get<double>(), 1.0);
  EXPECT_EQ(x["base_lm"]["canary_secret"]["8"]["rate"].get<double>(), 0.0);
  EXPECT_GE(x["knn_lm"]["greedy"][0]["rate"].get<double>(), x["base_lm"]["greedy"][0]["rate"].get<double>());
  const json& d = (*report_)["deletion_audit"];
  EXPECT_GT(d["before"]["secret_extraction_rate"].get<double>(), 0.5);
  EXPECT_EQ(d["after"]["secret_extraction_rate"].get<double>(), 0.0);
  EXPECT_EQ(d["rebuilt"]["secret_extraction_rate"].get<double>(), 0.0);
}

// The tiny model is too small to memorise a canary in a few fine-tuning steps (the default model does:
// docs/RESULTS.md); what must hold regardless is that datastore deletion removes the datastore's copy and
// leaves what the weights hold exactly as it was.
TEST_F(AuditTest, DatastoreDeletionRemovesDatastoreCanariesButNotWhatTheWeightsHold) {
  const json& p = (*report_)["parametric_vs_datastore"];
  EXPECT_EQ(p["finetune"]["steps"], 30);
  EXPECT_GT(p["finetune"]["tokens"].get<int64_t>(), 0);
  const json& store = p["rows"][0];
  const json& text = p["rows"][1];
  ASSERT_EQ(store["placement"], "datastore");
  ASSERT_EQ(text["placement"], "training_text");
  EXPECT_GT(store["before"]["mean_extrapolated"].get<double>(), store["after_deletion"]["mean_extrapolated"].get<double>() + 5);
  // The datastore's canaries are not in the weights.
  EXPECT_LT(store["base_lm"]["mean_extrapolated"].get<double>() + 5, store["before"]["mean_extrapolated"].get<double>());
  EXPECT_EQ(store["extraction_after_deletion"].get<double>(), 0.0);
  EXPECT_TRUE(text.contains("original_model"));
  EXPECT_EQ(text["base_lm"]["count"], 2);
}

TEST_F(AuditTest, ForgettingIsFlatUntilDeletion) {
  const json& f = (*report_)["forgetting"];
  const double first = f["points"][0]["exposure"]["mean_extrapolated"];
  const double last = f["points"][1]["exposure"]["mean_extrapolated"];
  const double after = f["after_deletion"]["exposure"]["mean_extrapolated"];
  EXPECT_EQ(f["points"][1]["added_after"], 40);
  EXPECT_GT(last, after + 5);
  EXPECT_GT(first, after + 5);
  EXPECT_EQ(f["after_deletion"]["extraction_rate"].get<double>(), 0.0);
}

TEST_F(AuditTest, TheLiveStateIsOnlyReadAndTheScratchCopyIsRemoved) {
  EXPECT_EQ(Listing(dir_->File("state")), *listing_before_);
  EXPECT_FALSE(std::filesystem::exists(dir_->File("scratch")));
}

TEST_F(AuditTest, ReportsAreWrittenAndSummarised) {
  ScratchDir out;
  ASSERT_TRUE(WriteAuditReport(out.File("reports"), *report_).ok());
  std::string text;
  ASSERT_TRUE(ReadFileToString(out.File("reports/report.json"), &text).ok());
  EXPECT_EQ(json::parse(text), *report_);
  ASSERT_TRUE(ReadFileToString(out.File("reports/report.html"), &text).ok());
  EXPECT_NE(text.find("<svg"), std::string::npos);
  const std::string summary = AuditSummary(*report_);
  EXPECT_NE(summary.find("MATCHES the rebuilt memory"), std::string::npos) << summary;
}

TEST(AuditOptionsTest, RejectsBadOptions) {
  AuditOptions ok = SmallAudit("/tmp/x");
  EXPECT_TRUE(ok.Validate().ok());
  auto bad = [&](const std::function<void(AuditOptions&)>& change) {
    AuditOptions o = ok;
    change(o);
    return o.Validate().IsInvalidArgument();
  };
  EXPECT_TRUE(bad([](AuditOptions& o) { o.canaries = 0; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.references = 3; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.repetitions = {}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.repetitions = {4, 4}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.members = 5; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.extraction_prefixes = {0}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.forgetting_added = {10, 5}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.scratch_dir = ""; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.knn.k = 0; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.canaries = 33; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.references = 4096; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.extraction_samples = o.members + 1; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.forgetting_added = {0, 100001}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.finetune_steps = 5001; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.repetitions = {1, 2, 3, 4, 5, 6, 7, 8, 9}; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.memory_capacity = 63; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.memory_capacity = 65537; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.memory_capacity = -1; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.datastore_documents = -1; }));
  EXPECT_TRUE(bad([](AuditOptions& o) { o.datastore_documents = 4097; }));
  AuditOptions none = ok;
  none.memory_capacity = 0;
  none.datastore_documents = 0;
  EXPECT_TRUE(none.Validate().ok());
}

// A barely trained tiny model and an empty state in dir, opened.
void BareState(const ScratchDir& dir, std::unique_ptr<LanguageModel>* model, std::unique_ptr<FactStore>* store) {
  ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir.path(), /*steps=*/2));
  std::string out;
  ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " init --state " + dir.File("state") + " --model " +
                           dir.File("model"), &out), 0) << out;
  ASSERT_TRUE(LoadLanguageModel(dir.File("model"), model).ok());
  ASSERT_TRUE(FactStore::Open(dir.File("state"), FactStoreOptions(), store).ok());
}

TEST(AuditRunTest, AnExistingScratchDirectoryIsRefusedAndLeftAlone) {
  ScratchDir dir;
  std::unique_ptr<LanguageModel> model;
  std::unique_ptr<FactStore> store;
  ASSERT_NO_FATAL_FAILURE(BareState(dir, &model, &store));
  ASSERT_TRUE(EnsureDirectory(dir.File("scratch")).ok());
  testing::WriteFileOrDie(dir.File("scratch/keep"), "mine");
  json report;
  Status s = RunAudit(*model, *store, SmallAudit(dir.File("scratch")), &report);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_TRUE(std::filesystem::exists(dir.File("scratch/keep")));
}

TEST(AuditRunTest, CancellingStopsTheAuditAndRemovesItsScratchCopy) {
  ScratchDir dir;
  std::unique_ptr<LanguageModel> model;
  std::unique_ptr<FactStore> store;
  ASSERT_NO_FATAL_FAILURE(BareState(dir, &model, &store));
  std::atomic<bool> cancel{false};
  AuditOptions o = SmallAudit(dir.File("scratch"));
  o.cancel = &cancel;
  std::vector<std::string> stages;
  o.progress = [&](const std::string& stage, double) {
    stages.push_back(stage);
    if (stage == "deleting") cancel = true;
  };
  json report;
  Status s = RunAudit(*model, *store, o, &report);
  EXPECT_TRUE(s.IsCancelled()) << s.ToString();
  EXPECT_EQ(stages.back(), "deleting");
  EXPECT_FALSE(std::filesystem::exists(dir.File("scratch")));
}

// The memory section on a tiny model with a memorizing layer (random weights, "joint": the memory changes
// the layer's attention from the first step): FIFO eviction is exact forgetting, deletion from FIFO and
// unbounded memories equals a memory that never read the deleted documents, and the kNN-LM keeps what it
// stores until deletion.
class AuditMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    report_ = new json();
    ASSERT_NO_FATAL_FAILURE(testing::SaveRandomTinyModel(dir_->File("model"), 3, /*memory_layer=*/true));
    Status s = StateService::Create(dir_->File("state"), dir_->File("model"), "", nullptr);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(LoadLanguageModel(dir_->File("model"), &model_).ok());
    std::unique_ptr<FactStore> store;
    ASSERT_TRUE(FactStore::Open(dir_->File("state"), FactStoreOptions(), &store).ok());
    AuditOptions o = SmallAudit(dir_->File("scratch"));
    o.finetune_steps = 0;
    o.memory_capacity = 128;
    std::vector<std::string> stages;
    o.progress = [&](const std::string& stage, double) { stages.push_back(stage); };
    s = RunAudit(*model_, *store, o, report_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_NE(std::find(stages.begin(), stages.end(), "memory: forgetting"), stages.end());
    std::printf("%s", AuditSummary(*report_).c_str());
  }
  static void TearDownTestSuite() {
    delete report_;
    model_.reset();
    delete dir_;
  }
  static ScratchDir* dir_;
  static std::unique_ptr<LanguageModel> model_;
  static json* report_;
};
ScratchDir* AuditMemoryTest::dir_ = nullptr;
std::unique_ptr<LanguageModel> AuditMemoryTest::model_;
json* AuditMemoryTest::report_ = nullptr;

TEST_F(AuditMemoryTest, FifoEvictionForgetsExactlyWhileTheDatastoreKeeps) {
  ASSERT_TRUE(report_->contains("memory"));
  const json& m = (*report_)["memory"];
  ASSERT_TRUE(m["measured"].get<bool>()) << m.dump();
  EXPECT_EQ(m["capacity"], 128);
  EXPECT_EQ(m["layer"], 1);
  const json& f = m["forgetting"];
  const int64_t canary_tokens = f["canary_tokens"];
  ASSERT_GT(canary_tokens, 0);
  ASSERT_EQ(f["points"].size(), 5u);
  const std::vector<int64_t> targets = {0, 32, 64, 128, 256};
  double knn_min = 1e9;
  for (size_t i = 0; i < targets.size(); ++i) {
    const json& p = f["points"][i];
    const int64_t read_after = p["read_after"];
    EXPECT_EQ(p["target"], targets[i]);
    EXPECT_GE(read_after, targets[i]);
    EXPECT_EQ(p["memory"]["exposure"]["count"], 2);
    // The ring holds the last 128 tokens: the canaries' tokens stay until the fillers push them out.
    const int64_t resident = p["canary_tokens_resident"];
    EXPECT_EQ(resident, std::clamp<int64_t>(128 - read_after, 0, canary_tokens)) << i;
    // Without any canary token in the ring the scores are the same bits as a memory's that never read
    // them. (With some, they differ where a canary token is retrieved: with every one resident, at the
    // first points, they do.)
    if (resident == 0) {
      EXPECT_TRUE(p["matches_never_read"].get<bool>()) << i;
    }
    if (resident == canary_tokens) {
      EXPECT_FALSE(p["matches_never_read"].get<bool>()) << i;
    }
    knn_min = std::min(knn_min, p["knn_lm"]["exposure"]["mean_extrapolated"].get<double>());
  }
  EXPECT_TRUE(f["points"][4]["matches_never_read"].get<bool>());
  EXPECT_FALSE(f["points"][0]["matches_never_read"].get<bool>());
  // The datastore does not forget: the canaries stay exposed at every point, until they are deleted.
  const double deleted = f["knn_lm_after_deletion"]["exposure"]["mean_extrapolated"];
  EXPECT_GT(knn_min, deleted + 5) << f.dump();
  EXPECT_EQ(f["knn_lm_after_deletion"]["extraction_rate"].get<double>(), 0.0);
}

TEST_F(AuditMemoryTest, DeletionFromFifoAndUnboundedMemoriesEqualsNeverReading) {
  const json& d = (*report_)["memory"]["deletion"];
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0]["policy"], "fifo");
  EXPECT_EQ(d[0]["capacity"], 128);
  EXPECT_EQ(d[1]["policy"], "unbounded");
  for (const json& p : d) {
    SCOPED_TRACE(p["policy"].get<std::string>());
    EXPECT_EQ(p["members"], 128 / 24);  // no more than fill half the memory
    EXPECT_EQ(p["deleted_documents"], 128 / 24 + 2);
    EXPECT_TRUE(p["matches_rebuilt"].get<bool>()) << p.dump();
    EXPECT_EQ(p["max_abs_logprob"].get<double>(), 0.0);
    EXPECT_EQ(p["verified"]["passed"], 2);
    EXPECT_EQ(p["verified"]["documents"], 2);
    for (const char* score : {"loss", "zlib", "reference", "min_k"}) {
      EXPECT_EQ(p["privleak"][score].get<double>(), 0.0) << score;
    }
    EXPECT_EQ(p["after"]["exposure"]["extrapolated"], p["rebuilt"]["exposure"]["extrapolated"]);
  }
  // The unbounded memory held every member and canary when measured before deletion: the scores moved.
  EXPECT_NE(d[1]["before"]["exposure"]["extrapolated"], d[1]["after"]["exposure"]["extrapolated"]);
}

TEST_F(AuditMemoryTest, TheReportShowsTheMemorySection) {
  const std::string html = RenderAuditHtml(*report_);
  EXPECT_NE(html.find("id=\"memory\""), std::string::npos);
  EXPECT_NE(html.find("Deletion from a FIFO memory"), std::string::npos);
  EXPECT_NE(html.find("Deletion from an unbounded memory"), std::string::npos);
  EXPECT_NE(html.find("tokens read after the canaries"), std::string::npos);
  EXPECT_EQ(html.find("badge fail"), std::string::npos);
  const std::string summary = AuditSummary(*report_);
  EXPECT_NE(summary.find("memory (memorizing layer 1, FIFO capacity 128 tokens)"), std::string::npos) << summary;
  EXPECT_NE(summary.find("(= never read, bit for bit)"), std::string::npos) << summary;
}

}  // namespace
}  // namespace mnemo
