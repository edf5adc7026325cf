// VectorIndex GPU search (EnableGpuSearch). In a build without FAISS GPU support (the Debian packages this
// project builds with): the clear error, and the index stays searchable and writable on the CPU. In a
// FAISS GPU build on a machine with a GPU (bench/gpu-check.sh runs these): the GPU copy finds what the CPU
// finds, refuses writes while it exists, and searches FAISS's GPU k-selection cannot take stay on the CPU.
#include "tests/vector_index_fixture.h"

namespace mnemo {
namespace vector_index_test {
namespace {

bool BuiltWithoutFaissGpu() {
  return VectorIndex::CheckGpuDevice(0).message() == VectorIndex::kNoGpuSearchSupport;
}

std::unique_ptr<VectorIndex> FilledIndex(const std::string& spec, Metric metric, int64_t n, uint32_t seed = 1) {
  auto index = CreateOrDie(spec, metric);
  const std::vector<float> data = MixtureVectors(n, kDim, 16, seed);
  TrainIfNeeded(index.get(), data);
  AddOrDie(index.get(), data, IdsFor(n));
  return index;
}

class VectorIndexGpuTest : public VectorIndexTest {};

#ifndef MNEMO_FAISS_GPU
TEST_F(VectorIndexGpuTest, WithoutFaissGpuSupportEnableIsAClearErrorAndTheIndexStaysOnTheCpu) {
  ASSERT_TRUE(BuiltWithoutFaissGpu());
  const std::vector<float> queries = MixtureVectors(20, kDim, 16, 99);
  for (const char* spec : {"Flat", "IVF16,Flat", "IVF16,PQ4"}) {
    auto index = FilledIndex(spec, Metric::kL2, 600);
    const Results before = SearchOrDie(*index, queries, 8, 4);
    Status s = index->EnableGpuSearch(0);
    EXPECT_FALSE(s.ok()) << spec;
    EXPECT_FALSE(s.IsInvalidArgument()) << s.ToString();  // FailedPrecondition: the build, not the argument.
    EXPECT_EQ(s.message(), VectorIndex::kNoGpuSearchSupport);
    EXPECT_NE(s.message().find("-DMNEMO_FAISS_GPU=ON"), std::string::npos) << s.ToString();
    EXPECT_EQ(index->gpu_device(), -1);
    const Results after = SearchOrDie(*index, queries, 8, 4);
    EXPECT_EQ(after.ids, before.ids) << spec;
    EXPECT_EQ(after.distances, before.distances) << spec;
    // Still writable: the failed call left no GPU copy behind to refuse writes for.
    const std::vector<float> extra = MixtureVectors(1, kDim, 16, 7);
    const int64_t id = IdOf(1000);
    ASSERT_TRUE(index->Add(1, extra.data(), &id).ok()) << spec;
    int64_t removed = 0;
    ASSERT_TRUE(index->Remove(&id, 1, &removed).ok()) << spec;
    EXPECT_EQ(removed, 1);
  }
}
#endif  // !MNEMO_FAISS_GPU

TEST_F(VectorIndexGpuTest, NegativeDeviceIsInvalidArgument) {
  EXPECT_TRUE(VectorIndex::CheckGpuDevice(-1).IsInvalidArgument());
  auto index = FilledIndex("Flat", Metric::kL2, 10);
  EXPECT_TRUE(index->EnableGpuSearch(-1).IsInvalidArgument());
  EXPECT_EQ(index->gpu_device(), -1);
}

// ---------------------------------------------------------------------------------------------------------
// FAISS GPU builds only (tests/CMakeLists.txt defines MNEMO_FAISS_GPU for them); they need a GPU at run time.
#ifdef MNEMO_FAISS_GPU

class GpuSearchTest : public FaissTest {
 protected:
  void SetUp() override {
    FaissTest::SetUp();
    ASSERT_FALSE(BuiltWithoutFaissGpu());
    Status s = VectorIndex::CheckGpuDevice(0);
    ASSERT_TRUE(s.ok()) << "a FAISS GPU build's tests need GPU 0: " << s.ToString();
  }
};

class GpuCopyTest : public GpuSearchTest, public ::testing::WithParamInterface<IndexCase> {};

// Sorted distances per query agree within `tolerance` (relative, at least absolute 1e-3): ids of near-equal
// distances may swap places between CPU and GPU, the sorted distances may not move.
void ExpectSameDistances(const Results& a, const Results& b, int k, double tolerance) {
  ASSERT_EQ(a.distances.size(), b.distances.size());
  for (size_t i = 0; i < a.distances.size(); ++i) {
    const double x = a.distances[i], y = b.distances[i];
    EXPECT_NEAR(x, y, tolerance * std::max(1.0, std::abs(x))) << "query " << i / k << " rank " << i % k;
  }
}

TEST_P(GpuCopyTest, FindsWhatTheCpuFinds) {
  const IndexCase& c = GetParam();
  auto index = FilledIndex(c.spec, c.metric, 3000);
  const std::vector<float> queries = MixtureVectors(200, kDim, 16, 42);
  const int k = 10, nprobe = 4;
  const Results cpu = SearchOrDie(*index, queries, k, nprobe);
  Status s = index->EnableGpuSearch(0);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(index->gpu_device(), 0);
  const Results gpu = SearchOrDie(*index, queries, k, nprobe);
  const bool pq = std::string(c.spec).find("PQ") != std::string::npos;
  EXPECT_GE(RecallAtK(gpu, cpu, k), pq ? 0.95 : 0.99);
  ExpectSameDistances(cpu, gpu, k, pq ? 1e-2 : 1e-4);
  index->DisableGpuSearch();
  EXPECT_EQ(index->gpu_device(), -1);
  const Results again = SearchOrDie(*index, queries, k, nprobe);
  EXPECT_EQ(again.ids, cpu.ids);
  EXPECT_EQ(again.distances, cpu.distances);
}

INSTANTIATE_TEST_SUITE_P(Types, GpuCopyTest,
                         ::testing::Values(IndexCase{"Flat", Metric::kL2}, IndexCase{"Flat", Metric::kInnerProduct},
                                           IndexCase{"IVF16,Flat", Metric::kL2},
                                           IndexCase{"IVF16,Flat", Metric::kInnerProduct},
                                           IndexCase{"IVF16,PQ4", Metric::kL2}),
                         CaseName);

TEST_F(GpuSearchTest, WritesAreRefusedWhileTheCopyExists) {
  auto index = FilledIndex("IVF16,Flat", Metric::kL2, 1000);
  ASSERT_TRUE(index->EnableGpuSearch(0).ok());
  const std::vector<float> extra = MixtureVectors(1, kDim, 16, 7);
  const int64_t fresh = IdOf(5000), stored = IdOf(3);
  Status add = index->Add(1, extra.data(), &fresh);
  EXPECT_FALSE(add.ok());
  EXPECT_NE(add.message().find("DisableGpuSearch"), std::string::npos) << add.ToString();
  EXPECT_FALSE(index->Remove(&stored, 1, nullptr).ok());
  EXPECT_TRUE(index->Contains(stored));
  EXPECT_FALSE(index->Contains(fresh));
  index->DisableGpuSearch();
  EXPECT_TRUE(index->Add(1, extra.data(), &fresh).ok());
}

TEST_F(GpuSearchTest, FourBitPqCodesStayOnTheCpu) {
  // FAISS 1.7.3's GpuIndexIVFPQ takes only 8-bit codes: the copy fails with FAISS's reason.
  auto index = FilledIndex("IVF16,PQ8x4", Metric::kL2, 1000);
  Status s = index->EnableGpuSearch(0);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("nbits"), std::string::npos) << s.ToString();
  EXPECT_EQ(index->gpu_device(), -1);
  SearchOrDie(*index, MixtureVectors(3, kDim, 16, 5), 4);
}

TEST_F(GpuSearchTest, KBeyondGpuSelectionAndEmptyIndexesSearchOnTheCpu) {
  auto index = FilledIndex("Flat", Metric::kL2, 3000);
  const std::vector<float> queries = MixtureVectors(3, kDim, 16, 8);
  const Results cpu = SearchOrDie(*index, queries, 2100);
  ASSERT_TRUE(index->EnableGpuSearch(0).ok());
  const Results large = SearchOrDie(*index, queries, 2100);  // Over FAISS's 2047: the CPU path, bit for bit.
  EXPECT_EQ(large.ids, cpu.ids);
  EXPECT_EQ(large.distances, cpu.distances);
  auto empty = CreateOrDie("Flat", Metric::kL2);
  ASSERT_TRUE(empty->EnableGpuSearch(0).ok());
  const Results none = SearchOrDie(*empty, queries, 3);
  for (size_t i = 0; i < none.ids.size(); ++i) {
    EXPECT_EQ(none.ids[i], -1);
    EXPECT_EQ(none.distances[i], FLT_MAX);
  }
}

TEST_F(GpuSearchTest, ShortResultsArePaddedAsOnTheCpu) {
  for (Metric metric : {Metric::kL2, Metric::kInnerProduct}) {
    auto index = FilledIndex("Flat", metric, 5);
    ASSERT_TRUE(index->EnableGpuSearch(0).ok());
    const Results r = SearchOrDie(*index, MixtureVectors(2, kDim, 16, 9), 8);
    for (int q = 0; q < 2; ++q) {
      for (int j = 0; j < 8; ++j) {
        const int64_t id = r.ids[q * 8 + j];
        if (j < 5) {
          EXPECT_GE(id, IdOf(0));  // Ids, not positions.
        } else {
          EXPECT_EQ(id, -1);
          EXPECT_EQ(r.distances[q * 8 + j], metric == Metric::kL2 ? FLT_MAX : -FLT_MAX);
        }
      }
    }
  }
}

TEST_F(GpuSearchTest, ConcurrentSearchesAgreeWithOneSearch) {
  auto index = FilledIndex("IVF16,Flat", Metric::kL2, 2000);
  ASSERT_TRUE(index->EnableGpuSearch(0).ok());
  const std::vector<float> queries = MixtureVectors(64, kDim, 16, 11);
  const Results reference = SearchOrDie(*index, queries, 16, 8);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        if (SearchOrDie(*index, queries, 16, 8).ids != reference.ids) ++mismatches;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

#endif  // MNEMO_FAISS_GPU

}  // namespace
}  // namespace vector_index_test
}  // namespace mnemo
