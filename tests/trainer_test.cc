// Training: the loss falls on a toy corpus, runs are deterministic, and a resumed run equals an
// uninterrupted one.
#include "lm/trainer.h"

#include <gtest/gtest.h>

#include "lm/checkpoint.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteFileOrDie(data_.File("train.txt"), testing::ToyCorpus());
    testing::WriteFileOrDie(data_.File("valid.txt"), testing::ToyCorpus().substr(0, 3000));
  }
  TrainOptions Options(const std::string& out, int64_t steps) {
    TrainOptions o;
    o.train_path = data_.File("train.txt");
    o.valid_path = data_.File("valid.txt");
    o.out_dir = out;
    o.config = "tiny";
    o.vocab_size = 300;
    o.steps = steps;
    o.batch_size = 4;
    o.seq_len = 32;
    o.eval_interval = 10;
    o.eval_tokens = 512;
    o.quiet = true;
    return o;
  }
  ScratchDir data_;
};

TEST_F(TrainerTest, LossFallsAndCheckpointLoads) {
  ScratchDir out;
  TrainReport short_run, long_run;
  ASSERT_TRUE(Train(Options(out.File("a"), 1), &short_run).ok());
  Status s = Train(Options(out.File("b"), 60), &long_run);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_LT(long_run.final_valid_loss, short_run.final_valid_loss - 1.0)
      << short_run.final_valid_loss << " -> " << long_run.final_valid_loss;
  EXPECT_GT(long_run.final_valid_bits_per_byte, 0.0);
  std::unique_ptr<LanguageModel> model;
  ASSERT_TRUE(LoadLanguageModel(out.File("b"), &model).ok());
  EXPECT_EQ(model->config.n_embd, 32);
}

TEST_F(TrainerTest, ResumedRunEqualsUninterruptedRun) {
  ScratchDir out;
  TrainReport r;
  ASSERT_TRUE(Train(Options(out.File("full"), 30), &r).ok());
  EXPECT_FALSE(r.resumed);
  TrainOptions interrupted = Options(out.File("split"), 30);
  interrupted.stop_after = 17;  // Stops (and checkpoints) mid-way, off the evaluation grid.
  ASSERT_TRUE(Train(interrupted, &r).ok());
  EXPECT_EQ(r.steps, 17);
  ASSERT_TRUE(Train(Options(out.File("split"), 30), &r).ok());
  EXPECT_TRUE(r.resumed);
  EXPECT_EQ(r.steps, 30);
  std::unique_ptr<LanguageModel> a, b;
  ASSERT_TRUE(LoadLanguageModel(out.File("full"), &a).ok());
  ASSERT_TRUE(LoadLanguageModel(out.File("split"), &b).ok());
  auto pb = b->net->named_parameters();
  for (auto& p : a->net->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
}

TEST_F(TrainerTest, BadOptionsAreRejected) {
  ScratchDir out;
  TrainReport r;
  TrainOptions o = Options(out.File("x"), 5);
  o.config = "enormous";
  EXPECT_TRUE(Train(o, &r).IsInvalidArgument());
  o = Options(out.File("y"), 5);
  testing::WriteFileOrDie(data_.File("short.txt"), "too short");
  o.valid_path = data_.File("short.txt");
  EXPECT_TRUE(Train(o, &r).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
