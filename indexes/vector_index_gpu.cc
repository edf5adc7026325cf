// VectorIndex's GPU search (EnableGpuSearch, FAISS GPU builds only): making and dropping the GPU copy, and
// routing searches to it (Rep::SearchOnGpu) with the results mapped back to this index's ids and padding.
// The copy itself, the one part that includes FAISS GPU and CUDA headers, is GpuSearchCopy (gpu_search.h);
// in a CPU build this file gives the clear "no FAISS GPU support" error and nothing else.
#include "indexes/vector_index.h"

#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>

#include "indexes/vector_index_rep.h"
#if MNEMO_FAISS_GPU
#include "indexes/gpu_search.h"
#endif

namespace mnemo {

const char* const VectorIndex::kNoGpuSearchSupport =
    "this build has no FAISS GPU support (configure with -DMNEMO_FAISS_GPU=ON on a machine with faiss/gpu "
    "headers and CUDA)";

Status VectorIndex::CheckGpuDevice(int device) {
  if (device < 0) return Status::InvalidArgument("GPU device " + std::to_string(device) + " is negative");
#if MNEMO_FAISS_GPU
  return GpuSearchCopy::CheckDevice(device);
#else
  return Status::FailedPrecondition(kNoGpuSearchSupport);
#endif
}

Status VectorIndex::EnableGpuSearch(int device) {
#if !MNEMO_FAISS_GPU
  return CheckGpuDevice(device);  // Always an error in this build.
#else
  MNEMO_RETURN_IF_ERROR(CheckGpuDevice(device));
  Rep& rep = *rep_;
  std::unique_lock lock(rep.mu);
  if (!rep.index->is_trained) {
    return Status::FailedPrecondition("\"" + rep.spec_string + "\" index is not trained; nothing to search on a GPU");
  }
  // Flat: only the IndexFlat inside the id map goes to the GPU, and Search maps its positions back to ids
  // through this index's id map (cloning the IndexIDMap2 would duplicate its maps on the host around the
  // GPU index). IVF: the index itself; its inverted lists carry the ids.
  const faiss::Index& source = rep.flat != nullptr ? *rep.flat->index : *rep.index;
  std::unique_ptr<GpuSearchCopy> copy;
  MNEMO_RETURN_IF_ERROR(GpuSearchCopy::Create(source, device, &copy));
  rep.gpu = std::move(copy);
  rep.gpu_device = device;
  return Status::OK();
#endif
}

void VectorIndex::DisableGpuSearch() {
  std::unique_lock lock(rep_->mu);
#if MNEMO_FAISS_GPU
  rep_->gpu.reset();
#endif
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

bool VectorIndex::Rep::SearchesOnGpu(int k, int nprobe) const {
  return gpu != nullptr && index->ntotal > 0 && k <= GpuSearchCopy::MaxSelection() &&
         GpuNprobe(flat, ivf, nprobe) <= GpuSearchCopy::MaxSelection();
}

Status VectorIndex::Rep::SearchOnGpu(int64_t n, const float* queries, int k, int nprobe, float* distances,
                                     int64_t* ids) const {
  const Rep& rep = *this;
  const std::string context = "searching \"" + rep.spec_string + "\"";
  MNEMO_RETURN_IF_ERROR(rep.gpu->Search(n, queries, k, GpuNprobe(rep.flat, rep.ivf, nprobe), distances, ids));
  // The copy of a Flat index is the IndexFlat inside the id map: its labels are positions.
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
#endif  // MNEMO_FAISS_GPU

}  // namespace mnemo
