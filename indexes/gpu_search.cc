// Compiled only in a FAISS GPU build (MNEMO_FAISS_GPU): the one file that includes faiss/gpu and CUDA.
#include "indexes/gpu_search.h"

#include <cuda_runtime.h>
#include <faiss/IndexIVF.h>
#include <faiss/gpu/GpuCloner.h>
#include <faiss/gpu/GpuClonerOptions.h>
#include <faiss/gpu/GpuIndex.h>
#include <faiss/gpu/GpuIndexIVF.h>
#include <faiss/gpu/StandardGpuResources.h>
#include <faiss/gpu/impl/IndexUtils.h>
#include <faiss/impl/FaissException.h>

#include <exception>
#include <mutex>
#include <new>
#include <string>

namespace mnemo {
namespace {

// Runs `fn`, turning what FAISS (or CUDA through FAISS, or the allocator) throws into FailedPrecondition.
template <typename Fn>
Status RunFaissGpu(const std::string& context, Fn&& fn) {
  try {
    fn();
    return Status::OK();
  } catch (const faiss::FaissException& e) {
    return Status::FailedPrecondition(context + ": FAISS: " + e.what());
  } catch (const std::bad_alloc&) {
    return Status::FailedPrecondition(context + ": out of memory");
  } catch (const std::exception& e) {
    return Status::FailedPrecondition(context + ": " + e.what());
  }
}

}  // namespace

struct GpuSearchCopy::Rep {
  int device = 0;
  bool ivf = false;
  // Declared before `index`, so it is destroyed after it: the GPU index uses its memory and streams.
  faiss::gpu::StandardGpuResources resources;
  std::unique_ptr<faiss::Index> index;
  // FAISS GPU indexes are not thread-safe, not even for search (see the header).
  std::mutex mu;
};

GpuSearchCopy::GpuSearchCopy(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
GpuSearchCopy::~GpuSearchCopy() = default;

Status GpuSearchCopy::CheckDevice(int device) {
  // Asked of the CUDA runtime directly: faiss::gpu::getNumDevices() asserts (aborts) on any CUDA error.
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess && err != cudaErrorNoDevice) {
    return Status::FailedPrecondition("GPU " + std::to_string(device) + ": CUDA reports " +
                                      cudaGetErrorString(err) + " (is the NVIDIA driver loaded?)");
  }
  if (err == cudaErrorNoDevice) count = 0;
  if (device < 0 || device >= count) {
    return Status::FailedPrecondition("GPU " + std::to_string(device) + ": the CUDA runtime sees " +
                                      std::to_string(count) + " GPU(s)");
  }
  return Status::OK();
}

Status GpuSearchCopy::Create(const faiss::Index& index, int device, std::unique_ptr<GpuSearchCopy>* out) {
  MNEMO_RETURN_IF_ERROR(CheckDevice(device));
  auto rep = std::make_unique<Rep>();
  rep->device = device;
  const std::string context = "copying the index to GPU " + std::to_string(device);
  MNEMO_RETURN_IF_ERROR(RunFaissGpu(context, [&] {
    // The defaults: float32 vectors and coarse quantizer, no float16 lookup tables, 64-bit ids, so the
    // copy scores exactly what the CPU index scores (up to float rounding order).
    faiss::gpu::GpuClonerOptions options;
    rep->index.reset(faiss::gpu::index_cpu_to_gpu(&rep->resources, device, &index, &options));
  }));
  // index_cpu_to_gpu falls back to a plain CPU clone for types it cannot move: that is no GPU copy.
  if (dynamic_cast<const faiss::gpu::GpuIndex*>(rep->index.get()) == nullptr) {
    return Status::FailedPrecondition(context + ": FAISS has no GPU version of this index type");
  }
  rep->ivf = dynamic_cast<const faiss::gpu::GpuIndexIVF*>(rep->index.get()) != nullptr;
  out->reset(new GpuSearchCopy(std::move(rep)));
  return Status::OK();
}

int GpuSearchCopy::MaxSelection() { return faiss::gpu::getMaxKSelection() - 1; }

int GpuSearchCopy::device() const { return rep_->device; }

Status GpuSearchCopy::Search(int64_t n, const float* queries, int k, int nprobe, float* distances,
                             int64_t* labels) const {
  std::lock_guard<std::mutex> lock(rep_->mu);
  return RunFaissGpu("searching on GPU " + std::to_string(rep_->device), [&] {
    if (rep_->ivf) {
      faiss::SearchParametersIVF params;
      params.nprobe = static_cast<size_t>(nprobe);
      params.max_codes = 0;  // The GPU accepts only 0 (no cap), which is also what the CPU path uses.
      rep_->index->search(n, queries, k, distances, labels, &params);
    } else {
      rep_->index->search(n, queries, k, distances, labels);
    }
  });
}

}  // namespace mnemo
