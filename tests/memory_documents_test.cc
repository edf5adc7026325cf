// Documents for the memorizing layer (lm/documents.h), scoring them with a memory (lm/memory_scorer.h)
// and training on them (lm/trainer.h with documents and a memory), through the library and the CLI.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "lm/bpe_tokenizer.h"
#include "lm/checkpoint.h"
#include "lm/documents.h"
#include "lm/generator.h"
#include "lm/memory_scorer.h"
#include "lm/trainer.h"
#include "memory/kv_ring.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;
using testing::WriteFileOrDie;

TEST(DocumentsTest, ReadsJsonLinesAndNamesTheBadLine) {
  ScratchDir dir;
  WriteFileOrDie(dir.File("ok.jsonl"), "{\"text\": \"a\\nb\", \"source\": \"x.py\"}\n\n{\"text\": \"\", \"id\": 7}\n"
                                       "{\"text\": \"c\", \"metadata\": {\"k\": 1}}");
  std::vector<Document> docs;
  ASSERT_TRUE(ReadDocuments(dir.File("ok.jsonl"), &docs).ok());
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "a\nb");
  EXPECT_EQ(docs[0].source, "x.py");
  EXPECT_EQ(docs[1].source, "7");
  EXPECT_EQ(docs[2].source, "line 4");
  // Round trip through the writer.
  WriteFileOrDie(dir.File("rt.jsonl"), DocumentJsonLine(docs[0]) + DocumentJsonLine(docs[2]));
  std::vector<Document> again;
  ASSERT_TRUE(ReadDocuments(dir.File("rt.jsonl"), &again).ok());
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[1].text, "c");

  const std::pair<const char*, const char*> bad[] = {
      {"{\"text\": \"a\"}\nplain text\n", ":2: not a JSON line"},
      {"[1, 2]\n", ":1: a document must be a JSON object"},
      {"{\"body\": \"a\"}\n", ":1: a document needs a string \"text\""},
      {"{\"text\": 3}\n", "needs a string \"text\""},
      {"{\"text\": \"a\", \"source\": [1]}\n", "\"source\" must be a string or an integer"},
  };
  for (const auto& [content, message] : bad) {
    WriteFileOrDie(dir.File("bad.jsonl"), content);
    const Status s = ReadDocuments(dir.File("bad.jsonl"), &docs);
    EXPECT_TRUE(s.IsInvalidArgument()) << content;
    EXPECT_NE(s.message().find(message), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(ReadDocuments(dir.File("missing.jsonl"), &docs).IsNotFound());
}

TEST(DocumentsTest, PythonStdlibSourceSplitsFilesByPathAndIsReproducible) {
  ScratchDir dir;
  const std::string root = dir.File("lib");
  std::filesystem::create_directories(root + "/pkg/__pycache__");
  for (int i = 0; i < 60; ++i) WriteFileOrDie(root + "/m" + std::to_string(i) + ".py", "x = " + std::to_string(i) + "\n");
  WriteFileOrDie(root + "/pkg/__init__.py", "");                         // empty: skipped
  WriteFileOrDie(root + "/pkg/bad.py", std::string("s = '\x92'\n"));      // cp1252 byte: repaired
  WriteFileOrDie(root + "/pkg/__pycache__/c.py", "cached = 1\n");         // cache: skipped
  WriteFileOrDie(root + "/notes.txt", "not python\n");
  std::filesystem::create_symlink(root + "/m0.py", root + "/link.py");   // symlink: skipped
  DocumentCorpusOptions o;
  o.python_dir = root;
  o.valid_fraction = 0.2;
  o.test_fraction = 0.2;
  DocumentCorpusStats stats;
  ASSERT_TRUE(PreparePythonStdlib(dir.File("out"), o, &stats).ok());
  EXPECT_EQ(stats.files, 62);
  EXPECT_EQ(stats.skipped_empty, 1);
  EXPECT_EQ(stats.repaired_bytes, 1);
  EXPECT_EQ(stats.train.documents + stats.valid.documents + stats.test.documents, 61);
  EXPECT_GT(stats.valid.documents, 0);
  EXPECT_GT(stats.test.documents, 0);
  std::vector<Document> train, valid, test;
  ASSERT_TRUE(ReadDocuments(dir.File("out/python-stdlib/train.jsonl"), &train).ok());
  ASSERT_TRUE(ReadDocuments(dir.File("out/python-stdlib/valid.jsonl"), &valid).ok());
  ASSERT_TRUE(ReadDocuments(dir.File("out/python-stdlib/test.jsonl"), &test).ok());
  EXPECT_EQ(static_cast<int64_t>(train.size()), stats.train.documents);
  for (const auto* split : {&train, &valid, &test}) {
    for (const Document& d : *split) {
      EXPECT_EQ(d.source.find("__pycache__"), std::string::npos);
      EXPECT_NE(d.source, "link.py");
      EXPECT_EQ(d.source.front() != '/', true) << "sources are relative paths";
    }
  }
  // Sorted by path within a split, and the same bytes on a second run.
  for (size_t i = 1; i < train.size(); ++i) EXPECT_LT(train[i - 1].source, train[i].source);
  std::string first, second;
  ASSERT_TRUE(ReadFileToString(dir.File("out/python-stdlib/train.jsonl"), &first).ok());
  ASSERT_TRUE(PreparePythonStdlib(dir.File("out"), o, nullptr).ok());
  ASSERT_TRUE(ReadFileToString(dir.File("out/python-stdlib/train.jsonl"), &second).ok());
  EXPECT_EQ(first, second);
  o.python_dir = dir.File("nowhere");
  EXPECT_TRUE(PreparePythonStdlib(dir.File("out2"), o, nullptr).IsNotFound());
}

// A memory that records what each search saw, around a KvRing.
class RecordingMemory : public KvMemory {
 public:
  explicit RecordingMemory(std::unique_ptr<KvRing> ring) : ring_(std::move(ring)) {}
  int64_t lanes() const override { return ring_->lanes(); }
  int64_t heads() const override { return ring_->heads(); }
  int64_t head_dim() const override { return ring_->head_dim(); }
  int64_t size(int64_t lane) const override { return ring_->size(lane); }
  Status Search(int64_t lane, const float* q, int64_t n, int64_t k, float* keys, float* values,
                int64_t* tags) const override {
    searched_tags.push_back(ring_->Tags(lane));
    return ring_->Search(lane, q, n, k, keys, values, tags);
  }
  Status Append(int64_t lane, const float* keys, const float* values, const int64_t* tags, int64_t n) override {
    return ring_->Append(lane, keys, values, tags, n);
  }
  void Clear(int64_t lane) override { ring_->Clear(lane); }
  mutable std::vector<std::vector<int64_t>> searched_tags;

 private:
  std::unique_ptr<KvRing> ring_;
};

std::unique_ptr<RecordingMemory> MakeRecording(const GptConfig& c, int64_t capacity) {
  KvRingOptions o;
  o.lanes = 1, o.heads = c.n_head, o.head_dim = c.n_embd / c.n_head, o.capacity = capacity;
  std::unique_ptr<KvRing> ring;
  EXPECT_TRUE(KvRing::Create(o, &ring).ok());
  return std::make_unique<RecordingMemory>(std::move(ring));
}

std::vector<int32_t> RandomIds(int64_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab - 1));
  return ids;
}

TEST(MemoryScorerTest, MemoryHoldsExactlyTheTokensBeforeTheWindow) {
  LanguageModel m;
  testing::RandomTinyModel(&m);
  m.config.memory_layer = 1;
  m.config.memory_mode = "joint";
  Gpt net(m.config);
  net->InitWeights(3);
  net->eval();
  const std::vector<std::vector<int32_t>> docs = {RandomIds(150, m.config.vocab_size, 1),
                                                  RandomIds(90, m.config.vocab_size, 2)};
  auto memory = MakeRecording(m.config, 0);
  MemoryScoreOptions o;
  o.window.window = 32;
  o.window.stride = 16;
  o.memory = memory.get();
  MemoryScoreReport r;
  ASSERT_TRUE(ScoreDocumentsWithMemory(net, *m.tokenizer, docs, o, &r).ok());
  EXPECT_EQ(r.documents, 2);
  EXPECT_EQ(r.base.tokens, 240);  // every document token, after <|endoftext|>
  EXPECT_EQ(r.memory.tokens, 240);
  EXPECT_EQ(r.memory.bytes, r.base.bytes);
  // Each search saw exactly the positions before its window, of its own document, in order.
  const int64_t eot = m.tokenizer->eot_id();
  (void)eot;
  std::vector<Window> windows;
  ASSERT_TRUE(PlanWindows(151, m.config.n_positions, o.window, &windows).ok());
  size_t call = 0;
  for (int64_t d = 0; d < 2; ++d) {
    std::vector<Window> w;
    ASSERT_TRUE(PlanWindows(d == 0 ? 151 : 91, m.config.n_positions, o.window, &w).ok());
    for (const Window& win : w) {
      if (win.begin == 0) continue;  // an empty memory is not searched
      ASSERT_LT(call, memory->searched_tags.size());
      const std::vector<int64_t>& tags = memory->searched_tags[call++];
      ASSERT_EQ(static_cast<int64_t>(tags.size()), win.begin);
      for (int64_t p = 0; p < win.begin; ++p) EXPECT_EQ(tags[p], d << 32 | p);
    }
  }
  EXPECT_EQ(call, memory->searched_tags.size());
  // The base pass is the plain sliding-window scorer's.
  std::vector<int32_t> seq = {static_cast<int32_t>(m.tokenizer->eot_id())};
  seq.insert(seq.end(), docs[0].begin(), docs[0].end());
  std::vector<float> plain;
  ASSERT_TRUE(ScoreLongSequence(net, seq, o.window, &plain).ok());
  MemoryScoreReport first_only;
  ASSERT_TRUE(ScoreDocumentsWithMemory(net, *m.tokenizer, {docs[0]}, MemoryScoreOptions{o.window}, &first_only).ok());
  EXPECT_NEAR(first_only.base.nll, PerplexityReport::FromLogprobs(plain).nll, 1e-3);
  EXPECT_EQ(first_only.memory.tokens, 0);  // no memory: base only
}

TEST(MemoryScorerTest, AnEmptyOrTooSmallMemoryChangesNothingAndTheCopyModeScoresTheSecondCopy) {
  LanguageModel m;
  testing::RandomTinyModel(&m);
  m.config.memory_layer = 1;
  m.config.memory_mode = "joint";
  Gpt net(m.config);
  net->InitWeights(5);
  net->eval();
  const std::vector<std::vector<int32_t>> docs = {RandomIds(40, m.config.vocab_size, 3)};
  // A document that fits one window never searches: memory scores equal base scores exactly.
  auto memory = MakeRecording(m.config, 0);
  MemoryScoreOptions o;
  o.window.window = 64;
  o.memory = memory.get();
  MemoryScoreReport r;
  ASSERT_TRUE(ScoreDocumentsWithMemory(net, *m.tokenizer, docs, o, &r).ok());
  EXPECT_EQ(r.memory.nll, r.base.nll);
  // Copy mode: only the second copy is scored, and with the first copy in memory it scores differently.
  o.window.window = 32;
  o.copy = true;
  o.examples = 3;
  ASSERT_TRUE(ScoreDocumentsWithMemory(net, *m.tokenizer, docs, o, &r).ok());
  EXPECT_EQ(r.base.tokens, 40);
  EXPECT_NE(r.memory.nll, r.base.nll);
  ASSERT_EQ(r.examples.size(), 3u);
  EXPECT_GE(r.examples[0].memory_logprob - r.examples[0].base_logprob,
            r.examples[2].memory_logprob - r.examples[2].base_logprob);
  EXPECT_GE(r.examples[0].position, 41);  // in the second copy
  ASSERT_FALSE(r.examples[0].hits.empty());
  EXPECT_LT(r.examples[0].hits[0].position, r.examples[0].position);
  // Memory options on a model without the layer are refused.
  Gpt plain_net(testing::TinyConfig(m.config.vocab_size));
  EXPECT_TRUE(ScoreDocumentsWithMemory(plain_net, *m.tokenizer, docs, o, &r).IsInvalidArgument());
}

TEST(MemoryGenerateTest, MemoryHoldsExactlyTheTokensThatLeftTheWindow) {
  LanguageModel m;
  testing::RandomTinyModel(&m);
  m.config.memory_layer = 1;
  m.config.memory_mode = "joint";
  Gpt net(m.config);
  net->InitWeights(9);
  net->eval();
  const std::vector<int32_t> ids = RandomIds(150, m.config.vocab_size, 11);
  auto memory = MakeRecording(m.config, 0);
  // Reading: the first 118 tokens, in order, with their positions as tags.
  ASSERT_TRUE(ReadIntoMemory(net, ids, 118, WindowOptions{}, memory.get(), 0, 0).ok());
  std::vector<int64_t> expected(118);
  std::iota(expected.begin(), expected.end(), 0);
  // Generation from the last 32 tokens: the window restarts (64 positions) and the tokens leaving it join
  // the memory, so every search sees a contiguous run 0 .. start of the window.
  memory->searched_tags.clear();
  GenerateOptions g;
  g.max_tokens = 100;
  g.sampling.temperature = 0;
  g.memory = memory.get();
  g.memory_first_tag = 118;
  std::vector<int32_t> out;
  ASSERT_TRUE(Generate(net, std::vector<int32_t>(ids.begin() + 118, ids.end()), g, &out).ok());
  EXPECT_EQ(out.size(), 100u);
  ASSERT_FALSE(memory->searched_tags.empty());
  EXPECT_EQ(memory->searched_tags.front(), expected);
  int64_t last = 0;
  for (const std::vector<int64_t>& tags : memory->searched_tags) {
    for (size_t i = 0; i < tags.size(); ++i) ASSERT_EQ(tags[i], static_cast<int64_t>(i));
    EXPECT_GE(static_cast<int64_t>(tags.size()), last);
    last = static_cast<int64_t>(tags.size());
  }
  // 32 + 100 tokens through a 64-position window: it restarted, and memory grew past the read prefix.
  EXPECT_GT(last, 118);
  EXPECT_LT(last, 118 + 132);
  // Deterministic: the same memory contents give the same greedy continuation; no memory gives another.
  auto again = MakeRecording(m.config, 0);
  ASSERT_TRUE(ReadIntoMemory(net, ids, 118, WindowOptions{}, again.get(), 0, 0).ok());
  g.memory = again.get();
  std::vector<int32_t> out2;
  ASSERT_TRUE(Generate(net, std::vector<int32_t>(ids.begin() + 118, ids.end()), g, &out2).ok());
  EXPECT_EQ(out, out2);
  // A model without the layer refuses a memory.
  Gpt plain(testing::TinyConfig(m.config.vocab_size));
  EXPECT_TRUE(Generate(plain, {1, 2}, g, &out2).IsInvalidArgument());
}

std::string DocumentsJsonl(int count, int sentences, uint32_t seed) {
  const std::string corpus = testing::ToyCorpus();
  std::mt19937 rng(seed);
  std::string out;
  for (int d = 0; d < count; ++d) {
    Document doc;
    doc.source = "doc" + std::to_string(d);
    for (int s = 0; s < sentences; ++s) {
      const size_t at = rng() % (corpus.size() - 200);
      doc.text += corpus.substr(at, 60) + " ";
    }
    out += DocumentJsonLine(doc);
  }
  return out;
}

// Tiny-model training options over dir's train.jsonl and valid.jsonl (written here) with the toy tokenizer.
TrainOptions DocumentsTrainOptions(const ScratchDir& dir, uint32_t seed) {
  WriteFileOrDie(dir.File("train.jsonl"), DocumentsJsonl(6, 30, seed));
  WriteFileOrDie(dir.File("valid.jsonl"), DocumentsJsonl(2, 20, seed + 1));
  EXPECT_TRUE(testing::ToyTokenizer().Save(dir.File("tok")).ok());
  TrainOptions o;
  o.train_documents = dir.File("train.jsonl");
  o.valid_documents = dir.File("valid.jsonl");
  o.tokenizer_dir = dir.File("tok");
  o.config = "tiny";
  o.steps = 6;
  o.batch_size = 2;
  o.seq_len = 16;
  o.eval_tokens = 256;
  o.quiet = true;
  return o;
}

TEST(TrainerDocumentsTest, TrainsAMemorizingLayerOnDocumentsAndResumes) {
  ScratchDir dir;
  TrainOptions o = DocumentsTrainOptions(dir, 1);
  o.memory_layer = 1;
  o.memory_size = 64;
  o.memory_mode = "joint";
  o.make_memory = [](int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity,
                     std::unique_ptr<KvMemory>* out) { return MakeKvRing(lanes, heads, head_dim, capacity, out); };
  // Straight through, and in two halves.
  o.out_dir = dir.File("whole");
  TrainReport whole;
  ASSERT_TRUE(Train(o, &whole).ok());
  EXPECT_EQ(whole.steps, 6);
  EXPECT_TRUE(std::isfinite(whole.final_valid_loss));
  EXPECT_GT(whole.final_valid_bits_per_byte, 0);
  EXPECT_EQ(whole.memory_layer, 1);
  std::unique_ptr<LanguageModel> model;
  ASSERT_TRUE(LoadLanguageModel(dir.File("whole"), &model).ok());
  EXPECT_EQ(model->config.memory_layer, 1);
  EXPECT_EQ(model->config.memory_mode, "joint");
  o.out_dir = dir.File("halves");
  o.stop_after = 3;
  TrainReport half;
  ASSERT_TRUE(Train(o, &half).ok());
  EXPECT_EQ(half.steps, 3);
  ASSERT_TRUE(Train(o, &half).ok());
  EXPECT_TRUE(half.resumed);
  EXPECT_EQ(half.steps, 6);
  EXPECT_TRUE(std::isfinite(half.final_valid_loss));
  // Deterministic: a second uninterrupted run is bit-identical.
  o.stop_after = 0;
  o.out_dir = dir.File("again");
  TrainReport again;
  ASSERT_TRUE(Train(o, &again).ok());
  EXPECT_EQ(again.final_valid_loss, whole.final_valid_loss);

  // Bad input changes nothing and says why.
  TrainOptions bad = o;
  bad.out_dir = dir.File("bad");
  bad.memory_layer = 7;
  Status s = Train(bad, &again);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s.ToString();
  bad.memory_layer = -1;
  bad.memory_size = 64;  // a preset has no memory layer
  s = Train(bad, &again);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("--memory-layer"), std::string::npos) << s.ToString();
  bad = o;
  bad.out_dir = dir.File("bad2");
  bad.valid_documents.clear();
  EXPECT_TRUE(Train(bad, &again).IsInvalidArgument());
  WriteFileOrDie(dir.File("notjsonl.txt"), "def f():\n    return 1\n");
  bad = o;
  bad.out_dir = dir.File("bad3");
  bad.train_documents = dir.File("notjsonl.txt");
  s = Train(bad, &again);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("notjsonl.txt:1"), std::string::npos) << s.ToString();
}

TEST(MemoryCliTest, EvalPplWithDocumentsAndClearErrors) {
  ScratchDir dir;
  WriteFileOrDie(dir.File("train.jsonl"), DocumentsJsonl(4, 20, 3));
  WriteFileOrDie(dir.File("test.jsonl"), DocumentsJsonl(2, 20, 4));
  ASSERT_TRUE(testing::ToyTokenizer().Save(dir.File("tok")).ok());
  const std::string bin = MNEMO_BINARY;
  std::string out;
  ASSERT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("train.jsonl") + " --valid-documents " +
                                    dir.File("test.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("m") + " --config tiny --steps 2 --batch-size 2 --seq-len 16 "
                                    "--eval-tokens 64 --memory-layer 1 --memory-size 32 --quiet --json",
                                &out, true),
            0)
      << out;
  ASSERT_EQ(testing::RunCommand(bin + " eval ppl --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --memory-size 4096 --window 32 --examples 2 --json",
                                &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_GT(j["base"]["tokens"].get<int64_t>(), 0);
  EXPECT_EQ(j["memory"]["tokens"], j["base"]["tokens"]);
  EXPECT_GT(j["memory"]["bits_per_byte"].get<double>(), 0);
  EXPECT_GT(j["memory"]["max_memory_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(j["memory_mode"], "joint");
  EXPECT_EQ(j["examples"].size(), 2u);
  ASSERT_EQ(testing::RunCommand(bin + " generate --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --document 1 --memory-size 256 --max-tokens 40 --temperature 0 --json",
                                &out),
            0)
      << out;
  const auto g = nlohmann::json::parse(out);
  EXPECT_GT(g["memory_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(g["document"], "doc1");
  EXPECT_EQ(testing::RunCommand(bin + " generate --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --document 5",
                                &out, true),
            2);
  EXPECT_NE(out.find("has 2 documents"), std::string::npos) << out;
  // score --documents: per-token log-probabilities with and without the memory, one per scored target.
  ASSERT_EQ(testing::RunCommand(bin + " score --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --document 1 --memory-size 256 --copy --json",
                                &out),
            0)
      << out;
  const auto sc = nlohmann::json::parse(out);
  EXPECT_GT(sc["logprobs"].size(), 0u);
  EXPECT_EQ(sc["logprobs"].size(), sc["base_logprobs"].size());
  EXPECT_EQ(sc["tokens"].size(), sc["logprobs"].size());
  EXPECT_EQ(sc["memory_search"], "exact");
  // The memory index: IVF search on request, an error without the index.
  EXPECT_EQ(testing::RunCommand(bin + " eval ppl --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --memory-size 64 --memory-search ivf",
                                &out, true),
            2);
  EXPECT_NE(out.find("mnemo memory index"), std::string::npos) << out;
  ASSERT_EQ(testing::RunCommand(bin + " memory index --model " + dir.File("m") + " --documents " +
                                    dir.File("train.jsonl") + " --lists 4 --tokens 200 --json",
                                &out),
            0)
      << out;
  EXPECT_EQ(nlohmann::json::parse(out)["lists"], 4);
  ASSERT_EQ(testing::RunCommand(bin + " eval ppl --model " + dir.File("m") + " --documents " + dir.File("test.jsonl") +
                                    " --memory-size 4096 --window 32 --memory-search ivf --memory-nprobe 4 --json",
                                &out),
            0)
      << out;
  const auto iv = nlohmann::json::parse(out);
  EXPECT_EQ(iv["memory_search"], "ivf 4 lists, nprobe 4, from 1 tokens");
  // Probing every list is exact search: the same perplexity as the exact run above.
  EXPECT_NEAR(iv["memory"]["nll"].get<double>(), j["memory"]["nll"].get<double>(),
              1e-6 * j["memory"]["nll"].get<double>());
  EXPECT_EQ(testing::RunCommand(bin + " memory index --model " + dir.File("m") + " --documents " +
                                    dir.File("train.jsonl") + " --lists 4096 --tokens 200",
                                &out, true),
            2);
  EXPECT_NE(out.find("cannot train 4096 centroids"), std::string::npos) << out;
  // The repetition curriculum trains (documents only).
  ASSERT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("train.jsonl") + " --valid-documents " +
                                    dir.File("test.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("rep") + " --config tiny --steps 2 --batch-size 2 --seq-len 16 "
                                    "--eval-tokens 64 --memory-layer 1 --memory-size 32 --repeat-chunk 24 "
                                    "--repeat-fraction 1 --memory-smear --induction-heads 1 --quiet --json",
                                &out, true),
            0)
      << out;
  std::string config_text;
  ASSERT_TRUE(ReadFileToString(dir.File("rep") + "/config.json", &config_text).ok());
  EXPECT_NE(config_text.find("\"mnemo_memory_smear\": true"), std::string::npos) << config_text;
  // Induction heads need smeared keys, and no more of them than the layer has heads (tiny: 2).
  for (const std::string bad_args : {"--induction-heads 1", "--memory-smear --induction-heads 3"}) {
    EXPECT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("train.jsonl") + " --valid-documents " +
                                      dir.File("test.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                      dir.File("ind") + " --config tiny --steps 1 --memory-layer 1 " + bad_args,
                                  &out, true),
              2)
        << bad_args;
    EXPECT_NE(out.find("--induction-heads"), std::string::npos) << out;
  }
  EXPECT_EQ(testing::RunCommand(bin + " train --corpus " + dir.File("train.jsonl") + " --valid " +
                                    dir.File("test.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("rep2") + " --config tiny --steps 2 --repeat-chunk 24 --quiet",
                                &out, true),
            2);
  EXPECT_NE(out.find("--repeat-chunk needs --documents"), std::string::npos) << out;
  // Errors: non-zero exit and a message.
  std::filesystem::create_directories(dir.File("plain"));
  testing::TrainTinyModelWithCli(dir.File("plain"), 2);
  EXPECT_EQ(testing::RunCommand(bin + " eval ppl --model " + dir.File("plain/model") + " --documents " +
                                    dir.File("test.jsonl") + " --memory-size 64",
                                &out, true),
            2);
  EXPECT_NE(out.find("no memory layer"), std::string::npos) << out;
  WriteFileOrDie(dir.File("bad.jsonl"), "just text\n");
  EXPECT_EQ(testing::RunCommand(bin + " eval ppl --model " + dir.File("m") + " --documents " + dir.File("bad.jsonl"),
                                &out, true),
            2);
  EXPECT_NE(out.find("bad.jsonl:1"), std::string::npos) << out;
  EXPECT_EQ(testing::RunCommand(bin + " train --documents " + dir.File("train.jsonl") + " --valid-documents " +
                                    dir.File("test.jsonl") + " --tokenizer " + dir.File("tok") + " --out " +
                                    dir.File("m2") + " --config tiny --steps 1 --memory-layer 9 --quiet",
                                &out, true),
            2);
  EXPECT_NE(out.find("out of range"), std::string::npos) << out;
}

// --repeat-random: random-token documents join the repeated ones (deterministically), and the option is
// refused without the curriculum it extends.
TEST(TrainerDocumentsTest, RandomCopyDocumentsJoinTheCurriculumDeterministically) {
  ScratchDir dir;
  TrainOptions o = DocumentsTrainOptions(dir, 3);
  o.steps = 4;
  o.repeat_chunk = 16;
  auto run = [&](double random, const std::string& name, TrainReport* r) {
    TrainOptions t = o;
    t.repeat_random = random;
    t.out_dir = dir.File(name);
    return Train(t, r);
  };
  TrainReport plain, with_random, again;
  ASSERT_TRUE(run(0, "plain", &plain).ok());
  ASSERT_TRUE(run(0.9, "random", &with_random).ok());
  ASSERT_TRUE(run(0.9, "random-again", &again).ok());
  // Nine tenths of the tokens are now random ids: other batches, and a loss near ln(vocabulary).
  EXPECT_NE(with_random.final_train_loss, plain.final_train_loss);
  EXPECT_EQ(again.final_train_loss, with_random.final_train_loss);
  EXPECT_EQ(again.final_valid_loss, with_random.final_valid_loss);
  TrainOptions bad = o;
  bad.out_dir = dir.File("bad");
  bad.repeat_chunk = 0;
  bad.repeat_random = 0.5;
  Status s = Train(bad, &again);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("--repeat-chunk"), std::string::npos) << s.ToString();
  bad = o;
  bad.out_dir = dir.File("bad2");
  bad.repeat_random = 1.0;
  EXPECT_TRUE(Train(bad, &again).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
