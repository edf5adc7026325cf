// FlatL2Search (indexes/flat_search.h): screened by sgemm, it must return exactly what ranking every vector
// by FAISS's scalar distance returns, whatever the batch.
#include "indexes/flat_search.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace mnemo {
namespace {

// The reference: every distance as fvec_L2sqr_ref computes it, sorted by (distance, id).
void Reference(const std::vector<float>& xb, const std::vector<int64_t>& ids, int d, const float* q, int k,
               std::vector<float>* dist, std::vector<int64_t>* lab) {
  std::vector<std::pair<float, int64_t>> all;
  for (size_t r = 0; r < ids.size(); ++r) {
    float sum = 0;
    for (int i = 0; i < d; ++i) {
      const float t = q[i] - xb[r * d + i];
      sum += t * t;
    }
    all.push_back({sum, ids[r]});
  }
  std::sort(all.begin(), all.end());
  dist->assign(k, FLT_MAX);
  lab->assign(k, -1);
  for (size_t j = 0; j < std::min<size_t>(k, all.size()); ++j) (*dist)[j] = all[j].first, (*lab)[j] = all[j].second;
}

TEST(FlatSearchTest, ScreenedBatchesEqualTheExactReferenceBitForBit) {
  const int d = 48, k = 37;
  const int64_t count = 5000, n = 300;  // more than one block of queries, and of vectors
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> xb(count * d), queries(n * d);
  for (float& v : xb) v = normal(rng);
  for (float& v : queries) v = normal(rng);
  // Duplicated vectors (equal distances, ordered by id) and queries that sit on stored vectors.
  for (int64_t r = 0; r < 200; ++r) std::copy_n(&xb[r * d], d, &xb[(count - 1 - r) * d]);
  for (int64_t q = 0; q < 20; ++q) std::copy_n(&xb[q * 7 * d], d, &queries[q * d]);
  std::vector<int64_t> ids(count);
  for (int64_t r = 0; r < count; ++r) ids[r] = (r * 7919) % 100003;  // ids not in row order
  std::vector<float> dist(n * k);
  std::vector<int64_t> lab(n * k);
  FlatL2Search(xb.data(), ids.data(), count, d, n, queries.data(), k, dist.data(), lab.data());
  std::vector<float> one_dist(k), ref_dist;
  std::vector<int64_t> one_lab(k), ref_lab;
  for (int64_t q = 0; q < n; ++q) {
    Reference(xb, ids, d, &queries[q * d], k, &ref_dist, &ref_lab);
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(dist[q * k + j], ref_dist[j]) << "query " << q << " rank " << j;  // bit for bit
      ASSERT_EQ(lab[q * k + j], ref_lab[j]) << "query " << q << " rank " << j;
    }
    // Alone (the unscreened path), the same query gives the same answer.
    FlatL2Search(xb.data(), ids.data(), count, d, 1, &queries[q * d], k, one_dist.data(), one_lab.data());
    ASSERT_EQ(std::vector<float>(dist.begin() + q * k, dist.begin() + (q + 1) * k), one_dist) << q;
    ASSERT_EQ(std::vector<int64_t>(lab.begin() + q * k, lab.begin() + (q + 1) * k), one_lab) << q;
  }
}

TEST(FlatSearchTest, PadsWhenFewerThanKAndRanksNonFiniteQueriesExactly) {
  const int d = 4, k = 5;
  std::vector<float> xb = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2};
  std::vector<int64_t> ids = {10, 11, 12};
  std::vector<float> queries(8 * d, 0.5f);
  queries[3 * d] = std::numeric_limits<float>::quiet_NaN();
  queries[4 * d] = std::numeric_limits<float>::infinity();
  std::vector<float> dist(8 * k);
  std::vector<int64_t> lab(8 * k);
  FlatL2Search(xb.data(), ids.data(), 3, d, 8, queries.data(), k, dist.data(), lab.data());
  EXPECT_EQ(lab[0], 10);
  EXPECT_EQ(lab[1], 11);
  EXPECT_EQ(lab[2], 12);
  EXPECT_EQ(lab[3], -1);
  EXPECT_EQ(dist[4], FLT_MAX);
  // A NaN query: every vector at +infinity, still ordered by id, never a crash or a lost row.
  EXPECT_EQ(lab[3 * k], 10);
  EXPECT_EQ(lab[3 * k + 2], 12);
  EXPECT_EQ(lab[3 * k + 3], -1);
}

}  // namespace
}  // namespace mnemo
