// IvfSearch: the IVF-PQ and IVF-Flat search VectorIndex uses instead of FAISS's. Checked against FAISS's
// own search of the same index (IVF-Flat bit for bit), for the ordering and padding contract, tie order,
// the pruning of candidates when a probe scans many more codes than k, and which indexes it declines.
#include "indexes/ivf_search.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <vector>

namespace mnemo {
namespace {

constexpr int kDim = 32;
constexpr size_t kLists = 16;  // unless a test says otherwise

std::vector<float> RandomVectors(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n) * kDim);
  for (float& x : v) x = normal(rng);
  return v;
}

// An IVF<nlist>,PQ8 (8-bit codes) index holding `n` random vectors under ids 1000, 1003, 1006, ...
struct TestIndex {
  faiss::IndexFlatL2 quantizer{kDim};
  std::unique_ptr<faiss::IndexIVFPQ> index;
  std::vector<float> vectors;
  std::vector<int64_t> ids;

  explicit TestIndex(int64_t n, size_t m = 8, size_t nbits = 8, faiss::MetricType metric = faiss::METRIC_L2,
                     size_t nlist = kLists) {
    index = std::make_unique<faiss::IndexIVFPQ>(&quantizer, kDim, nlist, m, nbits, metric);
    index->verbose = false;
    index->cp.max_points_per_centroid = 1000000;  // no subsampling warnings
    const std::vector<float> training = RandomVectors(2000, 1);
    index->train(2000, training.data());
    vectors = RandomVectors(n, 2);
    for (int64_t i = 0; i < n; ++i) ids.push_back(1000 + 3 * i);
    index->add_with_ids(n, vectors.data(), ids.data());
  }
};

struct Results {
  std::vector<float> distances;
  std::vector<int64_t> ids;
};

Results Ours(const IvfSearch& search, const std::vector<float>& queries, int k, size_t nprobe) {
  const int64_t n = static_cast<int64_t>(queries.size() / kDim);
  Results r{std::vector<float>(n * k), std::vector<int64_t>(n * k)};
  search.Search(n, queries.data(), k, nprobe, r.distances.data(), r.ids.data());
  return r;
}

Results Faiss(const faiss::IndexIVFPQ& index, const std::vector<float>& queries, int k, size_t nprobe) {
  const int64_t n = static_cast<int64_t>(queries.size() / kDim);
  Results r{std::vector<float>(n * k), std::vector<int64_t>(n * k)};
  faiss::SearchParametersIVF params;
  params.nprobe = nprobe;
  index.search(n, queries.data(), k, r.distances.data(), r.ids.data(), &params);
  return r;
}

// Checks IvfSearch against FAISS's search of the same index for n queries at each k and nprobe.
void ExpectSameAsFaiss(faiss::IndexIVFPQ* index, const std::vector<int64_t>& query_counts,
                       const std::vector<int>& ks, const std::vector<size_t>& nprobes) {
  index->use_precomputed_table = 0;  // FAISS's table-less path computes the distances the same way
  std::unique_ptr<IvfSearch> search = IvfSearch::Create(*index);
  ASSERT_NE(search, nullptr);
  for (int64_t n : query_counts) {
    const std::vector<float> queries = RandomVectors(n, 3 + static_cast<uint32_t>(n));
    for (int k : ks) {
      for (size_t nprobe : nprobes) {
        const Results ours = Ours(*search, queries, k, nprobe);
        const Results ref = Faiss(*index, queries, k, nprobe);
        for (int64_t q = 0; q < n; ++q) {
          std::map<int64_t, float> ref_distance;
          for (int j = 0; j < k; ++j) ref_distance[ref.ids[q * k + j]] = ref.distances[q * k + j];
          for (int j = 0; j < k; ++j) {
            const float d = ours.distances[q * k + j], want = ref.distances[q * k + j];
            const float tolerance = 1e-5f * std::max(1.0f, std::abs(want));
            // The sorted distances agree position by position ...
            ASSERT_NEAR(d, want, tolerance) << "n=" << n << " k=" << k << " nprobe=" << nprobe << " q=" << q;
            // ... and each id is FAISS's, at the same distance, unless it ties with FAISS's last one.
            const int64_t id = ours.ids[q * k + j];
            auto it = ref_distance.find(id);
            if (it != ref_distance.end()) {
              EXPECT_NEAR(it->second, d, tolerance) << "id " << id;
            } else {
              EXPECT_NEAR(d, ref.distances[q * k + k - 1], tolerance) << "id " << id << " is not FAISS's";
            }
          }
        }
      }
    }
  }
}

TEST(IvfSearchTest, FindsWhatFaissFindsWithTheSameDistances) {
  TestIndex t(3000);
  // One query probes by a BLAS matrix-vector product, more by a matrix product.
  ExpectSameAsFaiss(t.index.get(), {1, 3, 40}, {1, 10, 200}, {1, 4, kLists});
}

TEST(IvfSearchTest, FindsWhatFaissFindsWhenProbingManyListsForManyQueries) {
  // nprobe over 32 ranks the lists with partial_sort; 300 queries take two blocks of centroid products.
  TestIndex t(3000, 8, 8, faiss::METRIC_L2, /*nlist=*/64);
  ExpectSameAsFaiss(t.index.get(), {300}, {50}, {40});
}

// IVF-Flat distances are FAISS's own, bit for bit (both compute fvec_L2sqr_ref's sum), so the results
// are identical; 30 dimensions also take the path for a dimension that is not a multiple of 4.
TEST(IvfSearchTest, IvfFlatResultsAreFaissResultsBitForBit) {
  for (int dim : {32, 30}) {
    faiss::IndexFlatL2 quantizer(dim);
    faiss::IndexIVFFlat index(&quantizer, dim, kLists, faiss::METRIC_L2);
    index.verbose = false;
    std::mt19937 rng(21);
    std::normal_distribution<float> normal;
    std::vector<float> vectors(3001 * dim);
    for (float& x : vectors) x = normal(rng);
    index.train(3001, vectors.data());
    std::vector<int64_t> ids(3001);
    for (int i = 0; i < 3001; ++i) ids[i] = 5 * i + 2;
    index.add_with_ids(3001, vectors.data(), ids.data());
    std::unique_ptr<IvfSearch> search = IvfSearch::Create(index);
    ASSERT_NE(search, nullptr);
    for (int64_t n : {1, 3, 40}) {
      std::vector<float> queries(n * dim);
      for (float& x : queries) x = normal(rng);
      for (int k : {1, 10, 300}) {
        for (size_t nprobe : {size_t{1}, size_t{4}, kLists}) {
          std::vector<float> ours_d(n * k), ref_d(n * k);
          std::vector<int64_t> ours_i(n * k), ref_i(n * k);
          search->Search(n, queries.data(), k, nprobe, ours_d.data(), ours_i.data());
          faiss::SearchParametersIVF params;
          params.nprobe = nprobe;
          index.search(n, queries.data(), k, ref_d.data(), ref_i.data(), &params);
          EXPECT_EQ(ours_i, ref_i) << "dim=" << dim << " n=" << n << " k=" << k << " nprobe=" << nprobe;
          EXPECT_EQ(ours_d, ref_d) << "dim=" << dim << " n=" << n << " k=" << k << " nprobe=" << nprobe;
        }
      }
    }
  }
}

TEST(IvfSearchTest, ReturnsEveryProbedVectorSortedThenPadding) {
  TestIndex t(300);
  std::unique_ptr<IvfSearch> search = IvfSearch::Create(*t.index);
  ASSERT_NE(search, nullptr);
  const int k = 310;  // more than the index holds; every list probed
  const Results r = Ours(*search, RandomVectors(1, 9), k, kLists);
  std::vector<int64_t> found(r.ids.begin(), r.ids.begin() + 300);
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, t.ids);
  for (int j = 1; j < 300; ++j) {
    ASSERT_TRUE(r.distances[j - 1] < r.distances[j] ||
                (r.distances[j - 1] == r.distances[j] && r.ids[j - 1] < r.ids[j]))
        << "position " << j;
  }
  for (int j = 300; j < k; ++j) {
    EXPECT_EQ(r.ids[j], -1);
    EXPECT_EQ(r.distances[j], std::numeric_limits<float>::max());
  }
}

TEST(IvfSearchTest, EqualDistancesComeInIdOrder) {
  TestIndex t(0);
  // 100 copies of one vector (one code, one distance) under shuffled ids: more than the radix sort's
  // cut-over to std::sort, so its tie pass is what orders them.
  const std::vector<float> v = RandomVectors(1, 5);
  std::vector<int64_t> ids(100);
  for (int i = 0; i < 100; ++i) ids[i] = 7 * i + 1;
  std::shuffle(ids.begin(), ids.end(), std::mt19937(4));
  for (int64_t id : ids) t.index->add_with_ids(1, v.data(), &id);
  std::unique_ptr<IvfSearch> search = IvfSearch::Create(*t.index);
  ASSERT_NE(search, nullptr);
  const Results r = Ours(*search, RandomVectors(1, 6), 100, kLists);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(r.ids, ids);
  for (float d : r.distances) EXPECT_EQ(d, r.distances[0]);
}

// For an index of `size` vectors probed in full, the k best of each query at every k in `ks` are exactly
// the first k of the full ranking (k = size, where nothing can be pruned).
void ExpectKBestArePrefixes(const TestIndex& t, int size, const std::vector<int>& ks, int queries_count) {
  std::unique_ptr<IvfSearch> search = IvfSearch::Create(*t.index);
  ASSERT_NE(search, nullptr);
  const std::vector<float> queries = RandomVectors(queries_count, 11);
  const Results full = Ours(*search, queries, size, kLists);
  for (int k : ks) {
    const Results top = Ours(*search, queries, k, kLists);
    for (int q = 0; q < queries_count; ++q) {
      for (int j = 0; j < k; ++j) {
        ASSERT_EQ(top.ids[q * k + j], full.ids[q * size + j]) << "k=" << k << " q=" << q << " j=" << j;
        ASSERT_EQ(top.distances[q * k + j], full.distances[q * size + j]);
      }
    }
  }
}

TEST(IvfSearchTest, KBestAreThePrefixOfTheFullRankingWhenProbesScanManyMore) {
  // Every k under half the candidates takes the pruning before the sort.
  ExpectKBestArePrefixes(TestIndex(5000), 5000, {1, 7, 64, 500, 2400}, 5);
}

TEST(IvfSearchTest, PruningWhileScanningLongListsKeepsTheKBest) {
  // 140,000 codes per query: past the 131,072 at which a query's candidates are pruned while its lists
  // are still being scanned (in chunks of 65,536).
  ExpectKBestArePrefixes(TestIndex(140000), 140000, {1, 100, 20000}, 2);
}

TEST(IvfSearchTest, NonFiniteQueryRanksEverythingLastWithoutCrashing) {
  TestIndex t(200);
  std::unique_ptr<IvfSearch> search = IvfSearch::Create(*t.index);
  ASSERT_NE(search, nullptr);
  std::vector<float> query = RandomVectors(1, 12);
  query[3] = std::numeric_limits<float>::quiet_NaN();
  const Results r = Ours(*search, query, 10, 4);
  for (int j = 0; j < 10; ++j) {
    EXPECT_TRUE(r.ids[j] == -1 || std::isinf(r.distances[j])) << r.ids[j] << " " << r.distances[j];
  }
}

TEST(IvfSearchTest, LeavesOtherIndexesToFaiss) {
  TestIndex inner_product(10, 8, 8, faiss::METRIC_INNER_PRODUCT);
  EXPECT_EQ(IvfSearch::Create(*inner_product.index), nullptr);
  TestIndex four_bit(10, 8, 4);
  EXPECT_EQ(IvfSearch::Create(*four_bit.index), nullptr);
  faiss::IndexFlatL2 quantizer(kDim);
  faiss::IndexIVFPQ untrained(&quantizer, kDim, kLists, 8, 8);
  EXPECT_EQ(IvfSearch::Create(untrained), nullptr);
  faiss::IndexFlatL2 flat_quantizer(kDim);
  faiss::IndexIVFFlat flat_inner_product(&flat_quantizer, kDim, kLists, faiss::METRIC_INNER_PRODUCT);
  const std::vector<float> training = RandomVectors(200, 1);
  flat_inner_product.train(200, training.data());
  EXPECT_EQ(IvfSearch::Create(flat_inner_product), nullptr);
}

}  // namespace
}  // namespace mnemo
