// --device parsing (lm/device.h): which names are devices, and the clear error for CUDA where this
// LibTorch or this machine has none.
#include "lm/device.h"

#include <gtest/gtest.h>

namespace mnemo {
namespace {

TEST(DeviceTest, CpuIsAlwaysAvailable) {
  torch::Device device = torch::kCUDA;
  Status s = ParseDevice("cpu", &device);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(device.is_cpu());
}

TEST(DeviceTest, UnknownNamesAreInvalidArgumentListingTheForms) {
  for (const char* name : {"bogus", "", "CPU", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "mps", "cuda:99999"}) {
    torch::Device device = torch::kCPU;
    Status s = ParseDevice(name, &device);
    EXPECT_TRUE(s.IsInvalidArgument()) << name << ": " << s.ToString();
    EXPECT_NE(s.message().find("expected cpu, cuda or cuda:N"), std::string::npos) << name << ": " << s.ToString();
  }
}

TEST(DeviceTest, CudaIsUsableExactlyWhenLibTorchSeesAGpu) {
  for (const char* name : {"cuda", "cuda:0"}) {
    torch::Device device = torch::kCPU;
    Status s = ParseDevice(name, &device);
    if (torch::cuda::is_available()) {
      ASSERT_TRUE(s.ok()) << name << ": " << s.ToString();
      EXPECT_TRUE(device.is_cuda()) << name;
    } else {
      // A CPU-only LibTorch (Debian's libtorch-dev) or no GPU: a clear InvalidArgument naming the cause.
      EXPECT_TRUE(s.IsInvalidArgument()) << name << ": " << s.ToString();
      EXPECT_NE(s.message().find(at::Context::hasCUDART() ? "sees no GPU" : "built without CUDA"), std::string::npos)
          << s.ToString();
      EXPECT_TRUE(device.is_cpu()) << "the output must not change on error";
    }
  }
}

TEST(DeviceTest, CudaIndexPastTheLastGpuIsInvalidArgument) {
  const std::string past = "cuda:" + std::to_string(torch::cuda::device_count());
  torch::Device device = torch::kCPU;
  Status s = ParseDevice(past, &device);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

}  // namespace
}  // namespace mnemo
