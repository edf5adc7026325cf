// util/packed_gemm.h and its use in lm/gpt.h: the packed kernel gives the products of the BLAS path,
// for every row count it serves, ragged last panels, with and without bias, and a weight written in
// place is packed again.
#include <gtest/gtest.h>

#include "lm/gpt.h"
#include "tests/lm_fixture.h"
#include "util/packed_gemm.h"

namespace mnemo {
namespace {

TEST(PackedGemmTest, EqualsTheMatrixProductForEveryRowCountAndRaggedPanels) {
  if (!PackedGemmSupported()) GTEST_FAIL() << "this CPU has neither AVX-512 nor AVX2 with FMA";
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(11);
  for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{64, 96}, {37, 70}, {128, 31}}) {
    const torch::Tensor w = torch::randn({k, n}, gen), bias = torch::randn({n}, gen);
    const auto packed = PackedWeights::Pack(w.data_ptr<float>(), k, n);
    EXPECT_EQ(packed->panels(), (n + 31) / 32);
    for (int64_t rows : {1, 2, 5, 6, 7, 8, 9, 16, 17, 64, 100}) {
      const torch::Tensor x = torch::randn({rows, k}, gen);
      for (bool with_bias : {false, true}) {
        torch::Tensor y = torch::full({rows, n}, std::nanf(""));
        PackedGemm(x.data_ptr<float>(), rows, *packed, with_bias ? bias.data_ptr<float>() : nullptr,
                   y.data_ptr<float>(), 0, packed->panels());
        const torch::Tensor want = with_bias ? torch::addmm(bias, x, w) : torch::mm(x, w);
        EXPECT_TRUE(torch::allclose(y, want, 1e-4, 1e-4))
            << k << "x" << n << ", " << rows << " rows, bias " << with_bias << ": max diff "
            << (y - want).abs().max().item<float>();
      }
    }
  }
}

TEST(PackedGemmTest, ThreadsSplitThePanelsAndGiveTheSameBits) {
  if (!PackedGemmSupported()) GTEST_FAIL() << "this CPU has neither AVX-512 nor AVX2 with FMA";
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(12);
  const int64_t k = 256, n = 1000, rows = 40;  // 32 panels, the last ragged; enough work for 3 threads
  const torch::Tensor w = torch::randn({k, n}, gen), bias = torch::randn({n}, gen), x = torch::randn({rows, k}, gen);
  const auto packed = PackedWeights::Pack(w.data_ptr<float>(), k, n);
  torch::Tensor one = torch::full({rows, n}, std::nanf("")), three = one.clone();
  PackedGemmThreads(x.data_ptr<float>(), rows, *packed, bias.data_ptr<float>(), one.data_ptr<float>());
  SetPackedGemmThreads(3);
  PackedGemmThreads(x.data_ptr<float>(), rows, *packed, bias.data_ptr<float>(), three.data_ptr<float>());
  SetPackedGemmThreads(0);
  EXPECT_TRUE(torch::allclose(one, torch::addmm(bias, x, w), 1e-4, 1e-4));
  EXPECT_TRUE(torch::equal(one, three));  // every column written, each panel computed alike on any thread
}

TEST(PackedGemmTest, ModelProductsTakeThePackedPathOnlyWithoutGradientAndRepackAfterAWrite) {
  if (!PackedGemmSupported()) GTEST_FAIL() << "this CPU has neither AVX-512 nor AVX2 with FMA";
  Gpt net = testing::TinyGpt(100);
  Conv1D& c_fc = net->blocks[0]->mlp->c_fc;
  const torch::Tensor x = torch::randn({5, 1, c_fc->weight.size(0)});
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    // Off unless the thread turns it on (only batched decoding's thread does).
    PackedWeightCache cache;
    EXPECT_EQ(PackedGemmThreadsSetting(), 0);
    EXPECT_FALSE(PackedProduct(x.view({5, -1}), c_fc->weight, false, c_fc->bias, &cache).defined());
    SetPackedGemmThreads(1);
    EXPECT_TRUE(PackedProduct(x.view({5, -1}), c_fc->weight, false, c_fc->bias, &cache).defined());
    y = c_fc(x);
    EXPECT_TRUE(torch::allclose(y, torch::addmm(c_fc->bias, x.view({5, -1}), c_fc->weight).view(y.sizes()), 1e-5, 1e-5));
    // A whole batched forward pass (5 requests, one position each) against the same rows one at a time.
    const torch::Tensor ids = torch::randint(0, 100, {5, 1});
    const torch::Tensor batched = net->Forward(ids).logits;
    for (int64_t b = 0; b < 5; ++b) {
      EXPECT_TRUE(torch::allclose(batched[b], net->Forward(ids.narrow(0, b, 1)).logits[0], 1e-5, 1e-5)) << b;
    }
    c_fc->weight.mul_(2);  // an in-place write: the packed copy is stale and must be made again
    EXPECT_TRUE(torch::allclose(c_fc(x), 2 * y - c_fc->bias, 1e-4, 1e-4));
  }
  // With gradients the BLAS path runs, and gradients reach the weight.
  c_fc(x).sum().backward();
  EXPECT_GT(c_fc->weight.grad().abs().sum().item<float>(), 0.0f);
  SetPackedGemmThreads(0);
}

}  // namespace
}  // namespace mnemo
