// Sharded datastores (memory/datastore_shards.h): a datastore split into shards answers exactly as the
// unsplit one (neighbours, distances, tie order, kNN-LM log-probs bit for bit, RetoMaton pointers) for Flat,
// IVF-Flat and IVF-PQ, with and without provenance; a state over a sharded datastore with facts answers as
// one over the whole; bad splits and damaged sets are refused; and under mpirun (memory/mpi_shards.h) the
// CLI and the server give the single-process answers, a stalled shard makes kNN requests 503 and health
// name it, and it recovers when the shard answers again.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "lm/scorer.h"
#include "memory/datastore_shards.h"
#include "memory/fact_store.h"
#include "memory/mpi_shards.h"
#include "retriever/datastore_builder.h"
#include "retriever/knn_lm.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"
#include "util/half.h"

namespace mnemo {
namespace {

using testing::RunCommand;
using testing::ScratchDir;

std::vector<DatastoreDocumentInput> ToyDocuments() {
  std::vector<DatastoreDocumentInput> docs;
  for (const std::string& text : testing::ToyParagraphs()) {
    DatastoreDocumentInput d;
    d.id = "d" + std::to_string(docs.size());
    d.text = text;
    docs.push_back(d);
  }
  return docs;
}

struct Variant {
  std::string name, spec;
  bool documents;  // built from documents (provenance: cut at document starts), else one text
  bool legacy = true;  // one text without provenance (as before it existed), else one document
};

class ShardedDatastoreTest : public ::testing::TestWithParam<Variant> {};

Status Build(LanguageModel& model, const Variant& v, const std::string& dir) {
  DatastoreBuildOptions options;
  options.finish.progress = false;
  options.finish.index_spec = v.spec;
  options.finish.train_sample = 100000;
  DatastoreBuildReport report;
  if (v.documents) return BuildDatastoreFromDocuments(model, ToyDocuments(), "toy", nullptr, "", dir, options, &report);
  // One text, as datastores were before provenance: no documents.jsonl, so any entry may end a shard.
  MNEMO_RETURN_IF_ERROR(BuildDatastore(model, testing::ToyCorpus(), "toy", dir, options, &report));
  if (!v.legacy) return Status::OK();  // one document, cut evenly like a text
  std::unique_ptr<Datastore> ds;
  MNEMO_RETURN_IF_ERROR(Datastore::Open(dir, DatastoreOpenOptions(), &ds));
  DatastoreManifest m = ds->manifest();
  ds.reset();
  m.provenance = false;
  std::filesystem::remove(dir + "/documents.jsonl");
  return WriteFileAtomically(dir + "/manifest.json", m.ToJson());
}

// The model's kNN keys and log-probs for the toy corpus, span by span.
struct Spans {
  std::vector<torch::Tensor> keys, logprobs;
  std::vector<std::vector<int32_t>> targets;
};

void ComputeSpans(LanguageModel& model, Spans* out) {
  const std::vector<int32_t> ids = model.tokenizer->Encode(testing::ToyCorpus());
  SpanRequest request;
  request.knn_keys = true;
  ASSERT_TRUE(ForEachScoredSpan(model.net, ids, {}, request, [&](const ScoredSpan& span) {
    out->keys.push_back(span.knn_keys.to(torch::kFloat32).contiguous());
    out->logprobs.push_back(span.logprobs.clone());
    out->targets.emplace_back(ids.begin() + span.first_target, ids.begin() + span.first_target + span.count);
    return Status::OK();
  }).ok());
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

// Same entries, tokens and distances (bit for bit), in the same order.
void ExpectSameNeighbours(const std::vector<Neighbor>& a, const std::vector<Neighbor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int64_t valid = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].entry, b[i].entry) << what << " at " << i;
    ASSERT_EQ(a[i].token, b[i].token) << what << " at " << i;
    ASSERT_EQ(Bits(a[i].distance), Bits(b[i].distance)) << what << " at " << i;
    valid += a[i].entry >= 0;
  }
  EXPECT_GT(valid, 0) << what;
}

TEST_P(ShardedDatastoreTest, AnswersExactlyAsTheWhole) {
  const Variant& v = GetParam();
  ScratchDir d;
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  ASSERT_TRUE(Build(model, v, d.File("whole")).ok());
  SplitOptions split;
  split.shards = 3;
  SplitReport report;
  Status split_status = SplitDatastore(d.File("whole"), d.File("sharded"), split, &report);
  ASSERT_TRUE(split_status.ok()) << split_status.ToString();
  ASSERT_EQ(report.shards.size(), 3u);

  std::unique_ptr<Datastore> whole;
  ASSERT_TRUE(Datastore::Open(d.File("whole"), DatastoreOpenOptions(), &whole).ok());
  std::unique_ptr<ShardedDatastore> sharded;
  Status s = ShardedDatastore::Open(d.File("sharded"), DatastoreOpenOptions(), nullptr, &sharded);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(sharded->size(), whole->size());
  int64_t covered = 0;
  for (const auto& sh : report.shards) {
    EXPECT_GT(sh.count, 0);
    EXPECT_EQ(sh.first, covered);
    covered += sh.count;
  }
  EXPECT_EQ(covered, whole->slots());
  if (v.documents) {  // cut at document starts
    std::set<int64_t> starts;
    for (const auto& doc : whole->Documents()) starts.insert(doc.first);
    for (const auto& sh : report.shards) EXPECT_EQ(starts.count(sh.first), 1u) << sh.first;
  }

  Spans spans;
  ASSERT_NO_FATAL_FAILURE(ComputeSpans(model, &spans));
  for (int k : {8, 64}) {
    for (bool recompute : {false, true}) {
      MemorySearchOptions o;
      o.k = k;
      o.nprobe = 3;  // some lists unprobed: the same ones must be skipped in every shard
      o.recompute = recompute;
      for (size_t i = 0; i < spans.keys.size(); ++i) {
        std::vector<Neighbor> a, b;
        const torch::Tensor& q = spans.keys[i];
        ASSERT_TRUE(whole->Search(q.data_ptr<float>(), q.size(0), o, &a).ok());
        ASSERT_TRUE(sharded->Search(q.data_ptr<float>(), q.size(0), o, &b).ok());
        ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(a, b, "k=" + std::to_string(k) + " recompute=" +
                                                             std::to_string(recompute) + " span " + std::to_string(i)));
      }
    }
  }
  // kNN-LM log-probs bit for bit, searching every position and following pointers.
  for (int min_pointers : {0, 1}) {
    KnnOptions o;
    o.k = 16;
    o.lambda = 0.5;
    o.nprobe = 4;
    o.min_pointers = min_pointers;
    KnnLm a(*whole), b(*sharded);
    std::vector<Neighbor> pa, pb;
    KnnStats sa, sb;
    for (size_t i = 0; i < spans.keys.size(); ++i) {
      std::vector<float> la, lb;
      ASSERT_TRUE(a.ScoreTargetsFollowing(spans.keys[i], spans.logprobs[i], spans.targets[i].data(), o, &pa, &la, &sa).ok());
      ASSERT_TRUE(b.ScoreTargetsFollowing(spans.keys[i], spans.logprobs[i], spans.targets[i].data(), o, &pb, &lb, &sb).ok());
      ASSERT_EQ(la.size(), lb.size());
      for (size_t j = 0; j < la.size(); ++j) ASSERT_EQ(Bits(la[j]), Bits(lb[j])) << "pointers " << min_pointers << " at " << j;
    }
    EXPECT_EQ(sa.searched, sb.searched);
    if (min_pointers > 0) {
      EXPECT_LT(sb.searched, sb.queries);  // pointers were followed, across shards too
    }
  }
  // Successors of every shard's last entry: none at a document's end, the next shard's first otherwise.
  std::vector<float> query(whole->dim(), 0.1f);
  for (const auto& sh : report.shards) {
    std::vector<Neighbor> from = {{sh.first + sh.count - 1, 0, 0, 0}, {sh.first, 0, 0, 0}};
    std::vector<Neighbor> a, b;
    ASSERT_TRUE(whole->Successors(query.data(), from, &a).ok());
    ASSERT_TRUE(sharded->Successors(query.data(), from, &b).ok());
    ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(a, b, "successors of shard at " + std::to_string(sh.first)));
  }
}

INSTANTIATE_TEST_SUITE_P(Indexes, ShardedDatastoreTest,
                         ::testing::Values(Variant{"FlatDocuments", "Flat", true},
                                           Variant{"IvfFlatDocuments", "IVF8,Flat", true},
                                           Variant{"IvfPqDocuments", "IVF8,PQ4", true},
                                           Variant{"FlatText", "Flat", false},
                                           Variant{"IvfPqText", "IVF8,PQ4", false},
                                           Variant{"IvfPqOneDocument", "IVF8,PQ4", false, false}),
                         [](const ::testing::TestParamInfo<Variant>& info) { return info.param.name; });

// Random facts (tokens and keys) for a state of `dim`: FactStore stores what it is given.
std::vector<NewFact> RandomFacts(int dim, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<NewFact> facts;
  for (int f = 0; f < n; ++f) {
    NewFact fact;
    fact.text = "fact " + std::to_string(f);
    const int tokens = 3 + f % 5;
    for (int t = 0; t < tokens; ++t) fact.tokens.push_back(static_cast<int32_t>(rng() % 200));
    for (int i = 0; i < (tokens - 1) * dim; ++i) fact.keys.push_back(FloatToHalf(normal(rng)));
    facts.push_back(fact);
  }
  return facts;
}

TEST(ShardedStateTest, FactsOverShardsAnswerAsOverTheWhole) {
  ScratchDir d;
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  const Variant v{"", "IVF8,PQ4", true};
  ASSERT_TRUE(Build(model, v, d.File("whole")).ok());
  SplitOptions split;
  split.shards = 2;
  ASSERT_TRUE(SplitDatastore(d.File("whole"), d.File("sharded"), split, nullptr).ok());
  std::unique_ptr<Datastore> whole_ds;
  ASSERT_TRUE(Datastore::Open(d.File("whole"), DatastoreOpenOptions(), &whole_ds).ok());
  const DatastoreManifest m = whole_ds->manifest();
  whole_ds.reset();
  std::unique_ptr<FactStore> stores[2];
  const char* names[2] = {"whole", "sharded"};
  for (int i = 0; i < 2; ++i) {
    StateConfig config;
    config.model_path = d.File("model");
    config.datastore_path = d.File(names[i]);
    config.model_fingerprint = m.model_fingerprint;
    config.dim = m.dim;
    ASSERT_TRUE(CreateStateDir(d.File(std::string("state-") + names[i]), config).ok());
    Status s = FactStore::Open(d.File(std::string("state-") + names[i]), FactStoreOptions(), &stores[i]);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::vector<int64_t> ids;
    ASSERT_TRUE(stores[i]->Add(RandomFacts(m.dim, 40, 3), &ids).ok());
    ASSERT_TRUE(stores[i]->Delete({ids[5], ids[17]}, nullptr).ok());
  }
  EXPECT_EQ(stores[0]->size(), stores[1]->size());
  EXPECT_EQ(stores[0]->base_entries(), stores[1]->base_entries());
  EXPECT_EQ(stores[0]->segment_trained_fingerprint(), stores[1]->segment_trained_fingerprint());
  EXPECT_NE(stores[1]->sharded_base(), nullptr);
  Spans spans;
  ASSERT_NO_FATAL_FAILURE(ComputeSpans(model, &spans));
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  for (bool recompute : {false, true}) {
    MemorySearchOptions o;
    o.k = 32;
    o.nprobe = 4;
    o.recompute = recompute;
    // Model keys (near base entries) and random ones (near facts' random keys).
    std::vector<float> queries(spans.keys[0].data_ptr<float>(), spans.keys[0].data_ptr<float>() + spans.keys[0].numel());
    for (int i = 0; i < 20 * m.dim; ++i) queries.push_back(normal(rng));
    const int64_t n = static_cast<int64_t>(queries.size()) / m.dim;
    std::vector<Neighbor> a, b;
    ASSERT_TRUE(stores[0]->Search(queries.data(), n, o, &a).ok());
    ASSERT_TRUE(stores[1]->Search(queries.data(), n, o, &b).ok());
    ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(a, b, "recompute " + std::to_string(recompute)));
    bool fact_seen = false;
    for (const Neighbor& nb : b) fact_seen = fact_seen || IsFactEntry(nb.entry);
    EXPECT_TRUE(fact_seen);
  }
  DocumentDeleteReport report;
  EXPECT_TRUE(stores[1]->DeleteBaseDocuments({"d0"}, &report).IsFailedPrecondition());
}

TEST(ShardedDatastoreErrorsTest, BadSplitsAndDamagedSetsAreRefused) {
  ScratchDir d;
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  ASSERT_TRUE(Build(model, {"", "IVF8,Flat", true}, d.File("whole")).ok());
  const size_t documents = ToyDocuments().size();
  SplitOptions split;
  split.shards = static_cast<int>(documents) + 1;  // a document stays whole
  Status s = SplitDatastore(d.File("whole"), d.File("too-many"), split, nullptr);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_FALSE(IsShardedDatastore(d.File("too-many")));
  split.shards = 0;
  EXPECT_TRUE(SplitDatastore(d.File("whole"), d.File("none"), split, nullptr).IsInvalidArgument());
  split.shards = 3;
  ASSERT_TRUE(SplitDatastore(d.File("whole"), d.File("set"), split, nullptr).ok());
  EXPECT_TRUE(SplitDatastore(d.File("whole"), d.File("set"), split, nullptr).IsInvalidArgument());  // exists
  EXPECT_TRUE(SplitDatastore(d.File("set"), d.File("again"), split, nullptr).IsInvalidArgument());  // a set
  EXPECT_TRUE(SplitDatastore(d.File("set/shard-0"), d.File("again"), split, nullptr).IsInvalidArgument());  // a shard
  std::filesystem::create_directories(d.File("busy"));
  testing::WriteFileOrDie(d.File("busy/file"), "x");
  EXPECT_TRUE(SplitDatastore(d.File("whole"), d.File("busy"), split, nullptr).IsInvalidArgument());  // not empty
  // PQ codes of other widths are searched by FAISS, whose heaps keep equal distances in scan order.
  ASSERT_TRUE(Build(model, {"", "IVF8,PQ4x4", true}, d.File("pq4")).ok());
  s = SplitDatastore(d.File("pq4"), d.File("pq4-set"), split, nullptr);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();

  // A shard is a datastore on its own; deleting one of its documents is refused when the pool ("all")
  // would need retraining, which would part its trained structures from the other shards'.
  std::unique_ptr<Datastore> shard;
  ASSERT_TRUE(Datastore::Open(d.File("set/shard-1"), DatastoreOpenOptions(), &shard).ok());
  EXPECT_EQ(shard->manifest().shard, 1);
  ASSERT_FALSE(shard->Documents().empty());
  DocumentDeleteOptions retrain;
  retrain.retrain = true;
  DocumentDeleteReport report;
  s = shard->DeleteDocuments({shard->Documents()[0].id}, retrain, &report);
  EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
  EXPECT_NE(s.message().find("split again"), std::string::npos) << s.message();
  shard.reset();

  // Shards swapped: each names its place, so the set does not open.
  std::filesystem::rename(d.File("set/shard-0"), d.File("set/tmp"));
  std::filesystem::rename(d.File("set/shard-1"), d.File("set/shard-0"));
  std::filesystem::rename(d.File("set/tmp"), d.File("set/shard-1"));
  std::unique_ptr<ShardedDatastore> sharded;
  s = ShardedDatastore::Open(d.File("set"), DatastoreOpenOptions(), nullptr, &sharded);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  // A damaged shards.json.
  testing::WriteFileOrDie(d.File("set/shards.json"), "{\"format\": \"mnemo-datastore-shards\"}");
  s = ShardedDatastore::Open(d.File("set"), DatastoreOpenOptions(), nullptr, &sharded);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

// Deleted documents before the split: their tombstones go with their shard and the set still answers
// as the whole.
TEST(ShardedDatastoreErrorsTest, DeletionsBeforeTheSplitCarryOver) {
  ScratchDir d;
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  ASSERT_TRUE(Build(model, {"", "Flat", true}, d.File("whole")).ok());
  std::unique_ptr<Datastore> whole;
  ASSERT_TRUE(Datastore::Open(d.File("whole"), DatastoreOpenOptions(), &whole).ok());
  DocumentDeleteReport report;
  ASSERT_TRUE(whole->DeleteDocuments({"d3", "d20"}, DocumentDeleteOptions(), &report).ok());
  whole.reset();
  SplitOptions split;
  split.shards = 2;
  ASSERT_TRUE(SplitDatastore(d.File("whole"), d.File("set"), split, nullptr).ok());
  ASSERT_TRUE(Datastore::Open(d.File("whole"), DatastoreOpenOptions(), &whole).ok());
  std::unique_ptr<ShardedDatastore> sharded;
  ASSERT_TRUE(ShardedDatastore::Open(d.File("set"), DatastoreOpenOptions(), nullptr, &sharded).ok());
  EXPECT_EQ(sharded->size(), whole->size());
  int tombstones = 0;
  for (int s = 0; s < 2; ++s) {
    std::unique_ptr<Datastore> shard;
    ASSERT_TRUE(Datastore::Open(d.File("set/shard-" + std::to_string(s)), DatastoreOpenOptions(), &shard).ok());
    for (const auto& doc : shard->Documents()) tombstones += doc.deleted();
  }
  EXPECT_EQ(tombstones, 2);
  Spans spans;
  ASSERT_NO_FATAL_FAILURE(ComputeSpans(model, &spans));
  MemorySearchOptions o;
  o.k = 64;
  std::vector<Neighbor> a, b;
  const torch::Tensor& q = spans.keys[0];
  ASSERT_TRUE(whole->Search(q.data_ptr<float>(), q.size(0), o, &a).ok());
  ASSERT_TRUE(sharded->Search(q.data_ptr<float>(), q.size(0), o, &b).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(a, b, "after deletions"));
}

// --- Under mpirun ------------------------------------------------------------------------------------

std::string Mnemo() { return MNEMO_BINARY; }

// mpirun as the tests use it: loopback, more ranks than cores, root allowed (CI runs as root). With
// `recovery` a rank's death leaves the others running (the server then answers 503), but mpirun's exit
// status no longer says whether a rank failed, so offline commands run without it.
std::string Mpirun(int np, bool recovery = false) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader mpirun -np " +
         std::to_string(np) + " --oversubscribe --bind-to none " + (recovery ? "--enable-recovery " : "");
}

class MpiShardsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    std::string out;
    ASSERT_NO_FATAL_FAILURE(testing::TrainTinyModelWithCli(dir_->path(), /*steps=*/2));
    std::string jsonl;
    for (const auto& doc : ToyDocuments()) jsonl += nlohmann::json({{"id", doc.id}, {"text", doc.text}}).dump() + "\n";
    testing::WriteFileOrDie(dir_->File("docs.jsonl"), jsonl);
    ASSERT_EQ(RunCommand(Mnemo() + " datastore build --model " + dir_->File("model") + " --documents " +
                             dir_->File("docs.jsonl") + " --out " + dir_->File("ds") + " --index IVF8,PQ4 --quiet", &out), 0)
        << out;
    ASSERT_EQ(RunCommand(Mnemo() + " datastore split --datastore " + dir_->File("ds") + " --shards 2 --out " +
                             dir_->File("set") + " --quiet", &out), 0) << out;
    for (const char* which : {"ds", "set"}) {
      ASSERT_EQ(RunCommand(Mnemo() + " init --state " + dir_->File(std::string("state-") + which) + " --model " +
                               dir_->File("model") + " --datastore " + dir_->File(which), &out), 0) << out;
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  static ScratchDir* dir_;
};
ScratchDir* MpiShardsTest::dir_ = nullptr;

TEST_F(MpiShardsTest, OfflineCommandsGiveTheSingleProcessAnswers) {
  ASSERT_TRUE(HaveMpi());
  const std::string text = " --text 'The cat sees the bridge and the dog walks to the river.' --json --k 16 --lambda 0.5";
  std::string whole, local, mpi;
  const std::string model = " --model " + dir_->File("model");
  ASSERT_EQ(RunCommand(Mnemo() + " score" + model + " --state " + dir_->File("state-ds") + text, &whole), 0) << whole;
  ASSERT_EQ(RunCommand(Mnemo() + " score" + model + " --state " + dir_->File("state-set") + text, &local), 0) << local;
  ASSERT_EQ(RunCommand(Mpirun(3) + Mnemo() + " score" + model + " --state " + dir_->File("state-set") + text, &mpi), 0) << mpi;
  EXPECT_EQ(local, whole);
  EXPECT_EQ(mpi, whole);
  // The datastore alone (--datastore), and eval ppl, under mpirun.
  std::string a, b;
  const std::string ppl = " eval ppl --model " + dir_->File("model") + " --text-file " + dir_->File("train.txt") +
                          " --json --k 8";
  ASSERT_EQ(RunCommand(Mnemo() + ppl + " --datastore " + dir_->File("ds"), &a), 0) << a;
  ASSERT_EQ(RunCommand(Mpirun(3) + Mnemo() + ppl + " --datastore " + dir_->File("set"), &b), 0) << b;
  auto ja = nlohmann::json::parse(a), jb = nlohmann::json::parse(b);
  EXPECT_EQ(ja.at("knn").at("perplexity"), jb.at("knn").at("perplexity")) << a << "\n" << b;
  // Sampled generation following pointers: the same tokens (successors are asked of the shards).
  const std::string gen = " generate" + model + " --prompt 'The cat' --max-tokens 24 --seed 3 --json --pointers 1 --k 16";
  ASSERT_EQ(RunCommand(Mnemo() + gen + " --state " + dir_->File("state-ds"), &a), 0) << a;
  ASSERT_EQ(RunCommand(Mpirun(3) + Mnemo() + gen + " --state " + dir_->File("state-set"), &b), 0) << b;
  EXPECT_EQ(nlohmann::json::parse(a).at("ids"), nlohmann::json::parse(b).at("ids")) << a << "\n" << b;
  // The audit (it opens the state and a scratch copy: two sets of shards over the same ranks): the same
  // report but for its timings.
  const std::string audit = " audit --canaries 2 --references 15 --repetitions 1,4 --members 20 --extraction-samples 5 "
                            "--forgetting 0,20 --finetune-steps 0 --datastore-documents 0 --state ";
  ASSERT_EQ(RunCommand(Mnemo() + audit + dir_->File("state-set") + " --out " + dir_->File("audit-1"), &a), 0) << a;
  ASSERT_EQ(RunCommand(Mpirun(3) + Mnemo() + audit + dir_->File("state-set") + " --out " + dir_->File("audit-3"), &b), 0)
      << b;
  std::string ra, rb;
  ASSERT_EQ(RunCommand("cat " + dir_->File("audit-1/report.json"), &ra), 0);
  ASSERT_EQ(RunCommand("cat " + dir_->File("audit-3/report.json"), &rb), 0);
  auto ja1 = nlohmann::json::parse(ra), jb1 = nlohmann::json::parse(rb);
  for (auto* j : {&ja1, &jb1}) {
    for (const char* key : {"started_at", "seconds", "timings"}) j->at("config").erase(key);
  }
  EXPECT_EQ(ja1, jb1);
  // The wrong number of ranks: every rank says so and the job fails.
  std::string wrong;
  EXPECT_NE(RunCommand(Mpirun(2) + Mnemo() + " score" + model + " --state " + dir_->File("state-set") + text, &wrong, true), 0);
  EXPECT_NE(wrong.find("mpirun -np 3"), std::string::npos) << wrong;
}

TEST_F(MpiShardsTest, ServerAnswersAsOneProcessAndAStalledOrDeadShardIs503) {
  // Serve the sharded state under mpirun; score the same text there and in a single process; stop shard 1's
  // process (SIGSTOP): kNN requests 503 naming it, health 503 naming it, a request without kNN still 200;
  // continue it (SIGCONT): 200 again with the same answer; kill shard 0's process: 503 naming it; SIGTERM to
  // mpirun ends every rank.
  const std::string log = dir_->File("serve.log");
  const std::string body = "{\"text\": \"The cat sees the bridge.\", \"knn\": {\"k\": 8, \"lambda\": 0.5}}";
  const std::string script =
      "set -u; " + Mpirun(3, /*recovery=*/true) + Mnemo() + " --shard-timeout-ms 1500 serve --state " + dir_->File("state-set") +
      " --port 0 --no-log 2> " + log + " & job=$!; "
      "for i in $(seq 300); do port=$(sed -n 's/.*listening on http:\\/\\/127.0.0.1:\\([0-9]*\\).*/\\1/p' " + log +
      "); [ -n \"$port\" ] && curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done; "
      "echo \"health=$(curl -s localhost:$port/health)\"; "
      "echo \"first=$(curl -s -X POST localhost:$port/v1/score -d '" + body + "' | tr -d '\\n')\"; "
      "shard=''; for p in $(pgrep -f 'serve --state " + dir_->File("state-set") + "'); do "
      "  tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2 && shard=$p; done; "
      "kill -STOP $shard; "
      "echo \"stalled=$(curl -s -w ' code=%{http_code}' -X POST localhost:$port/v1/score -d '" + body + "' | tr -d '\\n')\"; "
      "echo \"again=$(curl -s -w ' code=%{http_code}' -X POST localhost:$port/v1/score -d '" + body + "' | tr -d '\\n')\"; "
      "echo \"health_down=$(curl -s -w ' code=%{http_code}' localhost:$port/health | tr -d '\\n')\"; "
      "echo \"plain=$(curl -s -w ' code=%{http_code}' -X POST localhost:$port/v1/score -d '{\"text\": \"The cat.\", \"knn\": {\"enabled\": false}}' | tr -d '\\n')\"; "
      "kill -CONT $shard; sleep 0.5; "
      "echo \"back=$(curl -s -w ' code=%{http_code}' -X POST localhost:$port/v1/score -d '" + body + "' | tr -d '\\n')\"; "
      "echo \"health_up=$(curl -s -w ' code=%{http_code}' localhost:$port/health | tr -d '\\n')\"; "
      "other=''; for p in $(pgrep -f 'serve --state " + dir_->File("state-set") + "'); do "
      "  tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && other=$p; done; "
      "kill -KILL $other; sleep 0.2; "
      "echo \"dead=$(curl -s -w ' code=%{http_code}' -X POST localhost:$port/v1/score -d '" + body + "' | tr -d '\\n')\"; "
      "echo \"health_dead=$(curl -s -w ' code=%{http_code}' localhost:$port/health | tr -d '\\n')\"; "
      "kill -TERM $job; wait $job; sleep 0.5; left=0; for p in $(pgrep -f 'serve --state " + dir_->File("state-set") + "'); do "
      "  tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=' && left=$((left+1)); done; "
      "echo \"left=$left\"";
  std::string escaped;
  for (char ch : script) escaped += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  std::string out;
  ASSERT_EQ(RunCommand("timeout 120 bash -c '" + escaped + "'", &out), 0) << out;
  std::string serve_log;
  RunCommand("cat " + log, &serve_log);
  auto field = [&](const std::string& name) {
    const size_t at = out.find(name + "=");
    if (at == std::string::npos) return std::string();
    const size_t end = out.find('\n', at);
    return out.substr(at + name.size() + 1, end == std::string::npos ? std::string::npos : end - at - name.size() - 1);
  };
  EXPECT_NE(field("health").find("\"shards\""), std::string::npos) << out << serve_log;
  const std::string first = field("first");
  ASSERT_NE(first.find("\"tokens\""), std::string::npos) << out << serve_log;
  EXPECT_NE(field("stalled").find("code=503"), std::string::npos) << out;
  EXPECT_NE(field("stalled").find("shard 1 (rank 2"), std::string::npos) << out;
  EXPECT_NE(field("again").find("code=503"), std::string::npos) << out;  // down until it answers
  EXPECT_NE(field("health_down").find("code=503"), std::string::npos) << out;
  EXPECT_NE(field("health_down").find("\"up\":false"), std::string::npos) << out;
  EXPECT_NE(field("plain").find("code=200"), std::string::npos) << out;
  EXPECT_NE(field("back").find("code=200"), std::string::npos) << out;
  EXPECT_EQ(field("back").substr(0, field("back").rfind(" code=")), first) << out;
  EXPECT_NE(field("health_up").find("code=200"), std::string::npos) << out;
  // Shard 0's process killed (mpirun --enable-recovery keeps the job): 503 naming it, health says which.
  EXPECT_NE(field("dead").find("code=503"), std::string::npos) << out;
  EXPECT_NE(field("dead").find("shard 0 (rank 1"), std::string::npos) << out;
  EXPECT_NE(field("health_dead").find("{\"shard\":0,\"rank\":1,\"up\":false"), std::string::npos) << out;
  // SIGTERM to mpirun reaches every rank: rank 0 finishes and stops the shards (the dead one cannot
  // answer, so it ends the job), and no rank is left.
  RunCommand("cat " + log, &serve_log);
  EXPECT_NE(serve_log.find("stopped"), std::string::npos) << serve_log;
  EXPECT_EQ(field("left"), "0") << out;

  // The single-process server over the whole datastore gives the same scores.
  std::string single;
  const std::string script1 =
      Mnemo() + " serve --state " + dir_->File("state-ds") + " --port 0 --no-log 2> " + log + "1 & pid=$!; "
      "for i in $(seq 300); do port=$(sed -n 's/.*listening on http:\\/\\/127.0.0.1:\\([0-9]*\\).*/\\1/p' " + log +
      "1); [ -n \"$port\" ] && curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done; "
      "curl -s -X POST localhost:$port/v1/score -d '" + body + "'; kill -TERM $pid; wait $pid";
  escaped.clear();
  for (char ch : script1) escaped += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  ASSERT_EQ(RunCommand("timeout 60 bash -c '" + escaped + "'", &single), 0) << single;
  auto a = nlohmann::json::parse(first), b = nlohmann::json::parse(single);
  EXPECT_EQ(a.at("ids"), b.at("ids"));
  EXPECT_EQ(a.at("logprobs_knn"), b.at("logprobs_knn")) << first << "\n" << single;
}

}  // namespace
}  // namespace mnemo
