// Checkpoints in Hugging Face GPT-2 layout: round trips, foreign layouts and dtypes, malformed inputs.
#include "lm/checkpoint.h"

#include <gtest/gtest.h>

#include "util/half.h"
#include "lm/safetensors.h"
#include "lm/scorer.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;
using testing::TinyGpt;
using testing::ToyTokenizer;

// Writes `net` the way other tools might: optional "transformer." prefix, F32/F16/BF16, plus HF's
// non-parameter buffers and the tied lm_head.
void WriteForeignCheckpoint(const std::string& dir, Gpt& net, const std::string& prefix, DType dtype) {
  ASSERT_TRUE(EnsureDirectory(dir).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", net->config().ToJson()).ok());
  ASSERT_TRUE(ToyTokenizer().Save(dir).ok());
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, const torch::Tensor& t0) {
    torch::Tensor t = t0.detach().contiguous();
    std::vector<uint8_t> bytes(t.numel() * DTypeSize(dtype));
    const float* src = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(bytes.data() + 4 * i, src + i, 4);
      } else {
        uint16_t h = dtype == DType::kF16 ? FloatToHalf(src[i]) : FloatToBf16(src[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    buffers.push_back(std::move(bytes));
    tensors.push_back({name, dtype, t.sizes().vec(), buffers.back().data(), buffers.back().size()});
  };
  for (auto& p : net->named_parameters()) add(prefix + p.key(), p.value());
  const int64_t n = net->config().n_positions;
  add(prefix + "h.0.attn.bias", torch::ones({1, 1, n, n}).tril());
  add(prefix + "h.0.attn.masked_bias", torch::tensor({-1e4f}));
  add("lm_head.weight", net->wte->weight);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}}).ok());
}

double MaxAbsDiff(Gpt& a, Gpt& b) {
  double worst = 0;
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (auto& p : pa) worst = std::max(worst, (p.value() - pb[p.key()]).abs().max().item<double>());
  return worst;
}

TEST(CheckpointTest, SaveThenLoadIsBitExact) {
  ScratchDir dir;
  Gpt net = TinyGpt(ToyTokenizer().vocab_size());
  ASSERT_TRUE(SaveCheckpoint(dir.path(), net, &ToyTokenizer()).ok());
  std::unique_ptr<LanguageModel> model;
  Status s = LoadLanguageModel(dir.path(), &model);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto saved = net->named_parameters();
  for (auto& p : model->net->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), saved[p.key()])) << p.key();
  }
  EXPECT_EQ(model->tokenizer->Encode("The cat sees the bridge."), ToyTokenizer().Encode("The cat sees the bridge."));
  // mnemo writes what GPT2LMHeadModel.save_pretrained writes: "transformer."-prefixed F32 tensors.
  std::unique_ptr<SafetensorsFile> file;
  ASSERT_TRUE(SafetensorsFile::Open(dir.File("model.safetensors"), &file).ok());
  ASSERT_NE(file->Find("transformer.h.1.mlp.c_fc.weight"), nullptr);
  EXPECT_EQ(file->Find("transformer.wte.weight")->dtype, DType::kF32);
}

struct LayoutCase {
  std::string prefix;
  DType dtype;
  double tolerance;
};

class ForeignLayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(ForeignLayoutTest, LoadsAndScores) {
  ScratchDir dir;
  Gpt net = TinyGpt(ToyTokenizer().vocab_size());
  WriteForeignCheckpoint(dir.path(), net, GetParam().prefix, GetParam().dtype);
  std::unique_ptr<LanguageModel> model;
  Status s = LoadLanguageModel(dir.path(), &model);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_LE(MaxAbsDiff(model->net, net), GetParam().tolerance);
  std::vector<float> a, b;
  auto ids = ToyTokenizer().Encode("My neighbour finds an open door.");
  ASSERT_TRUE(ScoreIds(model->net, ids, &a).ok());
  ASSERT_TRUE(ScoreIds(net, ids, &b).ok());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 50 * GetParam().tolerance + 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ForeignLayoutTest,
                         ::testing::Values(LayoutCase{"transformer.", DType::kF32, 0.0},
                                           LayoutCase{"", DType::kF32, 0.0},
                                           LayoutCase{"transformer.", DType::kF16, 1e-3},
                                           LayoutCase{"", DType::kF16, 1e-3},
                                           LayoutCase{"", DType::kBF16, 1e-2}));

class MalformedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net_ = TinyGpt(ToyTokenizer().vocab_size());
    ASSERT_TRUE(SaveCheckpoint(dir_.path(), net_, &ToyTokenizer()).ok());
  }
  // Rewrites model.safetensors with `edit` applied to the list of tensors.
  void RewriteWeights(const std::function<void(std::vector<TensorData>&)>& edit) {
    std::vector<torch::Tensor> keep;
    std::vector<TensorData> tensors;
    for (auto& p : net_->named_parameters()) {
      torch::Tensor t = p.value().detach().contiguous();
      keep.push_back(t);
      tensors.push_back({"transformer." + p.key(), DType::kF32, t.sizes().vec(), t.data_ptr(),
                         static_cast<size_t>(t.numel() * 4)});
    }
    edit(tensors);
    ASSERT_TRUE(WriteSafetensors(dir_.File("model.safetensors"), tensors, {}).ok());
  }
  Status Load() {
    std::unique_ptr<LanguageModel> model;
    return LoadLanguageModel(dir_.path(), &model);
  }
  ScratchDir dir_;
  Gpt net_{nullptr};
};

TEST_F(MalformedCheckpointTest, MissingTensorNamesIt) {
  RewriteWeights([](std::vector<TensorData>& t) {
    t.erase(std::remove_if(t.begin(), t.end(), [](const TensorData& d) { return d.name == "transformer.ln_f.bias"; }),
            t.end());
  });
  Status s = Load();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("ln_f.bias"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos) << s.ToString();
}

TEST_F(MalformedCheckpointTest, WrongShapeNamesTensorAndShapes) {
  std::vector<float> small(32 * 10, 0.f);
  RewriteWeights([&](std::vector<TensorData>& t) {
    for (auto& d : t) {
      if (d.name == "transformer.wpe.weight") d.shape = {10, 32}, d.data = small.data(), d.nbytes = small.size() * 4;
    }
  });
  Status s = Load();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("wpe.weight"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("[10, 32]"), std::string::npos) << s.ToString();
}

TEST_F(MalformedCheckpointTest, IntegerDtypeRejected) {
  std::vector<int32_t> ints(32, 1);
  RewriteWeights([&](std::vector<TensorData>& t) {
    for (auto& d : t) {
      if (d.name == "transformer.ln_f.weight") d.dtype = DType::kI32, d.data = ints.data(), d.nbytes = 32 * 4;
    }
  });
  Status s = Load();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dtype"), std::string::npos) << s.ToString();
}

TEST_F(MalformedCheckpointTest, TruncatedWeightsFileIsCorruption) {
  std::string bytes;
  ASSERT_TRUE(ReadFileToString(dir_.File("model.safetensors"), &bytes).ok());
  testing::WriteFileOrDie(dir_.File("model.safetensors"), bytes.substr(0, bytes.size() / 2));
  Status s = Load();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(MalformedCheckpointTest, TokenizerLargerThanModelVocabulary) {
  GptConfig c = net_->config();
  c.vocab_size = 260;
  Gpt smaller(c);
  ASSERT_TRUE(SaveCheckpoint(dir_.path(), smaller, &ToyTokenizer()).ok());
  Status s = Load();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("vocab_size"), std::string::npos) << s.ToString();
}

TEST_F(MalformedCheckpointTest, MissingConfigIsNotFound) {
  std::remove(dir_.File("config.json").c_str());
  Status s = Load();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_NE(s.message().find("config.json"), std::string::npos);
}

TEST_F(MalformedCheckpointTest, MissingTokenizerIsAnError) {
  std::remove(dir_.File("merges.txt").c_str());
  EXPECT_FALSE(Load().ok());
}

TEST(ScoreTest, TextLongerThanContextIsRejected) {
  Gpt net = TinyGpt(100);
  std::vector<int32_t> ids(65, 1);
  std::vector<float> lp;
  Status s = ScoreIds(net, ids, &lp);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("context"), std::string::npos) << s.ToString();
  ids.assign(3, 100);  // Out of vocabulary.
  EXPECT_TRUE(ScoreIds(net, ids, &lp).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
