// DeviceFlatSearch: exact L2 search over a Flat index's vectors on an accelerator, provided by a layer
// that links one (retriever/torch_flat_search.h: LibTorch on CUDA) and registered at startup. VectorIndex
// uses it for EnableGpuSearch on L2 Flat indexes in builds without FAISS GPU (the Debian packages, and any
// machine whose only GPU library is a CUDA LibTorch); a FAISS GPU build uses FAISS's copy instead.
// indexes/ itself stays free of LibTorch and CUDA: it sees only this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "util/status.h"

namespace mnemo {

class DeviceFlatSearch {
 public:
  virtual ~DeviceFlatSearch() = default;
  // n queries (n * dim floats) -> the k nearest stored vectors of each: squared L2 distances ascending and
  // their positions (0 .. count-1, in the order the vectors were given); position -1 where fewer than k
  // are stored. Safe to call from many threads.
  virtual Status Search(int64_t n, const float* queries, int k, float* distances, int64_t* positions) const = 0;
};

struct DeviceFlatSearchMaker {
  const char* name = nullptr;  // For messages, e.g. "LibTorch CUDA search".
  // OK when `device` can take a copy; FailedPrecondition saying why not.
  Status (*check)(int device) = nullptr;
  // A copy of count vectors of dim floats on `device`; `vectors` is only read during the call.
  Status (*make)(const float* vectors, int64_t count, int64_t dim, int device,
                 std::unique_ptr<DeviceFlatSearch>* out) = nullptr;
};

// Registers the maker VectorIndex uses (the last one registered wins; one without `check` and `make`
// unregisters; call at startup, before any EnableGpuSearch). Defined in vector_index_gpu.cc.
void RegisterDeviceFlatSearch(const DeviceFlatSearchMaker& maker);
// A copy of the registered maker; nullopt when none is.
std::optional<DeviceFlatSearchMaker> RegisteredDeviceFlatSearch();

}  // namespace mnemo
