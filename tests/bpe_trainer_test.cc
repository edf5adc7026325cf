// Tests for TrainBpe on a small in-memory corpus: exact size, determinism, round trips, compression,
// save/load, argument checks.
#include "lm/bpe_trainer.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace mnemo {
namespace {

using mnemo::testing::ScratchDir;

// A few kilobytes of repetitive mixed text: enough distinct pairs for a few hundred merges.
std::string ToyCorpus() {
  const char* sentences[] = {
      "The quick brown fox jumps over the lazy dog.",
      "A stitch in time saves nine, and nine stitches save the seam.",
      "She sells sea shells by the sea shore; the shells she sells are surely seashells.",
      "In 1913 Webster defined the word, and in 2024 we still read it.",
      "Peter Piper picked a peck of pickled peppers.",
      "naïve café résumé — “quoted” text, 日本語のテキスト, emoji 😀.",
      "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
      "  indented line\twith tabs\n\nand blank lines  ",
  };
  std::string corpus;
  for (int rep = 0; rep < 25; ++rep) {
    for (const char* s : sentences) {
      corpus += s;
      corpus += rep % 3 == 0 ? "\n" : " ";
    }
  }
  return corpus;
}

std::unique_ptr<BpeTokenizer> TrainOrDie(const std::string& corpus, int vocab_size) {
  std::unique_ptr<BpeTokenizer> tok;
  Status s = TrainBpe(corpus, vocab_size, &tok);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return tok;
}

TEST(BpeTrainerTest, ProducesExactlyTheRequestedVocabSize) {
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(ToyCorpus(), 400);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->eot_id(), 399);
  EXPECT_EQ(tok->TokenBytes(399), "<|endoftext|>");
  EXPECT_GE(tok->merges().size(), 400u - 257u);
}

TEST(BpeTrainerTest, ByteTokensUseGpt2Ids) {
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(ToyCorpus(), 300);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->tokens()[0], "!");  // As in GPT-2's encoder.json.
  EXPECT_EQ(tok->tokens()[220], "Ġ");  // 188 printable bytes, then 0x00..0x20.
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(tok->TokenBytes(i), std::string(1, static_cast<char>(ByteLevelOrder()[i]))) << i;
  }
}

TEST(BpeTrainerTest, FirstMergeIsTheMostFrequentPair) {
  // Pieces: "ab", " ab" x3, " cd" x2: (a, b) occurs 4 times, (Ġ, a) 3 times.
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie("ab ab ab ab cd cd", 258);
  ASSERT_NE(tok, nullptr);
  ASSERT_EQ(tok->merges().size(), 1u);
  EXPECT_EQ(tok->merges()[0], (BpeTokenizer::Merge{"a", "b"}));
  EXPECT_EQ(tok->tokens()[256], "ab");
}

TEST(BpeTrainerTest, TrainingIsDeterministic) {
  const std::string corpus = ToyCorpus();
  std::unique_ptr<BpeTokenizer> a = TrainOrDie(corpus, 350);
  std::unique_ptr<BpeTokenizer> b = TrainOrDie(corpus, 350);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->tokens(), b->tokens());
  EXPECT_EQ(a->merges(), b->merges());
}

TEST(BpeTrainerTest, EncodeDecodeRoundTrips) {
  const std::string corpus = ToyCorpus();
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(corpus, 400);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Decode(tok->Encode(corpus)), corpus);
  const std::string unseen = "Unseen words: xylophone, 42, Ωμέγα, and bytes \xff\xfe.";
  EXPECT_EQ(tok->Decode(tok->Encode(unseen)), unseen);
}

TEST(BpeTrainerTest, TrainedVocabularyCompressesTheCorpus) {
  const std::string corpus = ToyCorpus();
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(corpus, 400);
  ASSERT_NE(tok, nullptr);
  const size_t tokens = tok->Encode(corpus).size();
  EXPECT_LT(tokens, corpus.size() / 2) << tokens << " tokens for " << corpus.size() << " bytes";
}

TEST(BpeTrainerTest, SaveLoadRoundTripViaHuggingFaceFiles) {
  const std::string corpus = ToyCorpus();
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(corpus, 400);
  ASSERT_NE(tok, nullptr);
  ScratchDir dir;
  Status s = tok->Save(dir.path());
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::unique_ptr<BpeTokenizer> loaded;
  s = BpeTokenizer::FromFiles(dir.File("vocab.json"), dir.File("merges.txt"), &loaded);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(loaded->tokens(), tok->tokens());
  EXPECT_EQ(loaded->merges(), tok->merges());
  EXPECT_EQ(loaded->eot_id(), tok->eot_id());
  EXPECT_EQ(loaded->Encode(corpus), tok->Encode(corpus));
}

TEST(BpeTrainerTest, RejectsVocabSizeBelow257) {
  for (int bad : {256, 100, 0, -5}) {
    std::unique_ptr<BpeTokenizer> tok;
    Status s = TrainBpe(ToyCorpus(), bad, &tok);
    EXPECT_TRUE(s.IsInvalidArgument()) << bad << ": " << s.ToString();
    EXPECT_EQ(tok, nullptr);
  }
}

TEST(BpeTrainerTest, SmallestVocabularyIsBytesPlusEndOfText) {
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie(ToyCorpus(), 257);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eot_id(), 256);
  EXPECT_TRUE(tok->merges().empty());
}

TEST(BpeTrainerTest, StopsEarlyWhenPairsRunOut) {
  // Every pair here occurs once, below the default min_frequency of 2.
  std::unique_ptr<BpeTokenizer> tok = TrainOrDie("abcdefg", 1000);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 257);
  std::unique_ptr<BpeTokenizer> empty = TrainOrDie("", 1000);
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->vocab_size(), 257);
}

TEST(BpeTrainerTest, MinFrequencyOneMergesSingletons) {
  BpeTrainerOptions options;
  options.vocab_size = 1000;
  options.min_frequency = 1;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = TrainBpe("abcdefg", options, &tok);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(tok->vocab_size(), 256 + 6 + 1);  // Merged all the way to "abcdefg".
  EXPECT_EQ(tok->Encode("abcdefg").size(), 1u);
}

TEST(BpeTrainerTest, ReportsProgress) {
  BpeTrainerOptions options;
  options.vocab_size = 300;
  int calls = 0, last = 0;
  options.progress = [&](int tokens, int target) {
    ++calls;
    last = tokens;
    EXPECT_EQ(target, 300);
  };
  std::unique_ptr<BpeTokenizer> tok;
  ASSERT_TRUE(TrainBpe(ToyCorpus(), options, &tok).ok());
  EXPECT_GE(calls, 2);
  EXPECT_EQ(last, 300);
}

}  // namespace
}  // namespace mnemo
