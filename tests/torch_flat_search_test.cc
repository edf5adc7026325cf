// The LibTorch exact search (retriever/torch_flat_search.h) and VectorIndex's route to a registered device
// search (indexes/device_search.h). On the CPU (device -1) the arithmetic is checked against VectorIndex's
// own exact search; a registered maker backed by that CPU search exercises the routing a GPU build uses.
// With a CUDA LibTorch (MNEMO_TORCH_CUDA, bench/gpu-check.sh) the same comparison runs on GPU 0.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "retriever/torch_flat_search.h"
#include "tests/vector_index_fixture.h"

namespace mnemo {
namespace vector_index_test {
namespace {

std::unique_ptr<VectorIndex> FilledFlat(int64_t n, const std::vector<float>& data) {
  auto index = CreateOrDie("Flat", Metric::kL2);
  AddOrDie(index.get(), data, IdsFor(n));
  return index;
}

// Same neighbours (by id, where distances are not tied) and distances to float rounding.
void ExpectSameNeighbours(const Results& got, const Results& want, int64_t n, int k) {
  for (int64_t q = 0; q < n; ++q) {
    for (int j = 0; j < k; ++j) {
      const size_t i = static_cast<size_t>(q * k + j);
      const float w = want.distances[i];
      ASSERT_NEAR(got.distances[i], w, 1e-5f * std::max(1.0f, std::fabs(w))) << "query " << q << " rank " << j;
      const bool tied = (j > 0 && want.distances[i - 1] == w) || (j + 1 < k && want.distances[i + 1] == w);
      if (!tied) {
        EXPECT_EQ(got.ids[i], want.ids[i]) << "query " << q << " rank " << j;
      }
    }
  }
}

// The torch search's raw positions, mapped to the fixture's ids.
Results TorchSearch(const DeviceFlatSearch& search, const std::vector<float>& queries, int k) {
  const int64_t n = static_cast<int64_t>(queries.size()) / kDim;
  Results r;
  r.distances.resize(static_cast<size_t>(n * k));
  r.ids.resize(static_cast<size_t>(n * k));
  Status s = search.Search(n, queries.data(), k, r.distances.data(), r.ids.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (int64_t& id : r.ids) id = id < 0 ? -1 : IdOf(id);
  return r;
}

void CompareWithTheCpuIndex(int device) {
  const int64_t n = 3000;
  const std::vector<float> data = MixtureVectors(n, kDim, 16, 5);
  const std::vector<float> queries = MixtureVectors(64, kDim, 16, 6);
  auto index = FilledFlat(n, data);
  std::unique_ptr<DeviceFlatSearch> search;
  ASSERT_TRUE(MakeTorchFlatSearch(data.data(), n, kDim, device, &search).ok());
  for (int k : {1, 10, 100}) {
    ExpectSameNeighbours(TorchSearch(*search, queries, k), SearchOrDie(*index, queries, k), 64, k);
  }
}

TEST(TorchFlatSearchTest, FindsWhatTheCpuIndexFindsWithItsDistances) { CompareWithTheCpuIndex(-1); }

TEST(TorchFlatSearchTest, PadsWhenFewerThanKAreStoredAndHandlesAnEmptyCopy) {
  const std::vector<float> data = MixtureVectors(3, kDim, 2, 8);
  std::unique_ptr<DeviceFlatSearch> search;
  ASSERT_TRUE(MakeTorchFlatSearch(data.data(), 3, kDim, -1, &search).ok());
  const Results r = TorchSearch(*search, data, 5);
  for (int q = 0; q < 3; ++q) {
    EXPECT_EQ(r.ids[q * 5], IdOf(q));  // Each vector is its own nearest.
    EXPECT_EQ(r.distances[q * 5], 0.0f);
    for (int j = 3; j < 5; ++j) {
      EXPECT_EQ(r.ids[q * 5 + j], -1);
      EXPECT_EQ(r.distances[q * 5 + j], std::numeric_limits<float>::max());
    }
  }
  EXPECT_TRUE(MakeTorchFlatSearch(nullptr, 4, kDim, -1, &search).IsInvalidArgument());
  EXPECT_TRUE(MakeTorchFlatSearch(data.data(), 3, 0, -1, &search).IsInvalidArgument());
}

#ifdef MNEMO_TORCH_CUDA
TEST(TorchFlatSearchTest, OnGpuZeroFindsWhatTheCpuIndexFinds) {
  ASSERT_GT(torch::cuda::device_count(), 0) << "a CUDA LibTorch build's tests need GPU 0";
  CompareWithTheCpuIndex(0);
}
#else
TEST(TorchFlatSearchTest, ACpuOnlyLibTorchIsAClearErrorNamingBothMissingParts) {
  RegisterTorchFlatSearch();
  Status s = VectorIndex::CheckGpuDevice(0);
  RegisterDeviceFlatSearch(DeviceFlatSearchMaker{});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsFailedPrecondition()) << s.ToString();
  EXPECT_NE(s.message().find(VectorIndex::kNoGpuSearchSupport), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("LibTorch sees no CUDA GPU"), std::string::npos) << s.ToString();
}
#endif

#ifndef MNEMO_FAISS_GPU
// A device search backed by the CPU torch copy: what VectorIndex does with whatever search is registered.
class DeviceRouteTest : public VectorIndexTest {
 protected:
  void SetUp() override {
    VectorIndexTest::SetUp();
    DeviceFlatSearchMaker maker;
    maker.name = "the test's CPU search";
    maker.check = [](int) { return Status::OK(); };
    maker.make = [](const float* v, int64_t count, int64_t dim, int, std::unique_ptr<DeviceFlatSearch>* out) {
      ++makes;
      return MakeTorchFlatSearch(v, count, dim, -1, out);
    };
    makes = 0;
    RegisterDeviceFlatSearch(maker);
  }
  void TearDown() override { RegisterDeviceFlatSearch(DeviceFlatSearchMaker{}); }
  static inline int makes = 0;
};

TEST_F(DeviceRouteTest, FlatSearchesRunOnTheCopyAndWritesWaitForItsRelease) {
  const int64_t n = 2000;
  const std::vector<float> data = MixtureVectors(n, kDim, 16, 11);
  const std::vector<float> queries = MixtureVectors(40, kDim, 16, 12);
  auto index = FilledFlat(n, data);
  const Results cpu = SearchOrDie(*index, queries, 16);
  ASSERT_TRUE(index->EnableGpuSearch(0).ok());
  EXPECT_EQ(makes, 1);
  EXPECT_EQ(index->gpu_device(), 0);
  ExpectSameNeighbours(SearchOrDie(*index, queries, 16), cpu, 40, 16);
  // k beyond the stored count pads like the CPU search.
  const Results wide = SearchOrDie(*index, queries, 2100);
  EXPECT_EQ(wide.ids[2099], -1);
  EXPECT_EQ(wide.distances[2099], std::numeric_limits<float>::max());
  const std::vector<float> extra = MixtureVectors(1, kDim, 16, 13);
  const int64_t id = IdOf(5000);
  Status add = index->Add(1, extra.data(), &id);
  EXPECT_TRUE(add.IsFailedPrecondition()) << add.ToString();
  index->DisableGpuSearch();
  EXPECT_EQ(index->gpu_device(), -1);
  ASSERT_TRUE(index->Add(1, extra.data(), &id).ok());
  const Results after = SearchOrDie(*index, extra, 1);
  EXPECT_EQ(after.ids[0], id);
}

TEST_F(DeviceRouteTest, OtherIndexKindsAreRefusedAndStayOnTheCpu) {
  const std::vector<float> data = MixtureVectors(600, kDim, 16, 14);
  for (const char* spec : {"IVF16,Flat", "IVF16,PQ4"}) {
    auto index = CreateOrDie(spec, Metric::kL2);
    TrainIfNeeded(index.get(), data);
    AddOrDie(index.get(), data, IdsFor(600));
    Status s = index->EnableGpuSearch(0);
    EXPECT_TRUE(s.IsFailedPrecondition()) << spec << ": " << s.ToString();
    EXPECT_NE(s.message().find("L2 Flat indexes only"), std::string::npos) << s.ToString();
    EXPECT_EQ(index->gpu_device(), -1);
  }
  auto ip = CreateOrDie("Flat", Metric::kInnerProduct);
  AddOrDie(ip.get(), data, IdsFor(600));
  EXPECT_TRUE(ip->EnableGpuSearch(0).IsFailedPrecondition());
  EXPECT_EQ(makes, 0);
}
#endif  // !MNEMO_FAISS_GPU

}  // namespace
}  // namespace vector_index_test
}  // namespace mnemo
