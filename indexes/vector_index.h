// VectorIndex: a kNN index over FAISS for the kNN-LM datastore and the key-value memory layer.
//
// An index stores float vectors of a fixed dimension under caller-chosen non-negative 64-bit ids and
// answers k-nearest-neighbour queries. Supported structures are those of index_spec.h: "Flat" (exact),
// "IVF<n>,Flat" and "IVF<n>,PQ<m>[x<b>]" (approximate, must be trained first).
//
// Contracts:
//  - Ids are unique: Add rejects an id already stored (or repeated within the batch) and changes nothing.
//  - Remove works on every type, and afterwards the index answers every query exactly (ids, distances and
//    tie order) as an index with the same trained structures that was given only the remaining vectors,
//    in the order they were originally added.
//  - Search returns, per query, the k best results best first: smallest squared L2 distance, or largest
//    inner product. When fewer than k vectors are reachable (small index, or IVF lists not probed) the
//    tail is padded with id -1 and distance +FLT_MAX (L2) or -FLT_MAX (inner product), FAISS's
//    convention.
//  - L2 Flat is searched by FlatL2Search (flat_search.h: sgemm screening, then FAISS's exact distances),
//    L2 IVF-Flat and IVF-PQ with 8-bit codes ("IVF<n>,Flat", "IVF<n>,PQ<m>") by IvfSearch (ivf_search.h)
//    rather than FAISS (IVF-PQ without FAISS's precomputed tables); the others by FAISS. Both of mnemo's
//    searches order equal distances by id.
//  - Save writes one self-checking file atomically (index_file_format.h); Load verifies it and reports a
//    damaged file as Corruption naming it, never a crash. FAISS exceptions never escape this class.
//  - A memory-mapped load (LoadOptions::mmap) is read-only: Add, Remove and Train are FailedPrecondition.
//  - GPU search (EnableGpuSearch): searches run on a copy of the index on a GPU: FAISS's in a FAISS GPU
//    build (Flat, IVF-Flat, IVF-PQ), else the registered DeviceFlatSearch's (device_search.h; the CLI
//    registers LibTorch's CUDA search) for L2 Flat indexes.
//    While the copy exists the index is read-only (Add and Remove are FailedPrecondition), so the copy
//    never goes stale; DisableGpuSearch drops it. The copy finds the same neighbours, but its distances
//    are computed in another order (GPU GEMM and reductions), so they may differ from the CPU's in the
//    last bits and equal-distance neighbours may come in another order: the removal contract above is
//    one of the CPU path.
//
// Thread-safety: many concurrent Search calls (and other const methods), writes exclusive. Add, Remove and
// Train take an internal exclusive lock, const methods a shared one, so callers need no locking of their
// own; a long Add blocks searches until it finishes. Searches on a GPU copy run one at a time (FAISS GPU
// indexes are not thread-safe even for search); each is a batch on the GPU, so they queue briefly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

enum class Metric {
  kL2,            // squared Euclidean distance; the kNN-LM default (Khandelwal et al. 2020)
  kInnerProduct,  // larger is closer
};

struct SearchOptions {
  // Inverted lists visited per query (IVF only, capped at nlist; ignored by Flat). 32 of a few thousand
  // lists is the usual kNN-LM operating point; raise it for recall, up to nlist for exact IVF-Flat.
  int nprobe = 32;
};

struct LoadOptions {
  // When not -1, a file whose dimension differs is InvalidArgument naming both dimensions.
  int expected_dim = -1;
  // Memory-map the inverted lists of IVF indexes read-only instead of reading them into RAM, so a datastore
  // larger than memory can be searched and the page cache is shared between processes. Flat indexes have
  // no inverted lists: they are read into RAM but still treated as read-only, so the flag means the same
  // for every type.
  bool mmap = false;
  // Check the payload CRC32. Reading the payload costs O(file size); with mmap=false it is read anyway.
  // With mmap=true and verify_checksum=false only the header, the file size and the inverted-list bounds
  // are checked, so a bit flip inside the payload may go unnoticed (wrong results; a flip in the FAISS
  // structure headers could still crash). Only turn it off for files this process just wrote.
  bool verify_checksum = true;
};

class VectorIndex {
 public:
  // A new empty index. InvalidArgument for an unsupported spec (the message lists the supported forms),
  // a PQ m that does not divide dim, or dim out of range.
  static Status Create(int dim, const std::string& spec, Metric metric, std::unique_ptr<VectorIndex>* out);

  // Opens a file written by Save. NotFound when it does not exist, IOError when it cannot be read,
  // Corruption (naming the file) when it is damaged, InvalidArgument when expected_dim does not match.
  static Status Load(const std::string& path, const LoadOptions& options, std::unique_ptr<VectorIndex>* out);

  ~VectorIndex();
  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;

  // Flat is always trained; IVF kinds are trained once, before the first Add.
  bool is_trained() const;

  // Trains the IVF coarse quantizer (and PQ codebooks) on `n` sample vectors (n * dim floats).
  // InvalidArgument for fewer than IndexSpec::MinTrainingVectors() vectors or a non-finite value;
  // FailedPrecondition when already trained (retraining would invalidate stored codes; Flat counts as
  // trained) or read-only.
  Status Train(int64_t n, const float* vectors);

  // Adds n vectors (n * dim floats) under ids[0..n). FailedPrecondition when untrained or read-only;
  // InvalidArgument for a negative id, an id already present or repeated in the batch, or a non-finite
  // value. On error nothing is added.
  Status Add(int64_t n, const float* vectors, const int64_t* ids);

  // Removes the listed ids that are present (absent ones are ignored) and sets *removed (may be null) to
  // how many were removed. Cost: O(size()) for Flat, O(size of the touched lists) for IVF.
  // FailedPrecondition when read-only; InvalidArgument for a negative id.
  Status Remove(const int64_t* ids, int64_t n, int64_t* removed);

  // For each of n queries (n * dim floats) writes k results to distances[i*k..] and ids[i*k..], best first,
  // padded as described at the top of this file. InvalidArgument for k < 1 or nprobe < 1.
  Status Search(int64_t n, const float* queries, int k, float* distances, int64_t* ids,
                const SearchOptions& options = SearchOptions()) const;

  // Whether GPU `device` can take a search copy: OK, or FailedPrecondition starting with kNoGpuSearchSupport
  // in a build without FAISS GPU support (followed by why the registered device search cannot run, if one
  // is registered), or naming the problem when the CUDA runtime does not see the device.
  // InvalidArgument for a negative device.
  static Status CheckGpuDevice(int device);
  // The message of a build without FAISS GPU support.
  static const char* const kNoGpuSearchSupport;

  // From now on, searches run on a copy of this index on GPU `device` (faiss::gpu::index_cpu_to_gpu:
  // Flat, IVF-Flat, and IVF-PQ with 8-bit codes; without FAISS GPU, the registered DeviceFlatSearch for
  // L2 Flat indexes only), made now; a second call replaces the copy. Searches whose k or nprobe exceed
  // what FAISS's GPU k-selection takes (GpuSearchCopy::MaxSelection, 2047), and searches of an empty
  // index, still run on the CPU. Errors: those of CheckGpuDevice; FailedPrecondition when the index is
  // untrained or cannot be moved (another kind without FAISS GPU; FAISS's message). On error searches
  // stay on the CPU.
  Status EnableGpuSearch(int device);
  // Drops the GPU copy (if any): searches run on the CPU again and writes are allowed.
  void DisableGpuSearch();
  // The GPU searches run on, -1 for the CPU.
  int gpu_device() const;

  // Writes the index to `path` atomically (temp file, fsync, rename, directory fsync).
  Status Save(const std::string& path) const;

  // A new writable, empty index with this one's spec, metric and trained structures (IVF centroids, PQ
  // codebooks) copied bit for bit. Searching it together with this index and merging
  // by distance gives what one index holding both sets of vectors would return: every vector is assigned
  // to the same list and encoded with the same codes. Works on memory-mapped (read-only) indexes too.
  // FailedPrecondition when this index is not trained.
  Status CreateEmptyLike(std::unique_ptr<VectorIndex>* out) const;

  // A new writable index like CreateEmptyLike's holding the stored vectors whose ids are in [lo, hi), in
  // this index's order (Flat: insertion order; IVF: each list's), their codes copied byte for byte: it
  // answers exactly as an index given only those vectors in their original order. Works on memory-mapped
  // indexes. With `renumber`, vector id is stored as id - lo (a datastore shard numbers its entries from 0;
  // ids keep their order, so ties still break as in this index). InvalidArgument when lo > hi;
  // FailedPrecondition when this index is not trained.
  Status CopyIdRange(int64_t lo, int64_t hi, std::unique_ptr<VectorIndex>* out, bool renumber = false) const;

  // The same for the stored vectors whose ids are listed (absent ids are ignored, repeats count once),
  // in this index's order whatever the list's; costs O(n log n), not O(size()).
  Status CopyIds(const int64_t* ids, int64_t n, std::unique_ptr<VectorIndex>* out) const;

  // Appends every vector of `other` after this index's own, in other's order, codes copied byte for byte:
  // this index then answers exactly as one given its vectors and then other's, in order. InvalidArgument
  // (nothing appended) when other's trained structures differ (TrainedFingerprint) or one of its ids is
  // already here; FailedPrecondition when this index is read-only or searched on a GPU copy. Running out
  // of memory part-way (an error naming it) can leave part of `other` appended: discard the index then.
  Status Append(const VectorIndex& other);

  // FNV-1a over the spec, metric and trained structures (not the stored vectors): two indexes with equal
  // fingerprints assign and encode every vector identically. 0 for an untrained IVF index.
  uint64_t TrainedFingerprint() const;

  int64_t size() const;
  bool Contains(int64_t id) const;
  // Every stored id, ascending (for consistency checks against the datastore).
  std::vector<int64_t> Ids() const;

  int dim() const;
  Metric metric() const;
  // The canonical spec (see IndexSpec::ToString), e.g. "IVF1024,PQ16".
  const std::string& spec() const;
  bool read_only() const;

 private:
  struct Rep;
  explicit VectorIndex(std::unique_ptr<Rep> rep);

  std::unique_ptr<Rep> rep_;
};

}  // namespace mnemo
