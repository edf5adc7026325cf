// The action log (FactDb::LogAction/ListActions, facts logged in their own transactions) and the names of
// API keys it records as actors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "api/api_keys.h"
#include "memory/fact_db.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

constexpr int kDim = 4;

NewFact MakeFact(const std::string& text, int n) {
  NewFact f;
  f.text = text;
  for (int i = 0; i < n; ++i) f.tokens.push_back(100 + i);
  for (int i = 0; i < (n - 1) * kDim; ++i) f.keys.push_back(static_cast<uint16_t>(0x3c00 + i));
  return f;
}

ActionRecord Action(const std::string& actor, const std::string& action, std::vector<std::string> ids = {},
                    const std::string& detail = "{}") {
  ActionRecord a;
  a.actor = actor;
  a.action = action;
  a.ids = std::move(ids);
  a.detail_json = detail;
  return a;
}

class ActionLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(FactDb::Open(dir_.File("facts.db"), &db_).ok());
    ASSERT_TRUE(db_->SetKeyDim(kDim).ok());
  }
  std::vector<ActionRecord> List(ActionQuery q = ActionQuery()) {
    std::vector<ActionRecord> out;
    int64_t next = 0;
    Status s = db_->ListActions(q, &out, &next);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }
  ScratchDir dir_;
  std::unique_ptr<FactDb> db_;
};

TEST_F(ActionLogTest, AddsAndDeletesAreLoggedWithTheirIdsInTheirTransaction) {
  std::vector<int64_t> ids;
  int64_t seq = 0;
  const ActionRecord add = Action("ops", "facts.add", {"ignored: the log names the new ids"});
  ASSERT_TRUE(db_->Insert({MakeFact("Ada keeps the ledger", 5), MakeFact("Bo rows", 3)}, &ids, &seq, &add).ok());
  // A batch that fails validation writes neither facts nor a log entry.
  EXPECT_FALSE(db_->Insert({MakeFact("ok", 3), MakeFact("too short", 1)}, &ids, &seq, &add).ok());
  std::vector<FactRecord> deleted;
  const ActionRecord del = Action("ops", "facts.delete");
  ASSERT_TRUE(db_->Delete({ids[1], 999}, &deleted, &seq, &del).ok());
  ASSERT_TRUE(db_->Delete({999}, &deleted, &seq, &del).ok());  // nothing deleted: nothing logged

  const auto log = List();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].action, "facts.add");
  EXPECT_EQ(log[0].actor, "ops");
  EXPECT_EQ(log[0].ids, (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[1])}));
  EXPECT_EQ(log[1].action, "facts.delete");
  EXPECT_EQ(log[1].ids, std::vector<std::string>{std::to_string(ids[1])});
  EXPECT_LT(log[0].seq, log[1].seq);
  EXPECT_GT(log[0].at_ms, 0);
  EXPECT_LE(log[0].at_ms, log[1].at_ms);
  EXPECT_EQ(log[1].detail_json, "{}");

  // The log holds no fact text; reopening keeps it.
  db_.reset();
  std::string bytes;
  ASSERT_TRUE(ReadFileToString(dir_.File("facts.db"), &bytes).ok());
  EXPECT_EQ(bytes.find("Bo rows"), std::string::npos);
  ASSERT_TRUE(FactDb::Open(dir_.File("facts.db"), &db_).ok());
  EXPECT_EQ(List().size(), 2u);
}

TEST_F(ActionLogTest, FiltersAndPages) {
  int64_t seq = 0;
  ASSERT_TRUE(db_->LogAction(Action("a", "facts.add", {"1", "2"}), &seq).ok());
  ASSERT_TRUE(db_->LogAction(Action("b", "facts.delete", {"2"}), nullptr).ok());
  ASSERT_TRUE(db_->LogAction(Action("a", "factsx.other", {"2"}), nullptr).ok());
  ASSERT_TRUE(db_->LogAction(Action("b", "memories.documents.delete", {"3/2"}, R"({"tokens": 7})"), nullptr).ok());
  EXPECT_EQ(seq, 1);

  ActionQuery q;
  q.action = "facts";  // the action and those under it, not every action that starts with the letters
  auto got = List(q);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].action, "facts.delete");
  q = ActionQuery();
  q.id = "2";  // exact id, not a substring ("3/2" is another id)
  EXPECT_EQ(List(q).size(), 3u);
  q.actor = "b";
  ASSERT_EQ(List(q).size(), 1u);
  q = ActionQuery();
  q.action = "memories.documents.delete";
  got = List(q);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(got[0].detail_json)["tokens"], 7);

  q = ActionQuery();
  q.limit = 3;
  std::vector<ActionRecord> page;
  int64_t next = 0;
  ASSERT_TRUE(db_->ListActions(q, &page, &next).ok());
  EXPECT_EQ(page.size(), 3u);
  EXPECT_EQ(next, page.back().seq);
  q.after_seq = next;
  ASSERT_TRUE(db_->ListActions(q, &page, &next).ok());
  EXPECT_EQ(page.size(), 1u);
  EXPECT_EQ(next, 0);
}

TEST_F(ActionLogTest, BadEntriesAndQueriesAreInvalidArgument) {
  EXPECT_EQ(db_->LogAction(Action("", "facts.add"), nullptr).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(db_->LogAction(Action("a", ""), nullptr).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(db_->LogAction(Action("a", "x", {}, "[1]"), nullptr).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(db_->LogAction(Action("a", "x", {}, "{"), nullptr).code(), Status::Code::kInvalidArgument);
  // An insert whose log entry is bad is refused whole.
  std::vector<int64_t> ids;
  int64_t seq = 0;
  const ActionRecord bad = Action("", "facts.add");
  EXPECT_EQ(db_->Insert({MakeFact("text", 3)}, &ids, &seq, &bad).code(), Status::Code::kInvalidArgument);
  int64_t count = -1;
  ASSERT_TRUE(db_->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 0);
  std::vector<ActionRecord> out;
  int64_t next = 0;
  for (int64_t limit : {0, 1001}) {
    ActionQuery q;
    q.limit = limit;
    EXPECT_EQ(db_->ListActions(q, &out, &next).code(), Status::Code::kInvalidArgument);
  }
  EXPECT_TRUE(List().empty());
}

TEST_F(ActionLogTest, ReadingWhileAWriterHasTheDatabaseOpen) {
  ASSERT_TRUE(db_->LogAction(Action("ops", "facts.add", {"1"}), nullptr).ok());
  std::unique_ptr<FactDb> reader;
  ASSERT_TRUE(FactDb::OpenForReading(dir_.File("facts.db"), &reader).ok());
  std::vector<ActionRecord> out;
  int64_t next = 0;
  ASSERT_TRUE(reader->ListActions(ActionQuery(), &out, &next).ok());
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(db_->LogAction(Action("ops", "facts.delete", {"1"}), nullptr).ok());  // the writer goes on
  ASSERT_TRUE(reader->ListActions(ActionQuery(), &out, &next).ok());
  EXPECT_EQ(out.size(), 2u);
  EXPECT_FALSE(reader->LogAction(Action("ops", "x"), nullptr).ok());  // it cannot write
  EXPECT_TRUE(FactDb::OpenForReading(dir_.File("absent.db"), &reader).IsNotFound());
}

TEST(ApiKeysTest, NamesAreReadOrDerivedAndCheckedAndTheKeyFindsItsName) {
  ScratchDir dir;
  testing::WriteFileOrDie(dir.File("keys"), "# keys\nread read-key-0123456789abcdef dashboard\n"
                                            "admin admin-key-0123456789abcdef\n");
  ApiKeys keys;
  ASSERT_TRUE(ApiKeys::Load(dir.File("keys"), &keys).ok());
  std::string name = "x";
  EXPECT_EQ(keys.Authenticate("read-key-0123456789abcdef", &name), Role::kRead);
  EXPECT_EQ(name, "dashboard");
  EXPECT_EQ(keys.Authenticate("admin-key-0123456789abcdef", &name), Role::kAdmin);
  EXPECT_EQ(name, "admin-3");  // unnamed: its role and line
  EXPECT_EQ(keys.Authenticate("wrong-key-0123456789abcdef", &name), Role::kNone);
  EXPECT_EQ(name, "");
  for (const char* bad : {"read read-key-0123456789abcdef bad/name\n",
                          "read read-key-0123456789abcdef a b\n",
                          "read read-key-0123456789abcdef read-key-0123456789abcdef\n",
                          "read read-key-0123456789abcdef same\nadmin admin-key-0123456789abcdef same\n"}) {
    testing::WriteFileOrDie(dir.File("bad"), bad);
    Status s = ApiKeys::Load(dir.File("bad"), &keys);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("bad:"), std::string::npos) << s.ToString();
  }
}

}  // namespace
}  // namespace mnemo
