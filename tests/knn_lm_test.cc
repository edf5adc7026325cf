// kNN-LM: the neighbour distribution and interpolation against brute force, datastores on disk
// (round trip, corruption, model mismatch), and the end-to-end effect of memorising a text.
#include "retriever/knn_lm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>

#include "lm/checkpoint.h"
#include "retriever/datastore_builder.h"
#include "retriever/dual_scorer.h"
#include "retriever/recall.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"
#include "util/half.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

// A datastore of n random entries (dim d, values in [0, vocab)), written through DatastoreWriter.
void WriteRandomDatastore(const std::string& dir, int64_t n, int d, int vocab, const std::string& spec,
                          std::vector<float>* keys, std::vector<int32_t>* values) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  keys->resize(n * d);
  values->resize(n);
  for (auto& x : *keys) x = normal(rng);
  for (auto& v : *values) v = static_cast<int32_t>(rng() % vocab);
  std::unique_ptr<DatastoreWriter> w;
  ASSERT_TRUE(DatastoreWriter::Create(dir, d, &w).ok());
  ASSERT_TRUE(w->Append(n / 2, keys->data(), values->data()).ok());
  ASSERT_TRUE(w->Append(n - n / 2, keys->data() + (n / 2) * d, values->data() + n / 2).ok());
  DatastoreManifest m;
  m.model_fingerprint = "test-model";
  m.key_layer = "test";
  m.source = "random";
  DatastoreFinishOptions finish;
  finish.index_spec = spec;
  finish.progress = false;
  Status s = w->Finish(m, finish);
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (auto& x : *keys) x = HalfToFloat(FloatToHalf(x));  // What the datastore stores.
}

// log p(target) by the definition: exact distances to every key, top k, softmax(-d/T), interpolation.
double BruteForceLogProb(const std::vector<float>& keys, const std::vector<int32_t>& values, int d,
                         const float* query, int32_t target, double lm_logprob, int k, double lambda, double t) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<std::pair<double, int64_t>> dist(n);
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += (query[j] - keys[i * d + j]) * (query[j] - keys[i * d + j]);
    dist[i] = {s, i};
  }
  std::partial_sort(dist.begin(), dist.begin() + k, dist.end());
  double z = 0, hit = 0;
  for (int i = 0; i < k; ++i) {
    const double w = std::exp(-dist[i].first / t);
    z += w;
    if (values[dist[i].second] == target) hit += w;
  }
  return std::log(lambda * hit / z + (1 - lambda) * std::exp(lm_logprob));
}

TEST(KnnMathTest, InterpolationMatchesDefinition) {
  for (double lambda : {0.0, 0.25, 0.65, 1.0}) {
    for (double pk : {0.0, 1e-6, 0.3, 1.0}) {
      for (double pl : {1e-9, 0.01, 0.5}) {
        const double want = std::log(lambda * pk + (1 - lambda) * pl);
        const double got = InterpolateLogProb(pk > 0 ? std::log(pk) : -INFINITY, std::log(pl), lambda);
        if (std::isinf(want)) {
          EXPECT_TRUE(std::isinf(got) && got < 0);
        } else {
          EXPECT_NEAR(got, want, 1e-12) << lambda << " " << pk << " " << pl;
        }
      }
    }
  }
}

TEST(KnnMathTest, WeightsAreSoftmaxOfNegativeDistanceOverValidNeighbours) {
  std::vector<Neighbor> nb = {{0, 5, 1.0f}, {1, 7, 2.0f}, {2, 5, 4.0f}, {-1, -1, 0.0f}};
  ComputeNeighborWeights(nb.begin(), nb.end(), 2.0);
  const double z = std::exp(-0.5) + std::exp(-1.0) + std::exp(-2.0);
  EXPECT_NEAR(nb[0].weight, std::exp(-0.5) / z, 1e-6);
  EXPECT_NEAR(nb[1].weight, std::exp(-1.0) / z, 1e-6);
  EXPECT_EQ(nb[3].weight, 0.0f);
  EXPECT_NEAR(KnnLogProb(nb.cbegin(), nb.cend(), 5), std::log((std::exp(-0.5) + std::exp(-2.0)) / z), 1e-6);
  EXPECT_TRUE(std::isinf(KnnLogProb(nb.cbegin(), nb.cend(), 9)));
  // Huge distances must not underflow to 0/0.
  std::vector<Neighbor> far = {{0, 1, 1e6f}, {1, 2, 1e6f + 1}};
  ComputeNeighborWeights(far.begin(), far.end(), 1.0);
  EXPECT_NEAR(far[0].weight + far[1].weight, 1.0, 1e-6);
}

class KnnDatastoreTest : public ::testing::TestWithParam<std::pair<std::string, bool>> {};

TEST_P(KnnDatastoreTest, ScoreTargetsMatchesBruteForce) {
  const auto [spec, recompute] = GetParam();
  ScratchDir dir;
  const int d = 16, vocab = 50, n = 2000, k = 8;
  std::vector<float> keys;
  std::vector<int32_t> values;
  WriteRandomDatastore(dir.path(), n, d, vocab, spec, &keys, &values);
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.path(), {}, &ds).ok());
  KnnLm knn(*ds);
  KnnOptions o;
  o.k = k, o.lambda = 0.4, o.temperature = 3.0, o.recompute = recompute, o.nprobe = 1 << 20;

  const int q = 20;
  torch::Tensor queries = torch::randn({q, d});
  torch::Tensor lm = torch::log_softmax(torch::randn({q, vocab}), 1);
  std::vector<int32_t> targets(q);
  for (int i = 0; i < q; ++i) targets[i] = values[(i * 97) % n];  // Targets that exist in the store.
  std::vector<float> got;
  KnnStats stats;
  ASSERT_TRUE(knn.ScoreTargets(queries, lm, targets.data(), o, &got, &stats).ok());
  EXPECT_EQ(stats.searched, q);
  for (int i = 0; i < q; ++i) {
    const double want = BruteForceLogProb(keys, values, d, queries[i].contiguous().data_ptr<float>(), targets[i],
                                          lm[i][targets[i]].item<double>(), k, o.lambda, o.temperature);
    // PQ search returns approximate candidates (not always the true top k), so for PQ the check is
    // against the definition applied to the candidates actually returned.
    if (spec.find("PQ") == std::string::npos) {
      EXPECT_NEAR(got[i], want, 2e-4) << "query " << i;
    } else {
      std::vector<Neighbor> nb;
      ASSERT_TRUE(knn.Search(queries[i].contiguous().data_ptr<float>(), 1, o, &nb).ok());
      double z = 0, hit = 0;
      for (size_t j = 0; j < nb.size(); ++j) {
        ASSERT_GE(nb[j].entry, 0);
        if (recompute) {
          // Exact distances to the stored keys, re-ranked best first.
          EXPECT_NEAR(nb[j].distance, ds->SquaredDistance(queries[i].contiguous().data_ptr<float>(), nb[j].entry),
                      1e-4);
          if (j > 0) {
            EXPECT_LE(nb[j - 1].distance, nb[j].distance);
          }
        }
        const double w = std::exp(-(nb[j].distance - nb[0].distance) / o.temperature);
        z += w;
        if (nb[j].token == targets[i]) hit += w;
      }
      const double lm_p = std::exp(lm[i][targets[i]].item<double>());
      EXPECT_NEAR(got[i], std::log(o.lambda * hit / z + (1 - o.lambda) * lm_p), 2e-4) << "query " << i;
    }
  }
  // The full distribution agrees with the per-target score and is normalised.
  torch::Tensor dist;
  ASSERT_TRUE(knn.Distribution(queries[0], lm[0], o, &dist, nullptr).ok());
  EXPECT_NEAR(dist.exp().sum().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(dist[targets[0]].item<float>(), got[0], 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Indexes, KnnDatastoreTest,
                         ::testing::Values(std::make_pair(std::string("Flat"), false),
                                           std::make_pair(std::string("IVF16,Flat"), false),
                                           std::make_pair(std::string("IVF16,PQ4"), true),
                                           std::make_pair(std::string("IVF16,PQ4"), false)));

TEST(RecallTest, ExactIndexesHaveRecallOneApproximateOnesBelow) {
  const int d = 16;
  torch::Tensor queries = torch::randn({40, d});
  for (auto [spec, nprobe, low, high] : std::vector<std::tuple<std::string, int, double, double>>{
           {"Flat", 1, 1.0, 1.0}, {"IVF16,Flat", 16, 1.0, 1.0}, {"IVF16,Flat", 1, 0.05, 0.95}, {"IVF16,PQ4", 16, 0.05, 0.99}}) {
    ScratchDir dir;
    std::vector<float> keys;
    std::vector<int32_t> values;
    WriteRandomDatastore(dir.path(), 3000, d, 10, spec, &keys, &values);
    std::unique_ptr<Datastore> ds;
    ASSERT_TRUE(Datastore::Open(dir.path(), {}, &ds).ok());
    RecallReport report;
    // Small chunks exercise the running top-k merge.
    Status s = MeasureRecall(*ds, queries, 10, nprobe, &report, /*chunk=*/700);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(report.queries, 40);
    EXPECT_GE(report.recall, low) << spec << " nprobe " << nprobe;
    EXPECT_LE(report.recall, high) << spec << " nprobe " << nprobe;
  }
  ScratchDir dir;
  std::vector<float> keys;
  std::vector<int32_t> values;
  WriteRandomDatastore(dir.path(), 100, d, 10, "Flat", &keys, &values);
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.path(), {}, &ds).ok());
  RecallReport report;
  EXPECT_TRUE(MeasureRecall(*ds, torch::randn({4, d + 1}), 10, 1, &report).IsInvalidArgument());
  EXPECT_TRUE(MeasureRecall(*ds, queries, 101, 1, &report).IsInvalidArgument());
}

TEST(KnnLmTest, DisabledOrSkippedPositionsGiveTheBaseLm) {
  ScratchDir dir;
  std::vector<float> keys;
  std::vector<int32_t> values;
  WriteRandomDatastore(dir.path(), 500, 8, 20, "Flat", &keys, &values);
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.path(), {}, &ds).ok());
  KnnLm knn(*ds);
  torch::Tensor queries = torch::randn({6, 8});
  torch::Tensor lm = torch::log_softmax(torch::randn({6, 20}), 1);
  std::vector<int32_t> targets = {1, 2, 3, 4, 5, 6};
  KnnOptions o;
  o.k = 4;
  o.skip_confidence = 1e-9;  // Every position counts as confident.
  std::vector<float> out;
  KnnStats stats;
  ASSERT_TRUE(knn.ScoreTargets(queries, lm, targets.data(), o, &out, &stats).ok());
  EXPECT_EQ(stats.searched, 0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], lm[i][targets[i]].item<float>());
  o.skip_confidence = 0;
  o.enabled = false;
  ASSERT_TRUE(knn.ScoreTargets(queries, lm, targets.data(), o, &out, &stats).ok());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], lm[i][targets[i]].item<float>());
  KnnOptions zero_k;
  zero_k.k = 0;
  EXPECT_FALSE(zero_k.Validate().ok());
  KnnOptions bad;
  bad.lambda = 1.5;
  EXPECT_TRUE(bad.Validate().IsInvalidArgument());
}

TEST(DatastoreTest, RoundTripAndCorruption) {
  ScratchDir dir;
  std::vector<float> keys;
  std::vector<int32_t> values;
  WriteRandomDatastore(dir.path(), 300, 8, 20, "Flat", &keys, &values);
  DatastoreOpenOptions verify;
  verify.verify_checksums = true;
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.path(), verify, &ds).ok());
  EXPECT_EQ(ds->size(), 300);
  EXPECT_EQ(ds->manifest().model_fingerprint, "test-model");
  for (int64_t i = 0; i < 300; ++i) {
    ASSERT_EQ(ds->value(i), values[i]);
    for (int j = 0; j < 8; ++j) ASSERT_EQ(HalfToFloat(ds->key(i)[j]), keys[i * 8 + j]);
  }
  EXPECT_EQ(ds->SquaredDistance(keys.data() + 8 * 7, 7), 0.0f);
  ds.reset();

  DatastoreOpenOptions other_model;
  other_model.expected_model_fingerprint = "another-model";
  Status s = Datastore::Open(dir.path(), other_model, &ds);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("another-model"), std::string::npos);

  // A flipped value byte is caught by the checksum; a truncated key file by its size.
  std::string bytes;
  ASSERT_TRUE(ReadFileToString(dir.File("values.i32"), &bytes).ok());
  bytes[17] ^= 0x40;
  testing::WriteFileOrDie(dir.File("values.i32"), bytes);
  s = Datastore::Open(dir.path(), verify, &ds);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("values.i32"), std::string::npos);
  ASSERT_TRUE(ReadFileToString(dir.File("keys.f16"), &bytes).ok());
  testing::WriteFileOrDie(dir.File("keys.f16"), bytes.substr(0, bytes.size() - 2));
  s = Datastore::Open(dir.path(), {}, &ds);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("keys.f16"), std::string::npos);

  testing::WriteFileOrDie(dir.File("manifest.json"), "{\"format\": \"mnemo-datastore\"}");
  EXPECT_TRUE(Datastore::Open(dir.path(), {}, &ds).IsCorruption());
  std::remove(dir.File("manifest.json").c_str());
  EXPECT_TRUE(Datastore::Open(dir.path(), {}, &ds).IsNotFound());
  ScratchDir empty;
  std::unique_ptr<DatastoreWriter> w;
  ASSERT_TRUE(DatastoreWriter::Create(empty.path(), 4, &w).ok());
  EXPECT_FALSE(w->Finish({}, {}).ok());  // No entries.
}

TEST(DatastoreBuildTest, MemorisedTextBecomesFarMoreLikely) {
  // A random tiny model: its keys still identify contexts exactly, which is all a datastore needs.
  const auto& tok = testing::ToyTokenizer();
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  const std::string text = testing::ToyCorpus().substr(0, 3000);

  ScratchDir dir;
  DatastoreBuildOptions options;
  options.finish.progress = false;
  DatastoreBuildReport report;
  Status s = BuildDatastore(model, text, "toy", dir.File("ds"), options, &report);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const auto ids = tok.Encode(text);
  EXPECT_EQ(report.entries, static_cast<int64_t>(ids.size()) - 1);  // One entry per target token.

  DatastoreOpenOptions open;
  open.expected_model_fingerprint = ModelFingerprint(model.net);
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), open, &ds).ok());
  EXPECT_EQ(ds->value(0), ids[1]);
  EXPECT_EQ(ds->value(ds->size() - 1), ids.back());

  KnnLm knn(*ds);
  KnnOptions o;
  o.k = 16, o.lambda = 0.5;
  double base = 0, with_knn = 0;
  std::vector<float> combined;
  ASSERT_TRUE(ForEachScoredSpan(model.net, ids, {}, {true, true}, [&](const ScoredSpan& span) {
    const int32_t* targets = ids.data() + span.first_target;
    MNEMO_RETURN_IF_ERROR(knn.ScoreTargets(span.knn_keys, span.logprobs, targets, o, &combined, nullptr));
    for (int64_t r = 0; r < span.count; ++r) {
      base -= span.logprobs[r][targets[r]].item<double>();
      with_knn -= combined[r];
    }
    return Status::OK();
  }).ok());
  const double n = static_cast<double>(ids.size() - 1);
  const double ppl_base = std::exp(base / n), ppl_knn = std::exp(with_knn / n);
  EXPECT_LT(ppl_knn, ppl_base / 10) << "base " << ppl_base << " kNN-LM " << ppl_knn;
  // Each context's own entry is at distance 0, so p_kNN(target) is large and ppl approaches 1/lambda.
  EXPECT_LT(ppl_knn, 3.0);

  // The same directory cannot be overwritten by a second build.
  EXPECT_TRUE(BuildDatastore(model, text, "toy", dir.File("ds"), options, &report).IsInvalidArgument());
}

TEST(KnnPointersTest, FollowedPointersReplaceSearchesOnTextTheDatastoreHolds) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  const std::string stored = testing::ToyCorpus().substr(0, 3000);
  ScratchDir dir;
  DatastoreBuildOptions build;
  build.finish.progress = false;
  DatastoreBuildReport report;
  ASSERT_TRUE(BuildDatastore(model, stored, "toy", dir.File("ds"), build, &report).ok());
  std::unique_ptr<Datastore> ds;
  ASSERT_TRUE(Datastore::Open(dir.File("ds"), DatastoreOpenOptions(), &ds).ok());

  // Successors: entry i + 1, its value and its exact distance; the last entry has none.
  std::vector<float> query(static_cast<size_t>(ds->dim()), 0.25f);
  std::vector<Neighbor> next;
  ASSERT_TRUE(ds->Successors(query.data(), {{5, 0, 0, 0}, {-1, 0, 0, 0}, {ds->slots() - 1, 0, 0, 0}}, &next).ok());
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].entry, 6);
  EXPECT_EQ(next[0].token, ds->value(6));
  EXPECT_EQ(next[0].distance, ds->SquaredDistance(query.data(), 6));

  KnnOptions o;
  o.k = 16, o.lambda = 0.5;
  auto score = [&](const std::string& text, int pointers, DualScores* out) {
    KnnOptions with = o;
    with.min_pointers = pointers;
    const Status s = ScoreBoth(model, ds.get(), with, model.tokenizer->Encode(text), WindowOptions(), out);
    ASSERT_TRUE(s.ok()) << s.ToString();
  };
  auto ppl = [](const std::vector<float>& lp) {
    double sum = 0;
    for (float x : lp) sum -= x;
    return std::exp(sum / static_cast<double>(lp.size()));
  };
  DualScores searched, followed, never;
  ASSERT_NO_FATAL_FAILURE(score(stored, 0, &searched));
  ASSERT_NO_FATAL_FAILURE(score(stored, 1, &followed));
  ASSERT_NO_FATAL_FAILURE(score(stored, o.k + 1, &never));  // more than k pointers never happen
  EXPECT_EQ(searched.stats.searched, searched.stats.queries);
  ASSERT_EQ(never.knn.size(), searched.knn.size());
  for (size_t i = 0; i < never.knn.size(); ++i) {
    // One query per search instead of a batch's: distances may round differently.
    ASSERT_NEAR(never.knn[i], searched.knn[i], 1e-4) << i;
  }
  EXPECT_EQ(never.stats.searched, never.stats.queries);
  // On the stored text each position's own entry is found at distance 0 and its successor continues it:
  // almost every search is saved, at no loss.
  EXPECT_LT(followed.stats.searched, followed.stats.queries / 5) << followed.stats.searched << " of " << followed.stats.queries;
  EXPECT_LE(ppl(followed.knn), ppl(searched.knn) * 1.02) << ppl(followed.knn) << " vs " << ppl(searched.knn);
  // On text the datastore does not hold, pointers run out and searches come back.
  DualScores unseen;
  ASSERT_NO_FATAL_FAILURE(score(testing::ToyCorpus().substr(3000, 2000), 1, &unseen));
  EXPECT_GT(static_cast<double>(unseen.stats.searched) / unseen.stats.queries,
            2.0 * followed.stats.searched / followed.stats.queries);
  KnnOptions bad = o;
  bad.min_pointers = -1;
  EXPECT_TRUE(bad.Validate().IsInvalidArgument());
}

// A random tiny model and a datastore over the first 2,000 characters of the toy corpus, opened.
class DualScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
    DatastoreBuildOptions build;
    build.finish.progress = false;
    DatastoreBuildReport report;
    const std::string path = dir.File("ds");
    ASSERT_TRUE(BuildDatastore(model, testing::ToyCorpus().substr(0, 2000), "toy", path, build, &report).ok());
    ASSERT_TRUE(Datastore::Open(path, DatastoreOpenOptions(), &ds).ok());
  }

  const BpeTokenizer& tok = testing::ToyTokenizer();
  LanguageModel model;
  ScratchDir dir;
  std::unique_ptr<Datastore> ds;
};

// Batched scoring (many short texts in padded batches, one search per batch) agrees with scoring each
// text alone, for texts shorter and longer than the context; first_targets skips the leading positions.
TEST_F(DualScorerTest, BatchedScoringMatchesOneTextAtATime) {
  KnnOptions o;
  o.k = 8, o.lambda = 0.5;
  const std::string corpus = testing::ToyCorpus();
  std::vector<std::vector<int32_t>> seqs;
  for (size_t len : {12, 40, 3, 25, 300}) seqs.push_back(tok.Encode(corpus.substr(len * 7, len)));
  ASSERT_GT(static_cast<int64_t>(seqs.back().size()), model.config.n_positions);  // one longer than the context
  std::vector<DualScores> batched;
  ASSERT_TRUE(ScoreBothBatch(model, ds.get(), o, seqs, &batched, nullptr, /*batch_tokens=*/64).ok());
  for (size_t i = 0; i < seqs.size(); ++i) {
    DualScores alone;
    ASSERT_TRUE(ScoreBoth(model, ds.get(), o, seqs[i], WindowOptions(), &alone).ok());
    ASSERT_EQ(batched[i].lm.size(), alone.lm.size());
    for (size_t t = 0; t < alone.lm.size(); ++t) {
      EXPECT_NEAR(batched[i].lm[t], alone.lm[t], 1e-4) << i << " " << t;
      EXPECT_NEAR(batched[i].knn[t], alone.knn[t], 1e-3) << i << " " << t;
    }
  }
  const std::vector<size_t> firsts = {5, 1, 2, 30, 1};
  std::vector<DualScores> partial;
  ASSERT_TRUE(ScoreBothBatch(model, ds.get(), o, seqs, &partial, &firsts).ok());
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (size_t t = 1; t < seqs[i].size(); ++t) {
      if (t < firsts[i]) {
        EXPECT_EQ(partial[i].lm[t - 1], 0.0f);
      } else {
        EXPECT_NEAR(partial[i].knn[t - 1], batched[i].knn[t - 1], 1e-3) << i << " " << t;
      }
    }
  }
  EXPECT_TRUE(ScoreBothBatch(model, ds.get(), o, {{1}}, &partial).IsInvalidArgument());
}

// With the callback placed beside the passes it runs on a second thread beside the next forward pass, but still
// one at a time and in order, and the kNN-LM's scores are bit for bit those of the sequential pass.
TEST_F(DualScorerTest, OverlappedScoringMatchesSequentialAndKeepsOrder) {
  const std::vector<int32_t> ids = tok.Encode(testing::ToyCorpus().substr(500, 1500));
  WindowOptions window;
  window.window = 32, window.stride = 16, window.batch_size = 2;  // many batches
  KnnOptions o;
  o.k = 8, o.lambda = 0.5;

  DualScores sequential, overlapped;
  ASSERT_TRUE(ScoreBoth(model, ds.get(), o, ids, window, &sequential).ok());
  window.placement = WindowOptions::Placement::kBeside;
  ASSERT_TRUE(ScoreBoth(model, ds.get(), o, ids, window, &overlapped).ok());
  EXPECT_EQ(overlapped.placement, WindowOptions::Placement::kBeside);
  ASSERT_EQ(overlapped.knn.size(), ids.size() - 1);
  EXPECT_EQ(overlapped.lm, sequential.lm);
  EXPECT_EQ(overlapped.knn, sequential.knn);
  EXPECT_EQ(overlapped.stats.searched, sequential.stats.searched);

  // In order, each target once, off the calling thread, never two callbacks at a time.
  std::vector<int64_t> firsts;
  std::atomic<int> running{0};
  bool concurrent = false, off_thread = true;
  const auto caller = std::this_thread::get_id();
  Status s = ForEachScoredSpan(model.net, ids, window, {true, true}, [&](const ScoredSpan& span) {
    concurrent |= running.fetch_add(1) != 0;
    off_thread &= std::this_thread::get_id() != caller;
    firsts.push_back(span.first_target);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    running.fetch_sub(1);
    return Status::OK();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(concurrent);
  EXPECT_TRUE(off_thread);
  std::vector<Window> plan;
  ASSERT_TRUE(PlanWindows(static_cast<int64_t>(ids.size()), model.config.n_positions, window, &plan).ok());
  ASSERT_EQ(firsts.size(), plan.size());
  for (size_t i = 0; i < plan.size(); ++i) EXPECT_EQ(firsts[i], plan[i].end - plan[i].score_count) << i;

  // The first error stops the pass and is returned; no later span reaches the callback.
  int calls = 0;
  s = ForEachScoredSpan(model.net, ids, window, {true, false}, [&](const ScoredSpan&) {
    return ++calls == 3 ? Status::IOError("third span") : Status::OK();
  });
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(calls, 3);
}

// kAuto times the callback after the pass (batches 1 and 2) and beside the next pass (batches 3 and 4), keeps
// the cheaper placement from batch 5 on, and scores exactly as a fixed placement does.
TEST_F(DualScorerTest, AutomaticPlacementKeepsTheCheaperOneAndTheSameScores) {
  const std::vector<int32_t> ids = tok.Encode(testing::ToyCorpus().substr(500, 1500));
  WindowOptions window;
  window.window = 32, window.stride = 16, window.batch_size = 2;
  std::vector<Window> plan;
  ASSERT_TRUE(PlanWindows(static_cast<int64_t>(ids.size()), model.config.n_positions, window, &plan).ok());
  ASSERT_GE(plan.size(), 16u);  // at least 8 batches: 3 after, 2 beside, then the choice
  window.placement = WindowOptions::Placement::kAuto;
  const auto caller = std::this_thread::get_id();
  // A callback that is slow in one placement only: the other must be chosen, and every span still arrives
  // once, in order.
  for (const bool slow_on_caller : {true, false}) {
    std::vector<int64_t> firsts;
    std::vector<bool> on_caller;
    WindowOptions::Placement placed = WindowOptions::Placement::kAuto;
    Status s = ForEachScoredBatch(model.net, ids, window, {true, false}, [&](const std::vector<ScoredSpan>& spans) {
      const bool here = std::this_thread::get_id() == caller;
      on_caller.push_back(here);
      if (here == slow_on_caller) std::this_thread::sleep_for(std::chrono::milliseconds(60));
      for (const ScoredSpan& span : spans) firsts.push_back(span.first_target);
      return Status::OK();
    }, &placed);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(firsts.size(), plan.size());
    for (size_t i = 0; i < plan.size(); ++i) EXPECT_EQ(firsts[i], plan[i].end - plan[i].score_count) << i;
    ASSERT_GE(on_caller.size(), 8u);
    EXPECT_TRUE(on_caller[0] && on_caller[1] && on_caller[2]);
    EXPECT_FALSE(on_caller[3] || on_caller[4]);
    for (size_t b = 5; b < on_caller.size(); ++b) {
      EXPECT_EQ(on_caller[b], !slow_on_caller) << "batch " << b;
    }
    EXPECT_EQ(placed, slow_on_caller ? WindowOptions::Placement::kBeside : WindowOptions::Placement::kAfter);
  }

  // The kNN-LM's scores do not depend on the placement.
  KnnOptions o;
  o.k = 8, o.lambda = 0.5;
  DualScores automatic, after;
  ASSERT_TRUE(ScoreBoth(model, ds.get(), o, ids, window, &automatic).ok());
  window.placement = WindowOptions::Placement::kAfter;
  window.callback_threads = 2;
  ASSERT_TRUE(ScoreBoth(model, ds.get(), o, ids, window, &after).ok());
  EXPECT_EQ(automatic.lm, after.lm);
  EXPECT_EQ(automatic.knn, after.knn);
}

}  // namespace
}  // namespace mnemo
