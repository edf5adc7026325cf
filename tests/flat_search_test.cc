// FlatL2Search (indexes/flat_search.h): screened by sgemm, it must return exactly what ranking every vector
// by FAISS's scalar distance returns, whatever the batch.
#include "indexes/flat_search.h"

#include <gtest/gtest.h>

#include <memory>

#include "indexes/vector_index.h"

#include <algorithm>
#include <cfloat>
#include <limits>
#include <string>
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

// Vectors near a low-dimensional subspace (as kNN-LM keys are: a projection's bounds are tight), or
// isotropic Gaussian ones (bounds from a few directions are loose: most queries need the second pass).
std::vector<float> MakeVectors(int64_t count, int d, bool structured, std::mt19937* rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> xb(count * d);
  if (!structured) {
    for (float& v : xb) v = 3.0f * normal(*rng);
    return xb;
  }
  const int rank = 6;
  std::vector<float> basis(rank * d);
  for (float& v : basis) v = normal(*rng);
  for (int64_t r = 0; r < count; ++r) {
    float z[rank];
    for (int i = 0; i < rank; ++i) z[i] = 4.0f * normal(*rng);
    for (int j = 0; j < d; ++j) {
      float v = 0.2f * normal(*rng) + 1.5f;  // noise, and a mean away from the origin
      for (int i = 0; i < rank; ++i) v += z[i] * basis[i * d + j];
      xb[r * d + j] = v;
    }
  }
  return xb;
}

TEST(FlatSearchTest, ProjectedScreenEqualsTheExactReferenceBitForBit) {
  const int d = 64, k = 37;
  const int64_t count = 6000, n = 260;
  for (bool structured : {true, false}) {
    for (int p : {0, 8}) {
      SCOPED_TRACE(std::string(structured ? "structured" : "isotropic") + " p=" + std::to_string(p));
      std::mt19937 rng(structured ? 11 : 12);
      std::vector<float> xb = MakeVectors(count, d, structured, &rng);
      // Duplicates (ties ordered by id), queries on stored vectors, queries near them, far-away queries.
      for (int64_t r = 0; r < 100; ++r) std::copy_n(&xb[r * d], d, &xb[(count - 1 - r) * d]);
      std::vector<float> queries(n * d);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (int64_t q = 0; q < n; ++q) {
        const int64_t row = (q * 7919) % count;
        const float noise = q % 4 == 0 ? 0.0f : q % 4 == 1 ? 0.1f : q % 4 == 2 ? 1.0f : 30.0f;
        for (int i = 0; i < d; ++i) queries[q * d + i] = xb[row * d + i] + noise * normal(rng);
      }
      queries[5 * d + 3] = std::numeric_limits<float>::quiet_NaN();  // ranked without the screen
      std::vector<int64_t> ids(count);
      for (int64_t r = 0; r < count; ++r) ids[r] = (r * 7919) % 100003;
      std::unique_ptr<const FlatProjection> projection = FlatProjection::Build(xb.data(), count, d, p);
      ASSERT_NE(projection, nullptr);
      EXPECT_EQ(projection->p, p == 0 ? 16 : p);
      std::vector<float> dist(n * k);
      std::vector<int64_t> lab(n * k);
      FlatL2Search(xb.data(), ids.data(), count, d, n, queries.data(), k, dist.data(), lab.data(), projection.get());
      std::vector<float> ref_dist;
      std::vector<int64_t> ref_lab;
      for (int64_t q = 0; q < n; ++q) {
        if (q == 5) continue;
        Reference(xb, ids, d, &queries[q * d], k, &ref_dist, &ref_lab);
        for (int j = 0; j < k; ++j) {
          ASSERT_EQ(dist[q * k + j], ref_dist[j]) << "query " << q << " rank " << j;  // bit for bit
          ASSERT_EQ(lab[q * k + j], ref_lab[j]) << "query " << q << " rank " << j;
        }
      }
      // The NaN query, and batches of every size, agree with the unprojected search.
      std::vector<float> plain_dist(n * k);
      std::vector<int64_t> plain_lab(n * k);
      FlatL2Search(xb.data(), ids.data(), count, d, n, queries.data(), k, plain_dist.data(), plain_lab.data());
      EXPECT_EQ(dist, plain_dist);
      EXPECT_EQ(lab, plain_lab);
      FlatL2Search(xb.data(), ids.data(), count, d, 9, queries.data(), k, plain_dist.data(), plain_lab.data(),
                   projection.get());
      EXPECT_EQ(std::vector<int64_t>(lab.begin(), lab.begin() + 9 * k),
                std::vector<int64_t>(plain_lab.begin(), plain_lab.begin() + 9 * k));
    }
  }
}

TEST(FlatSearchTest, ProjectionRefusesWhatItCannotBound) {
  std::vector<float> xb(100 * 32, 1.0f);
  EXPECT_EQ(FlatProjection::Build(xb.data(), 100, 32, 17), nullptr);  // more than d / 2 directions
  EXPECT_EQ(FlatProjection::Build(xb.data(), 10, 32, 8), nullptr);    // fewer than 2p vectors
  xb[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FlatProjection::Build(xb.data(), 100, 32, 8), nullptr);
}

// VectorIndex projects an L2 Flat index of kMinProjectedCount vectors or more on its first search, and
// every write drops the projection: after removing 200 vectors and adding 200 others (the same count, so a
// stale projection would be taken for the current one), results equal a fresh index's.
TEST(FlatSearchTest, VectorIndexKeepsItsProjectionInStepWithWrites) {
  const int d = 32, k = 10;
  const int64_t count = kMinProjectedCount + 500, swapped = 200, n = 16;
  std::mt19937 rng(3);
  std::vector<float> xb = MakeVectors(count + swapped, d, true, &rng);
  std::vector<int64_t> ids(count + swapped);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  std::unique_ptr<VectorIndex> index;
  ASSERT_TRUE(VectorIndex::Create(d, "Flat", Metric::kL2, &index).ok());
  ASSERT_TRUE(index->Add(count, xb.data(), ids.data()).ok());
  // Queries: the vectors about to be added.
  std::vector<float> queries(xb.begin() + count * d, xb.begin() + (count + n) * d);
  std::vector<float> dist(n * k), want_dist(n * k);
  std::vector<int64_t> lab(n * k), want_lab(n * k);
  ASSERT_TRUE(index->Search(n, queries.data(), k, dist.data(), lab.data()).ok());  // builds the projection
  int64_t removed = 0;
  ASSERT_TRUE(index->Remove(ids.data(), swapped, &removed).ok());
  ASSERT_EQ(removed, swapped);
  ASSERT_TRUE(index->Add(swapped, xb.data() + count * d, ids.data() + count).ok());
  ASSERT_TRUE(index->Search(n, queries.data(), k, dist.data(), lab.data()).ok());
  std::unique_ptr<VectorIndex> fresh;
  ASSERT_TRUE(VectorIndex::Create(d, "Flat", Metric::kL2, &fresh).ok());
  ASSERT_TRUE(fresh->Add(count, xb.data() + swapped * d, ids.data() + swapped).ok());
  ASSERT_TRUE(fresh->Search(n, queries.data(), k, want_dist.data(), want_lab.data()).ok());
  EXPECT_EQ(lab, want_lab);
  EXPECT_EQ(dist, want_dist);
  for (int64_t q = 0; q < n; ++q) EXPECT_EQ(lab[q * k], count + q) << q;  // each finds itself
}

}  // namespace
}  // namespace mnemo
