// `mnemo memory create|read|ls|rm|verify-deleted --state`: a state's memories from the command line.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lm/documents.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using nlohmann::json;
using testing::ScratchDir;
using testing::WriteFileOrDie;

TEST(MemoryStateCliTest, CreateReadListDeleteVerify) {
  ScratchDir dir;
  std::string docs;
  for (int d = 0; d < 3; ++d) {
    Document doc;
    doc.source = "doc" + std::to_string(d);
    doc.text = testing::ToyCorpus().substr(static_cast<size_t>(d) * 700, 400);
    docs += DocumentJsonLine(doc);
  }
  WriteFileOrDie(dir.File("docs.jsonl"), docs);
  ASSERT_TRUE(testing::ToyTokenizer().Save(dir.File("tok")).ok());
  const std::string bin = MNEMO_BINARY;
  std::string out;
  ASSERT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("docs.jsonl") + " --valid-documents " +
                                    dir.File("docs.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("m") + " --config tiny --steps 1 --batch-size 2 --seq-len 16 "
                                    "--eval-tokens 32 --memory-layer 1 --memory-size 32 --quiet --json",
                                &out, true),
            0)
      << out;
  const std::string state = " --state " + dir.File("s");
  ASSERT_EQ(testing::RunCommand(bin + " init" + state + " --model " + dir.File("m"), &out, true), 0) << out;

  ASSERT_EQ(testing::RunCommand(bin + " memory create" + state + " --name notes --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["id"], 1);
  EXPECT_EQ(json::parse(out)["policy"], "unbounded");
  ASSERT_EQ(testing::RunCommand(bin + " memory read" + state + " --memory 1 --documents " + dir.File("docs.jsonl") +
                                    " --json",
                                &out),
            0)
      << out;
  const json read = json::parse(out);
  ASSERT_EQ(read.size(), 3u);
  int64_t total = 0;
  for (const json& d : read) total += d["tokens"].get<int64_t>();
  EXPECT_EQ(read[1]["metadata"]["source"], "doc1");

  ASSERT_EQ(testing::RunCommand(bin + " memory ls" + state + " --json", &out), 0) << out;
  json ls = json::parse(out);
  ASSERT_EQ(ls["data"].size(), 1u);
  EXPECT_EQ(ls["data"][0]["documents"], 3);
  EXPECT_EQ(ls["data"][0]["stored_tokens"], total);
  ASSERT_EQ(testing::RunCommand(bin + " memory ls" + state + " --memory 1 --limit 2 --json", &out), 0) << out;
  ls = json::parse(out);
  EXPECT_EQ(ls["data"].size(), 2u);
  EXPECT_EQ(ls["next_after"], 2);

  // A live document cannot be "verified deleted"; delete it, then the evidence passes with its text.
  const std::string text = testing::ToyCorpus().substr(700, 400);
  WriteFileOrDie(dir.File("doc1.txt"), text);
  EXPECT_EQ(testing::RunCommand(bin + " memory verify-deleted" + state + " --memory 1 --document 2", &out, true), 1)
      << out;
  EXPECT_NE(out.find("still stored"), std::string::npos) << out;
  ASSERT_EQ(testing::RunCommand(bin + " memory rm" + state + " --memory 1 --document 2 --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["deleted"], true);
  ASSERT_EQ(testing::RunCommand(bin + " memory verify-deleted" + state + " --memory 1 --document 2 --text-file " +
                                    dir.File("doc1.txt") + " --json",
                                &out),
            0)
      << out;
  const json v = json::parse(out);
  EXPECT_EQ(v["passed"], true);
  EXPECT_EQ(v["probe"]["max_abs_logprob_diff_vs_rebuilt"], 0.0);
  EXPECT_EQ(v["probe"]["state_files_with_content"], 0);
  ASSERT_EQ(testing::RunCommand(bin + " memory ls" + state + " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["data"][0]["documents"], 2);

  // Bad input: a clear message, a non-zero exit, nothing changed.
  EXPECT_NE(testing::RunCommand(bin + " memory read" + state + " --memory 9 --text hello", &out, true), 0);
  EXPECT_NE(out.find("no memory 9"), std::string::npos) << out;
  EXPECT_NE(testing::RunCommand(bin + " memory read" + state + " --memory 1 --text hello --metadata '[1]'", &out, true), 0);
  EXPECT_NE(out.find("metadata"), std::string::npos) << out;
  EXPECT_NE(testing::RunCommand(bin + " memory rm" + state + " --memory 1 --document 99", &out, true), 0);
  EXPECT_NE(testing::RunCommand(bin + " memory create" + state + " --capacity -5", &out, true), 0);
  ASSERT_EQ(testing::RunCommand(bin + " memory ls" + state + " --json", &out), 0) << out;
  ls = json::parse(out);
  EXPECT_EQ(ls["data"].size(), 1u);
  EXPECT_EQ(ls["data"][0]["documents"], 2);

  // fsck checks the memories: the database and every ring against a rebuild from it.
  ASSERT_EQ(testing::RunCommand(bin + " fsck" + state + " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["memories_check"], "ok") << out;

  // Deleting the memory deletes its documents.
  ASSERT_EQ(testing::RunCommand(bin + " memory rm" + state + " --memory 1 --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["documents_deleted"], 2);
  ASSERT_EQ(testing::RunCommand(bin + " memory ls" + state + " --json", &out), 0) << out;
  EXPECT_EQ(json::parse(out)["data"].size(), 0u);
}

TEST(MemoryStateCliTest, ModelWithoutMemoryLayerIsRefused) {
  ScratchDir dir;
  ASSERT_TRUE(testing::ToyTokenizer().Save(dir.File("tok")).ok());
  Document doc;
  doc.text = testing::ToyCorpus().substr(0, 400);
  WriteFileOrDie(dir.File("docs.jsonl"), DocumentJsonLine(doc) + DocumentJsonLine(doc));
  const std::string bin = MNEMO_BINARY;
  std::string out;
  ASSERT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("docs.jsonl") + " --valid-documents " +
                                    dir.File("docs.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("m") + " --config tiny --steps 1 --batch-size 2 --seq-len 16 "
                                    "--eval-tokens 32 --quiet --json",
                                &out, true),
            0)
      << out;
  ASSERT_EQ(testing::RunCommand(bin + " init --state " + dir.File("s") + " --model " + dir.File("m"), &out, true), 0)
      << out;
  EXPECT_NE(testing::RunCommand(bin + " memory create --state " + dir.File("s"), &out, true), 0);
  EXPECT_NE(out.find("memory layer"), std::string::npos) << out;
}

}  // namespace
}  // namespace mnemo
