// The memorizing layer (lm/gpt.h MemoryAccess) and its memory (memory/kv_ring.h): exact search, FIFO
// eviction, removal that answers as if the removed tokens were never appended, and the layer against a
// dense LibTorch reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "lm/checkpoint.h"
#include "lm/gpt.h"
#include "memory/kv_ring.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/half.h"

namespace mnemo {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

struct Hits {
  std::vector<float> keys, values;
  std::vector<int64_t> tags;
};

Hits SearchAll(const KvRing& ring, int64_t lane, const std::vector<float>& queries, int64_t n, int64_t k) {
  const int64_t H = ring.heads(), D = ring.head_dim();
  Hits h{std::vector<float>(H * n * k * D), std::vector<float>(H * n * k * D), std::vector<int64_t>(H * n * k)};
  EXPECT_TRUE(ring.Search(lane, queries.data(), n, k, h.keys.data(), h.values.data(), h.tags.data()).ok());
  return h;
}

// Appends tokens [from, to) of a stream whose token t has keys/values Random(.., seed + t) and tag t.
void AppendStream(KvRing* ring, int64_t lane, int64_t from, int64_t to, int64_t skip_from = -1, int64_t skip_to = -1) {
  const int64_t H = ring->heads(), D = ring->head_dim();
  for (int64_t t = from; t < to; ++t) {
    if (t >= skip_from && t < skip_to) continue;
    std::vector<float> k = Random(H * D, 1000 + t), v = Random(H * D, 5000 + t);
    ASSERT_TRUE(ring->Append(lane, k.data(), v.data(), &t, 1).ok());
  }
}

TEST(KvRingTest, SearchIsExactTopKByInnerProduct) {
  KvRingOptions o;
  o.lanes = 2, o.heads = 2, o.head_dim = 8;
  std::unique_ptr<KvRing> ring;
  ASSERT_TRUE(KvRing::Create(o, &ring).ok());
  AppendStream(ring.get(), 1, 0, 50);
  EXPECT_EQ(ring->size(0), 0);
  EXPECT_EQ(ring->size(1), 50);
  const int64_t n = 3, k = 5, D = 8;
  const std::vector<float> q = Random(2 * n * D, 7);
  Hits hits = SearchAll(*ring, 1, q, n, k);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t t = 0; t < n; ++t) {
      std::vector<std::pair<float, int64_t>> all;
      for (int64_t tok = 0; tok < 50; ++tok) {
        const std::vector<float> key = Random(2 * D, 1000 + tok);
        float dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += key[h * D + d] * q[(h * n + t) * D + d];
        all.push_back({-dot, tok});
      }
      std::sort(all.begin(), all.end());
      for (int64_t r = 0; r < k; ++r) {
        EXPECT_EQ(hits.tags[(h * n + t) * k + r], all[r].second) << "head " << h << " query " << t << " rank " << r;
        const std::vector<float> value = Random(2 * D, 5000 + all[r].second);
        EXPECT_EQ(hits.values[((h * n + t) * k + r) * D], value[h * D]);
      }
    }
  }
  // An empty lane, and more slots than tokens: zeros and tag -1.
  Hits empty = SearchAll(*ring, 0, q, n, k);
  EXPECT_TRUE(std::all_of(empty.tags.begin(), empty.tags.end(), [](int64_t t) { return t == -1; }));
  Hits wide = SearchAll(*ring, 1, q, 1, 64);
  EXPECT_EQ(std::count(wide.tags.begin(), wide.tags.begin() + 64, -1), 14);
  EXPECT_EQ(wide.keys[63 * D], 0.0f);
  // Bad lanes and tags are errors.
  EXPECT_TRUE(ring->Search(2, q.data(), 1, 1, hits.keys.data(), hits.values.data(), nullptr).IsInvalidArgument());
  const int64_t bad = -1;
  EXPECT_TRUE(ring->Append(0, q.data(), q.data(), &bad, 1).IsInvalidArgument());
}

TEST(KvRingTest, SearchOverManyBlocksOfKeysIsExact) {
  // More tokens than one scoring block (2,048), with a FIFO that has wrapped, equal keys in different
  // blocks, and fp16 storage: the result is still the exact top-k in (score, age) order.
  for (bool fp16 : {false, true}) {
    KvRingOptions o;
    o.heads = 2, o.head_dim = 8, o.capacity = 5000, o.fp16 = fp16;
    std::unique_ptr<KvRing> ring;
    ASSERT_TRUE(KvRing::Create(o, &ring).ok());
    const int64_t total = 6000, H = 2, D = 8;
    std::vector<std::vector<float>> keys;
    for (int64_t t = 0; t < total; ++t) {
      // Every 1000th token repeats token 1500's key: ties across blocks.
      std::vector<float> k = Random(H * D, t % 1000 == 0 ? 1500 : 20000 + t), v = Random(H * D, 40000 + t);
      if (t % 1000 == 0) {
        for (float& x : k) x *= 3;  // long enough to be the query's best match
      }
      if (fp16) {
        for (float& x : k) x = HalfToFloat(FloatToHalf(x));
      }
      keys.push_back(k);
      ASSERT_TRUE(ring->Append(0, k.data(), v.data(), &t, 1).ok());
    }
    const int64_t n = 4, kk = 40;
    std::vector<float> q = Random(H * n * D, 77);
    q.resize(H * n * D);
    // Query 0 of head 0 is the repeated key itself: the tied tokens come first, oldest first.
    for (int64_t d = 0; d < D; ++d) q[d] = keys[1000][d];
    Hits hits = SearchAll(*ring, 0, q, n, kk);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < n; ++t) {
        std::vector<std::pair<float, int64_t>> all;
        for (int64_t tok = total - 5000; tok < total; ++tok) {
          float dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += keys[tok][h * D + d] * q[(h * n + t) * D + d];
          all.push_back({-dot, tok});
        }
        std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (int64_t r = 0; r < kk; ++r) {
          EXPECT_EQ(hits.tags[(h * n + t) * kk + r], all[r].second)
              << "fp16 " << fp16 << " head " << h << " query " << t << " rank " << r;
        }
      }
    }
    // The tied tokens are among the hits (token 0 was evicted), older first.
    const auto first = hits.tags.begin(), last = hits.tags.begin() + kk;
    EXPECT_EQ(std::find(first, last, 0), last);
    ASSERT_NE(std::find(first, last, 1000), last);
    EXPECT_LT(std::find(first, last, 1000), std::find(first, last, 2000));
  }
}

TEST(KvRingTest, EqualScoresRankTheOlderTokenFirst) {
  KvRingOptions o;
  o.heads = 1, o.head_dim = 2, o.capacity = 4;
  std::unique_ptr<KvRing> ring;
  ASSERT_TRUE(KvRing::Create(o, &ring).ok());
  const float key[2] = {1, 0}, value[2] = {0, 0};
  for (int64_t t = 0; t < 6; ++t) ASSERT_TRUE(ring->Append(0, key, value, &t, 1).ok());  // wraps: holds 2..5
  EXPECT_EQ(ring->evicted(0), 2);
  EXPECT_EQ(ring->Tags(0), (std::vector<int64_t>{2, 3, 4, 5}));
  Hits hits = SearchAll(*ring, 0, {1, 0}, 1, 3);
  EXPECT_EQ(hits.tags, (std::vector<int64_t>{2, 3, 4}));
}

TEST(KvRingTest, RemovalAnswersAsIfTheTokensWereNeverAppended) {
  for (int64_t capacity : {0, 40}) {
    KvRingOptions o;
    o.heads = 2, o.head_dim = 4, o.capacity = capacity;
    std::unique_ptr<KvRing> a, b;
    ASSERT_TRUE(KvRing::Create(o, &a).ok());
    ASSERT_TRUE(KvRing::Create(o, &b).ok());
    // a reads tokens 0..60 (a bounded ring evicts 0..19), then forgets 30..44; b reads the tokens a holds.
    AppendStream(a.get(), 0, 0, 60);
    int64_t removed = 0;
    ASSERT_TRUE(a->RemoveTags(0, 30, 44, &removed).ok());
    EXPECT_EQ(removed, 15);
    AppendStream(b.get(), 0, capacity > 0 ? 60 - capacity : 0, 60, 30, 45);
    ASSERT_EQ(a->Tags(0), b->Tags(0));
    const std::vector<float> q = Random(2 * 6 * 4, 3);
    Hits ha = SearchAll(*a, 0, q, 6, 8), hb = SearchAll(*b, 0, q, 6, 8);
    EXPECT_EQ(ha.tags, hb.tags);
    EXPECT_EQ(ha.keys, hb.keys);
    EXPECT_EQ(ha.values, hb.values);
    // Later appends and evictions continue alike.
    AppendStream(a.get(), 0, 100, 130);
    AppendStream(b.get(), 0, 100, 130);
    EXPECT_EQ(a->Tags(0), b->Tags(0));
    ha = SearchAll(*a, 0, q, 6, 8), hb = SearchAll(*b, 0, q, 6, 8);
    EXPECT_EQ(ha.tags, hb.tags);
    EXPECT_EQ(ha.keys, hb.keys);
  }
}

// IVF options with centroids trained on a stream of keys unrelated to the ones the tests store.
KvRingOptions IvfOptions(int64_t heads, int64_t D, int64_t lists, int64_t nprobe, int64_t capacity) {
  KvRingOptions o;
  o.heads = heads, o.head_dim = D, o.capacity = capacity;
  const int64_t n = 40 * lists;
  const std::vector<float> train = Random(heads * n * D, 77);
  EXPECT_TRUE(TrainKvCentroids(train.data(), heads, n, D, lists, 1, &o.centroids).ok());
  o.lists = lists, o.nprobe = nprobe, o.ivf_from = 1;
  return o;
}

TEST(KvRingTest, IvfProbingEveryListIsExactAndFewerListsFindMostNeighbours) {
  KvRingOptions exact_options;
  exact_options.heads = 2, exact_options.head_dim = 8;
  std::unique_ptr<KvRing> exact, all, few;
  ASSERT_TRUE(KvRing::Create(exact_options, &exact).ok());
  ASSERT_TRUE(KvRing::Create(IvfOptions(2, 8, 16, 16, 0), &all).ok());
  ASSERT_TRUE(KvRing::Create(IvfOptions(2, 8, 16, 4, 0), &few).ok());
  for (KvRing* r : {exact.get(), all.get(), few.get()}) AppendStream(r, 0, 0, 600);
  EXPECT_TRUE(all->searches_by_ivf(0));
  EXPECT_FALSE(exact->searches_by_ivf(0));
  EXPECT_EQ(all->bytes_per_token(), exact->bytes_per_token() + 3 * 2 * 4);
  const std::vector<float> q = Random(2 * 20 * 8, 5);
  Hits he = SearchAll(*exact, 0, q, 20, 10), ha = SearchAll(*all, 0, q, 20, 10), hf = SearchAll(*few, 0, q, 20, 10);
  EXPECT_EQ(he.tags, ha.tags);
  EXPECT_EQ(he.keys, ha.keys);
  EXPECT_EQ(he.values, ha.values);
  // 4 of 16 lists: most true neighbours (random keys have no clusters; real keys do better), never more
  // than exact search scores.
  int64_t found = 0;
  for (int64_t i = 0; i < 2 * 20; ++i) {
    std::set<int64_t> truth(he.tags.begin() + i * 10, he.tags.begin() + i * 10 + 10);
    for (int64_t j = 0; j < 10; ++j) found += truth.count(hf.tags[i * 10 + j]);
  }
  EXPECT_GT(found, 2 * 20 * 10 / 3);
  EXPECT_LT(found, 2 * 20 * 10);
  // Below ivf_from a lane searches exactly.
  KvRingOptions later = IvfOptions(2, 8, 16, 4, 0);
  later.ivf_from = 1000;
  std::unique_ptr<KvRing> small;
  ASSERT_TRUE(KvRing::Create(later, &small).ok());
  AppendStream(small.get(), 0, 0, 600);
  EXPECT_FALSE(small->searches_by_ivf(0));
  EXPECT_EQ(SearchAll(*small, 0, q, 20, 10).tags, he.tags);
  // Bad centroids are refused.
  later.centroids.pop_back();
  EXPECT_FALSE(KvRing::Create(later, &small).ok());
  std::vector<float> out;
  EXPECT_FALSE(TrainKvCentroids(q.data(), 2, 20, 8, 64, 1, &out).ok());  // fewer keys than lists
}

TEST(KvRingTest, SaveAndRestoreGiveTheSameRing) {
  for (bool fp16 : {false, true}) {
    KvRingOptions o = IvfOptions(2, 8, 16, 4, /*capacity=*/100);
    o.fp16 = fp16;
    std::unique_ptr<KvRing> a, b;
    ASSERT_TRUE(KvRing::Create(o, &a).ok());
    ASSERT_TRUE(KvRing::Create(o, &b).ok());
    AppendStream(a.get(), 0, 0, 130);  // full and wrapped: 30 evicted, the oldest at slot 30
    {
      std::string wrapped;
      a->Save(0, &wrapped);
      std::unique_ptr<KvRing> c;
      ASSERT_TRUE(KvRing::Create(o, &c).ok());
      ASSERT_TRUE(c->Restore(0, wrapped).ok());
      AppendStream(a.get(), 0, 130, 140);  // both go on evicting from the same slot
      AppendStream(c.get(), 0, 130, 140);
      EXPECT_EQ(a->Tags(0), c->Tags(0));
      const std::vector<float> q = Random(2 * 5 * 8, 8);
      EXPECT_EQ(SearchAll(*a, 0, q, 5, 6).tags, SearchAll(*c, 0, q, 5, 6).tags);
    }
    ASSERT_TRUE(a->RemoveTags(0, 40, 49, nullptr).ok());
    std::string bytes;
    a->Save(0, &bytes);
    ASSERT_TRUE(b->Restore(0, bytes).ok());
    const std::vector<float> q = Random(2 * 9 * 8, 9);
    Hits ha = SearchAll(*a, 0, q, 9, 6), hb = SearchAll(*b, 0, q, 9, 6);
    EXPECT_EQ(ha.tags, hb.tags);
    EXPECT_EQ(ha.keys, hb.keys);
    EXPECT_EQ(ha.values, hb.values);
    EXPECT_EQ(a->Tags(0), b->Tags(0));
    EXPECT_EQ(a->evicted(0), b->evicted(0));
    // They go on alike: appends, evictions, removals.
    AppendStream(a.get(), 0, 200, 260);
    AppendStream(b.get(), 0, 200, 260);
    ASSERT_TRUE(a->RemoveTags(0, 210, 215, nullptr).ok());
    ASSERT_TRUE(b->RemoveTags(0, 210, 215, nullptr).ok());
    EXPECT_EQ(SearchAll(*a, 0, q, 9, 6).tags, SearchAll(*b, 0, q, 9, 6).tags);
    EXPECT_EQ(a->Tags(0), b->Tags(0));
    // Short, padded or foreign bytes are refused and leave the lane as it was.
    const std::vector<int64_t> before = b->Tags(0);
    for (const std::string& bad : {bytes.substr(0, bytes.size() - 1), bytes + "x", std::string(40, '\xff')}) {
      EXPECT_TRUE(b->Restore(0, bad).IsCorruption());
      EXPECT_EQ(b->Tags(0), before);
    }
  }
}

TEST(KvRingTest, IvfRemovalAnswersAsIfTheTokensWereNeverAppended) {
  for (bool fp16 : {false, true}) {
    for (int64_t capacity : {0, 300}) {
      KvRingOptions o = IvfOptions(2, 8, 16, 3, capacity);
      o.fp16 = fp16;
      std::unique_ptr<KvRing> a, b;
      ASSERT_TRUE(KvRing::Create(o, &a).ok());
      ASSERT_TRUE(KvRing::Create(o, &b).ok());
      AppendStream(a.get(), 0, 0, 500);
      int64_t removed = 0;
      ASSERT_TRUE(a->RemoveTags(0, 250, 349, &removed).ok());
      EXPECT_EQ(removed, 100);
      AppendStream(b.get(), 0, capacity > 0 ? 500 - capacity : 0, 500, 250, 350);
      ASSERT_EQ(a->Tags(0), b->Tags(0));
      const std::vector<float> q = Random(2 * 12 * 8, 4);
      Hits ha = SearchAll(*a, 0, q, 12, 8), hb = SearchAll(*b, 0, q, 12, 8);
      EXPECT_EQ(ha.tags, hb.tags);
      EXPECT_EQ(ha.keys, hb.keys);
      EXPECT_EQ(ha.values, hb.values);
      AppendStream(a.get(), 0, 1000, 1400);  // evictions through the lists continue alike
      AppendStream(b.get(), 0, 1000, 1400);
      ha = SearchAll(*a, 0, q, 12, 8), hb = SearchAll(*b, 0, q, 12, 8);
      EXPECT_EQ(ha.tags, hb.tags);
      EXPECT_EQ(a->Keys(0), b->Keys(0));
      a->Clear(0);
      EXPECT_EQ(a->size(0), 0);
      EXPECT_EQ(SearchAll(*a, 0, q, 12, 8).tags, std::vector<int64_t>(2 * 12 * 8, -1));
    }
  }
}

TEST(KvRingTest, Fp16StoresAndReturnsRoundedPairs) {
  KvRingOptions o;
  o.heads = 1, o.head_dim = 8;
  std::unique_ptr<KvRing> half, full;
  ASSERT_TRUE(KvRing::Create(o, &full).ok());
  o.fp16 = true;
  ASSERT_TRUE(KvRing::Create(o, &half).ok());
  EXPECT_EQ(half->bytes_per_token(), 2 * 8 * 2 + 16);
  EXPECT_EQ(full->bytes_per_token(), 2 * 8 * 4 + 16);
  for (int64_t t = 0; t < 30; ++t) {
    std::vector<float> k = Random(8, 1000 + t), v = Random(8, 5000 + t);
    ASSERT_TRUE(half->Append(0, k.data(), v.data(), &t, 1).ok());
    for (float& x : k) x = HalfToFloat(FloatToHalf(x));
    for (float& x : v) x = HalfToFloat(FloatToHalf(x));
    ASSERT_TRUE(full->Append(0, k.data(), v.data(), &t, 1).ok());
  }
  const std::vector<float> q = Random(4 * 8, 9);
  Hits a = SearchAll(*half, 0, q, 4, 6), b = SearchAll(*full, 0, q, 4, 6);
  EXPECT_EQ(a.tags, b.tags);
  EXPECT_EQ(a.keys, b.keys);
  EXPECT_EQ(a.values, b.values);
}

GptConfig MemoryConfig(const std::string& mode) {
  GptConfig c = testing::TinyConfig(100);
  c.memory_layer = 1;
  c.memory_topk = 4;
  c.memory_mode = mode;
  return c;
}

torch::Tensor Ids(int64_t T, int64_t B = 1, int64_t seed = 3) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, 100, {B, T}, gen, torch::kLong);
}

TEST(MemorizingLayerTest, ConfigRoundTripsAndIsCheckedAndPlainConfigsStayGpt2) {
  GptConfig c = MemoryConfig("gated");
  GptConfig back;
  ASSERT_TRUE(GptConfig::FromJson(c.ToJson(), "config.json", &back).ok());
  EXPECT_EQ(back.memory_layer, 1);
  EXPECT_EQ(back.memory_topk, 4);
  EXPECT_EQ(back.memory_mode, "gated");
  EXPECT_EQ(testing::TinyConfig(100).ToJson().find("mnemo_"), std::string::npos);
  c.memory_layer = 2;  // the tiny model has layers 0 and 1
  EXPECT_TRUE(c.Validate().IsInvalidArgument());
  c.memory_layer = 1, c.memory_mode = "xl";
  EXPECT_TRUE(c.Validate().IsInvalidArgument());
  c.memory_mode = "joint", c.memory_topk = 0;
  EXPECT_TRUE(c.Validate().IsInvalidArgument());
  // The gate and scale are HF-style extra tensors of the memory layer only.
  Gpt net(MemoryConfig("gated"));
  auto params = net->named_parameters();
  ASSERT_NE(params.find("h.1.attn.mem_gate"), nullptr);
  EXPECT_EQ(params.find("h.0.attn.mem_gate"), nullptr);
  int64_t count = 0;
  for (auto& p : params) count += p.value().numel();
  EXPECT_EQ(count, net->config().NumParameters());
  EXPECT_EQ(Gpt(MemoryConfig("joint"))->named_parameters().size(), testing::TinyGpt(100)->named_parameters().size());
}

TEST(MemorizingLayerTest, WithoutMemoryOrWithAnEmptyOneTheModelScoresExactlyAsThePlainOne) {
  torch::NoGradGuard no_grad;
  testing::ScratchDir dir;
  // A plain model saved, then loaded as a memorizing one (the gate and scale keep their initial values).
  Gpt plain = testing::TinyGpt(100);
  ASSERT_TRUE(SaveCheckpoint(dir.File("plain"), plain, nullptr).ok());
  for (const std::string mode : {"gated", "joint"}) {
    Gpt net(MemoryConfig(mode));
    ASSERT_TRUE(LoadWeights(dir.File("plain") + "/model.safetensors", net).ok());
    if (mode == "gated") {
      EXPECT_EQ(net->named_parameters()["h.1.attn.mem_gate"].abs().sum().item<float>(), 0.0f);
    }
    const torch::Tensor ids = Ids(20, 2);
    const torch::Tensor want = plain->Forward(ids).logits;
    EXPECT_TRUE(torch::equal(net->Forward(ids).logits, want)) << mode << ": no memory";
    KvRingOptions o;
    o.lanes = 2, o.heads = 2, o.head_dim = 16;
    std::unique_ptr<KvRing> ring;
    ASSERT_TRUE(KvRing::Create(o, &ring).ok());
    ForwardOptions fo;
    fo.memory.memory = ring.get();
    EXPECT_TRUE(torch::equal(net->Forward(ids, fo).logits, want)) << mode << ": empty memory";
    // Query-then-insert: the call appended its 20 tokens to each lane; the next call retrieves them.
    EXPECT_EQ(ring->size(0), 20);
    EXPECT_EQ(ring->size(1), 20);
    torch::Tensor tags;
    fo.memory.retrieved_tags = &tags;
    fo.memory.write = false;
    const torch::Tensor with = net->Forward(ids, fo).logits;
    EXPECT_FALSE(torch::allclose(with, want)) << mode;
    EXPECT_EQ(tags.sizes().vec(), (std::vector<int64_t>{2, 2, 20, 4}));
    EXPECT_GE(tags.min().item<int64_t>(), 0);
    EXPECT_LT(tags.max().item<int64_t>(), 20);
    EXPECT_EQ(ring->size(0), 20);  // write = false
  }
}

// Keys [B, H, S, D] smeared as the paper of smeared keys writes it: (1 - s_h) k_j + s_h k_{j-1}, k_{-1} = k_0.
torch::Tensor SmearedReference(const torch::Tensor& k, const torch::Tensor& smear) {
  const torch::Tensor s = smear.view({1, -1, 1, 1});
  const torch::Tensor previous = torch::cat({k.narrow(2, 0, 1), k.narrow(2, 0, k.size(2) - 1)}, 2);
  return (1 - s) * k + s * previous;
}

// The memory layer's output computed densely in plain LibTorch over every pair in memory.
torch::Tensor DenseReference(CausalSelfAttentionImpl& attn, const torch::Tensor& x, const torch::Tensor& mem_k,
                             const torch::Tensor& mem_v, bool gated) {
  const int64_t B = x.size(0), T = x.size(1), C = attn.n_embd, H = attn.n_head, D = C / H;
  auto qkv = torch::matmul(x, attn.c_attn->weight) + attn.c_attn->bias;
  auto split = qkv.split(C, 2);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
  torch::Tensor q = heads(split[0]), k = heads(split[1]), v = heads(split[2]);
  if (attn.mem_smear.defined()) k = SmearedReference(k, attn.mem_smear);
  auto local = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(D));
  local = local.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -INFINITY);
  torch::Tensor y;
  if (gated) {
    auto qn = q / q.norm(2, -1, true);
    auto mem = torch::matmul(qn, mem_k.transpose(-2, -1)) * attn.mem_scale.view({1, H, 1, 1});  // [B,H,T,N]
    auto y_mem = torch::matmul(torch::softmax(mem, -1), mem_v);
    auto y_loc = torch::matmul(torch::softmax(local, -1), v);
    auto g = torch::sigmoid(attn.mem_gate).view({1, H, 1, 1});
    y = g * y_mem + (1 - g) * y_loc;
  } else {
    auto mem = torch::matmul(q, mem_k.transpose(-2, -1)) / std::sqrt(static_cast<double>(D));
    auto p = torch::softmax(torch::cat({local, mem}, -1), -1);
    y = torch::matmul(p.narrow(-1, 0, T), v) + torch::matmul(p.narrow(-1, T, mem_k.size(2)), mem_v);
  }
  return torch::matmul(y.transpose(1, 2).reshape({B, T, C}), attn.c_proj->weight) + attn.c_proj->bias;
}

TEST(MemorizingLayerTest, ExactSearchWithKAtLeastTheMemorySizeEqualsTheDenseComputation) {
  torch::NoGradGuard no_grad;
  for (const std::string mode : {"gated", "joint"}) {
    GptConfig c = MemoryConfig(mode);
    const int64_t N = 24, H = c.n_head, D = c.head_dim(), T = 7, B = 2;
    c.memory_topk = N + 5;  // more slots than pairs: every pair is retrieved
    CausalSelfAttention attn(c, /*memorizing=*/true);
    for (auto& p : attn->parameters()) p.normal_(0, 0.3);
    if (mode == "gated") attn->mem_scale.uniform_(2, 12);
    KvRingOptions o;
    o.lanes = B, o.heads = H, o.head_dim = D;
    std::unique_ptr<KvRing> ring;
    ASSERT_TRUE(KvRing::Create(o, &ring).ok());
    // Lane b holds N pairs [H, N, D]; "gated" memories hold unit keys, as the layer writes them.
    std::vector<torch::Tensor> keys, values;
    for (int64_t b = 0; b < B; ++b) {
      torch::Tensor k = torch::randn({H, N, D}), v = torch::randn({H, N, D});
      if (mode == "gated") k = k / k.norm(2, -1, true);
      k = k.contiguous(), v = v.contiguous();
      std::vector<int64_t> tags(N);
      for (int64_t i = 0; i < N; ++i) tags[i] = 100 * b + i;
      ASSERT_TRUE(ring->Append(b, k.data_ptr<float>(), v.data_ptr<float>(), tags.data(), N).ok());
      keys.push_back(k), values.push_back(v);
    }
    const torch::Tensor x = torch::randn({B, T, c.n_embd});
    MemoryAccess access;
    access.memory = ring.get();
    access.write = false;
    const torch::Tensor got = attn->forward(x, nullptr, nullptr, nullptr, &access);
    const torch::Tensor want = DenseReference(*attn, x, torch::stack(keys), torch::stack(values), mode == "gated");
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << mode << ": max diff " << (got - want).abs().max().item<float>();
  }
}

TEST(MemorizingLayerTest, SmearedKeysRoundTripStartAsGpt2AndEqualTheDenseComputation) {
  torch::NoGradGuard no_grad;
  GptConfig c = MemoryConfig("joint");
  c.memory_smear = true;
  GptConfig back;
  ASSERT_TRUE(GptConfig::FromJson(c.ToJson(), "config.json", &back).ok());
  EXPECT_TRUE(back.memory_smear);
  EXPECT_EQ(MemoryConfig("joint").ToJson().find("smear"), std::string::npos);
  std::string bad = c.ToJson();
  bad.replace(bad.find("\"mnemo_memory_smear\": true"), 26, "\"mnemo_memory_smear\": 1");
  EXPECT_TRUE(GptConfig::FromJson(bad, "config.json", &back).IsCorruption());
  GptConfig plain = testing::TinyConfig(100);
  plain.memory_smear = true;
  EXPECT_TRUE(plain.Validate().IsInvalidArgument());
  Gpt net(c);
  auto params = net->named_parameters();
  ASSERT_NE(params.find("h.1.attn.mem_smear"), nullptr);
  EXPECT_EQ(params.find("h.0.attn.mem_smear"), nullptr);
  int64_t count = 0;
  for (auto& p : params) count += p.value().numel();
  EXPECT_EQ(count, c.NumParameters());

  // Loaded from a model without smeared keys, s_h = 0: the same logits bit for bit, memory off and on.
  testing::ScratchDir dir;
  Gpt unsmeared(MemoryConfig("joint"));
  ASSERT_TRUE(SaveCheckpoint(dir.File("m"), unsmeared, nullptr).ok());
  ASSERT_TRUE(LoadWeights(dir.File("m") + "/model.safetensors", net).ok());
  const torch::Tensor ids = Ids(20, 2);
  EXPECT_TRUE(torch::equal(net->Forward(ids).logits, unsmeared->Forward(ids).logits));
  std::vector<std::unique_ptr<KvRing>> rings(2);
  for (auto& ring : rings) {
    KvRingOptions o;
    o.lanes = 2, o.heads = c.n_head, o.head_dim = c.head_dim();
    ASSERT_TRUE(KvRing::Create(o, &ring).ok());
  }
  ForwardOptions a, b;
  a.memory.memory = rings[0].get(), b.memory.memory = rings[1].get();
  for (int round = 0; round < 2; ++round) {
    EXPECT_TRUE(torch::equal(net->Forward(ids, a).logits, unsmeared->Forward(ids, b).logits)) << round;
  }

  // With s_h set, a call that reads a memory written by an earlier call equals the dense computation over
  // the earlier call's smeared keys (the memory holds smeared keys; the first position has no predecessor).
  for (const std::string mode : {"gated", "joint"}) {
    GptConfig cm = MemoryConfig(mode);
    cm.memory_smear = true;
    const int64_t H = cm.n_head, D = cm.head_dim(), T = 9, B = 2;
    cm.memory_topk = T + 3;
    CausalSelfAttention attn(cm, /*memorizing=*/true);
    for (auto& p : attn->parameters()) p.normal_(0, 0.3);
    attn->mem_smear.copy_(torch::tensor({0.8f, -0.3f}));
    if (mode == "gated") attn->mem_scale.uniform_(2, 12);
    KvRingOptions o;
    o.lanes = B, o.heads = H, o.head_dim = D;
    std::unique_ptr<KvRing> ring;
    ASSERT_TRUE(KvRing::Create(o, &ring).ok());
    MemoryAccess access;
    access.memory = ring.get();
    const torch::Tensor x1 = torch::randn({B, T, cm.n_embd}), x2 = torch::randn({B, 5, cm.n_embd});
    attn->forward(x1, nullptr, nullptr, nullptr, &access);  // writes x1's pairs
    access.write = false;
    const torch::Tensor got = attn->forward(x2, nullptr, nullptr, nullptr, &access);
    auto qkv = (torch::matmul(x1, attn->c_attn->weight) + attn->c_attn->bias).split(cm.n_embd, 2);
    auto heads = [&](const torch::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
    torch::Tensor mem_k = SmearedReference(heads(qkv[1]), attn->mem_smear);
    if (mode == "gated") mem_k = mem_k / mem_k.norm(2, -1, true);
    const torch::Tensor want = DenseReference(*attn, x2, mem_k, heads(qkv[2]), mode == "gated");
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << mode << ": max diff " << (got - want).abs().max().item<float>();
  }
}

TEST(MemorizingLayerTest, SmearedKeysDecodeTokenByTokenAsInOnePass) {
  // The cache keeps raw keys, so a new position is smeared with its predecessor's key across calls.
  torch::NoGradGuard no_grad;
  GptConfig c = MemoryConfig("joint");
  c.memory_smear = true;
  Gpt net(c);
  for (auto& p : net->blocks[1]->attn->parameters()) p.normal_(0, 0.3);  // attention far from uniform
  net->named_parameters()["h.1.attn.mem_smear"].copy_(torch::tensor({0.6f, 0.9f}));
  const torch::Tensor ids = Ids(12);
  const torch::Tensor whole = net->Forward(ids).logits;
  KvCache cache;
  ForwardOptions fo;
  fo.cache = &cache;
  std::vector<torch::Tensor> parts = {net->Forward(ids.narrow(1, 0, 5), fo).logits};
  for (int64_t t = 5; t < 12; ++t) parts.push_back(net->Forward(ids.narrow(1, t, 1), fo).logits);
  const torch::Tensor stepped = torch::cat(parts, 1);
  EXPECT_TRUE(torch::allclose(stepped, whole, 1e-5, 1e-5)) << (stepped - whole).abs().max().item<float>();
  // And the smear matters: the same weights without it score differently.
  net->named_parameters()["h.1.attn.mem_smear"].zero_();
  EXPECT_FALSE(torch::allclose(net->Forward(ids).logits, whole, 1e-3, 1e-3));
}

TEST(MemorizingLayerTest, InductionHeadsRetrieveWhatFollowedTheQuerysTokenBefore) {
  // Sixteen tokens with random embeddings, read once into the memory, then again: head 0, built as an
  // induction head, retrieves for each token of the second reading the position that followed the same
  // token in the first (its smeared key is the key of the token before). Head 1 is left as it was.
  torch::NoGradGuard no_grad;
  GptConfig c = MemoryConfig("joint");
  c.n_embd = 64, c.memory_smear = true, c.memory_topk = 1;
  const int64_t H = c.n_head, D = c.head_dim(), N = 16;
  CausalSelfAttention attn(c, /*memorizing=*/true);
  attn->InitInductionHeads(1, 4.0, 4.0, /*seed=*/5);
  EXPECT_EQ(attn->mem_smear[0].item<float>(), 1.0f);
  EXPECT_EQ(attn->mem_smear[1].item<float>(), 0.0f);
  auto gen = at::detail::createCPUGenerator(9);
  const torch::Tensor embeddings = torch::randn({N, c.n_embd}, gen);
  const torch::Tensor order = torch::randperm(N, gen);
  KvRingOptions o;
  o.heads = H, o.head_dim = D;
  std::unique_ptr<KvRing> ring;
  ASSERT_TRUE(KvRing::Create(o, &ring).ok());
  MemoryAccess access;
  access.memory = ring.get();
  const torch::Tensor x = embeddings.index_select(0, order).unsqueeze(0);  // [1, N, C]
  attn->forward(x, nullptr, nullptr, nullptr, &access);
  access.write = false;
  torch::Tensor tags;
  access.retrieved_tags = &tags;
  attn->forward(x, nullptr, nullptr, nullptr, &access);
  // Query t (token order[t]) should retrieve position t + 1 of the first reading (key: token order[t]).
  // Position 0 has no predecessor and keeps its own key, equal to position 1's: the tie goes to the older.
  EXPECT_EQ(tags[0][0][0][0].item<int64_t>(), 0);
  int64_t right = 0;
  for (int64_t t = 1; t + 1 < N; ++t) right += tags[0][0][t][0].item<int64_t>() == t + 1;
  EXPECT_EQ(right, N - 2) << tags[0][0];
  EXPECT_THROW(attn->InitInductionHeads(3, 1.0, 1.0, 0), c10::Error);  // the layer has 2 heads
}

TEST(MemorizingLayerTest, GradientsReachTheGateAndScaleButNotTheMemory) {
  GptConfig c = MemoryConfig("gated");
  c.memory_smear = true;
  Gpt net(c);
  KvRingOptions o;
  o.heads = c.n_head, o.head_dim = c.head_dim();
  std::unique_ptr<KvRing> ring;
  ASSERT_TRUE(KvRing::Create(o, &ring).ok());
  ForwardOptions fo;
  fo.memory.memory = ring.get();
  {
    torch::NoGradGuard no_grad;
    net->Forward(Ids(16), fo);  // fills the memory
  }
  auto logits = net->Forward(Ids(16, 1, 4), fo).logits;
  logits.logsumexp(-1).mean().backward();
  auto params = net->named_parameters();
  EXPECT_GT(params["h.1.attn.mem_gate"].grad().abs().sum().item<float>(), 0.0f);
  EXPECT_GT(params["h.1.attn.mem_scale"].grad().abs().sum().item<float>(), 0.0f);
  EXPECT_GT(params["h.1.attn.mem_smear"].grad().abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(ring->size(0), 32);
}

}  // namespace
}  // namespace mnemo
