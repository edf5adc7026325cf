// GpuSearchCopy: a copy of a FAISS index on one GPU, searched in place of the CPU index
// (VectorIndex::EnableGpuSearch). Internal to indexes/.
//
// Only indexes/gpu_search.cc includes FAISS's GPU headers (and CUDA's), and it is compiled only when CMake
// finds them (MNEMO_FAISS_GPU, see the top-level CMakeLists.txt); a CPU build has this declaration and no
// definition, and vector_index.cc refers to it only under #if MNEMO_FAISS_GPU.
//
// Thread-safety: FAISS GPU indexes are not thread-safe even for search, because their
// StandardGpuResources own one region of temporary GPU memory (FAISS wiki, "Threads and asynchronous
// calls"). Search therefore serializes its callers with a mutex of its own; any number of threads may
// call it.
#pragma once

#include <cstdint>
#include <memory>

#include "util/status.h"

namespace faiss {
struct Index;
}  // namespace faiss

namespace mnemo {

class GpuSearchCopy {
 public:
  // OK when the CUDA runtime sees GPU `device`; FailedPrecondition otherwise (no driver, no GPU, or fewer
  // GPUs). FAISS's own device calls abort the process on such errors, so this runs before any of them.
  static Status CheckDevice(int device);

  // Copies `index` to GPU `device` with faiss::gpu::index_cpu_to_gpu: an IndexFlat becomes a
  // GpuIndexFlat, an IndexIVFFlat a GpuIndexIVFFlat, an IndexIVFPQ a GpuIndexIVFPQ (8-bit codes only),
  // all with float32 storage and 64-bit ids. `index` is only read during the call. FailedPrecondition for
  // a type or setting FAISS cannot move to a GPU (the message is FAISS's), or for a missing device.
  static Status Create(const faiss::Index& index, int device, std::unique_ptr<GpuSearchCopy>* out);

  ~GpuSearchCopy();
  GpuSearchCopy(const GpuSearchCopy&) = delete;
  GpuSearchCopy& operator=(const GpuSearchCopy&) = delete;

  // The largest k, and the largest nprobe, FAISS's GPU k-selection accepts: GPU_MAX_SELECTION_K - 1,
  // i.e. 2047 when FAISS was compiled with CUDA > 9.0 (1023 otherwise); FAISS 1.7.3 checks
  // k < getMaxKSelection() in faiss/gpu/impl/IndexUtils.cu.
  static int MaxSelection();

  // FAISS's search on the copy: n queries (n * dim floats), k results each, best first, label -1 where
  // fewer were found. Labels are what the copied index holds: positions for an IndexFlat, ids for IVF.
  // `nprobe` (IVF only) is passed per call as SearchParametersIVF, which FAISS 1.7.3's GpuIndexIVF
  // honours, so the copy itself never changes. Requires 1 <= k, nprobe <= MaxSelection().
  Status Search(int64_t n, const float* queries, int k, int nprobe, float* distances, int64_t* labels) const;

  int device() const;

 private:
  struct Rep;
  explicit GpuSearchCopy(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace mnemo
