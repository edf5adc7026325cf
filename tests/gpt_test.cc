// The transformer: causality, KV-cache decoding, taps, and the GPT-2 parameter layout.
#include "lm/gpt.h"

#include <gtest/gtest.h>

#include "lm/checkpoint.h"
#include "lm/generator.h"
#include "tests/lm_fixture.h"

namespace mnemo {
namespace {

using testing::TinyGpt;

torch::Tensor Ids(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong).unsqueeze(0); }

TEST(GptTest, ParameterNamesAreHuggingFaceGpt2Names) {
  Gpt net = TinyGpt(100);
  auto params = net->named_parameters();
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                           "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.ln_2.weight", "h.0.mlp.c_fc.weight",
                           "h.1.mlp.c_proj.bias", "ln_f.weight", "ln_f.bias"}) {
    EXPECT_NE(params.find(name), nullptr) << name;
  }
  // Conv1D layout: [in, out].
  EXPECT_EQ(params["h.0.attn.c_attn.weight"].sizes().vec(), (std::vector<int64_t>{32, 96}));
  EXPECT_EQ(params["h.0.mlp.c_proj.weight"].sizes().vec(), (std::vector<int64_t>{128, 32}));
  int64_t count = 0;
  for (auto& p : params) count += p.value().numel();
  EXPECT_EQ(count, net->config().NumParameters());
}

TEST(GptTest, LaterTokensNeverChangeEarlierLogits) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  auto a = net->Forward(Ids({5, 17, 42, 8, 99, 3})).logits;
  auto b = net->Forward(Ids({5, 17, 42, 61, 0, 77})).logits;
  EXPECT_TRUE(torch::allclose(a.slice(1, 0, 3), b.slice(1, 0, 3), 0, 0)) << "prefix logits changed";
  EXPECT_FALSE(torch::allclose(a.slice(1, 3, 6), b.slice(1, 3, 6)));
}

TEST(GptTest, KvCacheDecodingEqualsFullForward) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  std::vector<int64_t> seq = {1, 2, 3, 50, 60, 70, 80, 90, 11, 12};
  auto full = net->Forward(Ids(seq)).logits[0];
  KvCache cache;
  ForwardOptions opts;
  opts.cache = &cache;
  // A 4-token prefill, then one token at a time.
  auto prefill = net->Forward(Ids({seq.begin(), seq.begin() + 4}), opts).logits[0];
  EXPECT_TRUE(torch::allclose(prefill, full.slice(0, 0, 4), 1e-5, 1e-5));
  for (size_t t = 4; t < seq.size(); ++t) {
    auto step = net->Forward(Ids({seq[t]}), opts).logits[0][0];
    EXPECT_TRUE(torch::allclose(step, full[t], 1e-5, 1e-5)) << "position " << t;
  }
  EXPECT_EQ(cache.length(), static_cast<int64_t>(seq.size()));
}

// One position goes through a matrix-vector product (OpenBLAS would pack the whole weight for a 1-row
// product); it equals the row of the matrix product, and LogitsInto equals Logits bit for bit, reusing its
// buffer while the shape holds.
TEST(GptTest, OnePositionProductsAndReusedLogitsBufferGiveTheSameNumbers) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  Conv1D layer(48, 80);
  layer->weight.normal_(0, 0.1);
  layer->bias.normal_(0, 0.1);
  const torch::Tensor x = torch::randn({5, 48});
  const torch::Tensor rows = layer->forward(x);
  for (int64_t r = 0; r < 5; ++r) {
    const torch::Tensor one = layer->forward(x.slice(0, r, r + 1).unsqueeze(0));  // [1, 1, 48]
    ASSERT_EQ(one.sizes(), (std::vector<int64_t>{1, 1, 80}));
    EXPECT_TRUE(torch::allclose(one[0][0], rows[r], 1e-6, 1e-6)) << "row " << r;
  }

  Gpt net = TinyGpt(100);
  // More rows than the packed kernel takes (kPackedMaxRows; it is off in this thread anyway), so the
  // buffer is written by one product.
  const torch::Tensor hidden = torch::randn({kPackedMaxRows + 6, net->config().n_embd});
  torch::Tensor buffer;
  const torch::Tensor first = net->LogitsInto(hidden, &buffer).clone();
  EXPECT_TRUE(torch::equal(first, net->Logits(hidden)));
  const void* storage = buffer.data_ptr();
  const torch::Tensor other = torch::randn({kPackedMaxRows + 6, net->config().n_embd});
  EXPECT_TRUE(torch::equal(net->LogitsInto(other, &buffer), net->Logits(other)));
  EXPECT_EQ(buffer.data_ptr(), storage);  // reused
  EXPECT_TRUE(torch::equal(net->LogitsInto(hidden.slice(0, 0, 3), &buffer), net->Logits(hidden.slice(0, 0, 3))));
}

TEST(GptTest, KnnKeyIsLastBlockFeedForwardInputAfterLayerNorm) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  ForwardOptions opts;
  opts.want_knn_key = true;
  opts.want_attention = true;
  auto ids = Ids({4, 8, 15, 16, 23, 42});
  ForwardResult r = net->Forward(ids, opts);
  // Recompute by hand: embeddings, block 0, then block 1's attention residual and ln_2.
  auto x = net->wte(ids) + net->wpe(torch::arange(6));
  x = net->blocks[0](x, nullptr, nullptr, nullptr, nullptr);
  auto& last = net->blocks[1];
  auto h = x + last->attn(last->ln_1(x), nullptr, nullptr, nullptr);
  EXPECT_TRUE(torch::allclose(r.knn_key, last->ln_2(h), 1e-6, 1e-6));
  ASSERT_EQ(r.attention.size(), 2u);
  EXPECT_EQ(r.attention[1].q.sizes().vec(), (std::vector<int64_t>{1, 2, 6, 16}));
  EXPECT_EQ(r.knn_key.sizes().vec(), (std::vector<int64_t>{1, 6, 32}));
}

TEST(GptTest, KeysOnlyForwardGivesTheSameKeysAndCacheWithoutHiddenOrLogits) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  auto ids = Ids({4, 8, 15, 16, 23, 42});
  ForwardOptions full;
  full.want_knn_key = true;
  KvCache full_cache;
  full.cache = &full_cache;
  ForwardResult a = net->Forward(ids, full);
  ForwardOptions keys = full;
  keys.want_logits = false;
  keys.want_hidden = false;
  KvCache keys_cache;
  keys.cache = &keys_cache;
  ForwardResult b = net->Forward(ids, keys);
  EXPECT_TRUE(torch::equal(a.knn_key, b.knn_key));
  EXPECT_FALSE(b.hidden.defined());
  EXPECT_FALSE(b.logits.defined());
  ASSERT_EQ(keys_cache.keys.size(), full_cache.keys.size());
  for (size_t i = 0; i < full_cache.keys.size(); ++i) {
    EXPECT_TRUE(torch::equal(keys_cache.keys[i], full_cache.keys[i])) << "layer " << i;
    EXPECT_TRUE(torch::equal(keys_cache.values[i], full_cache.values[i])) << "layer " << i;
  }
  // Without keys, want_hidden alone still gives the whole stack's hidden states.
  ForwardOptions hidden;
  hidden.want_logits = false;
  EXPECT_TRUE(torch::equal(net->Forward(ids, hidden).hidden, a.hidden));
}

TEST(GptTest, RejectsSequenceLongerThanContext) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  auto ids = torch::zeros({1, net->config().n_positions + 1}, torch::kLong);
  EXPECT_THROW(net->Forward(ids), c10::Error);
}

TEST(GptTest, ExactGeluOptionChangesActivation) {
  GptConfig c = testing::TinyConfig(100);
  c.activation_function = "gelu";
  Gpt exact(c);
  exact->InitWeights(7);
  Gpt tanh = TinyGpt(100);
  torch::NoGradGuard no_grad;
  auto a = exact->Forward(Ids({1, 2, 3})).logits, b = tanh->Forward(Ids({1, 2, 3})).logits;
  EXPECT_TRUE(torch::allclose(a, b, 1e-2, 1e-2));
  EXPECT_FALSE(torch::equal(a, b));
}

TEST(GptTest, ForwardResultsOfACpuModelAreCpuTensors) {
  torch::NoGradGuard no_grad;
  Gpt net = TinyGpt(100);
  ASSERT_TRUE(net->device().is_cpu());
  for (bool keep_on_device : {false, true}) {
    ForwardOptions opts;
    opts.want_knn_key = true;
    opts.want_attention = true;
    opts.keep_on_device = keep_on_device;
    KvCache cache;
    opts.cache = &cache;
    ForwardResult r = net->Forward(Ids({4, 8, 15}), opts);
    for (const torch::Tensor* t : {&r.logits, &r.hidden, &r.knn_key, &r.attention[0].q, &r.attention[1].v,
                                   &cache.keys[0], &cache.values[1]}) {
      ASSERT_TRUE(t->defined());
      EXPECT_TRUE(t->is_cpu()) << t->device();
    }
    // Callers read results through accessors; that must work without a copy of their own.
    auto logits = r.logits.accessor<float, 3>();
    EXPECT_EQ(logits.size(2), 100);
  }
}

// Compiled only against a CUDA LibTorch (tests/CMakeLists.txt), whose tests need a GPU (bench/gpu-check.sh).
#ifdef MNEMO_TORCH_CUDA
TEST(GptTest, CudaModelMatchesTheCpuModelAndReturnsCpuTensors) {
  ASSERT_TRUE(torch::cuda::is_available()) << "a CUDA build of mnemo's tests needs a GPU LibTorch can see";
  torch::NoGradGuard no_grad;
  Gpt cpu = TinyGpt(100), gpu = TinyGpt(100);
  gpu->to(torch::Device(torch::kCUDA));
  ASSERT_TRUE(gpu->device().is_cuda());
  EXPECT_EQ(ModelFingerprint(cpu), ModelFingerprint(gpu));
  const std::vector<int64_t> seq = {1, 2, 3, 50, 60, 70, 80, 90, 11, 12};
  ForwardOptions opts;
  opts.want_knn_key = true;
  ForwardResult a = cpu->Forward(Ids(seq), opts), b = gpu->Forward(Ids(seq), opts);
  EXPECT_TRUE(b.logits.is_cpu() && b.knn_key.is_cpu() && b.hidden.is_cpu());
  EXPECT_TRUE(torch::allclose(a.logits, b.logits, 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(a.knn_key, b.knn_key, 1e-4, 1e-4));
  opts.keep_on_device = true;
  EXPECT_TRUE(gpu->Forward(Ids(seq), opts).logits.is_cuda());
  // KV-cache decoding on the GPU: the cache stays there, the logits come back.
  KvCache cache;
  ForwardOptions step;
  step.cache = &cache;
  gpu->Forward(Ids({seq.begin(), seq.begin() + 4}), step);
  for (size_t t = 4; t < seq.size(); ++t) {
    auto logits = gpu->Forward(Ids({seq[t]}), step).logits[0][0];
    EXPECT_TRUE(torch::allclose(logits, a.logits[0][t], 1e-4, 1e-4)) << "position " << t;
  }
  EXPECT_TRUE(cache.keys[0].is_cuda());
  GenerateOptions greedy;
  greedy.max_tokens = 12;
  greedy.sampling.temperature = 0;
  std::vector<int32_t> from_cpu, from_gpu;
  ASSERT_TRUE(Generate(cpu, {5, 17, 42}, greedy, &from_cpu).ok());
  ASSERT_TRUE(Generate(gpu, {5, 17, 42}, greedy, &from_gpu).ok());
  EXPECT_EQ(from_cpu, from_gpu);
}
#endif  // MNEMO_TORCH_CUDA

TEST(GptConfigTest, JsonRoundTripAndValidation) {
  GptConfig c = testing::TinyConfig(123);
  GptConfig back;
  ASSERT_TRUE(GptConfig::FromJson(c.ToJson(), "config.json", &back).ok());
  EXPECT_EQ(back.vocab_size, 123);
  EXPECT_EQ(back.n_embd, 32);
  EXPECT_EQ(back.n_positions, 64);
  EXPECT_EQ(back.activation_function, "gelu_new");

  Status s = GptConfig::FromJson("{\"model_type\": \"gpt2\", \"n_embd\": 30, \"n_head\": 4, \"n_layer\": 1, "
                                 "\"vocab_size\": 10, \"n_positions\": 8}",
                                 "x/config.json", &back);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("x/config.json"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("divisible"), std::string::npos) << s.ToString();
  EXPECT_FALSE(GptConfig::FromJson("{\"model_type\": \"llama\"}", "c", &back).ok());
  EXPECT_FALSE(GptConfig::FromJson("not json", "c", &back).ok());
  s = GptConfig::FromJson("{\"model_type\": \"gpt2\", \"n_embd\": \"big\"}", "c", &back);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  // n_ctx stands in for n_positions in older configs.
  ASSERT_TRUE(GptConfig::FromJson("{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_head\": 2, \"n_layer\": 1, "
                                  "\"vocab_size\": 10, \"n_ctx\": 16}",
                                  "c", &back)
                  .ok());
  EXPECT_EQ(back.n_positions, 16);
}

}  // namespace
}  // namespace mnemo
