// StateService: one owner for a state opened with its model (creation, the fingerprint check, encode-then-
// commit of fact texts, deletion evidence), and FactStore::FindTraces, the structural half of that evidence.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "lm/checkpoint.h"
#include "memory/fact_store.h"
#include "retriever/state_service.h"
#include "tests/fact_store_fixture.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

// A tiny model saved as a checkpoint directory (seeded: the same weights for the same seed).
void SaveTinyModel(const std::string& dir, uint64_t seed) {
  const auto& tok = testing::ToyTokenizer();
  Gpt net = testing::TinyGpt(tok.vocab_size(), seed);
  ASSERT_TRUE(SaveCheckpoint(dir, net, &tok).ok());
}

class StateServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(SaveTinyModel(dir_.File("model"), 7));
    ASSERT_TRUE(StateService::Create(dir_.File("state"), dir_.File("model"), "", &config_).ok());
  }
  std::unique_ptr<StateService> Open() {
    std::unique_ptr<StateService> state;
    Status s = StateService::Open(dir_.File("state"), StateOptions(), &state);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return state;
  }

  ScratchDir dir_;
  StateConfig config_;
};

TEST_F(StateServiceTest, CreateRecordsTheModelAndOpenLoadsIt) {
  EXPECT_EQ(config_.model_path, std::filesystem::canonical(dir_.File("model")).string());
  EXPECT_EQ(config_.dim, 32);
  StateConfig read;
  ASSERT_TRUE(ReadStateConfig(dir_.File("state"), &read).ok());
  EXPECT_EQ(read.model_fingerprint, config_.model_fingerprint);
  auto state = Open();
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(ModelFingerprint(state->model().net), config_.model_fingerprint);
  EXPECT_EQ(state->store().size(), 0);
  // A second state in the same directory is refused.
  EXPECT_TRUE(StateService::Create(dir_.File("state"), dir_.File("model"), "", nullptr).IsInvalidArgument());
}

TEST_F(StateServiceTest, AddFactsEncodesThenCommits) {
  auto state = Open();
  ASSERT_NE(state, nullptr);
  std::vector<int64_t> ids;
  ASSERT_TRUE(state->AddFacts({{"the cat sat on the mat", "c1", ""}, {"a dog ran in the park", "", "{\"k\":1}"}},
                              &ids).ok());
  ASSERT_EQ(ids.size(), 2u);
  FactRecord first;
  ASSERT_TRUE(state->store().Get(ids[0], true, &first).ok());
  EXPECT_EQ(first.client_id, "c1");
  const auto tokens = state->model().tokenizer->Encode("the cat sat on the mat");
  EXPECT_EQ(first.num_tokens, static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(state->store().fact_entries(), first.num_tokens - 1 + static_cast<int64_t>(
      state->model().tokenizer->Encode("a dog ran in the park").size()) - 1);
  // Copies are separate facts with the same entries (the audit's repeated canaries).
  std::vector<int64_t> copies;
  ASSERT_TRUE(state->AddFacts({{"the cat sat on the mat", "", ""}}, &copies, 3).ok());
  ASSERT_EQ(copies.size(), 3u);
  FactRecord copy;
  ASSERT_TRUE(state->store().Get(copies[2], true, &copy).ok());
  EXPECT_EQ(copy.keys, first.keys);
  EXPECT_EQ(copy.tokens, first.tokens);
  // A text too short to give an entry is refused and nothing is added.
  const int64_t before = state->store().fact_entries();
  std::vector<int64_t> none;
  EXPECT_TRUE(state->AddFacts({{"a dog ran in the park", "", ""}, {"x", "", ""}}, &none).IsInvalidArgument());
  EXPECT_EQ(state->store().fact_entries(), before);
  EXPECT_TRUE(state->AddFacts({{"a dog ran in the park", "", ""}}, &none, 0).IsInvalidArgument());
  EXPECT_EQ(state->store().fact_entries(), before);
}

TEST_F(StateServiceTest, AnotherModelIsRefusedWithTheReason) {
  // The model directory's weights changed after the state was made.
  ASSERT_NO_FATAL_FAILURE(SaveTinyModel(dir_.File("model"), 8));
  std::unique_ptr<StateService> state;
  Status s = StateService::Open(dir_.File("state"), StateOptions(), &state);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("model changed since the state was made"), std::string::npos) << s.ToString();
  // A model the caller holds is checked the same way.
  std::unique_ptr<LanguageModel> other;
  ASSERT_TRUE(LoadLanguageModel(dir_.File("model"), &other).ok());
  s = StateService::OpenWithModel(dir_.File("state"), other.get(), StateOptions(), &state);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

TEST_F(StateServiceTest, ADatastoreOfAnotherModelIsRefusedBeforeTheStateIsWritten) {
  // The fixture's datastore records another model's fingerprint.
  ASSERT_TRUE(testing::MakeState(dir_.File("unused"), dir_.File("ds"), 64, "Flat").ok());
  Status s = StateService::Create(dir_.File("state2"), dir_.File("model"), dir_.File("ds"), nullptr);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_.File("state2/state.json")));
}

TEST_F(StateServiceTest, DeletionEvidenceAndTheTracesItChecks) {
  auto state = Open();
  ASSERT_NE(state, nullptr);
  const std::string text = "the harbour master is ada";
  std::vector<int64_t> ids;
  ASSERT_TRUE(state->AddFacts({{text, "", ""}, {"the cat sat on the mat", "", ""}}, &ids).ok());
  FactTraces traces;
  EXPECT_EQ(state->store().FindTraces(ids[0], &text, &traces).code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(state->store().FindTraces(999, nullptr, &traces).IsNotFound());

  // A snapshot holds the fact; keep a copy of that file, as an attacker or a careless backup would.
  ASSERT_TRUE(state->store().Checkpoint().ok());
  ASSERT_EQ(state->store().SnapshotPaths().size(), 1u);
  const std::string snapshot = state->store().SnapshotPaths()[0];
  std::string bytes;
  ASSERT_TRUE(ReadFileToString(snapshot, &bytes).ok());

  ASSERT_TRUE(state->store().Delete({ids[0]}, nullptr).ok());
  DeletionVerdict v;
  ASSERT_TRUE(state->VerifyDeleted(ids[0], &text, KnnOptions(), &v).ok());
  EXPECT_TRUE(v.passed) << v.reason;
  EXPECT_TRUE(v.traces.clean());
  EXPECT_TRUE(v.traces.tombstone);
  EXPECT_TRUE(v.traces.text_checked);
  EXPECT_EQ(v.traces.snapshots_holding, 0);
  EXPECT_TRUE(v.probed);
  EXPECT_GT(v.probes, 0);
  EXPECT_EQ(v.neighbors_from_fact, 0);

  // The old snapshot put back: the traces find it and the verdict fails, naming it.
  testing::WriteFileOrDie(snapshot, bytes);
  ASSERT_TRUE(state->store().FindTraces(ids[0], nullptr, &traces).ok());
  EXPECT_FALSE(traces.text_checked);
  EXPECT_GE(traces.snapshots_checked, 1);
  EXPECT_EQ(traces.snapshots_holding, 1);
  EXPECT_FALSE(traces.clean());
  ASSERT_TRUE(state->VerifyDeleted(ids[0], nullptr, KnnOptions(), &v).ok());
  EXPECT_FALSE(v.passed);
  EXPECT_EQ(v.reason, "a snapshot file still holds entries of the fact");
}

// verify-deleted compares the live memory with one rebuilt from the database: adds and deletes of other
// facts meanwhile must not make the two differ (they wait for the comparison).
TEST_F(StateServiceTest, VerificationIsNotFooledByConcurrentWrites) {
  auto state = Open();
  ASSERT_NE(state, nullptr);
  const std::string text = "the harbour master is ada";
  std::vector<int64_t> ids;
  ASSERT_TRUE(state->AddFacts({{text, "", ""}}, &ids).ok());
  const int64_t gone = ids[0];
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(state->AddFacts({{"the harbour cat " + std::to_string(i), "", ""}}, &ids).ok());
  ASSERT_TRUE(state->store().Delete({gone}, nullptr).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      std::vector<int64_t> added;
      if (!state->AddFacts({{"the harbour master's dog " + std::to_string(i), "", ""}}, &added).ok()) break;
      if (!state->store().Delete(added, nullptr).ok()) break;
      writes += 2;
    }
  });
  for (int round = 0; round < 6; ++round) {
    DeletionVerdict v;
    ASSERT_TRUE(state->VerifyDeleted(gone, &text, KnnOptions(), &v).ok());
    EXPECT_TRUE(v.passed) << "round " << round << ": " << v.reason;
    EXPECT_EQ(v.neighbors_differing, 0);
  }
  stop = true;
  writer.join();
  EXPECT_GT(writes.load(), 0);  // the writes did run beside the verifications
}

}  // namespace
}  // namespace mnemo
