#include "tests/lm_fixture.h"

#include <gtest/gtest.h>

#include <mutex>

#include "lm/bpe_trainer.h"
#include "tests/test_util.h"

namespace mnemo::testing {

const BpeTokenizer& ToyTokenizer() {
  static std::unique_ptr<BpeTokenizer> tok;
  static std::once_flag once;
  std::call_once(once, [] {
    Status s = TrainBpe(ToyCorpus(), 300, &tok);
    if (!s.ok()) ADD_FAILURE() << s.ToString();
  });
  return *tok;
}

GptConfig TinyConfig(int64_t vocab_size) {
  GptConfig c;
  Status s = GptConfig::Preset("tiny", vocab_size, &c);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return c;
}

Gpt TinyGpt(int64_t vocab_size, uint64_t seed) {
  Gpt net(TinyConfig(vocab_size));
  net->InitWeights(seed);
  net->eval();
  return net;
}

void RandomTinyModel(LanguageModel* model) {
  const auto& tok = ToyTokenizer();
  model->config = TinyConfig(tok.vocab_size());
  model->net = TinyGpt(tok.vocab_size());
  std::unique_ptr<BpeTokenizer> copy;
  ASSERT_TRUE(BpeTokenizer::FromVocabAndMerges(tok.tokens(), tok.merges(), &copy).ok());
  model->tokenizer = std::move(copy);
}

void SaveRandomTinyModel(const std::string& dir, uint64_t seed, bool memory_layer) {
  LanguageModel m;
  ASSERT_NO_FATAL_FAILURE(RandomTinyModel(&m));
  if (memory_layer) {
    m.config.memory_layer = 1;
    m.config.memory_mode = "joint";
    m.config.memory_topk = 8;
  }
  Gpt net(m.config);
  net->InitWeights(seed);
  net->eval();
  Status s = SaveCheckpoint(dir, net, m.tokenizer.get());
  ASSERT_TRUE(s.ok()) << s.ToString();
}

void TrainTinyModelWithCli(const std::string& dir, int steps, const std::string& valid) {
  const std::string train = dir + "/train.txt";
  WriteFileOrDie(train, ToyCorpus());
  std::string out;
  ASSERT_EQ(RunCommand(std::string(MNEMO_BINARY) + " train --corpus " + train + " --valid " +
                           (valid.empty() ? train : valid) + " --out " + dir + "/model --config tiny --vocab-size 300" +
                           " --steps " + std::to_string(steps) + " --batch-size 4 --seq-len 32 --quiet", &out), 0)
      << out;
}

}  // namespace mnemo::testing
