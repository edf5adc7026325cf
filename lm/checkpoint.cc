#include "lm/checkpoint.h"

#include <cstdio>
#include <cstring>

#include "util/half.h"
#include "lm/safetensors.h"
#include "util/file_util.h"
#include "util/hash.h"

namespace mnemo {
namespace {

constexpr char kPrefix[] = "transformer.";

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Converts one stored tensor to a float32 torch tensor of the same shape.
Status ToFloatTensor(const TensorView& view, const std::string& file, torch::Tensor* out) {
  auto shape = view.shape;
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  float* dst = t.data_ptr<float>();
  const int64_t n = t.numel();
  switch (view.dtype) {
    case DType::kF32:
      std::memcpy(dst, view.data, n * sizeof(float));
      break;
    case DType::kF16:
    case DType::kBF16: {
      const bool half = view.dtype == DType::kF16;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, view.data + 2 * i, 2);  // Unaligned-safe.
        dst[i] = half ? HalfToFloat(bits) : Bf16ToFloat(bits);
      }
      break;
    }
    default:
      return Status::InvalidArgument(file + ": tensor \"" + view.name +
                                     "\" has unsupported dtype (expected F32, F16 or BF16)");
  }
  *out = t;
  return Status::OK();
}

}  // namespace

namespace {

// The memorizing layer's own parameters (attn.mem_gate, attn.mem_scale).
bool IsMemoryParameter(const std::string& name) { return name.find(".attn.mem_") != std::string::npos; }

}  // namespace

Status LoadWeights(const std::string& path, Gpt& net) {
  std::unique_ptr<SafetensorsFile> file;
  MNEMO_RETURN_IF_ERROR(SafetensorsFile::Open(path, &file));
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) {
    const std::string& name = p.key();
    const TensorView* view = file->Find(name);
    if (view == nullptr) view = file->Find(kPrefix + name);
    if (view == nullptr && IsMemoryParameter(name)) continue;  // a plain model becoming a memorizing one
    if (view == nullptr) {
      return Status::Corruption(path + ": missing tensor \"" + name + "\" (also looked for \"" + kPrefix + name +
                                "\")");
    }
    if (view->shape != p.value().sizes().vec()) {
      return Status::Corruption(path + ": tensor \"" + view->name + "\" has shape " + ShapeString(view->shape) +
                                ", config.json implies " + ShapeString(p.value().sizes().vec()));
    }
    torch::Tensor t;
    MNEMO_RETURN_IF_ERROR(ToFloatTensor(*view, path, &t));
    p.value().copy_(t);
  }
  return Status::OK();
}

std::string ModelFingerprint(Gpt& net) {
  uint64_t h = Fnv1a64(net->config().ToJson());
  for (auto& p : net->named_parameters()) {
    torch::Tensor t = p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
    h = Fnv1a64(p.key().data(), p.key().size(), h);
    h = Fnv1a64(t.data_ptr(), static_cast<size_t>(t.numel()) * sizeof(float), h);
  }
  char buf[32];
  snprintf(buf, sizeof(buf), "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

Status SaveWeights(const std::string& path, Gpt& net) {
  std::vector<torch::Tensor> keep_alive;
  std::vector<TensorData> tensors;
  for (auto& p : net->named_parameters()) {
    torch::Tensor t = p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
    keep_alive.push_back(t);
    tensors.push_back({kPrefix + p.key(), DType::kF32, t.sizes().vec(), t.data_ptr(),
                       static_cast<size_t>(t.numel()) * sizeof(float)});
  }
  return WriteSafetensors(path, tensors, {{"format", "pt"}});
}

Status SaveCheckpoint(const std::string& dir, Gpt& net, const BpeTokenizer* tokenizer) {
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", net->config().ToJson()));
  MNEMO_RETURN_IF_ERROR(SaveWeights(dir + "/model.safetensors", net));
  if (tokenizer != nullptr) MNEMO_RETURN_IF_ERROR(tokenizer->Save(dir));
  return Status::OK();
}

Status LoadLanguageModel(const std::string& dir, std::unique_ptr<LanguageModel>* out,
                         const torch::Device& device) {
  auto model = std::make_unique<LanguageModel>();
  model->dir = dir;
  const std::string config_path = dir + "/config.json";
  std::string text;
  Status s = ReadFileToString(config_path, &text);
  if (!s.ok()) return Status::NotFound(config_path + ": no config.json (is " + dir + " a model directory?)");
  MNEMO_RETURN_IF_ERROR(GptConfig::FromJson(text, config_path, &model->config));
  MNEMO_RETURN_IF_ERROR(BpeTokenizer::Load(dir, &model->tokenizer));
  if (model->tokenizer->vocab_size() > model->config.vocab_size) {
    return Status::InvalidArgument(dir + ": tokenizer has " + std::to_string(model->tokenizer->vocab_size()) +
                                   " tokens but config.json vocab_size is " +
                                   std::to_string(model->config.vocab_size));
  }
  model->net = Gpt(model->config);
  MNEMO_RETURN_IF_ERROR(LoadWeights(dir + "/model.safetensors", model->net));
  model->net->eval();
  if (!device.is_cpu()) model->net->to(device);
  *out = std::move(model);
  return Status::OK();
}

}  // namespace mnemo
