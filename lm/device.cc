#include "lm/device.h"

#include <cctype>

namespace mnemo {

Status ParseDevice(const std::string& name, torch::Device* out) {
  if (name == "cpu") {
    *out = torch::Device(torch::kCPU);
    return Status::OK();
  }
  int index = -1;
  if (name != "cuda") {
    const std::string prefix = "cuda:";
    const std::string digits = name.compare(0, prefix.size(), prefix) == 0 ? name.substr(prefix.size()) : "";
    bool numeric = !digits.empty() && digits.size() <= 4;
    for (char c : digits) numeric = numeric && std::isdigit(static_cast<unsigned char>(c));
    if (!numeric) {
      return Status::InvalidArgument("unknown device \"" + name + "\" (expected cpu, cuda or cuda:N)");
    }
    index = std::stoi(digits);
  }
  if (!torch::cuda::is_available()) {
    // hasCUDART tells a CPU-only LibTorch from a CUDA one that finds no GPU (driver, CUDA_VISIBLE_DEVICES).
    if (!at::Context::hasCUDART()) {
      return Status::InvalidArgument(
          "device \"" + name + "\": this LibTorch was built without CUDA (a CPU-only build, such as Debian's " +
          "libtorch-dev); run with --device cpu, or build mnemo against a CUDA LibTorch (bench/gpu-check.sh)");
    }
    return Status::InvalidArgument("device \"" + name +
                                   "\": LibTorch has CUDA support but sees no GPU (check nvidia-smi and "
                                   "CUDA_VISIBLE_DEVICES); run with --device cpu");
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    return Status::InvalidArgument("device \"" + name + "\": only " + std::to_string(count) +
                                   " GPU(s) visible (cuda:0 .. cuda:" + std::to_string(count - 1) + ")");
  }
  *out = index < 0 ? torch::Device(torch::kCUDA) : torch::Device(torch::kCUDA, static_cast<int8_t>(index));
  return Status::OK();
}

}  // namespace mnemo
