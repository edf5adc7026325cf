// VectorIndex's GPU search (EnableGpuSearch): making and dropping the GPU copy, and routing searches to it
// (Rep::SearchOnGpu) with the results mapped back to this index's ids and padding. Two kinds of copy:
//  - FAISS GPU builds (MNEMO_FAISS_GPU): GpuSearchCopy (gpu_search.h, the one part that includes FAISS GPU
//    and CUDA headers), for Flat, IVF-Flat and IVF-PQ indexes;
//  - other builds: the DeviceFlatSearch registered at startup (device_search.h; the CLI registers
//    LibTorch's, which runs where LibTorch sees a CUDA GPU), for L2 Flat indexes.
// With neither, EnableGpuSearch is the clear "no GPU search" error.
#include "indexes/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>

#include "indexes/device_search.h"
#include "indexes/vector_index_rep.h"
#if MNEMO_FAISS_GPU
#include "indexes/gpu_search.h"
#endif

namespace mnemo {

namespace {

std::mutex registry_mu;
std::optional<DeviceFlatSearchMaker> registered_maker;

}  // namespace

void RegisterDeviceFlatSearch(const DeviceFlatSearchMaker& maker) {
  std::lock_guard lock(registry_mu);
  if (maker.check != nullptr && maker.make != nullptr) {
    registered_maker = maker;
  } else {
    registered_maker.reset();
  }
}

std::optional<DeviceFlatSearchMaker> RegisteredDeviceFlatSearch() {
  std::lock_guard lock(registry_mu);
  return registered_maker;
}

namespace {

#if !MNEMO_FAISS_GPU
// The registered maker, checked for `device`: the FailedPrecondition of CheckGpuDevice when none can run.
Status UsableMaker(int device, DeviceFlatSearchMaker* out) {
  std::optional<DeviceFlatSearchMaker> maker = RegisteredDeviceFlatSearch();
  if (!maker) return Status::FailedPrecondition(VectorIndex::kNoGpuSearchSupport);
  Status s = maker->check(device);
  if (!s.ok()) {
    return Status::FailedPrecondition(std::string(VectorIndex::kNoGpuSearchSupport) + ", and " + maker->name +
                                      " cannot run: " + s.message());
  }
  *out = *maker;
  return Status::OK();
}
#endif

}  // namespace

const char* const VectorIndex::kNoGpuSearchSupport =
    "this build has no FAISS GPU support (configure with -DMNEMO_FAISS_GPU=ON on a machine with faiss/gpu "
    "headers and CUDA)";

Status VectorIndex::CheckGpuDevice(int device) {
  if (device < 0) return Status::InvalidArgument("GPU device " + std::to_string(device) + " is negative");
#if MNEMO_FAISS_GPU
  return GpuSearchCopy::CheckDevice(device);
#else
  DeviceFlatSearchMaker maker;
  return UsableMaker(device, &maker);
#endif
}

Status VectorIndex::EnableGpuSearch(int device) {
#if MNEMO_FAISS_GPU
  MNEMO_RETURN_IF_ERROR(CheckGpuDevice(device));
#else
  if (device < 0) return CheckGpuDevice(device);
  DeviceFlatSearchMaker maker;  // one lookup: the maker checked is the one used
  MNEMO_RETURN_IF_ERROR(UsableMaker(device, &maker));
#endif
  Rep& rep = *rep_;
  std::unique_lock lock(rep.mu);
  if (!rep.index->is_trained) {
    return Status::FailedPrecondition("\"" + rep.spec_string + "\" index is not trained; nothing to search on a GPU");
  }
#if MNEMO_FAISS_GPU
  // Flat: only the IndexFlat inside the id map goes to the GPU, and Search maps its positions back to ids
  // through this index's id map (cloning the IndexIDMap2 would duplicate its maps on the host around the
  // GPU index). IVF: the index itself; its inverted lists carry the ids.
  const faiss::Index& source = rep.flat != nullptr ? *rep.flat->index : *rep.index;
  std::unique_ptr<GpuSearchCopy> copy;
  MNEMO_RETURN_IF_ERROR(GpuSearchCopy::Create(source, device, &copy));
  rep.gpu = std::move(copy);
#else
  if (rep.flat == nullptr || rep.metric != Metric::kL2) {
    return Status::FailedPrecondition("\"" + rep.spec_string + "\": " + maker.name +
                                      " searches L2 Flat indexes only; IVF and inner-product indexes need a "
                                      "FAISS GPU build (-DMNEMO_FAISS_GPU=ON)");
  }
  const auto* flat = static_cast<const faiss::IndexFlat*>(rep.flat->index);
  std::unique_ptr<DeviceFlatSearch> copy;
  MNEMO_RETURN_IF_ERROR(maker.make(flat->get_xb(), flat->ntotal, flat->d, device, &copy));
  rep.device_flat = std::move(copy);
#endif
  rep.gpu_device = device;
  return Status::OK();
}

void VectorIndex::DisableGpuSearch() {
  std::unique_lock lock(rep_->mu);
#if MNEMO_FAISS_GPU
  rep_->gpu.reset();
#endif
  rep_->device_flat.reset();
  rep_->gpu_device = -1;
}

int VectorIndex::gpu_device() const {
  std::shared_lock lock(rep_->mu);
  return rep_->gpu_device;
}

#if MNEMO_FAISS_GPU
namespace {

// What Search's nprobe becomes on the GPU copy: 1 for Flat (FAISS ignores it), at most nlist for IVF.
int GpuNprobe(const faiss::IndexIDMap2* flat, const faiss::IndexIVF* ivf, int nprobe) {
  return flat != nullptr ? 1 : static_cast<int>(std::min(static_cast<size_t>(nprobe), ivf->nlist));
}

}  // namespace
#endif

bool VectorIndex::Rep::SearchesOnGpu(int k, int nprobe) const {
  if (index->ntotal == 0) return false;
#if MNEMO_FAISS_GPU
  if (gpu != nullptr) {
    return k <= GpuSearchCopy::MaxSelection() && GpuNprobe(flat, ivf, nprobe) <= GpuSearchCopy::MaxSelection();
  }
#endif
  (void)k;
  (void)nprobe;
  return device_flat != nullptr;
}

Status VectorIndex::Rep::SearchOnGpu(int64_t n, const float* queries, int k, int nprobe, float* distances,
                                     int64_t* ids) const {
  const Rep& rep = *this;
  const std::string context = "searching \"" + rep.spec_string + "\"";
#if MNEMO_FAISS_GPU
  if (rep.gpu != nullptr) {
    MNEMO_RETURN_IF_ERROR(rep.gpu->Search(n, queries, k, GpuNprobe(rep.flat, rep.ivf, nprobe), distances, ids));
  } else
#endif
  {
    (void)nprobe;
    MNEMO_RETURN_IF_ERROR(rep.device_flat->Search(n, queries, k, distances, ids));
  }
  // A copy of a Flat index holds the IndexFlat inside the id map: its labels are positions.
  const float padding = rep.metric == Metric::kL2 ? std::numeric_limits<float>::max()
                                                  : -std::numeric_limits<float>::max();
  for (int64_t i = 0; i < n * k; ++i) {
    if (ids[i] < 0) {
      ids[i] = -1;
      distances[i] = padding;
    } else if (rep.flat != nullptr) {
      if (static_cast<size_t>(ids[i]) >= rep.flat->id_map.size()) {
        return Status::FailedPrecondition(context + ": the GPU copy returned position " + std::to_string(ids[i]) +
                                          " of " + std::to_string(rep.flat->id_map.size()));
      }
      ids[i] = rep.flat->id_map[static_cast<size_t>(ids[i])];
    }
  }
  return Status::OK();
}

}  // namespace mnemo
