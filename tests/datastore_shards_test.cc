// Sharded datastores (memory/datastore_shards.h): a datastore split into shards answers exactly as the
// unsplit one (neighbours, distances, tie order, kNN-LM log-probs bit for bit, RetoMaton pointers) for Flat,
// IVF-Flat and IVF-PQ, with and without provenance; a state over a sharded datastore with facts answers as
// one over the whole; bad splits and damaged sets are refused; and under mpirun (memory/mpi_shards.h) the
// CLI and the server give the single-process answers, a stalled shard makes kNN requests 503 and health
// name it, and it recovers when the shard answers again.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "lm/scorer.h"
#include "memory/datastore_shards.h"
#include "memory/fact_shard.h"
#include "memory/fact_store.h"
#include "memory/mpi_shards.h"
#include "memory/sqlite_db.h"
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

// A datastore of the toy documents ("whole"), its split into 2 shards ("sharded") and a state over each
// (state-whole, state-sharded); *m is the whole's manifest.
void MakeStates(ScratchDir& d, LanguageModel& model, DatastoreManifest* m) {
  const Variant v{"", "IVF8,PQ4", true};
  ASSERT_TRUE(Build(model, v, d.File("whole")).ok());
  SplitOptions split;
  split.shards = 2;
  ASSERT_TRUE(SplitDatastore(d.File("whole"), d.File("sharded"), split, nullptr).ok());
  std::unique_ptr<Datastore> whole_ds;
  ASSERT_TRUE(Datastore::Open(d.File("whole"), DatastoreOpenOptions(), &whole_ds).ok());
  *m = whole_ds->manifest();
  for (const char* name : {"whole", "sharded"}) {
    StateConfig config;
    config.model_path = d.File("model");
    config.datastore_path = d.File(name);
    config.model_fingerprint = m->model_fingerprint;
    config.dim = m->dim;
    ASSERT_TRUE(CreateStateDir(d.File(std::string("state-") + name), config).ok());
  }
}

// Queries near base entries (the model's keys for the toy corpus) and near facts (random keys).
std::vector<float> Queries(LanguageModel& model, int dim) {
  Spans spans;
  ComputeSpans(model, &spans);
  std::vector<float> queries(spans.keys[0].data_ptr<float>(), spans.keys[0].data_ptr<float>() + spans.keys[0].numel());
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  for (int i = 0; i < 20 * dim; ++i) queries.push_back(normal(rng));
  return queries;
}

// Both stores answer every query alike, with and without recompute, and facts are among the answers.
void ExpectSameSearches(const FactStore& a, const FactStore& b, const std::vector<float>& queries, int dim,
                        const std::string& what) {
  const int64_t n = static_cast<int64_t>(queries.size()) / dim;
  for (bool recompute : {false, true}) {
    MemorySearchOptions o;
    o.k = 32;
    o.nprobe = 4;
    o.recompute = recompute;
    std::vector<Neighbor> x, y;
    Status s = a.Search(queries.data(), n, o, &x);
    ASSERT_TRUE(s.ok()) << s.ToString();
    s = b.Search(queries.data(), n, o, &y);
    ASSERT_TRUE(s.ok()) << what << ": " << s.ToString();
    ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(x, y, what + ", recompute " + std::to_string(recompute)));
    bool fact_seen = false;
    for (const Neighbor& nb : y) fact_seen = fact_seen || IsFactEntry(nb.entry);
    EXPECT_TRUE(fact_seen) << what;
  }
}

// A tiny model, and states over a datastore and over its split (MakeStates).
class ShardedStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
    ASSERT_NO_FATAL_FAILURE(MakeStates(d, model, &m));
  }
  ScratchDir d;
  LanguageModel model;
  DatastoreManifest m;
};

TEST_F(ShardedStateTest, FactsOverShardsAnswerAsOverTheWhole) {
  std::unique_ptr<FactStore> stores[2];
  std::vector<int64_t> ids;
  const char* names[2] = {"whole", "sharded"};
  for (int i = 0; i < 2; ++i) {
    Status s = FactStore::Open(d.File(std::string("state-") + names[i]), FactStoreOptions(), &stores[i]);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(stores[i]->Add(RandomFacts(m.dim, 40, 3), &ids).ok());
    ASSERT_TRUE(stores[i]->Delete({ids[5], ids[17]}, nullptr).ok());
  }
  EXPECT_EQ(stores[0]->size(), stores[1]->size());
  EXPECT_EQ(stores[0]->fact_entries(), stores[1]->fact_entries());
  EXPECT_EQ(stores[0]->base_entries(), stores[1]->base_entries());
  EXPECT_EQ(stores[0]->segment_trained_fingerprint(), stores[1]->segment_trained_fingerprint());
  ASSERT_NE(stores[1]->sharded_base(), nullptr);
  EXPECT_FALSE(stores[0]->facts_on_shards());
  ASSERT_TRUE(stores[1]->facts_on_shards());
  // Each fact lives on shard id mod 2 only, committed; the deleted ones nowhere.
  const DatastoreShards& shards = stores[1]->sharded_base()->shards();
  size_t held = 0;
  for (int s = 0; s < 2; ++s) {
    std::vector<FactShardRow> rows;
    ASSERT_TRUE(ShardListFacts(shards, s, &rows).ok());
    for (const FactShardRow& row : rows) {
      EXPECT_EQ(row.id % 2, s);
      EXPECT_TRUE(row.committed);
      EXPECT_NE(row.id, ids[5]);
      EXPECT_NE(row.id, ids[17]);
    }
    EXPECT_GT(rows.size(), 10u);
    held += rows.size();
  }
  EXPECT_EQ(held, 38u);
  for (int64_t gone : {ids[5], ids[17]}) {
    FactTraces t;
    ASSERT_TRUE(stores[1]->FindTraces(gone, nullptr, &t).ok());
    EXPECT_EQ(t.shard, gone % 2);
    EXPECT_EQ(t.shards_checked, 2);
    EXPECT_FALSE(t.on_shard);
    EXPECT_TRUE(t.clean());
  }
  std::string check;
  ASSERT_TRUE(stores[1]->CheckFactShards(&check).ok());
  EXPECT_EQ(check, "ok");
  ASSERT_NO_FATAL_FAILURE(ExpectSameSearches(*stores[0], *stores[1], Queries(model, m.dim), m.dim, "sharded"));
  // The reference verify-deleted compares with: the same base and the facts rebuilt from the catalogue.
  std::unique_ptr<KnnMemory> rebuilt;
  ASSERT_TRUE(stores[1]->RebuildFromDatabase(&rebuilt).ok());
  const std::vector<float> queries = Queries(model, m.dim);
  std::vector<Neighbor> x, y;
  MemorySearchOptions o;
  o.k = 32;
  o.nprobe = 4;
  ASSERT_TRUE(stores[1]->Search(queries.data(), static_cast<int64_t>(queries.size()) / m.dim, o, &x).ok());
  ASSERT_TRUE(rebuilt->Search(queries.data(), static_cast<int64_t>(queries.size()) / m.dim, o, &y).ok());
  ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(x, y, "rebuilt"));
  DocumentDeleteReport report;
  EXPECT_TRUE(stores[1]->DeleteBaseDocuments({"d0"}, &report).IsFailedPrecondition());
}

TEST_F(ShardedStateTest, ASharesIndexSnapshotIsLoadedWhileCurrentAndNeverOutlivesADrop) {
  std::unique_ptr<ShardedDatastore> set;
  ASSERT_TRUE(ShardedDatastore::Open(d.File("sharded"), DatastoreOpenOptions(), nullptr, &set).ok());
  const std::string dir = d.File("share");
  std::vector<FactRecord> facts;
  for (const NewFact& nf : RandomFacts(m.dim, 12, 4)) {
    FactRecord f;
    f.id = static_cast<int64_t>(facts.size()) + 1;
    f.tokens = nf.tokens;
    f.keys = nf.keys;
    facts.push_back(f);
  }
  const std::vector<float> queries = Queries(model, m.dim);
  const int64_t n = static_cast<int64_t>(queries.size()) / m.dim;
  auto search = [&](const FactShard& share, std::vector<Neighbor>* out) {
    std::vector<float> exact;
    ASSERT_TRUE(share.Search(queries.data(), n, 16, 4, true, out, &exact).ok());
  };
  auto snapshots = [&]() {
    int count = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) count += e.path().filename().string().rfind("segment-", 0) == 0;
    return count;
  };
  std::vector<Neighbor> before, after;
  {
    std::unique_ptr<FactShard> share;
    ASSERT_TRUE(FactShard::Open(dir, set->trained(), m.dim, false, &share).ok());
    EXPECT_FALSE(share->loaded_snapshot());
    ASSERT_TRUE(share->Prepare(facts).ok());
    std::vector<int64_t> ids;
    for (const FactRecord& f : facts) ids.push_back(f.id);
    ASSERT_TRUE(share->Commit(ids).ok());
    search(*share, &before);
  }
  EXPECT_EQ(snapshots(), 1);  // written at close
  {
    std::unique_ptr<FactShard> share;
    ASSERT_TRUE(FactShard::Open(dir, set->trained(), m.dim, false, &share).ok());
    EXPECT_TRUE(share->loaded_snapshot());
    search(*share, &after);
    ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(before, after, "from the snapshot"));
    bool row = true, indexed = true;
    // The bytes of fact 3's values and keys are in the share's files before the drop and nowhere after.
    const std::string values = ToLittleEndian(facts[2].tokens.data() + 1, facts[2].tokens.size() - 1);
    const std::string keys = ToLittleEndian(facts[2].keys);
    auto in_files = [&](const std::string& needle) {
      bool found = false;
      for (const auto& e : std::filesystem::directory_iterator(dir)) {
        std::string data;
        if (ReadFileToString(e.path().string(), &data).ok()) found = found || data.find(needle) != std::string::npos;
      }
      return found;
    };
    EXPECT_TRUE(in_files(values));
    EXPECT_TRUE(in_files(keys));
    ASSERT_TRUE(share->Drop({3}).ok());
    EXPECT_EQ(snapshots(), 0);  // gone before the drop was acknowledged
    EXPECT_FALSE(in_files(values));
    EXPECT_FALSE(in_files(keys));
    ASSERT_TRUE(share->Holds(3, static_cast<int64_t>(facts[2].tokens.size()) - 1, &row, &indexed).ok());
    EXPECT_FALSE(row);
    EXPECT_FALSE(indexed);
    search(*share, &before);
  }
  EXPECT_EQ(snapshots(), 1);
  std::unique_ptr<FactShard> share;
  ASSERT_TRUE(FactShard::Open(dir, set->trained(), m.dim, false, &share).ok());
  EXPECT_TRUE(share->loaded_snapshot());
  search(*share, &after);
  ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(before, after, "after the drop"));
  for (const Neighbor& nb : after) EXPECT_NE(FactIdOfEntry(nb.entry), 3) << nb.entry;
  // A snapshot of another version (the rows changed without it: a crash before close) is not used.
  share.reset();
  const std::string current = [&]() {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().filename().string().rfind("segment-", 0) == 0) return e.path().string();
    }
    return std::string();
  }();
  std::filesystem::rename(current, dir + "/segment-999.idx");
  ASSERT_TRUE(FactShard::Open(dir, set->trained(), m.dim, false, &share).ok());
  EXPECT_FALSE(share->loaded_snapshot());
  search(*share, &before);
  ASSERT_NO_FATAL_FAILURE(ExpectSameNeighbours(before, after, "encoded again"));
}

// Local shards, one of which can be made to fail its fact writes and searches (as a stalled rank does).
class FlakyShards : public DatastoreShards {
 public:
  FlakyShards(std::unique_ptr<DatastoreShards> inner, const std::atomic<int>* down) : inner_(std::move(inner)), down_(down) {}
  int count() const override { return inner_->count(); }
  Status Sizes(std::vector<int64_t>* sizes) const override { return inner_->Sizes(sizes); }
  Status SearchAll(const float* queries, int64_t n, int k, int nprobe, bool exact,
                   std::vector<ShardSearchResult>* out) const override {
    if (*down_ >= 0) return Status::Unavailable("shard " + std::to_string(down_->load()) + " is down");
    return inner_->SearchAll(queries, n, k, nprobe, exact, out);
  }
  Status Successors(int shard, const float* query, const std::vector<int64_t>& entries,
                    std::vector<Neighbor>* out) const override {
    return inner_->Successors(shard, query, entries, out);
  }
  Status Entries(int shard, const float* query, const std::vector<int64_t>& entries,
                 std::vector<Neighbor>* out) const override {
    return inner_->Entries(shard, query, entries, out);
  }
  bool holds_facts() const override { return inner_->holds_facts(); }
  Status FactCall(int shard, const std::string& request, std::string* reply) const override {
    if (*down_ == shard) return Status::Unavailable("shard " + std::to_string(shard) + " is down");
    return inner_->FactCall(shard, request, reply);
  }

 private:
  std::unique_ptr<DatastoreShards> inner_;
  const std::atomic<int>* down_;
};

TEST_F(ShardedStateTest, ShardsThatMissWritesOrLoseTheirFactsAreBroughtInLine) {
  const std::string state = d.File("state-sharded");
  std::atomic<int> down{-1};
  FactStoreOptions flaky;
  flaky.open_shards = [&](const std::string& dir, const ShardSetManifest& manifest, const std::string& state_dir,
                          bool read_only, std::unique_ptr<DatastoreShards>* out) {
    DatastoreOpenOptions options;
    options.read_only = read_only;
    std::unique_ptr<DatastoreShards> inner;
    MNEMO_RETURN_IF_ERROR(OpenLocalShards(dir, manifest, options, &inner, state_dir));
    out->reset(new FlakyShards(std::move(inner), &down));
    return Status::OK();
  };
  std::unique_ptr<FactStore> whole, sharded;
  ASSERT_TRUE(FactStore::Open(d.File("state-whole"), FactStoreOptions(), &whole).ok());
  ASSERT_TRUE(FactStore::Open(state, flaky, &sharded).ok());
  const std::vector<NewFact> facts = RandomFacts(m.dim, 30, 5);
  const std::vector<NewFact> first(facts.begin(), facts.begin() + 20), later(facts.begin() + 20, facts.end());
  std::vector<int64_t> ids, ids2;
  ASSERT_TRUE(whole->Add(first, &ids).ok());
  ASSERT_TRUE(sharded->Add(first, &ids2).ok());
  ASSERT_EQ(ids, ids2);

  // Shard 1 down: an add is refused whole (shard 0 had prepared its part: never searchable, dropped later).
  down = 1;
  Status s = sharded->Add(later, &ids2);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  int64_t count = 0;
  ASSERT_TRUE(sharded->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 20);
  std::vector<FactShardRow> rows;
  ASSERT_TRUE(ShardListFacts(sharded->sharded_base()->shards(), 0, &rows).ok());
  int64_t prepared = 0;
  for (const FactShardRow& row : rows) prepared += !row.committed;
  EXPECT_GT(prepared, 0);
  // A delete while it is down: gone from the catalogue (never served again), but not acknowledged.
  std::vector<FactRecord> deleted;
  s = sharded->Delete({ids[2], ids[3]}, &deleted);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_EQ(deleted.size(), 2u);
  ASSERT_TRUE(whole->Delete({ids[2], ids[3]}, nullptr).ok());
  FactRecord f;
  EXPECT_TRUE(sharded->Get(ids[3], false, &f).IsNotFound());
  std::vector<Neighbor> out;
  MemorySearchOptions o;
  o.k = 8;
  std::vector<float> q(m.dim, 0.0f);
  EXPECT_TRUE(sharded->Search(q.data(), 1, o, &out).IsUnavailable());
  // Shard 1 back: the next search syncs first (prepared rows dropped, the deleted fact's entries too).
  down = -1;
  const std::vector<float> queries = Queries(model, m.dim);
  ASSERT_NO_FATAL_FAILURE(ExpectSameSearches(*whole, *sharded, queries, m.dim, "after the shard came back"));
  ASSERT_TRUE(ShardListFacts(sharded->sharded_base()->shards(), 0, &rows).ok());
  for (const FactShardRow& row : rows) EXPECT_TRUE(row.committed) << row.id;
  FactTraces t;
  ASSERT_TRUE(sharded->FindTraces(ids[3], nullptr, &t).ok());
  EXPECT_TRUE(t.clean());
  sharded.reset();

  // Shard 1 loses its facts (its disk replaced): fsck without --repair counts them, an open sends them again.
  std::filesystem::remove_all(FactShardDir(state, 1));
  FactStoreOptions check;
  check.read_only_check = true;
  ASSERT_TRUE(FactStore::Open(state, check, &sharded).ok());
  const int64_t missing = sharded->recovery().shard_facts_missing;
  EXPECT_GT(missing, 5);
  EXPECT_EQ(sharded->recovery().shard_facts_orphans, 0);
  sharded.reset();
  EXPECT_FALSE(std::filesystem::exists(FactShardDir(state, 1) + "/entries.db"));  // read-only wrote nothing
  ASSERT_TRUE(FactStore::Open(state, FactStoreOptions(), &sharded).ok());
  EXPECT_EQ(sharded->recovery().shard_facts_missing, missing);
  ASSERT_NO_FATAL_FAILURE(ExpectSameSearches(*whole, *sharded, queries, m.dim, "after shard 1 was resent"));
  sharded.reset();

  // A row the catalogue never held (a crash between prepare and rollback, or a stale disk): dropped at open.
  {
    std::unique_ptr<ShardedDatastore> set;
    ASSERT_TRUE(ShardedDatastore::Open(d.File("sharded"), DatastoreOpenOptions(), nullptr, &set).ok());
    std::unique_ptr<FactShard> share;
    ASSERT_TRUE(FactShard::Open(FactShardDir(state, 0), set->trained(), m.dim, false, &share).ok());
    FactRecord stray = {};
    stray.id = 1000;
    stray.tokens = {1, 2, 3};
    stray.keys.assign(2 * m.dim, FloatToHalf(0.0f));
    ASSERT_TRUE(share->Prepare({stray}).ok());
    ASSERT_TRUE(share->Commit({1000}).ok());
  }
  ASSERT_TRUE(FactStore::Open(state, FactStoreOptions(), &sharded).ok());
  EXPECT_EQ(sharded->recovery().shard_facts_orphans, 1);
  ASSERT_NO_FATAL_FAILURE(ExpectSameSearches(*whole, *sharded, queries, m.dim, "after the stray row"));
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
  // `datastore build --shards 2` writes the split `datastore split` makes of the same build (same cuts, the
  // same trained structures), and leaves no whole behind; a non-empty --out is refused before any work.
  const std::string build = Mnemo() + " datastore build --model " + dir_->File("model") + " --documents " +
                            dir_->File("docs.jsonl") + " --index IVF8,PQ4 --quiet --shards 2 --out ";
  ASSERT_EQ(RunCommand(build + dir_->File("set-built"), &a), 0) << a;
  std::string built_json, split_json;
  ASSERT_EQ(RunCommand("cat " + dir_->File("set-built/shards.json"), &built_json), 0);
  ASSERT_EQ(RunCommand("cat " + dir_->File("set/shards.json"), &split_json), 0);
  auto jbuilt = nlohmann::json::parse(built_json), jsplit = nlohmann::json::parse(split_json);
  EXPECT_EQ(jbuilt.at("shards"), jsplit.at("shards"));
  EXPECT_EQ(jbuilt.at("trained"), jsplit.at("trained"));
  EXPECT_FALSE(std::filesystem::exists(dir_->File("set-built.whole")));
  EXPECT_NE(RunCommand(build + dir_->File("set-built"), &a, true), 0);
  EXPECT_NE(a.find("not empty"), std::string::npos) << a;
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

TEST_F(MpiShardsTest, FactsLiveOnTheShardRanksAndSurviveARestart) {
  // The same facts added, scored, deleted and verified over HTTP on a sharded state under mpirun and on a
  // single-process state over the whole datastore; the sharded job restarted in between. Every answer is
  // the single process's, and the facts are on the shard ranks' disks.
  std::string out;
  for (const char* which : {"ds", "set"}) {
    ASSERT_EQ(RunCommand(Mnemo() + " init --state " + dir_->File(std::string("facts-") + which) + " --model " +
                             dir_->File("model") + " --datastore " + dir_->File(which), &out), 0) << out;
  }
  const std::string fact1 = "Zorblat the purple cat sleeps under the old bridge.";
  const std::string fact2 = "The dog named Quimby walks to the river every morning.";
  const std::string score = "{\"text\": \"" + fact1 + " " + fact2 + "\", \"knn\": {\"k\": 8, \"lambda\": 0.5}}";
  const std::string script =
      "set -u; "
      "start() { env $1 " + Mnemo() + " --shard-timeout-ms 5000 serve --state $2 --port 0 --no-log 2> $3 & job=$!; "
      "  for i in $(seq 300); do port=$(sed -n 's/.*listening on http:\\/\\/127.0.0.1:\\([0-9]*\\).*/\\1/p' $3); "
      "  [ -n \"$port\" ] && curl -sf localhost:$port/health >/dev/null && break; sleep 0.1; done; }; "
      "stop() { kill -TERM $job; wait $job; }; "
      "post() { curl -s -w ' code=%{http_code}' -X POST localhost:$port$1 -d \"$2\" | tr -d '\\n'; }; "
      "run() { m=$1; start \"$2\" $3 $4; "
      "  echo \"$m.add=$(post /v1/facts '{\"facts\": [{\"text\": \"" + fact1 + "\"}, {\"text\": \"" + fact2 + "\"}]}')\"; "
      "  echo \"$m.with=$(post /v1/score '" + score + "')\"; "
      "  echo \"$m.delete=$(curl -s -w ' code=%{http_code}' -X DELETE localhost:$port/v1/facts/1 | tr -d '\\n')\"; "
      "  echo \"$m.verify=$(post /v1/facts/1/verify-deleted '{\"text\": \"" + fact1 + "\"}')\"; "
      "  echo \"$m.after=$(post /v1/score '" + score + "')\"; stop; "
      "  start \"$2\" $3 $4.2; echo \"$m.restarted=$(post /v1/score '" + score + "')\"; stop; }; "
      "run single '' " + dir_->File("facts-ds") + " " + dir_->File("facts-single.log") + "; "
      "run mpi '" + Mpirun(3) + "' " + dir_->File("facts-set") + " " + dir_->File("facts-mpi.log") + "; echo end";
  std::string escaped;
  for (char ch : script) escaped += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  ASSERT_EQ(RunCommand("timeout 240 bash -c '" + escaped + "'", &out), 0) << out;
  auto field = [&](const std::string& name) {
    const size_t at = out.find(name + "=");
    if (at == std::string::npos) return std::string();
    const size_t end = out.find('\n', at);
    return out.substr(at + name.size() + 1, end == std::string::npos ? std::string::npos : end - at - name.size() - 1);
  };
  auto body = [&](const std::string& name) {
    const std::string v = field(name);
    return v.substr(0, v.rfind(" code="));
  };
  for (const char* m : {"single", "mpi"}) {
    const std::string p = m;
    EXPECT_NE(field(p + ".add").find("code=200"), std::string::npos) << out;
    EXPECT_NE(field(p + ".add").find("[1,2]"), std::string::npos) << out;
    EXPECT_NE(field(p + ".delete").find("code=200"), std::string::npos) << out;
    EXPECT_NE(field(p + ".verify").find("\"passed\":true"), std::string::npos) << out;
    EXPECT_NE(field(p + ".with").find("code=200"), std::string::npos) << out;
    EXPECT_EQ(body(p + ".restarted"), body(p + ".after")) << out;
  }
  // The sharded verdict names the shard that held fact 1 (1 mod 2), which no longer holds it.
  EXPECT_NE(field("mpi.verify").find("\"on_shard\":false"), std::string::npos) << out;
  EXPECT_NE(field("mpi.verify").find("\"shard\":1"), std::string::npos) << out;
  for (const char* name : {"with", "after"}) {
    auto a = nlohmann::json::parse(body(std::string("single.") + name)), b = nlohmann::json::parse(body(std::string("mpi.") + name));
    EXPECT_EQ(a.at("logprobs_knn"), b.at("logprobs_knn")) << name << "\n" << out;
  }
  EXPECT_NE(body("single.with"), body("single.after"));  // the facts were used, and the delete changed it
  // An audit under mpirun works on a scratch state over the same ranks: its facts go to its own shares.
  const std::string audit = " audit --canaries 2 --references 15 --repetitions 1,4 --members 20 --extraction-samples 5 "
                            "--forgetting 0,20 --finetune-steps 0 --datastore-documents 0 --state ";
  ASSERT_EQ(RunCommand(Mpirun(3) + Mnemo() + audit + dir_->File("facts-set") + " --out " + dir_->File("facts-audit"), &out),
            0) << out;
  // Fact 2 lives in shard 0's file, and nothing of fact 1 is left in shard 1's.
  std::vector<FactShardRow> rows;
  std::unique_ptr<ShardedDatastore> set;
  ASSERT_TRUE(ShardedDatastore::Open(dir_->File("set"), DatastoreOpenOptions(), nullptr, &set).ok());
  for (int s = 0; s < 2; ++s) {
    std::unique_ptr<FactShard> share;
    ASSERT_TRUE(FactShard::Open(FactShardDir(dir_->File("facts-set"), s), set->trained(), set->dim(), true, &share).ok());
    ASSERT_TRUE(share->List(&rows).ok());
    ASSERT_EQ(rows.size(), s == 0 ? 1u : 0u) << s;
    if (s == 0) EXPECT_EQ(rows[0].id, 2);
  }
  // fsck under mpirun checks every shard; without --repair it writes nothing on them. Shard 0's disk lost:
  // fsck reports the fact it misses and creates nothing; --repair sends it again.
  set.reset();
  const std::string fsck = Mpirun(3) + Mnemo() + " fsck --json --state " + dir_->File("facts-set");
  ASSERT_EQ(RunCommand(fsck, &out), 0) << out;
  auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j.at("facts_on_shards"), true);
  EXPECT_EQ(j.at("shards_check"), "ok");
  std::filesystem::remove_all(FactShardDir(dir_->File("facts-set"), 0));
  EXPECT_NE(RunCommand(fsck, &out), 0) << out;
  j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j.at("shard_facts_missing"), 1) << out;
  EXPECT_EQ(j.at("consistent"), false);
  EXPECT_FALSE(std::filesystem::exists(FactShardDir(dir_->File("facts-set"), 0)));
  ASSERT_EQ(RunCommand(fsck + " --repair", &out), 0) << out;
  ASSERT_EQ(RunCommand(fsck, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out.substr(out.find('{'))).at("consistent"), true) << out;
}

}  // namespace
}  // namespace mnemo
