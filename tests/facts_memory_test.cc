// The facts memory: with a memory layer, every runtime fact is also a document of the state's "facts"
// memory; deleting the fact (by any path) deletes it there, and opening the state reconciles the two.
#include <gtest/gtest.h>

#include <filesystem>

#include "lm/checkpoint.h"
#include "memory/layer_memories.h"
#include "retriever/state_service.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

// fact id -> number of facts-memory documents.
std::map<int64_t, int> FactDocs(LayerMemories& memories) {
  std::vector<std::pair<int64_t, int64_t>> docs;
  EXPECT_TRUE(memories.FactDocuments(&docs).ok());
  std::map<int64_t, int> out;
  for (const auto& [doc, fact] : docs) ++out[fact];
  return out;
}

TEST(FactsMemoryTest, FactsFollowAddsDeletesAndReopen) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.File("model"));
  ASSERT_NO_FATAL_FAILURE(testing::SaveRandomTinyModel(dir.File("model"), 5, true));
  ASSERT_TRUE(StateService::Create(dir.File("s"), dir.File("model"), "", nullptr).ok());
  const std::vector<FactText> facts = {{"The harbour master keeps the blue ledger.", "", ""},
                                       {"Seven gulls rest on the north pier.", "", ""},
                                       {"The lighthouse lamp was replaced in spring.", "", ""}};
  std::vector<int64_t> ids;
  int64_t facts_memory = 0;
  {
    std::unique_ptr<StateService> state;
    ASSERT_TRUE(StateService::Open(dir.File("s"), StateOptions(), &state).ok());
    // No facts yet: no facts memory either (memory ids stay the user's).
    ASSERT_TRUE(state->memories()->FactsMemory(false, &facts_memory).ok());
    EXPECT_EQ(facts_memory, 0);
    ASSERT_TRUE(state->AddFacts(facts, &ids).ok());
    ASSERT_TRUE(state->memories()->FactsMemory(false, &facts_memory).ok());
    ASSERT_GT(facts_memory, 0);
    EXPECT_EQ(FactDocs(*state->memories()), (std::map<int64_t, int>{{ids[0], 1}, {ids[1], 1}, {ids[2], 1}}));
    MemoryInfo info;
    ASSERT_TRUE(state->memories()->Get(facts_memory, &info).ok());
    EXPECT_EQ(info.name, "facts");
    EXPECT_EQ(info.capacity, 0);

    // Clients cannot write to it or delete from it directly.
    NewMemoryDocument doc;
    MemoryDocument out;
    ASSERT_TRUE(state->DocumentPairs("hello there", &doc.tokens, &doc.keys, &doc.values).ok());
    EXPECT_EQ(state->memories()->AddDocument(facts_memory, doc, &out, nullptr).code(), Status::Code::kFailedPrecondition);
    std::vector<MemoryDocument> page;
    int64_t next = 0;
    ASSERT_TRUE(state->memories()->ListDocuments(facts_memory, 0, 10, &page, &next).ok());
    ASSERT_EQ(page.size(), 3u);
    EXPECT_EQ(state->memories()->DeleteDocument(facts_memory, page[0].id, nullptr).code(),
              Status::Code::kFailedPrecondition);
    EXPECT_EQ(state->memories()->Delete(facts_memory, nullptr).code(), Status::Code::kFailedPrecondition);

    // Deleting a fact through the store deletes its document; verify-deleted covers both.
    std::vector<FactRecord> deleted;
    ASSERT_TRUE(state->store().Delete({ids[1]}, &deleted).ok());
    ASSERT_EQ(deleted.size(), 1u);
    EXPECT_EQ(FactDocs(*state->memories()), (std::map<int64_t, int>{{ids[0], 1}, {ids[2], 1}}));
    DeletionVerdict verdict;
    ASSERT_TRUE(state->VerifyDeleted(ids[1], &facts[1].text, KnnOptions(), &verdict).ok());
    EXPECT_TRUE(verdict.passed) << verdict.reason;
    EXPECT_EQ(verdict.facts_memory_documents, 0);
    ASSERT_TRUE(state->Close().ok());
  }
  // A crash between the two databases, simulated on the memories side: a document of a deleted fact and a
  // live fact without one. Opening the state reconciles them.
  {
    LayerMemoriesOptions o;
    LanguageModel m;
    ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&m));
    o.heads = m.config.n_head;
    o.head_dim = m.config.head_dim();
    std::unique_ptr<LayerMemories> memories;
    ASSERT_TRUE(LayerMemories::Open(dir.File("s") + "/memories.db", o, &memories).ok());
    std::vector<int32_t> tokens = {1, 2, 3};
    NewMemoryDocument stale;
    stale.text = "stale copy";
    stale.tokens = tokens;
    stale.keys.assign(static_cast<size_t>(o.heads * 3 * o.head_dim), 0.5f);
    stale.values = stale.keys;
    std::vector<NewMemoryDocument> docs = {stale};
    ASSERT_TRUE(memories->AddFactDocuments({ids[1]}, &docs).ok());  // the deleted fact comes back here...
    int64_t removed = 0;
    ASSERT_TRUE(memories->DeleteFactDocuments(ids[2], &removed).ok());  // ...and a live one loses its copy
    EXPECT_EQ(removed, 1);
  }
  {
    std::unique_ptr<StateService> state;
    ASSERT_TRUE(StateService::Open(dir.File("s"), StateOptions(), &state).ok());
    EXPECT_EQ(FactDocs(*state->memories()), (std::map<int64_t, int>{{ids[0], 1}, {ids[2], 1}}));
    DeletionVerdict verdict;
    ASSERT_TRUE(state->VerifyDeleted(ids[1], nullptr, KnnOptions(), &verdict).ok());
    EXPECT_EQ(verdict.facts_memory_documents, 0);
    std::string problems;
    ASSERT_TRUE(state->memories()->Check(&problems).ok());
    EXPECT_EQ(problems, "");
  }
}

}  // namespace
}  // namespace mnemo
