// Shared helpers of the VectorIndex tests (vector_index_test.cc, vector_index_file_test.cc): data
// generators, search wrappers that fail the test on error, and the per-type parameterized fixture.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include "indexes/index_file_format.h"
#include "indexes/index_spec.h"
#include "tests/test_util.h"
#include "util/file_util.h"
#include <gtest/gtest.h>
#include <omp.h>

#include "indexes/vector_index.h"

namespace mnemo {
namespace vector_index_test {

using testing::ScratchDir;
using testing::WriteFileOrDie;

inline constexpr int kDim = 16;

// ---------------------------------------------------------------------------------------------------------
// Data and helpers.

inline std::vector<float> GaussianVectors(int64_t n, int dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (float& x : v) x = normal(rng);
  return v;
}

// Points from a mixture of `clusters` unit-variance Gaussians whose centres are spread with std `spread`,
// the shape under which an inverted file is meaningful. The centres depend only on (clusters, dim), so
// data and queries drawn with different seeds come from the same mixture.
inline std::vector<float> MixtureVectors(int64_t n, int dim, int clusters, uint32_t seed, float spread = 3.0f) {
  const std::vector<float> centres = GaussianVectors(clusters, dim, 1000 + clusters);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> pick(0, clusters - 1);
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (int64_t i = 0; i < n; ++i) {
    const int c = pick(rng);
    for (int j = 0; j < dim; ++j) v[i * dim + j] = spread * centres[c * dim + j] + normal(rng);
  }
  return v;
}

// Arbitrary, non-contiguous ids so nothing silently relies on ids being positions.
inline int64_t IdOf(int64_t position) { return 17 + 7 * position; }
inline std::vector<int64_t> IdsFor(int64_t n) {
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = IdOf(i);
  return ids;
}

struct Results {
  std::vector<float> distances;
  std::vector<int64_t> ids;
};

inline Results SearchOrDie(const VectorIndex& index, const std::vector<float>& queries, int k, int nprobe = 32) {
  const int64_t nq = static_cast<int64_t>(queries.size()) / index.dim();
  Results r;
  r.distances.resize(nq * k);
  r.ids.resize(nq * k);
  SearchOptions options;
  options.nprobe = nprobe;
  Status s = index.Search(nq, queries.data(), k, r.distances.data(), r.ids.data(), options);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return r;
}

inline std::unique_ptr<VectorIndex> CreateOrDie(const std::string& spec, Metric metric, int dim = kDim) {
  std::unique_ptr<VectorIndex> index;
  Status s = VectorIndex::Create(dim, spec, metric, &index);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return index;
}

// Trains (when the spec needs it) on the first min(n, 2000) vectors.
inline void TrainIfNeeded(VectorIndex* index, const std::vector<float>& data) {
  if (index->is_trained()) return;
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(data.size()) / index->dim(), 2000);
  Status s = index->Train(n, data.data());
  ASSERT_TRUE(s.ok()) << s.ToString();
}

inline void AddOrDie(VectorIndex* index, const std::vector<float>& data, const std::vector<int64_t>& ids) {
  Status s = index->Add(static_cast<int64_t>(ids.size()), data.data(), ids.data());
  ASSERT_TRUE(s.ok()) << s.ToString();
}

inline std::unique_ptr<VectorIndex> LoadOrDie(const std::string& path, bool mmap = false) {
  LoadOptions options;
  options.mmap = mmap;
  std::unique_ptr<VectorIndex> index;
  Status s = VectorIndex::Load(path, options, &index);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return index;
}

inline std::string ReadOrDie(const std::string& path) {
  std::string data;
  Status s = ReadFileToString(path, &data);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return data;
}

inline Status LoadStatus(const std::string& path, bool mmap) {
  LoadOptions options;
  options.mmap = mmap;
  std::unique_ptr<VectorIndex> index;
  return VectorIndex::Load(path, options, &index);
}

inline void ExpectCorruptionNaming(const Status& s, const std::string& path) {
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
}

inline double ExactDistance(const float* a, const float* b, int dim, Metric metric) {
  double acc = 0;
  for (int j = 0; j < dim; ++j) {
    acc += metric == Metric::kL2 ? (double(a[j]) - b[j]) * (double(a[j]) - b[j]) : double(a[j]) * b[j];
  }
  return acc;
}

// Average fraction of the exact top-k ids that the approximate search also returned.
inline double RecallAtK(const Results& approximate, const Results& exact, int k) {
  const size_t nq = exact.ids.size() / k;
  double hits = 0;
  for (size_t q = 0; q < nq; ++q) {
    std::unordered_set<int64_t> truth(exact.ids.begin() + q * k, exact.ids.begin() + (q + 1) * k);
    for (int j = 0; j < k; ++j) hits += truth.count(approximate.ids[q * k + j]);
  }
  return hits / (nq * k);
}

// FAISS parallelizes with OpenMP, whose idle threads spin-wait. On inputs this small that is pure overhead,
// and on a loaded machine the spinning made this file 20x slower (measured 144 s against 7 s on two busy
// cores), so each test runs FAISS single-threaded on the test thread and restores the setting afterwards.
// Threads a test starts itself (the concurrency test) keep the process default.
class FaissTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_threads_ = omp_get_max_threads();
    omp_set_num_threads(1);
  }
  void TearDown() override { omp_set_num_threads(saved_threads_); }

 private:
  int saved_threads_ = 1;
};

class VectorIndexTest : public FaissTest {};

// The index types VectorIndex offers, each with both metrics, for the tests that must hold for all.
struct IndexCase {
  const char* spec;
  Metric metric;
};

inline std::string CaseName(const ::testing::TestParamInfo<IndexCase>& info) {
  std::string name = info.param.spec;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name + (info.param.metric == Metric::kL2 ? "_L2" : "_IP");
}

inline const IndexCase kAllCases[] = {
    {"Flat", Metric::kL2},        {"Flat", Metric::kInnerProduct},
    {"IVF16,Flat", Metric::kL2},  {"IVF16,Flat", Metric::kInnerProduct},
    {"IVF16,PQ4", Metric::kL2},   {"IVF16,PQ4", Metric::kInnerProduct},
    {"IVF16,PQ8x4", Metric::kL2}, {"IVF16,PQ8x4", Metric::kInnerProduct},
};

// ---------------------------------------------------------------------------------------------------------
// Removal: for every type, removing ids must leave exactly the index built without them.

class VectorIndexTypeTest : public FaissTest, public ::testing::WithParamInterface<IndexCase> {
 protected:
  // A trained, empty index of the case's type saved to disk, so that several indexes can share exactly the
  // same trained structures (k-means under OpenMP need not be bit-reproducible).
  std::string SaveTrainedEmpty(const std::vector<float>& training) {
    auto index = CreateOrDie(GetParam().spec, GetParam().metric);
    TrainIfNeeded(index.get(), training);
    const std::string path = dir_.File("trained.idx");
    Status s = index->Save(path);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return path;
  }

  // An index of the case's type holding n mixture vectors under IdsFor(n).
  std::unique_ptr<VectorIndex> Filled(int64_t n, std::vector<float>* data_out = nullptr) {
    const auto data = MixtureVectors(n, kDim, 20, 31);
    auto index = CreateOrDie(GetParam().spec, GetParam().metric);
    TrainIfNeeded(index.get(), data);
    AddOrDie(index.get(), data, IdsFor(n));
    if (data_out != nullptr) *data_out = data;
    return index;
  }

  ScratchDir dir_;
};

// Instantiated in vector_index_file_test.cc; a build of a subset of the test files (make test-tsan) may
// include this header without it.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(VectorIndexTypeTest);

}  // namespace vector_index_test
}  // namespace mnemo
