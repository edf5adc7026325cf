// VectorIndex::Rep, the state behind the pimpl of vector_index.h, and the FAISS helpers its files share.
// Internal to indexes/; the only header that shows VectorIndex's FAISS types. The class is defined across
// files, one concept each:
//   vector_index.cc      creation, training, add, remove, the CPU search, trained copies, accessors
//   vector_index_io.cc   Save and Load (the self-checking file of index_file_format.h), load checks
//   vector_index_gpu.cc  the GPU search copy: enabling it and routing searches to it (FAISS GPU, or the
//                        registered DeviceFlatSearch of device_search.h for L2 Flat indexes)
//   vector_index_copy.cc CopyIdRange and Append: stored codes moved between indexes of equal training
//   ivf_removal.h        the order-preserving IVF removal Remove calls
//
// MNEMO_FAISS_GPU is defined for the whole mnemo_indexes library (indexes/CMakeLists.txt), so every file
// that includes this one sees the same Rep.
#pragma once

#include <faiss/Index.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/FaissException.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>
#include <type_traits>

#include "indexes/device_search.h"
#include "indexes/flat_search.h"
#include "indexes/index_spec.h"
#include "indexes/ivf_search.h"
#include "indexes/vector_index.h"
#if MNEMO_FAISS_GPU
#include "indexes/gpu_search.h"
#endif
#include "util/status.h"

namespace mnemo {

struct IndexFileHeader;  // index_file_format.h

// Ids are handed to FAISS without conversion.
using idx_t = faiss::Index::idx_t;
static_assert(std::is_same_v<idx_t, int64_t>, "FAISS ids must be int64_t");

using StatusFactory = Status (*)(std::string);

// Runs `fn`, turning any exception FAISS (or the allocator) throws into a Status made by `make_error`.
template <typename Fn>
Status RunFaiss(StatusFactory make_error, const std::string& context, Fn&& fn) {
  try {
    fn();
    return Status::OK();
  } catch (const faiss::FaissException& e) {
    return make_error(context + ": FAISS: " + e.what());
  } catch (const std::bad_alloc&) {
    return make_error(context + ": out of memory");
  } catch (const std::exception& e) {
    return make_error(context + ": " + e.what());
  }
}

inline faiss::MetricType ToFaissMetric(Metric metric) {
  return metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

// The metric code stored in the file header (index_file_format.h), also hashed by TrainedFingerprint.
inline uint32_t MetricCode(Metric metric) { return metric == Metric::kL2 ? 0 : 1; }

inline bool MetricFromCode(uint32_t code, Metric* out) {
  if (code > 1) return false;
  *out = code == 0 ? Metric::kL2 : Metric::kInnerProduct;
  return true;
}

// The errors of a write to a read-only (memory-mapped) index and to one searched on a GPU copy.
inline Status ReadOnlyError(const char* operation) {
  return Status::FailedPrecondition(std::string(operation) + ": index was loaded memory-mapped and is read-only");
}

inline Status GpuCopyError(const char* operation) {
  return Status::FailedPrecondition(std::string(operation) +
                                    ": index is searched on a GPU copy, which would go stale; call "
                                    "DisableGpuSearch first");
}

struct VectorIndex::Rep {
  int dim = 0;
  Metric metric = Metric::kL2;
  IndexSpec spec;
  std::string spec_string;  // spec.ToString(), kept so spec() can return a reference
  bool read_only = false;

  std::unique_ptr<faiss::Index> index;  // owns everything below
  faiss::IndexIDMap2* flat = nullptr;   // Flat: an id map around an IndexFlat
  faiss::IndexIVF* ivf = nullptr;       // IVF kinds, with a Hashtable DirectMap (id -> list, offset)

  // A memory-mapped IVF load: FAISS maps the whole file, header included. The index cannot change after
  // loading, so these bytes are exactly what Save would write (write_index cannot serialize mapped
  // lists in the in-memory format).
  const uint8_t* mapped_file = nullptr;
  size_t mapped_file_size = 0;

  // Shared by Search and the other const methods, exclusive for Add, Remove and Train.
  mutable std::shared_mutex mu;

  // The GPU searches run on (EnableGpuSearch), -1 for the CPU. While it is set, writes are refused.
  int gpu_device = -1;
#if MNEMO_FAISS_GPU
  std::unique_ptr<GpuSearchCopy> gpu;  // Replaced under the exclusive lock, searched under the shared one.
#endif
  // Builds without FAISS GPU: the registered device search's copy of an L2 Flat index (device_search.h).
  std::unique_ptr<DeviceFlatSearch> device_flat;

  // The L2 IVF indexes IvfSearch handles (IVF-Flat, and IVF-PQ with 8-bit codes): searched by it, once
  // trained.
  std::unique_ptr<IvfSearch> ivf_search;

  // L2 Flat indexes of kMinProjectedCount vectors or more: the projection FlatL2Search screens with, built
  // by the first search that can use it (under projection_mu, with mu shared) and dropped by every write
  // (with mu exclusive), so it always describes the stored vectors.
  mutable std::mutex projection_mu;
  mutable std::shared_ptr<const FlatProjection> flat_projection;

  // Callers hold mu (either mode).
  bool ContainsLocked(int64_t id) const;
  // Callers hold mu shared: the projection of the stored Flat vectors, built if missing (nullptr when
  // they cannot be projected).
  std::shared_ptr<const FlatProjection> FlatProjectionLocked() const;
  // Called with mu held exclusively once the index is trained (trained, loaded or copied): sets up
  // ivf_search and, for IVF-PQ, drops FAISS's precomputed distance tables, which only FAISS's own search
  // reads (4 bytes x nlist x M x 256: 128 MB for IVF4096,PQ32). An index ivf_search cannot handle keeps
  // them.
  void PrepareSearch();
  // Checks a freshly loaded index against its file header; see the definition (vector_index_io.cc).
  Status CheckLoaded(const IndexFileHeader& header, bool mapped, const std::string& path) const;
  // Search's GPU route (vector_index_gpu.cc); callers hold mu (either mode). Whether a GPU copy exists
  // and can take a search of k results over `nprobe` lists: a non-empty index, and for FAISS's copy k and
  // nprobe within its GPU k-selection. Otherwise the search runs on the CPU.
  bool SearchesOnGpu(int k, int nprobe) const;
  // The search on the GPU copy, its results mapped to this index's ids and padding; only when
  // SearchesOnGpu(k, nprobe).
  Status SearchOnGpu(int64_t n, const float* queries, int k, int nprobe, float* distances, int64_t* ids) const;
};

}  // namespace mnemo
