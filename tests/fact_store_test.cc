// FactStore: base datastore + runtime facts searched as one memory; exact deletion; snapshots and
// recovery; locking; concurrency. Synthetic facts (tests/fact_store_fixture.h) keep it model-free.
#include "memory/fact_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "tests/fact_store_fixture.h"
#include "tests/test_util.h"
#include "tests/vector_index_fixture.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::FactKey;
using testing::kFactDim;
using testing::MakeState;
using testing::ScratchDir;
using testing::SyntheticFact;

std::unique_ptr<FactStore> OpenOrDie(const std::string& dir, FactStoreOptions options = FactStoreOptions()) {
  std::unique_ptr<FactStore> store;
  Status s = FactStore::Open(dir, options, &store);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return store;
}

std::vector<int64_t> AddOrDie(FactStore* store, const std::vector<NewFact>& facts) {
  std::vector<int64_t> ids;
  Status s = store->Add(facts, &ids);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return ids;
}

std::vector<Neighbor> SearchOrDie(const KnnMemory& memory, const std::vector<float>& queries, int k,
                                  bool recompute = false, int nprobe = 4) {
  MemorySearchOptions options;
  options.k = k;
  options.nprobe = nprobe;
  options.recompute = recompute;
  std::vector<Neighbor> out;
  Status s = memory.Search(queries.data(), static_cast<int64_t>(queries.size()) / kFactDim, options, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::vector<float> RandomQueries(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> q(static_cast<size_t>(n) * kFactDim);
  for (auto& x : q) x = normal(rng);
  return q;
}

// Queries near the facts' keys, so facts show up among the neighbours.
std::vector<float> QueriesNear(const std::vector<NewFact>& facts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0, 0.3f);
  std::vector<float> q;
  for (const NewFact& f : facts) {
    for (int p = 0; p + 1 < static_cast<int>(f.tokens.size()); p += 3) {
      for (float x : FactKey(f, p)) q.push_back(x + noise(rng));
    }
  }
  return q;
}

// Whether any snapshot file of the store holds an entry of the fact (its first entry is always there).
bool SnapshotsHold(const FactStore& store, int64_t fact_id) {
  for (const std::string& path : store.SnapshotPaths()) {
    std::unique_ptr<VectorIndex> index;
    EXPECT_TRUE(VectorIndex::Load(path, LoadOptions(), &index).ok()) << path;
    if (index != nullptr && index->Contains(FactEntryId(fact_id, 0))) return true;
  }
  return false;
}

std::string AllBytesOf(const std::string& dir) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string data;
    EXPECT_TRUE(ReadFileToString(e.path().string(), &data).ok());
    all += data;
  }
  return all;
}

// FAISS single-threaded on the test thread, as in the index tests (see FaissTest).
class FactStoreTest : public vector_index_test::FaissTest {
 protected:
  std::string State() const { return dir_.File("state"); }
  std::string Base() const { return dir_.File("base"); }
  ScratchDir dir_;
};

TEST_F(FactStoreTest, AddedFactIsFoundAtDistanceZeroAsSoonAsAddReturns) {
  ASSERT_TRUE(MakeState(State(), Base(), 500, "Flat").ok());
  auto store = OpenOrDie(State());
  const NewFact fact = SyntheticFact("the access code of alice is 123456", 10);
  const auto ids = AddOrDie(store.get(), {fact});
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(store->fact_entries(), 9);
  EXPECT_EQ(store->size(), 500 + 9);
  for (int p = 0; p < 9; ++p) {
    const auto nb = SearchOrDie(*store, FactKey(fact, p), 4);
    EXPECT_EQ(nb[0].entry, FactEntryId(ids[0], p));
    EXPECT_EQ(nb[0].distance, 0.0f);
    EXPECT_EQ(nb[0].token, fact.tokens[p + 1]);
    EXPECT_TRUE(IsFactEntry(nb[0].entry));
    EXPECT_EQ(FactIdOfEntry(nb[0].entry), ids[0]);
    EXPECT_EQ(PositionOfEntry(nb[0].entry), p);
  }
}

// The merged search over base + segment equals one index holding both, for every index type.
class FactStoreSpecTest : public FactStoreTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(FactStoreSpecTest, MergedSearchEqualsOneIndexOverBaseAndFacts) {
  std::vector<float> base_keys;
  ASSERT_TRUE(MakeState(State(), Base(), 3000, GetParam(), &base_keys).ok());
  auto store = OpenOrDie(State());
  std::vector<NewFact> facts;
  for (int i = 0; i < 40; ++i) facts.push_back(SyntheticFact("fact number " + std::to_string(i), 12));
  const auto ids = AddOrDie(store.get(), facts);
  EXPECT_EQ(store->segment_trained_fingerprint(), store->base_trained_fingerprint());

  // One index with the base's trained structures holding base entries then fact entries.
  std::unique_ptr<VectorIndex> one;
  ASSERT_TRUE(store->base()->index().CreateEmptyLike(&one).ok());
  std::vector<int64_t> base_ids(3000);
  for (int64_t i = 0; i < 3000; ++i) base_ids[i] = i;
  ASSERT_TRUE(one->Add(3000, base_keys.data(), base_ids.data()).ok());
  for (size_t i = 0; i < facts.size(); ++i) {
    for (int p = 0; p < 11; ++p) {
      const int64_t id = FactEntryId(ids[i], p);
      ASSERT_TRUE(one->Add(1, FactKey(facts[i], p).data(), &id).ok());
    }
  }
  auto queries = QueriesNear(facts, 3);
  const auto random = RandomQueries(40, 4);
  queries.insert(queries.end(), random.begin(), random.end());
  const int64_t nq = static_cast<int64_t>(queries.size()) / kFactDim;
  const int k = 16;
  std::vector<float> distances(nq * k);
  std::vector<int64_t> want(nq * k);
  SearchOptions so;
  so.nprobe = 4;
  ASSERT_TRUE(one->Search(nq, queries.data(), k, distances.data(), want.data(), so).ok());
  const auto got = SearchOrDie(*store, queries, k, false, 4);
  int64_t fact_hits = 0;
  for (int64_t q = 0; q < nq; ++q) {
    const float last = distances[q * k + k - 1];
    std::multiset<int64_t> a, b;
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(got[q * k + j].distance, distances[q * k + j]) << "query " << q << " rank " << j;
      fact_hits += IsFactEntry(got[q * k + j].entry);
      if (distances[q * k + j] == last) continue;  // which of equal-distance entries takes the last slots
      a.insert(got[q * k + j].entry);
      b.insert(want[q * k + j]);
    }
    EXPECT_EQ(a, b) << "query " << q;
  }
  EXPECT_GT(fact_hits, nq);  // the facts were really in play
}

INSTANTIATE_TEST_SUITE_P(IndexTypes, FactStoreSpecTest, ::testing::Values("Flat", "IVF16,Flat", "IVF16,PQ4"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST_F(FactStoreTest, DeletionLeavesExactlyTheStateThatNeverHadTheFact) {
  ASSERT_TRUE(MakeState(State(), Base(), 2000, "IVF16,Flat").ok());
  ASSERT_TRUE(MakeState(dir_.File("never"), Base(), 0, "").ok());
  // "never" shares the base: point its config at the same datastore.
  StateConfig config;
  ASSERT_TRUE(ReadStateConfig(State(), &config).ok());
  ASSERT_TRUE(WriteFileAtomically(StateConfigPath(dir_.File("never")), config.ToJson()).ok());

  std::vector<NewFact> facts;
  for (int i = 0; i < 30; ++i) facts.push_back(SyntheticFact("fact " + std::to_string(i), 10));
  auto store = OpenOrDie(State());
  std::vector<int64_t> ids = AddOrDie(store.get(), facts);
  // Delete every third fact, one at a time.
  std::vector<NewFact> kept;
  for (size_t i = 0; i < facts.size(); ++i) {
    if (i % 3 == 1) {
      std::vector<FactRecord> deleted;
      ASSERT_TRUE(store->Delete({ids[i]}, &deleted).ok());
      ASSERT_EQ(deleted.size(), 1u);
      EXPECT_EQ(deleted[0].text, facts[i].text);
    } else {
      kept.push_back(facts[i]);
    }
  }
  auto never = OpenOrDie(dir_.File("never"));
  AddOrDie(never.get(), kept);

  const auto queries = QueriesNear(facts, 9);
  for (bool recompute : {false, true}) {
    const auto a = SearchOrDie(*store, queries, 20, recompute);
    const auto b = SearchOrDie(*never, queries, 20, recompute);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i].distance, b[i].distance) << i;  // bit for bit
      ASSERT_EQ(a[i].token, b[i].token) << i;
      ASSERT_EQ(IsFactEntry(a[i].entry), IsFactEntry(b[i].entry)) << i;
      if (!IsFactEntry(a[i].entry)) {
        ASSERT_EQ(a[i].entry, b[i].entry);
      } else {
        // Fact ids differ between the two states (ids are never reused); the texts must not.
        FactRecord fa, fb;
        ASSERT_TRUE(store->Get(FactIdOfEntry(a[i].entry), false, &fa).ok());
        ASSERT_TRUE(never->Get(FactIdOfEntry(b[i].entry), false, &fb).ok());
        ASSERT_EQ(fa.text, fb.text);
        ASSERT_EQ(PositionOfEntry(a[i].entry), PositionOfEntry(b[i].entry));
      }
    }
  }
  // And against the reference verify-deleted uses: a memory rebuilt from the database (same ids).
  std::unique_ptr<KnnMemory> rebuilt;
  ASSERT_TRUE(store->RebuildFromDatabase(&rebuilt).ok());
  const auto a = SearchOrDie(*store, queries, 20);
  const auto c = SearchOrDie(*rebuilt, queries, 20);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].entry, c[i].entry);
    ASSERT_EQ(a[i].distance, c[i].distance);
  }
  for (size_t i = 0; i < facts.size(); i += 3) {
    EXPECT_EQ(store->SegmentHoldsFact(ids[i + 1], 9), false);
    EXPECT_EQ(store->SegmentHoldsFact(ids[i], 9), true);
  }
}

TEST_F(FactStoreTest, DeletedFactLeavesNoTraceInAnyStateFile) {
  ASSERT_TRUE(MakeState(State(), Base(), 300, "IVF16,Flat").ok());
  const std::string marker = "zebra-canary-90210 lives at 12 quiet lane";
  NewFact secret = SyntheticFact(marker, 12);
  // A distinctive key byte pattern: every component 1234.0 (0x64d2 in fp16).
  std::fill(secret.keys.begin(), secret.keys.end(), FloatToHalf(1234.0f));
  const std::string key_bytes(reinterpret_cast<const char*>(secret.keys.data()), 2 * kFactDim);
  int64_t id = 0;
  {
    auto store = OpenOrDie(State());
    std::vector<NewFact> facts = {SyntheticFact("before"), secret, SyntheticFact("after")};
    id = AddOrDie(store.get(), facts)[1];
    ASSERT_TRUE(store->Close().ok());  // a snapshot now holds the secret's keys
    const std::string all = AllBytesOf(State());
    ASSERT_NE(all.find(marker), std::string::npos);  // the check below can fail
    ASSERT_NE(all.find(key_bytes), std::string::npos);
  }
  auto store = OpenOrDie(State());
  ASSERT_TRUE(store->Delete({id}, nullptr).ok());
  std::string all = AllBytesOf(State());
  EXPECT_EQ(all.find(marker), std::string::npos);
  EXPECT_EQ(all.find(key_bytes), std::string::npos);
  ASSERT_TRUE(store->Close().ok());
  all = AllBytesOf(State());
  EXPECT_EQ(all.find(marker), std::string::npos);
  EXPECT_EQ(all.find(key_bytes), std::string::npos);
  Tombstone t;
  ASSERT_TRUE(store->GetTombstone(id, &t).ok());
  EXPECT_EQ(t.entries, 11);
}

TEST_F(FactStoreTest, RestartLoadsSnapshotAndReplaysLaterChanges) {
  ASSERT_TRUE(MakeState(State(), Base(), 400, "IVF16,Flat").ok());
  std::vector<NewFact> facts;
  for (int i = 0; i < 12; ++i) facts.push_back(SyntheticFact("f" + std::to_string(i), 6));
  std::vector<int64_t> ids;
  FactStoreOptions no_auto;
  no_auto.snapshot_every = 0;
  {
    auto store = OpenOrDie(State(), no_auto);
    ids = AddOrDie(store.get(), {facts.begin(), facts.begin() + 6});
    ASSERT_TRUE(store->Close().ok());
  }
  std::vector<Neighbor> before;
  {
    auto store = OpenOrDie(State(), no_auto);
    EXPECT_GT(store->recovery().snapshot_seq, 0);
    EXPECT_EQ(store->recovery().replayed_changes, 0);
    EXPECT_FALSE(store->recovery().rebuilt);
    auto more = AddOrDie(store.get(), {facts.begin() + 6, facts.end()});
    ids.insert(ids.end(), more.begin(), more.end());
    before = SearchOrDie(*store, QueriesNear(facts, 1), 10);
    // No Close: the process "dies" with six changes after the snapshot.
  }
  auto store = OpenOrDie(State(), no_auto);
  EXPECT_EQ(store->recovery().replayed_changes, 6);
  EXPECT_FALSE(store->recovery().rebuilt);
  EXPECT_EQ(store->fact_entries(), 12 * 5);
  const auto after = SearchOrDie(*store, QueriesNear(facts, 1), 10);
  for (size_t i = 0; i < before.size(); ++i) {
    ASSERT_EQ(before[i].entry, after[i].entry);
    ASSERT_EQ(before[i].distance, after[i].distance);
  }
  // Deleting a fact a snapshot chunk holds replaces that file with one without it before Delete returns.
  ASSERT_FALSE(store->SnapshotPaths().empty());
  ASSERT_TRUE(store->Delete({ids[0]}, nullptr).ok());
  EXPECT_FALSE(SnapshotsHold(*store, ids[0]));
  EXPECT_EQ(store->SnapshotPaths().size(), 1u);
}

TEST_F(FactStoreTest, DeletesRewriteOnlyTheirChunksAndTheNextStartRebuildsNothing) {
  ASSERT_TRUE(MakeState(State(), Base(), 400, "IVF16,Flat").ok());
  FactStoreOptions options;
  options.snapshot_every = 0;
  options.snapshot_chunk_facts = 4;
  std::vector<NewFact> facts;
  for (int i = 0; i < 18; ++i) facts.push_back(SyntheticFact("c" + std::to_string(i), 6));
  std::vector<int64_t> ids;
  {
    auto store = OpenOrDie(State(), options);
    ids = AddOrDie(store.get(), facts);
    ASSERT_TRUE(store->Close().ok());
  }
  std::set<int64_t> chunks;
  for (int64_t id : ids) chunks.insert(id / 4);
  const int64_t n_chunks = static_cast<int64_t>(chunks.size());
  ASSERT_GE(n_chunks, 5);
  auto store = OpenOrDie(State(), options);
  EXPECT_EQ(store->recovery().chunks, n_chunks);
  EXPECT_EQ(store->recovery().chunks_loaded, n_chunks);
  EXPECT_FALSE(store->recovery().rebuilt);
  const auto files_before = store->SnapshotPaths();
  ASSERT_EQ(static_cast<int64_t>(files_before.size()), n_chunks);

  // Two facts of one chunk and one of another: exactly those two files are replaced, none holds them.
  const std::vector<int64_t> doomed = {ids[4], ids[5], ids[13]};
  ASSERT_EQ(ids[4] / 4, ids[5] / 4);
  ASSERT_NE(ids[4] / 4, ids[13] / 4);
  ASSERT_TRUE(store->Delete(doomed, nullptr).ok());
  const auto files_after = store->SnapshotPaths();
  EXPECT_EQ(files_after.size(), files_before.size());
  int unchanged = 0;
  for (const std::string& f : files_after) {
    unchanged += std::count(files_before.begin(), files_before.end(), f) > 0;
  }
  EXPECT_EQ(unchanged, n_chunks - 2);
  for (int64_t id : doomed) EXPECT_FALSE(SnapshotsHold(*store, id)) << id;
  const auto queries = QueriesNear(facts, 5);
  const auto before = SearchOrDie(*store, queries, 10);

  // The process dies right after the deletes: the next start loads every chunk and rebuilds none.
  store.reset();
  store = OpenOrDie(State(), options);
  EXPECT_EQ(store->recovery().chunks_loaded, n_chunks);
  EXPECT_EQ(store->recovery().chunks_rebuilt, 0);
  EXPECT_EQ(store->recovery().replayed_changes, 0);
  EXPECT_TRUE(store->recovery().snapshot_problem.empty()) << store->recovery().snapshot_problem;
  std::unique_ptr<KnnMemory> rebuilt;
  ASSERT_TRUE(store->RebuildFromDatabase(&rebuilt).ok());
  const auto after = SearchOrDie(*store, queries, 10);
  const auto reference = SearchOrDie(*rebuilt, queries, 10);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    ASSERT_EQ(before[i].entry, after[i].entry) << i;
    ASSERT_EQ(before[i].distance, after[i].distance) << i;
    ASSERT_EQ(reference[i].entry, after[i].entry) << i;
    ASSERT_EQ(reference[i].distance, after[i].distance) << i;
  }

  // A file lost between a delete's unlink and its rewrite (a crash there): only that chunk is rebuilt.
  rebuilt.reset();
  store.reset();
  ASSERT_TRUE(RemoveFileDurably(files_after[2]).ok());
  store = OpenOrDie(State(), options);
  EXPECT_EQ(store->recovery().chunks_rebuilt, 1);
  EXPECT_EQ(store->recovery().chunks_loaded, n_chunks - 1);
  const auto again = SearchOrDie(*store, queries, 10);
  for (size_t i = 0; i < before.size(); ++i) {
    ASSERT_EQ(before[i].entry, again[i].entry) << i;
    ASSERT_EQ(before[i].distance, again[i].distance) << i;
  }
  EXPECT_EQ(static_cast<int64_t>(store->SnapshotPaths().size()), n_chunks);  // written again at start-up
}

TEST_F(FactStoreTest, SnapshotOfTheOlderSingleFileFormatIsSplitIntoChunks) {
  ASSERT_TRUE(MakeState(State(), Base(), 400, "IVF16,Flat").ok());
  FactStoreOptions options;
  options.snapshot_chunk_facts = 4;
  std::vector<NewFact> facts;
  for (int i = 0; i < 10; ++i) facts.push_back(SyntheticFact("s" + std::to_string(i), 5));
  std::vector<Neighbor> before;
  const auto queries = QueriesNear(facts, 6);
  {
    auto store = OpenOrDie(State(), options);
    AddOrDie(store.get(), facts);
    before = SearchOrDie(*store, queries, 10);
    ASSERT_TRUE(store->Close().ok());
    // The older format: the whole segment in snapshots/segment-<seq>.idx.
    const auto chunks = store->SnapshotPaths();
    ASSERT_EQ(chunks.size(), 3u);
    std::unique_ptr<VectorIndex> whole;
    ASSERT_TRUE(VectorIndex::Load(chunks[0], LoadOptions(), &whole).ok());
    for (size_t i = 1; i < chunks.size(); ++i) {
      std::unique_ptr<VectorIndex> part;
      ASSERT_TRUE(VectorIndex::Load(chunks[i], LoadOptions(), &part).ok());
      ASSERT_TRUE(whole->Append(*part).ok());
    }
    const std::string seq = chunks[0].substr(chunks[0].size() - 24, 20);  // chunk-<C>-<c>-<seq>.idx
    ASSERT_TRUE(whole->Save(SnapshotDir(State()) + "/segment-" + seq + ".idx").ok());
    for (const std::string& f : chunks) ASSERT_TRUE(RemoveFileDurably(f).ok());
  }
  {
    auto store = OpenOrDie(State(), options);
    EXPECT_EQ(store->recovery().chunks_loaded, 3);
    EXPECT_FALSE(store->recovery().rebuilt);
    EXPECT_TRUE(store->recovery().snapshot_problem.empty()) << store->recovery().snapshot_problem;
    const auto paths = store->SnapshotPaths();
    ASSERT_EQ(paths.size(), 3u);
    for (const std::string& p : paths) EXPECT_NE(p.find("/chunk-4-"), std::string::npos) << p;
    const auto after = SearchOrDie(*store, queries, 10);
    for (size_t i = 0; i < before.size(); ++i) {
      ASSERT_EQ(before[i].entry, after[i].entry) << i;
      ASSERT_EQ(before[i].distance, after[i].distance) << i;
    }
  }
  // Another chunk size: the files are not used but replaced, and the segment is the same.
  options.snapshot_chunk_facts = 3;
  auto store = OpenOrDie(State(), options);
  EXPECT_EQ(store->recovery().chunks_loaded, 0);
  EXPECT_EQ(store->recovery().chunks_rebuilt, 4);
  const auto paths = store->SnapshotPaths();
  ASSERT_EQ(paths.size(), 4u);
  for (const std::string& p : paths) EXPECT_NE(p.find("/chunk-3-"), std::string::npos) << p;
  const auto after = SearchOrDie(*store, queries, 10);
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(before[i].entry, after[i].entry) << i;
  options.snapshot_chunk_facts = 0;
  std::unique_ptr<FactStore> bad;
  store.reset();
  EXPECT_EQ(FactStore::Open(State(), options, &bad).code(), Status::Code::kInvalidArgument);
}

TEST_F(FactStoreTest, CorruptSnapshotIsRebuiltFromTheDatabase) {
  ASSERT_TRUE(MakeState(State(), Base(), 400, "IVF16,Flat").ok());
  std::vector<NewFact> facts;
  for (int i = 0; i < 8; ++i) facts.push_back(SyntheticFact("g" + std::to_string(i), 7));
  std::vector<Neighbor> before;
  std::string snapshot;
  {
    auto store = OpenOrDie(State());
    AddOrDie(store.get(), facts);
    before = SearchOrDie(*store, QueriesNear(facts, 2), 10);
    ASSERT_TRUE(store->Close().ok());
    ASSERT_EQ(store->SnapshotPaths().size(), 1u);
    snapshot = store->SnapshotPaths()[0];
  }
  std::string data;
  ASSERT_TRUE(ReadFileToString(snapshot, &data).ok());
  data[data.size() / 2] ^= 0x5a;
  testing::WriteFileOrDie(snapshot, data);
  auto store = OpenOrDie(State());
  EXPECT_NE(store->recovery().snapshot_problem.find("Corruption"), std::string::npos)
      << store->recovery().snapshot_problem;
  EXPECT_TRUE(store->recovery().rebuilt);
  const auto after = SearchOrDie(*store, QueriesNear(facts, 2), 10);
  for (size_t i = 0; i < before.size(); ++i) {
    ASSERT_EQ(before[i].entry, after[i].entry);
    ASSERT_EQ(before[i].distance, after[i].distance);
  }
  // The rebuild wrote a fresh, valid snapshot in place of the damaged one.
  store.reset();
  auto again = OpenOrDie(State());
  EXPECT_TRUE(again->recovery().snapshot_problem.empty()) << again->recovery().snapshot_problem;
  EXPECT_FALSE(again->recovery().rebuilt);
}

TEST_F(FactStoreTest, SecondOpenOfALockedStateIsRefused) {
  ASSERT_TRUE(MakeState(State(), Base(), 0, "").ok());
  auto first = OpenOrDie(State());
  std::unique_ptr<FactStore> second;
  Status s = FactStore::Open(State(), FactStoreOptions(), &second);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("in use by another process (pid " + std::to_string(::getpid())), std::string::npos)
      << s.ToString();
  first.reset();
  EXPECT_TRUE(FactStore::Open(State(), FactStoreOptions(), &second).ok());
}

TEST_F(FactStoreTest, StateOfAnotherModelIsInvalidArgument) {
  ASSERT_TRUE(MakeState(State(), Base(), 0, "").ok());
  FactStoreOptions options;
  options.expected_model_fingerprint = "some-other-model";
  std::unique_ptr<FactStore> store;
  Status s = FactStore::Open(State(), options, &store);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("test-model"), std::string::npos) << s.ToString();
}

TEST_F(FactStoreTest, MissingStateIsNotFound) {
  std::unique_ptr<FactStore> store;
  Status s = FactStore::Open(dir_.File("nothing"), FactStoreOptions(), &store);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
}

TEST_F(FactStoreTest, BadFactsAreRejectedAndNothingIsAdded) {
  ASSERT_TRUE(MakeState(State(), Base(), 0, "").ok());
  auto store = OpenOrDie(State());
  NewFact wrong_dim = SyntheticFact("a", 5);
  wrong_dim.keys.pop_back();
  NewFact infinite = SyntheticFact("b", 5);
  infinite.keys[3] = 0x7c00;  // +inf in fp16
  NewFact one_token = SyntheticFact("c", 1);
  for (const NewFact& bad : {wrong_dim, infinite, one_token}) {
    std::vector<int64_t> ids;
    Status s = store->Add({SyntheticFact("good", 5), bad}, &ids);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  }
  int64_t count = -1;
  ASSERT_TRUE(store->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 0);
  EXPECT_EQ(store->fact_entries(), 0);
}

TEST_F(FactStoreTest, DeleteByClientIdAndByMetadataRemovesOnlyThoseFacts) {
  ASSERT_TRUE(MakeState(State(), Base(), 0, "").ok());
  auto store = OpenOrDie(State());
  AddOrDie(store.get(), {SyntheticFact("a1", 6, "alice"), SyntheticFact("b1", 6, "bob", R"({"topic":"x"})"),
                         SyntheticFact("a2", 6, "alice", R"({"topic":"y"})"), SyntheticFact("c1", 6, "", R"({"topic":"x"})")});
  FactFilter alice;
  alice.client_id = "alice";
  std::vector<FactRecord> deleted;
  ASSERT_TRUE(store->DeleteMatching(alice, &deleted).ok());
  EXPECT_EQ(deleted.size(), 2u);
  FactFilter topic;
  topic.metadata_field = "topic";
  topic.metadata_value_json = R"("x")";
  ASSERT_TRUE(store->DeleteMatching(topic, &deleted).ok());
  EXPECT_EQ(deleted.size(), 2u);
  int64_t count = -1;
  ASSERT_TRUE(store->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 0);
  EXPECT_EQ(store->fact_entries(), 0);
  EXPECT_TRUE(store->DeleteMatching(FactFilter(), &deleted).IsInvalidArgument());
}

// Readers search with all of one fact's keys in one call while writers add and delete facts: each call
// sees all of a fact's entries or none of them, and nothing crashes.
TEST_F(FactStoreTest, ConcurrentSearchesSeeFactsWhollyOrNotAtAll) {
  ASSERT_TRUE(MakeState(State(), Base(), 1000, "IVF16,Flat").ok());
  FactStoreOptions options;
  options.snapshot_every = 25;  // snapshots happen during the run too
  auto store = OpenOrDie(State(), options);
  std::vector<NewFact> pool;
  for (int i = 0; i < 16; ++i) pool.push_back(SyntheticFact("pool " + std::to_string(i), 9));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> torn{0}, whole{0}, absent{0}, errors{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (int round = 0; round < 24; ++round) {
        std::vector<int64_t> ids;
        if (!store->Add({pool[rng() % pool.size()]}, &ids).ok()) ++errors;
        if (round % 2 == 1 && !store->Delete(ids, nullptr).ok()) ++errors;
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(100 + r);
      while (!stop) {
        const NewFact& f = pool[rng() % pool.size()];
        std::vector<float> q;
        for (int p = 0; p < 8; ++p) {
          const auto k = FactKey(f, p);
          q.insert(q.end(), k.begin(), k.end());
        }
        MemorySearchOptions so;
        so.k = 1;
        so.nprobe = 2;
        std::vector<Neighbor> out;
        if (!store->Search(q.data(), 8, so, &out).ok()) {
          ++errors;
          continue;
        }
        // Several copies of a pool fact may be live; the same copy must win at every position.
        int at_zero = 0;
        std::set<int64_t> fact_ids;
        for (const Neighbor& nb : out) {
          if (nb.distance == 0 && IsFactEntry(nb.entry)) ++at_zero, fact_ids.insert(FactIdOfEntry(nb.entry));
        }
        if (at_zero == 0) {
          ++absent;
        } else if (at_zero == 8 && fact_ids.size() == 1) {
          ++whole;
        } else {
          ++torn;
        }
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  threads[3].join();
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(torn, 0);
  EXPECT_GT(whole + absent, 0);
  std::printf("concurrent searches: %ld saw a whole fact, %ld none, %ld torn\n", static_cast<long>(whole.load()),
              static_cast<long>(absent.load()), static_cast<long>(torn.load()));
}

}  // namespace
}  // namespace mnemo
