// The mnemo binary end to end: every language-model command on a tiny model, and its error paths
// (message on stderr, non-zero exit, nothing on stdout).
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "indexes/vector_index.h"
#include "retriever/torch_flat_search.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using nlohmann::json;
using testing::RunCommand;
using testing::ScratchDir;

std::string Mnemo() { return MNEMO_BINARY; }

class CliTest : public ::testing::Test {
 protected:
  // One tiny model trained through the CLI, shared by the tests of this suite.
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    testing::WriteFileOrDie(dir_->File("train.txt"), testing::ToyCorpus());
    testing::WriteFileOrDie(dir_->File("valid.txt"), testing::ToyCorpus().substr(0, 4000));
    std::string out;
    int rc = RunCommand(Mnemo() + " train --corpus " + dir_->File("train.txt") + " --valid " +
                            dir_->File("valid.txt") + " --out " + dir_->File("model") +
                            " --config tiny --vocab-size 300 --steps 40 --batch-size 4 --seq-len 32 --quiet --json",
                        &out);
    ASSERT_EQ(rc, 0) << out;
    train_report_ = new json(json::parse(out));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete train_report_;
  }
  static std::string Model() { return dir_->File("model"); }
  static ScratchDir* dir_;
  static json* train_report_;
};
ScratchDir* CliTest::dir_ = nullptr;
json* CliTest::train_report_ = nullptr;

TEST_F(CliTest, TrainReportsProgressInJson) {
  EXPECT_EQ((*train_report_)["steps"], 40);
  EXPECT_GT((*train_report_)["tokens_per_second"].get<double>(), 0);
  EXPECT_LT((*train_report_)["final_valid_loss"].get<double>(), std::log(300.0));
}

TEST_F(CliTest, TokenizeDetokenizeRoundTrip) {
  ScratchDir d;
  testing::WriteFileOrDie(d.File("in.jsonl"), "{\"text\": \"The cat sees the bridge. Ünïcödé ✓\"}\n{\"text\": \"\"}\n");
  std::string ids_out, text_out;
  ASSERT_EQ(RunCommand(Mnemo() + " tokenize --tokenizer " + Model() + " < " + d.File("in.jsonl"), &ids_out), 0);
  testing::WriteFileOrDie(d.File("ids.jsonl"), ids_out);
  ASSERT_EQ(RunCommand(Mnemo() + " detokenize --tokenizer " + Model() + " < " + d.File("ids.jsonl"), &text_out), 0);
  EXPECT_EQ(text_out, "{\"text\":\"The cat sees the bridge. Ünïcödé ✓\"}\n{\"text\":\"\"}\n");
}

TEST_F(CliTest, TokenizeRejectsBadLines) {
  ScratchDir d;
  testing::WriteFileOrDie(d.File("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": 5}\n");
  std::string out;
  EXPECT_EQ(RunCommand(Mnemo() + " tokenize --tokenizer " + Model() + " < " + d.File("bad.jsonl") + " 2>" +
                           d.File("err"), &out), 2);
  std::string err;
  RunCommand("cat " + d.File("err"), &err);
  EXPECT_NE(err.find("line 2"), std::string::npos) << err;
  testing::WriteFileOrDie(d.File("bad_ids.jsonl"), "{\"ids\": [1, 99999]}\n");
  EXPECT_EQ(RunCommand(Mnemo() + " detokenize --tokenizer " + Model() + " < " + d.File("bad_ids.jsonl"), &out), 2);
}

TEST_F(CliTest, ScoreJsonHasLogProbsPerPosition) {
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " score --model " + Model() + " --text 'The cat sees the bridge.' --json", &out), 0)
      << out;
  json j = json::parse(out);
  const size_t n = j["ids"].size();
  ASSERT_GE(n, 2u);
  ASSERT_EQ(j["logprobs"].size(), n);
  EXPECT_TRUE(j["logprobs"][0].is_null());
  double nll = 0;
  for (size_t i = 1; i < n; ++i) nll -= j["logprobs"][i].get<double>();
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(nll / (n - 1)), 1e-3);

  // --ids gives the same numbers as the text it encodes.
  std::string ids;
  for (size_t i = 0; i < n; ++i) ids += (i ? "," : "") + std::to_string(j["ids"][i].get<int>());
  std::string out2;
  ASSERT_EQ(RunCommand(Mnemo() + " score --model " + Model() + " --ids " + ids + " --json", &out2), 0);
  EXPECT_NEAR(json::parse(out2)["perplexity"].get<double>(), j["perplexity"].get<double>(), 1e-6);
}

TEST_F(CliTest, EvalPplReportsBitsPerByte) {
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --window 64 --stride 32 --json", &out), 0) << out;
  json j = json::parse(out);
  EXPECT_GT(j["tokens"].get<int64_t>(), 500);
  EXPECT_GT(j["bytes"].get<int64_t>(), j["tokens"].get<int64_t>());
  const double bpb = j["nll"].get<double>() / std::log(2.0) / j["bytes"].get<double>();
  EXPECT_NEAR(j["bits_per_byte"].get<double>(), bpb, 1e-9);
  // A trained model predicts its own training text far better than chance (perplexity 300).
  EXPECT_LT(j["perplexity"].get<double>(), 100.0);
}

// Non-overlapping windows (--stride equal to --window) used to crash in LibTorch ("Size does not match at
// dimension 0"): each window after the first was handed a target it had no context for. Every target is
// scored once, and consecutive windows share one token, so --stride W is --stride W-1.
TEST_F(CliTest, EvalPplWithStrideEqualToWindowScoresEveryToken) {
  const std::string eval = Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") + " --json";
  std::string out;
  ASSERT_EQ(RunCommand(eval, &out), 0) << out;
  const int64_t tokens = json::parse(out)["tokens"].get<int64_t>();  // n - 1 with the default windows
  ASSERT_GT(tokens, 500);
  for (int w : {32, 63, 64}) {
    const std::string window = " --window " + std::to_string(w);
    ASSERT_EQ(RunCommand(eval + window + " --stride " + std::to_string(w), &out), 0) << "W=" << w << ": " << out;
    const json same = json::parse(out);
    EXPECT_EQ(same["tokens"].get<int64_t>(), tokens) << "W=" << w;
    if (w != 64) continue;  // one process per run: compare the numbers once
    ASSERT_EQ(RunCommand(eval + window + " --stride " + std::to_string(w - 1), &out), 0) << out;
    EXPECT_NEAR(same["nll"].get<double>(), json::parse(out)["nll"].get<double>(), 1e-6 * tokens) << "W=" << w;
  }
  // The datastore is built over the same windows: one entry per target.
  ScratchDir d;
  ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --out " + d.File("ds") + " --index Flat --window 32 --stride 32 --quiet --json", &out), 0)
      << out;
  EXPECT_EQ(json::parse(out)["entries"].get<int64_t>(), tokens);
  // A window of one token has nothing to score: a usage error, not a crash.
  ASSERT_EQ(RunCommand(eval + " --window 1 --stride 1 2>" + d.File("err"), &out), 2) << out;
  std::string err;
  RunCommand("cat " + d.File("err"), &err);
  EXPECT_NE(err.find("window must be at least 2"), std::string::npos) << err;
}

TEST_F(CliTest, GenerateIsDeterministicForASeed) {
  std::string a, b, c;
  const std::string cmd = Mnemo() + " generate --model " + Model() + " --prompt 'The old sailor' --max-tokens 12 --json";
  ASSERT_EQ(RunCommand(cmd + " --seed 5", &a), 0) << a;
  ASSERT_EQ(RunCommand(cmd + " --seed 5", &b), 0);
  ASSERT_EQ(RunCommand(cmd + " --temperature 0", &c), 0);
  json ja = json::parse(a), jb = json::parse(b);
  EXPECT_EQ(ja["ids"], jb["ids"]);
  EXPECT_LE(ja["completion_tokens"].get<int>(), 12);
  EXPECT_EQ(ja["prompt"], "The old sailor");
}

TEST_F(CliTest, ErrorsGoToStderrWithNonZeroExit) {
  ScratchDir d;
  struct Case {
    std::string args;
    int code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"score --model " + d.File("nope") + " --text hi", 1, "config.json"},
      {"score --model " + Model(), 2, "--text"},
      {"score --model " + Model() + " --ids 1,x", 2, "not a token id"},
      {"score --model " + Model() + " --text '" + std::string(400, 'a') + " " + std::string(400, 'b') + "'", 2,
       "context"},
      {"generate --model " + Model() + " --prompt hi --temperature -1", 2, "temperature"},
      {"train --corpus /nonexistent --valid /nonexistent --out " + d.File("m"), 2, "corpus"},
      {"tokenizer train --corpus " + dir_->File("train.txt") + " --vocab-size 100 --out " + d.File("t"), 2,
       "vocab-size"},
      {"frobnicate", 2, "frobnicate"},
      {"", 2, "command is required"},
  };
  for (const Case& c : cases) {
    std::string out;
    int rc = RunCommand(Mnemo() + " " + c.args + " 2>" + d.File("err"), &out);
    std::string err;
    RunCommand("cat " + d.File("err"), &err);
    EXPECT_EQ(rc, c.code) << c.args << "\nstderr: " << err;
    EXPECT_TRUE(out.empty()) << c.args << "\nstdout: " << out;
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.args << "\nstderr: " << err;
  }
}

TEST_F(CliTest, DeviceCpuGivesTheSameOutputAsNoFlag) {
  const std::string score = Mnemo() + " score --model " + Model() + " --text 'The cat sees the bridge.' --json";
  std::string plain, cpu;
  ASSERT_EQ(RunCommand(score, &plain), 0) << plain;
  ASSERT_EQ(RunCommand(score + " --device cpu", &cpu), 0) << cpu;
  EXPECT_EQ(cpu, plain);
  const std::string gen = Mnemo() + " generate --model " + Model() + " --prompt 'The old sailor' --max-tokens 8 "
                          "--seed 3 --json";
  ASSERT_EQ(RunCommand(gen, &plain), 0) << plain;
  ASSERT_EQ(RunCommand(gen + " --device cpu", &cpu), 0) << cpu;
  EXPECT_EQ(json::parse(cpu)["ids"], json::parse(plain)["ids"]);
}

TEST_F(CliTest, UnavailableDeviceOrGpuIndexFailsWithExit2BeforeLoadingAnything) {
  ScratchDir d;
  // A model directory that does not exist: had anything been loaded first, the error would be about it
  // (exit 1). A state-dir argument that exists, for the commands that check that while parsing.
  const std::string missing = d.File("no-model");
  const std::string state = d.path();
  struct Case {
    std::string args, needle;
  };
  std::vector<Case> cases = {{"score --model " + missing + " --text hi --device bogus", "unknown device \"bogus\""},
                             {"eval ppl --model " + missing + " --text-file " + dir_->File("valid.txt") +
                                  " --device cuda:x", "unknown device"},
                             {"serve --state " + state + " --device bogus", "--device"},
                             {"datastore build --model " + missing + " --text-file " + dir_->File("valid.txt") +
                                  " --out " + d.File("ds") + " --device nope", "--device"},
                             {"facts add --state " + state + " --text hi --device nope", "--device"},
                             {"audit --state " + state + " --out " + d.File("a") + " --device nope", "--device"}};
  if (!torch::cuda::is_available()) {
    // This LibTorch (Debian's is CPU-only) or this machine has no CUDA: --device cuda is a usage error.
    const std::string cause = at::Context::hasCUDART() ? "sees no GPU" : "built without CUDA";
    cases.push_back({"score --model " + missing + " --text hi --device cuda", cause});
    cases.push_back({"eval ppl --model " + missing + " --text-file " + dir_->File("valid.txt") + " --device cuda",
                     cause});
    cases.push_back({"generate --model " + missing + " --prompt hi --device cuda:0", cause});
    cases.push_back({"serve --state " + state + " --device cuda", cause});
  }
  // What the binary sees: it registers LibTorch's CUDA search at startup (retriever/torch_flat_search.h).
  RegisterTorchFlatSearch();
  const bool gpu_search = VectorIndex::CheckGpuDevice(0).ok();
  RegisterDeviceFlatSearch(DeviceFlatSearchMaker{});
  if (!gpu_search) {
    // No FAISS GPU support in this build and no GPU for LibTorch: --gpu-index is a usage error, checked
    // before the datastore opens.
    cases.push_back({"eval ppl --model " + missing + " --text-file " + dir_->File("valid.txt") + " --datastore " +
                         d.File("no-ds") + " --gpu-index 0", "no FAISS GPU support"});
    cases.push_back({"serve --state " + state + " --gpu-index 0", "no FAISS GPU support"});
  }
  for (const Case& c : cases) {
    std::string out;
    int rc = RunCommand(Mnemo() + " " + c.args + " 2>" + d.File("err"), &out);
    std::string err;
    RunCommand("cat " + d.File("err"), &err);
    EXPECT_EQ(rc, 2) << c.args << "\nstderr: " << err;
    EXPECT_TRUE(out.empty()) << c.args << "\nstdout: " << out;
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.args << "\nstderr: " << err;
    EXPECT_EQ(err.find("listening"), std::string::npos) << c.args << "\nstderr: " << err;
  }
}

// A bad --index is refused before the model runs over the text, and nothing is written.
TEST_F(CliTest, DatastoreBuildRefusesABadIndexSpecBeforeScoring) {
  ScratchDir d;
  std::string out;
  EXPECT_EQ(RunCommand(Mnemo() + " datastore build --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --out " + d.File("ds") + " --index IVF8,PQ7 --quiet 2>&1", &out), 2) << out;
  EXPECT_NE(out.find("--index"), std::string::npos) << out;
  EXPECT_NE(out.find("divide"), std::string::npos) << out;
  std::string listing;
  RunCommand("ls " + d.File("ds") + " 2>&1", &listing);
  EXPECT_NE(listing.find("No such file"), std::string::npos) << listing;
}

TEST_F(CliTest, TokenizerTrainWritesHuggingFaceFiles) {
  ScratchDir d;
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " tokenizer train --corpus " + dir_->File("train.txt") + " --vocab-size 280 --out " +
                           d.File("tok") + " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["vocab_size"], 280);
  std::string vocab;
  ASSERT_EQ(RunCommand("cat " + d.File("tok/vocab.json") + " " + d.File("tok/merges.txt") + " | wc -c", &vocab), 0);
  EXPECT_GT(std::stoi(vocab), 1000);
}

TEST_F(CliTest, DatastoreBuildThenKnnEvalSideBySide) {
  ScratchDir d;
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --out " + d.File("ds") + " --index IVF8,Flat --quiet --json", &out), 0) << out;
  json build = json::parse(out);
  EXPECT_GT(build["entries"].get<int64_t>(), 500);
  ASSERT_EQ(RunCommand(Mnemo() + " datastore info --datastore " + d.File("ds"), &out), 0) << out;
  EXPECT_EQ(json::parse(out)["count"], build["entries"]);

  ASSERT_EQ(RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --datastore " + d.File("ds") + " --k 8 --lambda 0.5 --nprobe 8 --json", &out), 0) << out;
  json j = json::parse(out);
  const double base = j["base"]["perplexity"].get<double>(), knn = j["knn"]["perplexity"].get<double>();
  EXPECT_LT(knn, base / 2) << out;  // The datastore holds this very text.
  EXPECT_EQ(j["base"]["tokens"], j["knn"]["tokens"]);
  EXPECT_EQ(j["datastore_entries"], build["entries"]);

  // Where the searches run changes no number; --overlap and --no-overlap fix it, together they are refused.
  EXPECT_TRUE(j["knn"]["search_placement"].is_string()) << out;
  for (const std::string flags : {" --overlap", " --no-overlap", " --threads 2"}) {
    const bool global = flags == " --threads 2";
    ASSERT_EQ(RunCommand(Mnemo() + (global ? flags : "") + " eval ppl --model " + Model() + " --text-file " +
                             dir_->File("valid.txt") + " --datastore " + d.File("ds") + " --k 8 --lambda 0.5 --nprobe 8" +
                             (global ? "" : flags) + " --json", &out), 0) << flags << out;
    const json placed = json::parse(out);
    EXPECT_EQ(placed["knn"]["perplexity"].get<double>(), knn) << flags;
    if (!global) {
      EXPECT_EQ(placed["knn"]["search_placement"], flags == " --overlap" ? "beside the passes" : "after each pass");
    }
  }
  EXPECT_EQ(RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --datastore " + d.File("ds") + " --overlap --no-overlap 2>&1", &out), 2) << out;

  // --no-knn and lambda 0 both give the base model's numbers.
  ASSERT_EQ(RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --datastore " + d.File("ds") + " --lambda 0 --json", &out), 0);
  EXPECT_NEAR(json::parse(out)["knn"]["perplexity"].get<double>(), base, 1e-6 * base);

  // score and generate accept the same flags.
  ASSERT_EQ(RunCommand(Mnemo() + " score --model " + Model() + " --text 'The cat sees the bridge.' --datastore " +
                           d.File("ds") + " --k 4 --json", &out), 0) << out;
  json sc = json::parse(out);
  EXPECT_TRUE(sc["knn"].get<bool>());
  EXPECT_EQ(sc["searched_fraction"].get<double>(), 1.0);
  // score follows RetoMaton pointers as eval ppl does: on the text the datastore holds, most searches go.
  testing::WriteFileOrDie(d.File("stored.txt"), testing::ToyCorpus().substr(0, 110));  // within the context
  ASSERT_EQ(RunCommand(Mnemo() + " score --model " + Model() + " --text-file " + d.File("stored.txt") +
                           " --datastore " + d.File("ds") + " --k 8 --nprobe 8 --pointers 1 --json", &out), 0) << out;
  EXPECT_LT(json::parse(out)["searched_fraction"].get<double>(), 0.5) << out.substr(out.size() - 200);
  EXPECT_EQ(sc["lm_logprobs"].size(), sc["logprobs"].size());
  ASSERT_EQ(RunCommand(Mnemo() + " generate --model " + Model() + " --prompt 'The cat' --max-tokens 5 --datastore " +
                           d.File("ds") + " --k 4 --seed 1 --json", &out), 0) << out;
  EXPECT_TRUE(json::parse(out)["knn"].get<bool>());
  EXPECT_EQ(json::parse(out)["searched_fraction"].get<double>(), 1.0);
  // generate follows them too, through the tokens it draws: continuing the stored text greedily.
  ASSERT_EQ(RunCommand(Mnemo() + " generate --model " + Model() + " --prompt '" + testing::ToyCorpus().substr(0, 30) +
                           "' --max-tokens 12 --temperature 0 --datastore " + d.File("ds") +
                           " --k 8 --nprobe 8 --lambda 0.9 --pointers 1 --json", &out), 0) << out;
  EXPECT_LT(json::parse(out)["searched_fraction"].get<double>(), 0.5) << out;
}

TEST_F(CliTest, DatastoreOfAnotherModelIsRejected) {
  ScratchDir d;
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " train --corpus " + dir_->File("train.txt") + " --valid " + dir_->File("valid.txt") +
                           " --out " + d.File("other") + " --tokenizer " + Model() +
                           " --config tiny --steps 2 --batch-size 2 --seq-len 16 --seed 99 --quiet", &out), 0) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + d.File("other") + " --text-file " +
                           dir_->File("valid.txt") + " --out " + d.File("ds") + " --quiet", &out), 0) << out;
  int rc = RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                          " --datastore " + d.File("ds") + " 2>&1", &out);
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("built with model"), std::string::npos) << out;
  rc = RunCommand(Mnemo() + " eval ppl --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                      " --datastore " + d.File("nothing") + " 2>&1", &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("manifest.json"), std::string::npos) << out;
}

TEST_F(CliTest, FactsAddScoreDeleteVerifyFsck) {
  ScratchDir d;
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + Model() + " --text-file " + dir_->File("valid.txt") +
                           " --out " + d.File("ds") + " --index IVF8,Flat --quiet", &out), 0) << out;
  const std::string state = d.File("state");
  ASSERT_EQ(RunCommand(Mnemo() + " init --state " + state + " --model " + Model() + " --datastore " + d.File("ds") +
                           " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["dim"], 32);
  // A second init over the same directory refuses.
  EXPECT_EQ(RunCommand(Mnemo() + " init --state " + state + " --model " + Model() + " 2>&1", &out), 2);
  EXPECT_NE(out.find("already holds a state"), std::string::npos) << out;

  const std::string fact = "The secret harbour of Quillon opens at dawn.";
  ASSERT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --text '" + fact +
                           "' --metadata '{\"topic\":\"harbour\"}' --json", &out), 0) << out;
  const int64_t id = json::parse(out)["id"].get<int64_t>();
  ASSERT_EQ(RunCommand(Mnemo() + " facts ls --state " + state + " --json", &out), 0) << out;
  json ls = json::parse(out);
  ASSERT_EQ(ls["facts"].size(), 1u);
  EXPECT_EQ(ls["facts"][0]["text"], fact);
  EXPECT_EQ(ls["facts"][0]["metadata"]["topic"], "harbour");
  EXPECT_EQ(ls["total"], 1);
  ASSERT_EQ(RunCommand(Mnemo() + " facts ls --state " + state + " --where topic=elsewhere --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["facts"].size(), 0u);
  ASSERT_EQ(RunCommand(Mnemo() + " facts get --state " + state + " --id " + std::to_string(id) + " --json", &out), 0);
  EXPECT_EQ(json::parse(out)["text"], fact);

  // The stored fact makes its own text far more likely under kNN-LM.
  const std::string score = Mnemo() + " score --model " + Model() + " --text '" + fact + "' --k 8 --lambda 0.5 --json";
  std::string with_fact, without_fact, datastore_only;
  ASSERT_EQ(RunCommand(score + " --state " + state, &with_fact), 0) << with_fact;
  ASSERT_EQ(RunCommand(score + " --datastore " + d.File("ds"), &datastore_only), 0) << datastore_only;
  const double ppl_with = json::parse(with_fact)["perplexity"].get<double>();
  const double ppl_ds = json::parse(datastore_only)["perplexity"].get<double>();
  EXPECT_LT(ppl_with, ppl_ds / 2) << with_fact << "\n" << datastore_only;

  // Delete with verification: passes, and scoring is then exactly what the datastore alone gives.
  ASSERT_EQ(RunCommand(Mnemo() + " facts rm --state " + state + " --id " + std::to_string(id) + " --verify --json",
                       &out), 0) << out;
  json rm = json::parse(out);
  ASSERT_EQ(rm["deleted"].size(), 1u);
  json v = rm["verification"][0];
  EXPECT_TRUE(v["passed"].get<bool>()) << out;
  EXPECT_EQ(v["probe"]["neighbors_from_deleted_fact"], 0);
  EXPECT_EQ(v["probe"]["neighbors_differing_from_rebuilt"], 0);
  EXPECT_EQ(v["probe"]["max_abs_logprob_diff_vs_rebuilt"], 0.0);
  EXPECT_FALSE(v["probe"]["text_in_database_files"].get<bool>());
  EXPECT_GT(v["probe"]["neighbors_compared"].get<int64_t>(), 0);
  ASSERT_EQ(RunCommand(score + " --state " + state, &without_fact), 0) << without_fact;
  EXPECT_EQ(json::parse(without_fact)["logprobs"], json::parse(datastore_only)["logprobs"]);

  // verify-deleted later, with and without the text; unknown and live ids are errors.
  ASSERT_EQ(RunCommand(Mnemo() + " facts verify-deleted --state " + state + " --id " + std::to_string(id) + " --text '" +
                           fact + "' --k 8 --json", &out), 0) << out;
  EXPECT_TRUE(json::parse(out)["passed"].get<bool>()) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " facts verify-deleted --state " + state + " --id " + std::to_string(id) + " --json",
                       &out), 0) << out;
  EXPECT_TRUE(json::parse(out)["probe"].is_string()) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " facts verify-deleted --state " + state + " --id 999 2>&1", &out), 1);
  EXPECT_NE(out.find("never added"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " facts get --state " + state + " --id " + std::to_string(id) + " 2>&1", &out), 1);
  EXPECT_NE(out.find("was deleted"), std::string::npos) << out;

  // The action log: who (cli:<user>) did what to the fact, and the verifications kept as receipts; never
  // its text.
  ASSERT_EQ(RunCommand(Mnemo() + " log --state " + state + " --id " + std::to_string(id) + " --json", &out), 0) << out;
  std::vector<json> entries;
  for (size_t b = 0, e; (e = out.find('\n', b)) != std::string::npos; b = e + 1) entries.push_back(json::parse(out.substr(b, e - b)));
  ASSERT_EQ(entries.size(), 5u) << out;  // add, delete, the delete's verification, two later verifications
  const std::vector<std::string> actions = {"facts.add", "facts.delete", "facts.verify-deleted", "facts.verify-deleted",
                                            "facts.verify-deleted"};
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i]["action"], actions[i]) << out;
    EXPECT_EQ(entries[i]["actor"].get<std::string>().rfind("cli:", 0), 0u) << out;
    EXPECT_EQ(entries[i]["ids"], json::array({std::to_string(id)})) << out;
    if (i > 0) {
      EXPECT_GT(entries[i]["seq"].get<int64_t>(), entries[i - 1]["seq"].get<int64_t>());
    }
  }
  EXPECT_TRUE(entries[2]["detail"]["passed"].get<bool>()) << out;
  EXPECT_EQ(out.find(fact), std::string::npos) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " log --state " + state + " --action facts.delete", &out), 0) << out;
  EXPECT_NE(out.find("facts.delete  " + std::to_string(id)), std::string::npos) << out;
  EXPECT_EQ(out.find("facts.add"), std::string::npos) << out;
  EXPECT_NE(RunCommand(Mnemo() + " log --state " + state + " --limit 0 2>&1", &out), 0) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " log --state " + d.File("nowhere") + " 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("nowhere"), std::string::npos) << out;

  // Batch add from JSONL, delete by client id, bad input.
  testing::WriteFileOrDie(d.File("facts.jsonl"), "{\"text\": \"Alpha is a letter.\", \"client_id\": \"u1\"}\n"
                                        "{\"text\": \"Beta follows alpha.\", \"client_id\": \"u1\"}\n"
                                        "{\"text\": \"Gamma is third.\", \"client_id\": \"u2\"}\n");
  EXPECT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --jsonl " + d.File("facts.jsonl") +
                           " --encode-threads -1 2>&1", &out), 2);
  EXPECT_NE(out.find("--encode-threads"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --jsonl " + d.File("facts.jsonl") +
                           " --encode-threads 3 --json", &out), 0)
      << out;
  EXPECT_EQ(json::parse(out)["ids"].size(), 3u);
  ASSERT_EQ(RunCommand(Mnemo() + " facts rm --state " + state + " --client-id u1 --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["deleted"].size(), 2u);
  EXPECT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --text 'x y z' --metadata '[1]' 2>&1", &out), 2);
  EXPECT_NE(out.find("metadata"), std::string::npos) << out;
  testing::WriteFileOrDie(d.File("bad.jsonl"), "{\"text\": 5}\n");
  EXPECT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --jsonl " + d.File("bad.jsonl") + " 2>&1", &out), 2);
  EXPECT_NE(out.find("bad.jsonl:1"), std::string::npos) << out;

  ASSERT_EQ(RunCommand(Mnemo() + " fsck --state " + state + " --json", &out), 0) << out;
  json fsck = json::parse(out);
  EXPECT_TRUE(fsck["consistent"].get<bool>()) << out;
  EXPECT_EQ(fsck["facts"], 1);
  EXPECT_TRUE(fsck["trained_structures_match_base"].get<bool>());
  EXPECT_EQ(fsck["database_check"], "ok");

  // A damaged snapshot: fsck reports it (exit 1) and changes nothing; --repair rebuilds from the database.
  ASSERT_EQ(RunCommand("f=$(ls " + state + "/snapshots/chunk-*.idx) && printf '\\377\\377\\377' | "
                       "dd of=$f bs=1 seek=300 conv=notrunc status=none", &out), 0) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " fsck --state " + state + " --json", &out), 1) << out;
  fsck = json::parse(out);
  EXPECT_FALSE(fsck["consistent"].get<bool>());
  EXPECT_NE(fsck["snapshot_problem"].get<std::string>().find("Corruption"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " fsck --state " + state + " --json", &out), 1) << "fsck without --repair changed the state";
  ASSERT_EQ(RunCommand(Mnemo() + " fsck --state " + state + " --repair --json", &out), 0) << out;
  EXPECT_TRUE(json::parse(out)["repaired"].get<bool>()) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " fsck --state " + state + " --json", &out), 0) << out;
  EXPECT_TRUE(json::parse(out)["consistent"].get<bool>()) << out;
}

TEST_F(CliTest, AuditWritesReportsAndExposureRanksAStoredSecret) {
  ScratchDir d;
  const std::string state = d.File("state");
  std::string out;
  ASSERT_EQ(RunCommand(Mnemo() + " init --state " + state + " --model " + Model(), &out), 0) << out;
  ASSERT_EQ(RunCommand(Mnemo() + " facts add --state " + state + " --text 'The river code is 731942.' --json", &out), 0)
      << out;
  const int64_t id = json::parse(out)["id"];
  // Bad options: a clear message and exit 2, nothing written.
  EXPECT_EQ(RunCommand(Mnemo() + " audit --state " + state + " --out " + d.File("bad") + " --repetitions 1,x 2>&1", &out), 2);
  EXPECT_NE(out.find("--repetitions"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " audit --state " + state + " --out " + d.File("bad") + " --canaries 0 2>&1", &out), 2);
  EXPECT_NE(out.find("canaries"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(d.File("bad/report.json")));

  ASSERT_EQ(RunCommand(Mnemo() + " audit --state " + state + " --out " + d.File("audit") +
                           " --canaries 1 --references 15 --repetitions 1,4 --members 10 --extraction-prefixes 4"
                           " --extraction-samples 3 --forgetting 0,5 --finetune-steps 5 --k 8 2>/dev/null", &out), 0)
      << out;
  EXPECT_NE(out.find("MATCHES the rebuilt memory bit for bit"), std::string::npos) << out;
  EXPECT_NE(out.find("report.html"), std::string::npos) << out;
  std::string text;
  ASSERT_TRUE(ReadFileToString(d.File("audit/report.json"), &text).ok());
  const json report = json::parse(text);
  EXPECT_EQ(report["format"], "mnemo-audit/1");
  EXPECT_EQ(report["config"]["state"]["facts"], 1);
  EXPECT_EQ(report["config"]["knn"]["nprobe"], 8);
  EXPECT_TRUE(std::filesystem::exists(d.File("audit/report.html")));
  EXPECT_FALSE(std::filesystem::exists(d.File("audit/.audit-scratch")));
  ASSERT_EQ(RunCommand(Mnemo() + " facts ls --state " + state + " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["facts"].size(), 1u);  // the live state is unchanged

  ASSERT_EQ(RunCommand(Mnemo() + " exposure --state " + state + " --fact " + std::to_string(id) +
                           " --secret 731942 --references 63 --k 8 --lambda 0.9 --knn-temperature 0.1 --json", &out), 0)
      << out;
  const json e = json::parse(out);
  EXPECT_DOUBLE_EQ(e["knn_lm"]["rank_exposure"].get<double>(), 6.0);  // first of 64
  EXPECT_LT(e["base_lm"]["rank_exposure"].get<double>(), 6.0);
  EXPECT_EQ(RunCommand(Mnemo() + " exposure --state " + state + " --fact " + std::to_string(id) +
                           " --secret 999999 2>&1", &out), 2);
  EXPECT_NE(out.find("does not occur"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(Mnemo() + " exposure --state " + state + " --text 'a b c' --secret ' ' 2>&1", &out), 2);
  EXPECT_NE(out.find("no digit or letter"), std::string::npos) << out;
}

}  // namespace
}  // namespace mnemo
