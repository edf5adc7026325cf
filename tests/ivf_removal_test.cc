// RemoveFromIvfPreservingOrder on its own: the survivors of every list keep their insertion order and
// their codes, the Hashtable DirectMap points at each survivor's new place and forgets the removed ids,
// ntotal follows, and absent or repeated ids are skipped. (vector_index_test.cc checks the consequence:
// search results after removal equal those of an index that never held the removed ids.)
#include "indexes/ivf_removal.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <vector>

namespace mnemo {
namespace {

constexpr int kDim = 8;
constexpr size_t kLists = 4;

using Entry = std::pair<int64_t, std::vector<uint8_t>>;  // id and code

// Every list's (id, code) entries in stored order.
std::vector<std::vector<Entry>> Contents(const faiss::ArrayInvertedLists& lists) {
  std::vector<std::vector<Entry>> out(lists.nlist);
  for (size_t l = 0; l < lists.nlist; ++l) {
    for (size_t o = 0; o < lists.ids[l].size(); ++o) {
      const uint8_t* code = lists.codes[l].data() + o * lists.code_size;
      out[l].emplace_back(lists.ids[l][o], std::vector<uint8_t>(code, code + lists.code_size));
    }
  }
  return out;
}

// An IVF index (Flat or PQ codes) with a Hashtable direct map holding n random vectors under ids
// 5, 8, 11, ..., added in a few batches as VectorIndex does.
std::unique_ptr<faiss::IndexIVF> FilledIndex(bool pq, int64_t n) {
  auto* quantizer = new faiss::IndexFlatL2(kDim);
  std::unique_ptr<faiss::IndexIVF> index;
  if (pq) {
    index = std::make_unique<faiss::IndexIVFPQ>(quantizer, kDim, kLists, /*M=*/2, /*nbits=*/4);
  } else {
    index = std::make_unique<faiss::IndexIVFFlat>(quantizer, kDim, kLists);
  }
  index->own_fields = true;
  index->set_direct_map_type(faiss::DirectMap::Hashtable);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> training(1000 * kDim);  // enough that k-means does not warn
  for (float& x : training) x = normal(rng);
  index->train(1000, training.data());
  std::vector<float> vectors(static_cast<size_t>(n) * kDim);
  for (float& x : vectors) x = normal(rng);
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = 5 + 3 * i;
  for (int64_t begin = 0; begin < n; begin += 100) {
    const int64_t count = std::min<int64_t>(100, n - begin);
    index->add_with_ids(count, vectors.data() + begin * kDim, ids.data() + begin);
  }
  return index;
}

class IvfRemovalTest : public ::testing::TestWithParam<bool> {};

TEST_P(IvfRemovalTest, SurvivorsKeepTheirOrderCodesAndDirectMapEntries) {
  auto index = FilledIndex(/*pq=*/GetParam(), 400);
  auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(index->invlists);
  ASSERT_NE(lists, nullptr);
  const std::vector<std::vector<Entry>> before = Contents(*lists);

  // Every third id, from the whole range (so every list is touched), plus one listed twice and two absent.
  std::vector<int64_t> doomed;
  for (int64_t i = 0; i < 400; i += 3) doomed.push_back(5 + 3 * i);
  std::shuffle(doomed.begin(), doomed.end(), std::mt19937(3));
  const std::set<int64_t> doomed_set(doomed.begin(), doomed.end());
  doomed.push_back(doomed.front());
  doomed.push_back(6);        // never added
  doomed.push_back(100000);   // never added
  const int64_t removed =
      RemoveFromIvfPreservingOrder(index.get(), lists, doomed.data(), static_cast<int64_t>(doomed.size()));
  EXPECT_EQ(removed, static_cast<int64_t>(doomed_set.size()));
  EXPECT_EQ(index->ntotal, 400 - removed);

  const std::vector<std::vector<Entry>> after = Contents(*lists);
  int64_t survivors = 0;
  for (size_t l = 0; l < kLists; ++l) {
    std::vector<Entry> want;
    for (const Entry& e : before[l]) {
      if (doomed_set.count(e.first) == 0) want.push_back(e);
    }
    EXPECT_EQ(after[l], want) << "list " << l;
    EXPECT_EQ(lists->codes[l].size(), lists->ids[l].size() * lists->code_size);
    survivors += static_cast<int64_t>(want.size());
  }
  EXPECT_EQ(survivors, index->ntotal);

  const auto& where = index->direct_map.hashtable;
  EXPECT_EQ(where.size(), static_cast<size_t>(index->ntotal));
  for (int64_t id : doomed_set) EXPECT_EQ(where.count(id), 0u) << id;
  for (size_t l = 0; l < kLists; ++l) {
    for (size_t o = 0; o < lists->ids[l].size(); ++o) {
      const auto it = where.find(lists->ids[l][o]);
      ASSERT_NE(it, where.end());
      EXPECT_EQ(faiss::lo_listno(it->second), l);
      EXPECT_EQ(faiss::lo_offset(it->second), o);
    }
  }
}

TEST_P(IvfRemovalTest, AbsentIdsChangeNothing) {
  auto index = FilledIndex(/*pq=*/GetParam(), 200);
  auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(index->invlists);
  ASSERT_NE(lists, nullptr);
  const std::vector<std::vector<Entry>> before = Contents(*lists);
  const std::vector<int64_t> absent = {0, 1, 6, 7, 1000000};
  EXPECT_EQ(RemoveFromIvfPreservingOrder(index.get(), lists, absent.data(), static_cast<int64_t>(absent.size())),
            0);
  EXPECT_EQ(RemoveFromIvfPreservingOrder(index.get(), lists, nullptr, 0), 0);
  EXPECT_EQ(index->ntotal, 200);
  EXPECT_EQ(Contents(*lists), before);
  EXPECT_EQ(index->direct_map.hashtable.size(), 200u);
}

TEST_P(IvfRemovalTest, RemovingEverythingEmptiesEveryList) {
  auto index = FilledIndex(/*pq=*/GetParam(), 120);
  auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(index->invlists);
  ASSERT_NE(lists, nullptr);
  std::vector<int64_t> all;
  for (int64_t i = 0; i < 120; ++i) all.push_back(5 + 3 * i);
  EXPECT_EQ(RemoveFromIvfPreservingOrder(index.get(), lists, all.data(), static_cast<int64_t>(all.size())), 120);
  EXPECT_EQ(index->ntotal, 0);
  EXPECT_TRUE(index->direct_map.hashtable.empty());
  for (size_t l = 0; l < kLists; ++l) {
    EXPECT_TRUE(lists->ids[l].empty());
    EXPECT_TRUE(lists->codes[l].empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Codes, IvfRemovalTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "PQ" : "Flat"; });

}  // namespace
}  // namespace mnemo
