// Validity of the leakage measures on a tiny model: an inserted canary is exposed under kNN-LM and its
// exposure after deletion is exactly that of a never-inserted one; membership inference is at chance for
// two unseen sets and separates stored facts from unseen ones; stored facts become extractable.
#include "eval/leakage.h"

#include <gtest/gtest.h>

#include "eval/roc.h"
#include "memory/fact_store.h"
#include "retriever/fact_encoder.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using testing::RunCommand;
using testing::ScratchDir;

class LeakageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir_->path(), /*steps=*/40));
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    ASSERT_TRUE(LoadLanguageModel(dir_->File("model"), &model_).ok());
    std::string out;
    ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " init --state " + scratch_.File("state") + " --model " +
                             dir_->File("model"), &out), 0) << out;
    ASSERT_TRUE(FactStore::Open(scratch_.File("state"), FactStoreOptions(), &store_).ok());
    knn_.memory = store_.get();
    knn_.model = model_.get();
    knn_.knn.k = 8;
    knn_.knn.lambda = 0.5;
    base_.model = model_.get();
  }

  std::vector<int64_t> Add(const std::vector<std::string>& texts) {
    std::vector<FactText> facts;
    for (const auto& t : texts) facts.push_back({t, "", ""});
    std::vector<NewFact> encoded;
    EXPECT_TRUE(EncodeFacts(*model_, facts, {}, &encoded).ok());
    std::vector<int64_t> ids;
    EXPECT_TRUE(store_->Add(encoded, &ids).ok());
    return ids;
  }

  static ScratchDir* dir_;
  ScratchDir scratch_;
  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<FactStore> store_;
  ScoredModel knn_, base_;
};
ScratchDir* LeakageTest::dir_ = nullptr;

TEST_F(LeakageTest, InsertedCanaryIsExposedAndDeletionRestoresNeverInsertedExposure) {
  CanaryFormat format;
  std::mt19937_64 rng(42);
  const std::string secret = format.RandomSecret(rng);
  const int references = 127;  // rank exposure at most log2(128) = 7 bits
  ExposureResult before, inserted, base, after;
  ASSERT_TRUE(CanaryExposure(knn_, format, "alice", secret, references, 1, &before).ok());
  const auto ids = Add({format.Render("alice", secret, nullptr)});
  ASSERT_TRUE(CanaryExposure(knn_, format, "alice", secret, references, 1, &inserted).ok());
  ASSERT_TRUE(CanaryExposure(base_, format, "alice", secret, references, 1, &base).ok());
  ASSERT_TRUE(store_->Delete(ids, nullptr).ok());
  ASSERT_TRUE(CanaryExposure(knn_, format, "alice", secret, references, 1, &after).ok());
  std::printf("exposure (rank / extrapolated bits): never inserted %.2f / %.2f, inserted kNN-LM %.2f / %.2f, "
              "inserted base LM %.2f / %.2f, after deletion %.2f / %.2f\n",
              before.rank_exposure, before.extrapolated_exposure, inserted.rank_exposure, inserted.extrapolated_exposure,
              base.rank_exposure, base.extrapolated_exposure, after.rank_exposure, after.extrapolated_exposure);
  EXPECT_DOUBLE_EQ(inserted.rank_exposure, 7.0);  // ranked first among 128
  EXPECT_GT(inserted.extrapolated_exposure, 12.0);
  EXPECT_LT(inserted.canary_bits, before.canary_bits - 10);
  // The datastore holds the canary, not the model: the base LM is unaffected by the insertion.
  ExposureResult base_before;
  ASSERT_TRUE(CanaryExposure(base_, format, "alice", secret, references, 1, &base_before).ok());
  EXPECT_EQ(base.canary_bits, base_before.canary_bits);
  // Deletion is exact: the same numbers as before insertion, bit for bit.
  EXPECT_EQ(after.canary_bits, before.canary_bits);
  EXPECT_EQ(after.rank_exposure, before.rank_exposure);
  EXPECT_EQ(after.extrapolated_exposure, before.extrapolated_exposure);
}

TEST_F(LeakageTest, MembershipInferenceIsAtChanceForUnseenSetsAndSeparatesStoredFacts) {
  std::mt19937_64 rng(7);
  const char* nouns[] = {"cat", "bridge", "sailor", "lantern", "river", "garden", "tower", "king"};
  const char* verbs[] = {"sees", "finds", "keeps", "paints", "guards", "loses"};
  auto sentence = [&] {
    return std::string("The ") + nouns[rng() % 8] + " " + verbs[rng() % 6] + " the " + nouns[rng() % 8] + " number " +
           std::to_string(rng() % 100000) + ".";
  };
  std::vector<std::string> members, non_members;
  for (int i = 0; i < 60; ++i) members.push_back(sentence()), non_members.push_back(sentence());
  auto loss_scores = [&](const std::vector<std::string>& texts) {
    std::vector<double> s;
    for (const auto& t : texts) {
      MembershipScores m;
      EXPECT_TRUE(ScoreMembership(knn_, t, &m).ok());
      s.push_back(m.loss);
    }
    return s;
  };
  double unseen_auc = 0, stored_auc = 0;
  ASSERT_TRUE(RocAuc(loss_scores(members), loss_scores(non_members), &unseen_auc).ok());
  Add(members);
  ASSERT_TRUE(RocAuc(loss_scores(members), loss_scores(non_members), &stored_auc).ok());
  std::printf("LOSS AUC: both unseen %.3f, members stored %.3f\n", unseen_auc, stored_auc);
  EXPECT_NEAR(unseen_auc, 0.5, 0.15);
  EXPECT_GT(stored_auc, 0.95);
}

TEST_F(LeakageTest, StoredFactBecomesExtractable) {
  const std::string fact = "The golden lantern guards the river number 48213.";
  bool before = true, stored = false, base = true;
  ASSERT_TRUE(IsExtractable(knn_, fact, 4, &before).ok());
  Add({fact});
  // With k = 1 the nearest entry alone is p_kNN: the aggressive setting under which a store leaks most.
  knn_.knn.k = 1;
  knn_.knn.lambda = 0.9;
  ASSERT_TRUE(IsExtractable(knn_, fact, 4, &stored).ok());
  ASSERT_TRUE(IsExtractable(base_, fact, 4, &base).ok());
  EXPECT_FALSE(before);
  EXPECT_TRUE(stored);
  EXPECT_FALSE(base);
}

}  // namespace
}  // namespace mnemo
