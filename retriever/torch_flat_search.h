// Exact L2 search on a GPU through LibTorch (a matrix product and top-k), for builds whose only GPU library
// is a CUDA LibTorch: FAISS GPU is not packaged by Debian, and a machine with PyTorch has a CUDA LibTorch.
// RegisterTorchFlatSearch makes it VectorIndex's GPU search for L2 Flat indexes (indexes/device_search.h),
// so `--gpu-index N` works for Flat datastores wherever LibTorch sees GPU N.
//
// How: the vectors live on the device as fp32 [count, dim] with their squared norms. A batch of queries is
// ranked by |x|^2 - 2 q.x (one addmm), the best k taken with topk, and those k candidates' distances then
// recomputed exactly as sum((q - x)^2) and re-sorted, so the distances are not those of the expanded form
// (which loses digits to cancellation near the query) but agree with the CPU's to float rounding. Queries
// are processed in chunks that keep the score matrix under 1 GiB. Equal distances may come in another
// order than on the CPU (which orders them by id).
#pragma once

#include <cstdint>
#include <memory>

#include "indexes/device_search.h"
#include "util/status.h"

namespace mnemo {

// Registers the LibTorch search with VectorIndex (call once at startup). Its check fails, saying so,
// where LibTorch sees no such CUDA device (always, with a CPU-only LibTorch such as Debian's).
void RegisterTorchFlatSearch();

// A copy of count vectors (count * dim floats) on CUDA device `device`, or on the CPU for device -1 (how
// the tests exercise the arithmetic on machines without a GPU).
Status MakeTorchFlatSearch(const float* vectors, int64_t count, int64_t dim, int device,
                           std::unique_ptr<DeviceFlatSearch>* out);

}  // namespace mnemo
