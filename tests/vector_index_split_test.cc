// VectorIndex::CreateEmptyLike: an index and an empty copy of its trained structures, searched together and
// merged by distance, answer like one index holding both sets (the fact store's base + mutable segment).
#include "tests/vector_index_fixture.h"

namespace mnemo {
namespace vector_index_test {
namespace {

// Merges two best-first result lists of one query into the best k, as the fact store does.
void MergeTopK(const Results& a, const Results& b, int64_t q, int k, Metric metric, Results* out) {
  std::vector<std::pair<float, int64_t>> all;
  for (const Results* r : {&a, &b}) {
    for (int j = 0; j < k; ++j) {
      if (r->ids[q * k + j] >= 0) all.emplace_back(r->distances[q * k + j], r->ids[q * k + j]);
    }
  }
  std::stable_sort(all.begin(), all.end(), [metric](const auto& x, const auto& y) {
    return metric == Metric::kL2 ? x.first < y.first : x.first > y.first;
  });
  all.resize(std::min<size_t>(all.size(), k));
  for (const auto& [d, id] : all) out->distances.push_back(d), out->ids.push_back(id);
}

// Equal distances, and equal ids except inside the group of ties at the k-th distance (which of several
// equally distant vectors takes the last slots is an arbitrary but harmless choice).
void ExpectSameTopK(const Results& merged, const Results& single, int64_t q, int k) {
  const float* want = &single.distances[q * k];
  for (int j = 0; j < k; ++j) ASSERT_EQ(merged.distances[q * k + j], want[j]) << "query " << q << " rank " << j;
  const float last = want[k - 1];
  std::multiset<int64_t> m, s;
  for (int j = 0; j < k; ++j) {
    if (want[j] == last) continue;
    m.insert(merged.ids[q * k + j]);
    s.insert(single.ids[q * k + j]);
  }
  EXPECT_EQ(m, s) << "query " << q;
}

TEST_P(VectorIndexTypeTest, EmptyCopyPlusOriginalEqualsOneIndexOverBoth) {
  const int64_t n = 2000;
  const int k = 15;
  const Metric metric = GetParam().metric;
  const auto data = MixtureVectors(n, kDim, 20, 51);
  const auto queries = MixtureVectors(60, kDim, 20, 52);
  const std::vector<int64_t> ids = IdsFor(n);
  const int64_t split = 1500;
  std::vector<float> base_data(data.begin(), data.begin() + split * kDim);
  std::vector<float> extra_data(data.begin() + split * kDim, data.end());
  std::vector<int64_t> base_ids(ids.begin(), ids.begin() + split), extra_ids(ids.begin() + split, ids.end());

  auto base = CreateOrDie(GetParam().spec, metric);
  TrainIfNeeded(base.get(), data);
  AddOrDie(base.get(), base_data, base_ids);
  // The copy is taken from a memory-mapped load, as the fact store does with a large base datastore.
  ASSERT_TRUE(base->Save(dir_.File("base.idx")).ok());
  auto mapped = LoadOrDie(dir_.File("base.idx"), /*mmap=*/true);
  std::unique_ptr<VectorIndex> segment, both;
  ASSERT_TRUE(mapped->CreateEmptyLike(&segment).ok());
  ASSERT_TRUE(base->CreateEmptyLike(&both).ok());
  EXPECT_EQ(segment->size(), 0);
  EXPECT_FALSE(segment->read_only());
  EXPECT_EQ(segment->spec(), base->spec());
  EXPECT_EQ(segment->TrainedFingerprint(), base->TrainedFingerprint());
  EXPECT_EQ(mapped->TrainedFingerprint(), base->TrainedFingerprint());
  AddOrDie(segment.get(), extra_data, extra_ids);
  AddOrDie(both.get(), base_data, base_ids);
  AddOrDie(both.get(), extra_data, extra_ids);

  for (int nprobe : {1, 4}) {
    const Results a = SearchOrDie(*mapped, queries, k, nprobe);
    const Results b = SearchOrDie(*segment, queries, k, nprobe);
    const Results single = SearchOrDie(*both, queries, k, nprobe);
    Results merged;
    for (int64_t q = 0; q < 60; ++q) MergeTopK(a, b, q, k, metric, &merged);
    ASSERT_EQ(merged.ids.size(), single.ids.size());
    for (int64_t q = 0; q < 60; ++q) ExpectSameTopK(merged, single, q, k);
  }
}

TEST_P(VectorIndexTypeTest, TrainedFingerprintTellsTrainingsApart) {
  auto a = CreateOrDie(GetParam().spec, GetParam().metric);
  auto b = CreateOrDie(GetParam().spec, GetParam().metric);
  TrainIfNeeded(a.get(), MixtureVectors(2000, kDim, 20, 61));
  TrainIfNeeded(b.get(), MixtureVectors(2000, kDim, 20, 62));
  const bool ivf = std::string(GetParam().spec) != "Flat";
  // Flat has nothing trained: any two Flat indexes of one metric encode alike.
  EXPECT_EQ(a->TrainedFingerprint() != b->TrainedFingerprint(), ivf);
  // Adding vectors does not change what was trained.
  const uint64_t before = a->TrainedFingerprint();
  AddOrDie(a.get(), MixtureVectors(10, kDim, 20, 63), IdsFor(10));
  EXPECT_EQ(a->TrainedFingerprint(), before);
}

TEST_F(VectorIndexTest, EmptyCopyOfUntrainedIndexIsFailedPrecondition) {
  auto untrained = CreateOrDie("IVF16,Flat", Metric::kL2);
  std::unique_ptr<VectorIndex> copy;
  Status s = untrained->CreateEmptyLike(&copy);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(untrained->TrainedFingerprint(), 0u);
}

}  // namespace
}  // namespace vector_index_test
}  // namespace mnemo
