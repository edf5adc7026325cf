// Tests for BpeTokenizer: GPT-2 parity against the shared fixture, byte-exact round trips (invalid
// UTF-8 included), Hugging Face save/load, one named test per malformed-file case, and concurrency.
#include "lm/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using mnemo::testing::ScratchDir;
using mnemo::testing::SharedDir;
using mnemo::testing::WriteFileOrDie;

struct ParityCase {
  int line;
  std::string text;
  std::vector<int32_t> ids;
};

std::string Gpt2Dir() { return SharedDir() + "/gpt2"; }

// Every line of the fixture, parsed; fails the calling test on a malformed line.
std::vector<ParityCase> ReadParityCases() {
  std::string data;
  Status s = ReadFileToString(Gpt2Dir() + "/parity.jsonl", &data);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<ParityCase> cases;
  size_t pos = 0;
  int line = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    const std::string text = data.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (text.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("text") || !j.contains("ids")) {
      ADD_FAILURE() << "parity.jsonl line " << line << " is not {\"text\":..., \"ids\":[...]}";
      continue;
    }
    cases.push_back({line, j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>()});
  }
  return cases;
}

// GPT-2 is loaded once and shared by the read-only tests (loading parses ~1.5 MB).
const BpeTokenizer* Gpt2() {
  static const BpeTokenizer* tokenizer = [] {
    std::unique_ptr<BpeTokenizer> tok;
    Status s = BpeTokenizer::Load(Gpt2Dir(), &tok);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return tok.release();
  }();
  return tokenizer;
}

// The 256 byte symbols in GPT-2's id order.
std::vector<std::string> ByteSymbols() {
  std::vector<std::string> tokens;
  for (uint8_t b : ByteLevelOrder()) tokens.emplace_back(ByteLevelSymbol(b));
  return tokens;
}

std::string VocabJson(const std::vector<std::string>& tokens) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < tokens.size(); ++i) j[tokens[i]] = i;
  return j.dump();
}

// A small valid vocabulary: byte symbols, then "Ġt", "he", "Ġthe".
std::vector<std::string> TinyTokens() {
  std::vector<std::string> tokens = ByteSymbols();
  for (const char* t : {"Ġt", "he", "Ġthe"}) tokens.push_back(t);
  return tokens;
}
const char kTinyMerges[] = "#version: 0.2\nĠ t\nh e\nĠt he\n";

// Writes vocab.json + merges.txt into `dir` and loads them with FromFiles.
Status LoadFiles(const ScratchDir& dir, const std::string& vocab, const std::string& merges,
                 std::unique_ptr<BpeTokenizer>* out) {
  WriteFileOrDie(dir.File("vocab.json"), vocab);
  WriteFileOrDie(dir.File("merges.txt"), merges);
  return BpeTokenizer::FromFiles(dir.File("vocab.json"), dir.File("merges.txt"), out);
}

void ExpectRoundTrip(const Tokenizer& tok, const std::string& bytes) {
  std::vector<int32_t> ids = tok.Encode(bytes);
  for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size()) << id;
  EXPECT_EQ(tok.Decode(ids), bytes) << "input of " << bytes.size() << " bytes";
}

// ---- GPT-2 parity ----------------------------------------------------------------------------

TEST(BpeTokenizerTest, Gpt2ParityFixtureEncodesAndDecodesExactly) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  const std::vector<ParityCase> cases = ReadParityCases();
  EXPECT_EQ(cases.size(), 300u);
  for (const ParityCase& c : cases) {
    EXPECT_EQ(tok->Encode(c.text), c.ids) << "parity.jsonl line " << c.line << ": text \"" << c.text << "\"";
    EXPECT_EQ(tok->Decode(c.ids), c.text) << "parity.jsonl line " << c.line;
  }
}

TEST(BpeTokenizerTest, Gpt2VocabularyShape) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eot_id(), 50256);
  EXPECT_EQ(tok->TokenBytes(50256), "<|endoftext|>");
  EXPECT_EQ(tok->merges().size(), 50000u);
  // encoder.json numbers the byte symbols in bytes_to_unicode() order.
  for (int i = 0; i < 256; ++i) EXPECT_EQ(tok->tokens()[i], ByteLevelSymbol(ByteLevelOrder()[i])) << i;
  EXPECT_EQ(tok->TokenBytes(tok->TokenId("Ġthe")), " the");
  EXPECT_EQ(tok->TokenId("not-a-token-at-all"), -1);
}

TEST(BpeTokenizerTest, EndOfTextInTextIsPlainText) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> ids = tok->Encode("a<|endoftext|>b");
  for (int32_t id : ids) EXPECT_NE(id, tok->eot_id());
  EXPECT_EQ(tok->Decode(ids), "a<|endoftext|>b");
}

TEST(BpeTokenizerTest, PreTokenizerSplitsLikeGpt2) {
  std::vector<std::string> pieces;
  Gpt2PreTokenize("I'm here  now\n\n 42x!?", [&](std::string_view p) { pieces.emplace_back(p); });
  EXPECT_EQ(pieces, (std::vector<std::string>{"I", "'m", " here", " ", " now", "\n\n", " 42", "x", "!?"}));
}

TEST(BpeTokenizerTest, PreTokenizerWhitespaceIsUnicodeWhiteSpaceAsInPythonRegex) {
  // Expected pieces come from Python's `regex` module with GPT-2's pattern. U+180E is not
  // whitespace there, although PCRE2's own \s would say it is.
  std::vector<std::string> pieces;
  auto collect = [&](std::string_view p) { pieces.emplace_back(p); };
  Gpt2PreTokenize("x\u180e'ty", collect);
  EXPECT_EQ(pieces, (std::vector<std::string>{"x", "\u180e'", "ty"}));
  pieces.clear();
  Gpt2PreTokenize("a\u3000\u3000b\u00a0 c\u2028", collect);
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "\u3000", "\u3000", "b", "\u00a0", " c", "\u2028"}));
}

// ---- Round trips -----------------------------------------------------------------------------

TEST(BpeTokenizerTest, AllByteValuesRoundTrip) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    all.push_back(static_cast<char>(b));
    ExpectRoundTrip(*tok, std::string(1, static_cast<char>(b)));
    EXPECT_EQ(tok->Encode(std::string(1, static_cast<char>(b))).size(), 1u) << "byte " << b;
  }
  ExpectRoundTrip(*tok, all);
  ExpectRoundTrip(*tok, std::string(all.rbegin(), all.rend()));
}

TEST(BpeTokenizerTest, InvalidUtf8RoundTrips) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> cases = {
      "\xff", "\x80" "abc", "abc\xc3", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80" /* surrogate */,
      "\xc0\x80" /* overlong NUL */, "\xf4\x90\x80\x80" /* above U+10FFFF */, "hello \xff world",
      "\xf0\x9f\x98 \xf0\x9f\x98\x80", "caf\xe9 na\xefve", std::string("a\0b", 3)};
  for (const std::string& c : cases) ExpectRoundTrip(*tok, c);
}

TEST(BpeTokenizerTest, InvalidByteIsItsOwnPreToken) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> pieces;
  Gpt2PreTokenize("ab\xff" "cd", [&](std::string_view p) { pieces.emplace_back(p); });
  EXPECT_EQ(pieces, (std::vector<std::string>{"ab", "\xff", "cd"}));
  const int32_t ff = tok->TokenId(ByteLevelSymbol(0xff));
  std::vector<int32_t> want = tok->Encode("ab");
  want.push_back(ff);
  for (int32_t id : tok->Encode("cd")) want.push_back(id);
  EXPECT_EQ(tok->Encode("ab\xff" "cd"), want);
}

TEST(BpeTokenizerTest, RandomBytesRoundTrip) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(1234);
  const std::vector<std::string> alphabet = {"a", "Z",  " ",  "\n", "\t", "7",   "é",
                                             "—", "😀", "日", "'s", "\xff", "\x80"};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int len = static_cast<int>(rng() % 400);
    for (int k = 0; k < len; ++k) {
      if (i % 2 == 0) {
        s.push_back(static_cast<char>(rng() & 0xFF));
      } else {
        s += alphabet[rng() % alphabet.size()];
      }
    }
    ExpectRoundTrip(*tok, s);
  }
}

TEST(BpeTokenizerTest, VeryLongPiecesRoundTrip) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  ExpectRoundTrip(*tok, std::string(1 << 20, ' '));
  ExpectRoundTrip(*tok, std::string(1 << 20, 'a'));
  ExpectRoundTrip(*tok, std::string(1 << 18, '7') + "x");
  std::string accents;
  for (int i = 0; i < 100000; ++i) accents += "é";
  ExpectRoundTrip(*tok, accents);
}

TEST(BpeTokenizerTest, DecodeSkipsOutOfRangeIds) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> ids = tok->Encode("hello");
  ids.insert(ids.begin(), -1);
  ids.push_back(tok->vocab_size());
  EXPECT_EQ(tok->Decode(ids), "hello");
  EXPECT_EQ(tok->TokenBytes(-1), "");
  EXPECT_EQ(tok->TokenBytes(tok->vocab_size()), "");
}

// ---- Hugging Face files ----------------------------------------------------------------------

TEST(BpeTokenizerTest, SaveThenLoadGivesIdenticalEncodings) {
  const BpeTokenizer* tok = Gpt2();
  ASSERT_NE(tok, nullptr);
  ScratchDir dir;
  const std::string out_dir = dir.File("hf");
  Status s = tok->Save(out_dir);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(FileExists(out_dir + "/vocab.json"));
  EXPECT_TRUE(FileExists(out_dir + "/merges.txt"));
  std::unique_ptr<BpeTokenizer> loaded;
  s = BpeTokenizer::Load(out_dir, &loaded);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(loaded->tokens(), tok->tokens());
  EXPECT_EQ(loaded->merges(), tok->merges());
  EXPECT_EQ(loaded->eot_id(), tok->eot_id());
  for (const ParityCase& c : ReadParityCases()) {
    EXPECT_EQ(loaded->Encode(c.text), tok->Encode(c.text)) << "parity.jsonl line " << c.line;
  }
}

TEST(BpeTokenizerTest, LoadPrefersHuggingFaceFilesWhenBothPresent) {
  ScratchDir dir;
  WriteFileOrDie(dir.File("vocab.json"), VocabJson(TinyTokens()));
  WriteFileOrDie(dir.File("merges.txt"), kTinyMerges);
  for (const char* name : {"encoder.json", "vocab.bpe"}) {
    std::string data;
    ASSERT_TRUE(ReadFileToString(Gpt2Dir() + "/" + name, &data).ok());
    WriteFileOrDie(dir.File(name), data);
  }
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::Load(dir.path(), &tok);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(tok->vocab_size(), 259);
  EXPECT_EQ(tok->eot_id(), -1);
  EXPECT_EQ(tok->Encode(" the"), std::vector<int32_t>{258});
}

TEST(BpeTokenizerTest, MergesWithoutVersionLineOrWithCrlfLoad) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, VocabJson(TinyTokens()), "Ġ t\r\nh e\r\nĠt he\r\n\r\n", &tok);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(tok->merges().size(), 3u);
  EXPECT_EQ(tok->Encode(" the then"), (std::vector<int32_t>{258, 258, tok->TokenId("n")}));
}

// ---- Malformed files: each must give a clear Status naming the file, never a crash ------------

TEST(BpeTokenizerTest, LoadFromDirectoryWithoutFilesIsNotFound) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::Load(dir.path(), &tok);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find(dir.path()), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, MissingVocabFileIsNotFound) {
  ScratchDir dir;
  WriteFileOrDie(dir.File("merges.txt"), kTinyMerges);
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::FromFiles(dir.File("vocab.json"), dir.File("merges.txt"), &tok);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, MissingMergesFileIsNotFound) {
  ScratchDir dir;
  WriteFileOrDie(dir.File("vocab.json"), VocabJson(TinyTokens()));
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::Load(dir.path(), &tok);  // Half of the HF pair.
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("merges.txt"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabThatIsNotJsonIsCorruption) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, "{\"a\": 0,", kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
  EXPECT_EQ(tok, nullptr);
}

TEST(BpeTokenizerTest, VocabThatIsNotAnObjectIsCorruption) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, "[\"a\", \"b\"]", kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabWithNonIntegerIdIsCorruption) {
  for (const char* bad : {"\"7\"", "1.5", "true", "null"}) {
    ScratchDir dir;
    std::string vocab = VocabJson(TinyTokens());
    vocab.insert(1, "\"odd\": " + std::string(bad) + ", ");
    std::unique_ptr<BpeTokenizer> tok;
    Status s = LoadFiles(dir, vocab, kTinyMerges, &tok);
    EXPECT_TRUE(s.IsCorruption()) << bad << ": " << s.ToString();
    EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
  }
}

TEST(BpeTokenizerTest, VocabWithDuplicateIdsIsCorruption) {
  ScratchDir dir;
  nlohmann::json j = nlohmann::json::parse(VocabJson(TinyTokens()));
  j["Ġthe"] = 5;  // Also the id of a byte symbol.
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, j.dump(), kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabWithNonDenseIdsIsCorruption) {
  ScratchDir dir;
  nlohmann::json j = nlohmann::json::parse(VocabJson(TinyTokens()));
  j["Ġthe"] = 1000;  // Leaves a hole at 258.
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, j.dump(), kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("dense"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabWithNegativeIdIsCorruption) {
  ScratchDir dir;
  nlohmann::json j = nlohmann::json::parse(VocabJson(TinyTokens()));
  j["Ġthe"] = -1;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, j.dump(), kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabMissingAByteSymbolIsCorruption) {
  ScratchDir dir;
  std::vector<std::string> tokens = TinyTokens();
  tokens[0] = "Ġthe!";  // Replaces "!", the symbol of byte 0x21.
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, VocabJson(tokens), kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("0x21"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, VocabTokenOutsideByteLevelAlphabetIsCorruption) {
  ScratchDir dir;
  std::vector<std::string> tokens = TinyTokens();
  tokens.push_back("日本");  // Raw UTF-8, not byte-level symbols.
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, VocabJson(tokens), kTinyMerges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab.json"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, MalformedMergesLineIsCorruption) {
  for (const char* bad : {"Ġ t h", "Ġt", " he", "he ", "a  b"}) {
    ScratchDir dir;
    std::unique_ptr<BpeTokenizer> tok;
    const std::string merges = "#version: 0.2\nĠ t\n" + std::string(bad) + "\n";
    Status s = LoadFiles(dir, VocabJson(TinyTokens()), merges, &tok);
    EXPECT_TRUE(s.IsCorruption()) << bad << ": " << s.ToString();
    EXPECT_NE(s.message().find("merges.txt line 3"), std::string::npos) << s.ToString();
  }
}

TEST(BpeTokenizerTest, MergeOfUnknownTokenIsCorruption) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, VocabJson(TinyTokens()), "#version: 0.2\nĠ t\nĠth e\n", &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("merges.txt line 3"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("vocab/merges mismatch"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, MergeResultNotInVocabIsCorruption) {
  ScratchDir dir;
  std::unique_ptr<BpeTokenizer> tok;
  // Both halves exist but "tt" does not: merges.txt belongs to another vocabulary.
  Status s = LoadFiles(dir, VocabJson(TinyTokens()), "#version: 0.2\nĠ t\nt t\n", &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("merges.txt"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("vocab/merges mismatch"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, Gpt2MergesAgainstTinyVocabIsCorruption) {
  ScratchDir dir;
  std::string merges;
  ASSERT_TRUE(ReadFileToString(Gpt2Dir() + "/vocab.bpe", &merges).ok());
  std::unique_ptr<BpeTokenizer> tok;
  Status s = LoadFiles(dir, VocabJson(TinyTokens()), merges, &tok);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("vocab/merges mismatch"), std::string::npos) << s.ToString();
}

TEST(BpeTokenizerTest, FromVocabAndMergesRejectsDuplicateTokens) {
  std::vector<std::string> tokens = TinyTokens();
  tokens.push_back("he");
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::FromVocabAndMerges(tokens, {{"h", "e"}}, &tok);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

TEST(BpeTokenizerTest, FromVocabAndMergesRejectsUnknownMergeResult) {
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::FromVocabAndMerges(ByteSymbols(), {{"h", "e"}}, &tok);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("vocab/merges mismatch"), std::string::npos) << s.ToString();
}

// ---- Concurrency -----------------------------------------------------------------------------

TEST(BpeTokenizerTest, ConcurrentEncodingMatchesFixture) {
  // A fresh tokenizer, so the threads race to fill the word cache rather than read a warm one.
  std::unique_ptr<BpeTokenizer> tok;
  Status s = BpeTokenizer::Load(Gpt2Dir(), &tok);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::vector<ParityCase> cases = ReadParityCases();
  ASSERT_FALSE(cases.empty());
  constexpr int kThreads = 8;
  constexpr int kRounds = 3;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < cases.size(); ++i) {
          const ParityCase& c = cases[(i + t * 37) % cases.size()];  // Different orders per thread.
          if (tok->Encode(c.text) != c.ids || tok->Decode(c.ids) != c.text) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace mnemo
