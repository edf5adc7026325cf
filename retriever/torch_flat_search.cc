#include "retriever/torch_flat_search.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

namespace mnemo {

namespace {

// Scores per chunk of queries: 2^28 floats, 1 GiB.
constexpr int64_t kMaxScores = int64_t{1} << 28;

class TorchFlatSearch final : public DeviceFlatSearch {
 public:
  TorchFlatSearch(torch::Tensor vectors, torch::Tensor norms) : vectors_(std::move(vectors)), norms_(std::move(norms)) {}

  Status Search(int64_t n, const float* queries, int k, float* distances, int64_t* positions) const override {
    const int64_t count = vectors_.size(0), dim = vectors_.size(1);
    const int64_t kept = std::min<int64_t>(k, count);
    try {
      torch::NoGradGuard no_grad;
      const torch::Tensor all = torch::from_blob(const_cast<float*>(queries), {n, dim}, torch::kFloat32);
      // Rows per chunk: the score matrix (rows x count) and the gathered candidates (rows x kept x dim)
      // each within kMaxScores floats.
      const int64_t rows = std::max<int64_t>(1, std::min(kMaxScores / std::max<int64_t>(count, 1),
                                                         kMaxScores / std::max<int64_t>(kept * dim, 1)));
      for (int64_t at = 0; at < n; at += rows) {
        const int64_t m = std::min(rows, n - at);
        const torch::Tensor q = all.narrow(0, at, m).to(vectors_.device());
        // |x|^2 - 2 q.x ranks like |q - x|^2 (|q|^2 is the same for a row).
        const torch::Tensor scores = torch::addmm(norms_.unsqueeze(0), q, vectors_.t(), /*beta=*/1, /*alpha=*/-2);
        torch::Tensor candidates = std::get<1>(scores.topk(kept, /*dim=*/1, /*largest=*/false, /*sorted=*/true));
        const torch::Tensor diff = q.unsqueeze(1) - vectors_.index_select(0, candidates.reshape({-1})).view({m, kept, dim});
        torch::Tensor exact = diff.mul(diff).sum(-1);
        torch::Tensor order = std::get<1>(exact.sort(/*dim=*/1));
        exact = exact.gather(1, order).to(torch::kCPU).contiguous();
        candidates = candidates.gather(1, order).to(torch::kCPU).contiguous();
        const float* d = exact.data_ptr<float>();
        const int64_t* p = candidates.data_ptr<int64_t>();
        for (int64_t i = 0; i < m; ++i) {
          float* out_d = distances + (at + i) * k;
          int64_t* out_p = positions + (at + i) * k;
          std::copy(d + i * kept, d + (i + 1) * kept, out_d);
          std::copy(p + i * kept, p + (i + 1) * kept, out_p);
          std::fill(out_d + kept, out_d + k, std::numeric_limits<float>::max());
          std::fill(out_p + kept, out_p + k, int64_t{-1});
        }
      }
    } catch (const c10::Error& e) {
      return Status::Internal(std::string("LibTorch search on ") + vectors_.device().str() + ": " + e.what_without_backtrace());
    }
    return Status::OK();
  }

 private:
  torch::Tensor vectors_;  // [count, dim] fp32 on the device
  torch::Tensor norms_;    // [count]
};

Status CheckCudaDevice(int device) {
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (device < count) return Status::OK();
  if (count == 0) {
    return Status::FailedPrecondition("LibTorch sees no CUDA GPU (a CPU-only LibTorch, such as Debian's, never does)");
  }
  return Status::FailedPrecondition("no CUDA GPU " + std::to_string(device) + ": LibTorch sees " +
                                    std::to_string(count));
}

}  // namespace

Status MakeTorchFlatSearch(const float* vectors, int64_t count, int64_t dim, int device,
                           std::unique_ptr<DeviceFlatSearch>* out) {
  if (count < 0 || dim <= 0 || (count > 0 && vectors == nullptr)) {
    return Status::InvalidArgument("LibTorch search: bad vectors (count " + std::to_string(count) + ", dim " +
                                   std::to_string(dim) + ")");
  }
  if (device >= 0) MNEMO_RETURN_IF_ERROR(CheckCudaDevice(device));
  try {
    torch::NoGradGuard no_grad;
    const torch::Device where = device >= 0 ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device))
                                            : torch::Device(torch::kCPU);
    torch::Tensor v = torch::from_blob(const_cast<float*>(vectors), {count, dim}, torch::kFloat32).to(where, /*non_blocking=*/false, /*copy=*/true);
    torch::Tensor norms = v.mul(v).sum(1);
    *out = std::make_unique<TorchFlatSearch>(std::move(v), std::move(norms));
  } catch (const c10::Error& e) {
    return Status::FailedPrecondition(std::string("LibTorch search: copying ") + std::to_string(count) + " vectors to " +
                                      (device >= 0 ? "CUDA GPU " + std::to_string(device) : std::string("the CPU")) +
                                      ": " + e.what_without_backtrace());
  }
  return Status::OK();
}

void RegisterTorchFlatSearch() {
  DeviceFlatSearchMaker maker;
  maker.name = "LibTorch's CUDA search (L2 Flat indexes)";
  maker.check = &CheckCudaDevice;
  maker.make = &MakeTorchFlatSearch;
  RegisterDeviceFlatSearch(maker);
}

}  // namespace mnemo
