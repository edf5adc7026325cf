#include "indexes/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "indexes/index_file_format.h"
#include "indexes/index_spec.h"
#include "indexes/ivf_search.h"
#if MNEMO_FAISS_GPU
#include "indexes/gpu_search.h"
#endif
#include "util/file_util.h"
#include "util/hash.h"

namespace mnemo {

// Ids are handed to FAISS without conversion.
using idx_t = faiss::Index::idx_t;
static_assert(std::is_same_v<idx_t, int64_t>, "FAISS ids must be int64_t");

namespace {

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

faiss::MetricType ToFaissMetric(Metric metric) {
  return metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

// The metric code stored in the file header (index_file_format.h).
uint32_t MetricCode(Metric metric) { return metric == Metric::kL2 ? 0 : 1; }

bool MetricFromCode(uint32_t code, Metric* out) {
  if (code > 1) return false;
  *out = code == 0 ? Metric::kL2 : Metric::kInnerProduct;
  return true;
}

std::unique_ptr<faiss::Index> NewFaissIndex(int dim, const IndexSpec& spec, Metric metric) {
  const faiss::MetricType faiss_metric = ToFaissMetric(metric);
  if (spec.kind == IndexSpec::Kind::kFlat) {
    // IDMap2 (not IDMap) keeps a reverse map, which gives Contains and duplicate checks in O(1).
    auto storage = std::make_unique<faiss::IndexFlat>(dim, faiss_metric);
    auto id_map = std::make_unique<faiss::IndexIDMap2>(storage.get());
    storage.release();
    id_map->own_fields = true;
    return id_map;
  }
  auto quantizer = std::make_unique<faiss::IndexFlat>(dim, faiss_metric);
  std::unique_ptr<faiss::IndexIVF> ivf;
  if (spec.kind == IndexSpec::Kind::kIvfFlat) {
    ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer.get(), dim, spec.nlist, faiss_metric);
  } else {
    ivf = std::make_unique<faiss::IndexIVFPQ>(quantizer.get(), dim, spec.nlist, spec.pq_m, spec.pq_bits,
                                              faiss_metric);
  }
  quantizer.release();
  ivf->own_fields = true;
  // The Hashtable direct map records where every id lives (list, offset). It is what allows arbitrary
  // caller ids, Contains, and removal that touches only the affected lists; FAISS serializes it.
  ivf->set_direct_map_type(faiss::DirectMap::Hashtable);
  return ivf;
}

Status CheckFinite(int64_t n, int dim, const float* vectors, const char* what) {
  const int64_t count = n * dim;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(vectors[i])) {
      return Status::InvalidArgument(std::string(what) + " " + std::to_string(i / dim) +
                                     " has a non-finite component");
    }
  }
  return Status::OK();
}

Status ReadOnlyError(const char* operation) {
  return Status::FailedPrecondition(std::string(operation) +
                                    ": index was loaded memory-mapped and is read-only");
}

Status GpuCopyError(const char* operation) {
  return Status::FailedPrecondition(std::string(operation) +
                                    ": index is searched on a GPU copy, which would go stale; call "
                                    "DisableGpuSearch first");
}

// FAISS's own IndexIVF::remove_ids fills each hole with the list's last entry. That reorders the list, and
// scan order decides how equal-distance candidates are ranked and which takes the last top-k slot. Equal
// distances are common here: a datastore repeats keys whenever a context repeats, and PQ codes collide. So
// after a FAISS removal the index no longer answers exactly like one built without the removed ids (the
// removal test catches this). Compacting each touched list in place keeps the survivors in insertion order,
// the order add_with_ids appends them in; the DirectMap is updated for every moved entry.
int64_t RemoveFromIvfPreservingOrder(faiss::IndexIVF* ivf, faiss::ArrayInvertedLists* lists,
                                     const int64_t* ids, int64_t n) {
  std::unordered_map<idx_t, idx_t>& where = ivf->direct_map.hashtable;
  std::unordered_map<size_t, std::vector<size_t>> doomed;  // list -> offsets to drop
  for (int64_t i = 0; i < n; ++i) {
    auto it = where.find(ids[i]);
    if (it == where.end()) continue;  // absent, or listed twice in this call
    doomed[faiss::lo_listno(it->second)].push_back(faiss::lo_offset(it->second));
    where.erase(it);
  }
  const size_t code_size = lists->code_size;
  int64_t removed = 0;
  for (auto& [list_no, offsets] : doomed) {
    std::sort(offsets.begin(), offsets.end());
    std::vector<idx_t>& list_ids = lists->ids[list_no];
    std::vector<uint8_t>& codes = lists->codes[list_no];
    size_t next_doomed = 0;
    size_t write = 0;
    for (size_t read = 0; read < list_ids.size(); ++read) {
      if (next_doomed < offsets.size() && offsets[next_doomed] == read) {
        ++next_doomed;
        continue;
      }
      if (write != read) {
        list_ids[write] = list_ids[read];
        std::memmove(codes.data() + write * code_size, codes.data() + read * code_size, code_size);
        where[list_ids[write]] = static_cast<idx_t>(faiss::lo_build(list_no, write));
      }
      ++write;
    }
    list_ids.resize(write);
    codes.resize(write * code_size);
    removed += static_cast<int64_t>(offsets.size());
  }
  ivf->ntotal -= removed;
  return removed;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using UniqueFile = std::unique_ptr<FILE, FileCloser>;

// Reads the payload (everything after the header) of an open file into `out`.
Status ReadPayload(FILE* file, uint64_t size, const std::string& path, std::vector<uint8_t>* out) {
  out->resize(size);
  if (size > 0 && std::fread(out->data(), 1, size, file) != size) {
    return Status::IOError(path + ": read failed");
  }
  return Status::OK();
}

// CRC32 of the next `size` bytes of `file`, read in fixed chunks so a huge memory-mapped index does not
// need a buffer of its own size.
Status StreamCrc32(FILE* file, uint64_t size, const std::string& path, uint32_t* crc) {
  std::vector<uint8_t> chunk(size_t{1} << 20);
  uint32_t c = 0;
  while (size > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(size, chunk.size()));
    if (std::fread(chunk.data(), 1, want, file) != want) return Status::IOError(path + ": read failed");
    c = Crc32(chunk.data(), want, c);
    size -= want;
  }
  *crc = c;
  return Status::OK();
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

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

  // The L2 IVF indexes IvfSearch handles (IVF-Flat, and IVF-PQ with 8-bit codes): searched by it, once
  // trained.
  std::unique_ptr<IvfSearch> ivf_search;

  // Callers hold mu (either mode).
  bool ContainsLocked(int64_t id) const;
  // Called with mu held exclusively once the index is trained (trained, loaded or copied): sets up
  // ivf_search and, for IVF-PQ, drops FAISS's precomputed distance tables, which only FAISS's own search
  // reads (4 bytes x nlist x M x 256: 128 MB for IVF4096,PQ32). An index ivf_search cannot handle keeps
  // them.
  void PrepareSearch();
  // Checks a freshly loaded index against its file header; see the definition.
  Status CheckLoaded(const IndexFileHeader& header, bool mapped, const std::string& path) const;
};

void VectorIndex::Rep::PrepareSearch() {
  if (ivf == nullptr) return;
  ivf_search = IvfSearch::Create(*ivf);
  if (spec.kind != IndexSpec::Kind::kIvfPq) return;
  auto* ivfpq = static_cast<faiss::IndexIVFPQ*>(ivf);
  if (ivf_search != nullptr) {
    ivfpq->use_precomputed_table = 0;  // FAISS's search, if ever called, then computes tables per list
    ivfpq->precomputed_table.resize(0);
  } else if (ivfpq->by_residual && ivfpq->precomputed_table.size() == 0) {
    ivfpq->precompute_table();  // loaded without the tables (IO_FLAG_SKIP_PRECOMPUTE_TABLE)
  }
}

bool VectorIndex::Rep::ContainsLocked(int64_t id) const {
  if (id < 0) return false;
  if (flat != nullptr) return flat->rev_map.count(id) > 0;
  return ivf->direct_map.hashtable.count(id) > 0;
}

// Everything FAISS deserialized is checked against the header and for internal consistency, so that a
// payload which passed its checksum but is not what the header promises (another index type, a bug in an
// old writer) is Corruption here instead of an out-of-bounds access later.
Status VectorIndex::Rep::CheckLoaded(const IndexFileHeader& header, bool mapped,
                                     const std::string& path) const {
  const Rep& rep = *this;
  auto corrupt = [&path](const std::string& what) { return Status::Corruption(path + ": " + what); };
  const faiss::Index& index = *rep.index;
  const int64_t ntotal = header.ntotal;
  if (index.d != rep.dim) {
    return corrupt("FAISS index has dimension " + std::to_string(index.d) + " but the header says " +
                   std::to_string(rep.dim));
  }
  if (index.metric_type != ToFaissMetric(rep.metric)) {
    return corrupt("FAISS index metric differs from header");
  }
  if (index.ntotal != ntotal) {
    return corrupt("FAISS index holds " + std::to_string(index.ntotal) + " vectors but the header says " +
                   std::to_string(ntotal));
  }
  const std::string type_error = "payload is not a \"" + rep.spec_string + "\" index";

  if (rep.spec.kind == IndexSpec::Kind::kFlat) {
    const faiss::IndexIDMap2* id_map = rep.flat;
    if (id_map == nullptr || typeid(index) != typeid(faiss::IndexIDMap2)) return corrupt(type_error);
    const auto* storage = dynamic_cast<const faiss::IndexFlat*>(id_map->index);
    if (storage == nullptr || storage->ntotal != ntotal ||
        storage->codes.size() != static_cast<size_t>(ntotal) * storage->code_size ||
        storage->code_size != sizeof(float) * rep.dim) {
      return corrupt(type_error + " (bad flat storage)");
    }
    if (id_map->id_map.size() != static_cast<size_t>(ntotal)) {
      return corrupt("id map size differs from ntotal");
    }
    // A smaller reverse map means an id occurs twice.
    if (id_map->rev_map.size() != static_cast<size_t>(ntotal)) return corrupt("duplicate ids in index");
    for (idx_t id : id_map->id_map) {
      if (id < 0) return corrupt("negative id " + std::to_string(id) + " in index");
    }
    return Status::OK();
  }

  const faiss::IndexIVF* ivf = rep.ivf;
  const bool want_pq = rep.spec.kind == IndexSpec::Kind::kIvfPq;
  if (ivf == nullptr ||
      typeid(index) != (want_pq ? typeid(faiss::IndexIVFPQ) : typeid(faiss::IndexIVFFlat))) {
    return corrupt(type_error);
  }
  if (static_cast<int64_t>(ivf->nlist) != rep.spec.nlist) return corrupt(type_error + " (nlist differs)");
  if (want_pq) {
    const auto* ivfpq = static_cast<const faiss::IndexIVFPQ*>(ivf);
    if (static_cast<int>(ivfpq->pq.M) != rep.spec.pq_m ||
        static_cast<int>(ivfpq->pq.nbits) != rep.spec.pq_bits) {
      return corrupt(type_error + " (PQ parameters differ)");
    }
    const faiss::ProductQuantizer& pq = ivfpq->pq;
    if (static_cast<int>(pq.d) != rep.dim || pq.dsub * pq.M != pq.d || pq.ksub != (size_t{1} << pq.nbits) ||
        (ivf->is_trained && pq.centroids.size() != pq.M * pq.ksub * pq.dsub)) {
      return corrupt(type_error + " (PQ codebook shape differs)");
    }
  }
  const faiss::Index* quantizer = ivf->quantizer;
  if (quantizer == nullptr || quantizer->d != rep.dim ||
      (ivf->is_trained && quantizer->ntotal != rep.spec.nlist)) {
    return corrupt("IVF coarse quantizer does not match the index");
  }
  const faiss::InvertedLists* lists = ivf->invlists;
  if (lists == nullptr || lists->nlist != ivf->nlist || lists->code_size != ivf->code_size) {
    return corrupt("IVF inverted lists do not match the index");
  }
  if (ivf->direct_map.type != faiss::DirectMap::Hashtable ||
      ivf->direct_map.hashtable.size() != static_cast<size_t>(ntotal)) {
    return corrupt("IVF id map is missing or does not hold every vector");
  }
  int64_t listed = 0;
  for (size_t l = 0; l < lists->nlist; ++l) listed += static_cast<int64_t>(lists->list_size(l));
  if (listed != ntotal) {
    return corrupt("inverted lists hold " + std::to_string(listed) + " vectors, not " +
                   std::to_string(ntotal));
  }

  if (mapped) {
    // Every list must lie inside the mapping: reading past the end of a mapped file is SIGBUS.
    const auto* on_disk = dynamic_cast<const faiss::OnDiskInvertedLists*>(lists);
    if (on_disk == nullptr) return corrupt("memory-mapped load produced in-memory lists");
    const size_t entry_bytes = on_disk->code_size + sizeof(idx_t);
    for (const faiss::OnDiskOneList& l : on_disk->lists) {
      if (l.size > l.capacity || l.offset > on_disk->totsize ||
          l.capacity > (on_disk->totsize - l.offset) / entry_bytes) {
        return corrupt("inverted list extends past the end of the file");
      }
    }
    return Status::OK();
  }

  // In memory, Remove will index lists by the DirectMap's (list, offset) pairs: check every one.
  const auto* array = dynamic_cast<const faiss::ArrayInvertedLists*>(lists);
  if (array == nullptr) return corrupt("unexpected inverted list type");
  for (size_t l = 0; l < array->nlist; ++l) {
    if (array->codes[l].size() != array->ids[l].size() * array->code_size) {
      return corrupt("inverted list " + std::to_string(l) + " has codes and ids of different lengths");
    }
  }
  for (const auto& [id, location] : ivf->direct_map.hashtable) {
    const size_t l = faiss::lo_listno(location);
    const size_t offset = faiss::lo_offset(location);
    if (id < 0 || location < 0 || l >= array->nlist || offset >= array->ids[l].size() ||
        array->ids[l][offset] != id) {
      return corrupt("IVF id map entry for id " + std::to_string(id) + " is inconsistent");
    }
  }
  return Status::OK();
}

VectorIndex::VectorIndex(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
VectorIndex::~VectorIndex() = default;

Status VectorIndex::Create(int dim, const std::string& spec, Metric metric,
                           std::unique_ptr<VectorIndex>* out) {
  auto rep = std::make_unique<Rep>();
  MNEMO_RETURN_IF_ERROR(ParseIndexSpec(spec, dim, &rep->spec));
  rep->dim = dim;
  rep->metric = metric;
  rep->spec_string = rep->spec.ToString();
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::InvalidArgument, "creating \"" + spec + "\"",
                                 [&] { rep->index = NewFaissIndex(dim, rep->spec, metric); }));
  rep->flat = dynamic_cast<faiss::IndexIDMap2*>(rep->index.get());
  rep->ivf = dynamic_cast<faiss::IndexIVF*>(rep->index.get());
  out->reset(new VectorIndex(std::move(rep)));
  return Status::OK();
}

bool VectorIndex::is_trained() const {
  std::shared_lock lock(rep_->mu);
  return rep_->index->is_trained;
}

Status VectorIndex::Train(int64_t n, const float* vectors) {
  Rep& rep = *rep_;
  std::unique_lock lock(rep.mu);
  if (rep.read_only) return ReadOnlyError("Train");
  if (rep.index->is_trained) {
    return Status::FailedPrecondition(
        "\"" + rep.spec_string + "\" index is already trained (retraining would invalidate stored codes)");
  }
  const int64_t needed = rep.spec.MinTrainingVectors();
  if (n < needed) {
    return Status::InvalidArgument("\"" + rep.spec_string + "\" needs at least " + std::to_string(needed) +
                                   " training vectors, got " + std::to_string(n));
  }
  if (vectors == nullptr) return Status::InvalidArgument("Train: vectors is null");
  MNEMO_RETURN_IF_ERROR(CheckFinite(n, rep.dim, vectors, "training vector"));
  return RunFaiss(Status::InvalidArgument, "training \"" + rep.spec_string + "\"", [&] {
    rep.index->train(n, vectors);
    rep.PrepareSearch();
  });
}

Status VectorIndex::Add(int64_t n, const float* vectors, const int64_t* ids) {
  Rep& rep = *rep_;
  if (n < 0) return Status::InvalidArgument("Add: negative count " + std::to_string(n));
  std::unique_lock lock(rep.mu);
  if (rep.read_only) return ReadOnlyError("Add");
  if (rep.gpu_device >= 0) return GpuCopyError("Add");
  if (!rep.index->is_trained) {
    return Status::FailedPrecondition("\"" + rep.spec_string +
                                      "\" index is not trained; call Train before Add");
  }
  if (n == 0) return Status::OK();
  if (vectors == nullptr || ids == nullptr) return Status::InvalidArgument("Add: vectors or ids is null");
  std::unordered_set<int64_t> batch;
  batch.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0) return Status::InvalidArgument("Add: id " + std::to_string(id) + " is negative");
    if (!batch.insert(id).second) {
      return Status::InvalidArgument("Add: id " + std::to_string(id) + " appears twice in the batch");
    }
    if (rep.ContainsLocked(id)) {
      return Status::InvalidArgument("Add: id " + std::to_string(id) + " is already in the index");
    }
  }
  MNEMO_RETURN_IF_ERROR(CheckFinite(n, rep.dim, vectors, "Add: vector"));
  return RunFaiss(Status::InvalidArgument, "adding to \"" + rep.spec_string + "\"",
                  [&] { rep.index->add_with_ids(n, vectors, ids); });
}

Status VectorIndex::Remove(const int64_t* ids, int64_t n, int64_t* removed) {
  Rep& rep = *rep_;
  if (removed != nullptr) *removed = 0;
  if (n < 0) return Status::InvalidArgument("Remove: negative count " + std::to_string(n));
  std::unique_lock lock(rep.mu);
  if (rep.read_only) return ReadOnlyError("Remove");
  if (rep.gpu_device >= 0) return GpuCopyError("Remove");
  if (n == 0) return Status::OK();
  if (ids == nullptr) return Status::InvalidArgument("Remove: ids is null");
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0) return Status::InvalidArgument("Remove: id " + std::to_string(ids[i]) + " is negative");
  }
  int64_t count = 0;
  if (rep.flat != nullptr) {
    // IndexFlat compacts in place, keeping order, in O(size()); skip that pass when nothing matches.
    bool any = false;
    for (int64_t i = 0; i < n && !any; ++i) any = rep.ContainsLocked(ids[i]);
    if (!any) return Status::OK();
    MNEMO_RETURN_IF_ERROR(RunFaiss(Status::InvalidArgument, "removing from \"Flat\"", [&] {
      count = static_cast<int64_t>(rep.flat->remove_ids(faiss::IDSelectorBatch(n, ids)));
    }));
  } else {
    // Writable IVF indexes always hold ArrayInvertedLists (mapped ones are read-only, rejected above).
    auto* lists = dynamic_cast<faiss::ArrayInvertedLists*>(rep.ivf->invlists);
    if (lists == nullptr) return Status::FailedPrecondition("Remove: unexpected inverted list type");
    count = RemoveFromIvfPreservingOrder(rep.ivf, lists, ids, n);
  }
  if (removed != nullptr) *removed = count;
  return Status::OK();
}

Status VectorIndex::Search(int64_t n, const float* queries, int k, float* distances, int64_t* ids,
                           const SearchOptions& options) const {
  const Rep& rep = *rep_;
  if (n < 0) return Status::InvalidArgument("Search: negative query count " + std::to_string(n));
  if (k < 1) return Status::InvalidArgument("Search: k must be at least 1, got " + std::to_string(k));
  if (options.nprobe < 1) {
    return Status::InvalidArgument("Search: nprobe must be at least 1, got " +
                                   std::to_string(options.nprobe));
  }
  if (n == 0) return Status::OK();
  if (queries == nullptr || distances == nullptr || ids == nullptr) {
    return Status::InvalidArgument("Search: null buffer");
  }
  std::shared_lock lock(rep.mu);
  const std::string context = "searching \"" + rep.spec_string + "\"";
#if MNEMO_FAISS_GPU
  const int gpu_nprobe =
      rep.flat != nullptr ? 1 : static_cast<int>(std::min(static_cast<size_t>(options.nprobe), rep.ivf->nlist));
  if (rep.gpu != nullptr && rep.index->ntotal > 0 && k <= GpuSearchCopy::MaxSelection() &&
      gpu_nprobe <= GpuSearchCopy::MaxSelection()) {
    MNEMO_RETURN_IF_ERROR(rep.gpu->Search(n, queries, k, gpu_nprobe, distances, ids));
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
#endif
  if (rep.flat != nullptr) {
    // FAISS computes Flat distances with BLAS (|x|^2 + |y|^2 - 2xy, blocked GEMM) once a call has
    // faiss::distance_compute_blas_threshold (20) queries or more. The rounding of that GEMM depends on
    // where a vector falls in the blocks, so removing one vector could change the last bits of another's
    // distance, breaking the removal contract above (the split test caught this). Under the threshold
    // each distance is computed from its two vectors alone, so calls stay below it.
    constexpr int64_t kPairwiseChunk = 16;
    return RunFaiss(Status::InvalidArgument, context, [&] {
      for (int64_t begin = 0; begin < n; begin += kPairwiseChunk) {
        const int64_t count = std::min(kPairwiseChunk, n - begin);
        rep.flat->search(count, queries + begin * rep.dim, k, distances + begin * k, ids + begin * k);
      }
    });
  }
  // Not IndexIVF::search: in FAISS 1.7.3 it adds per-call statistics into the global
  // faiss::indexIVF_stats without synchronization (a data race between concurrent searches), and for
  // memory-mapped lists it starts prefetch threads on every call. Probing with the quantizer and calling
  // search_preassigned with per-call parameters does neither, and never mutates the index's nprobe.
  const faiss::IndexIVF& ivf = *rep.ivf;
  const size_t nprobe = std::min(static_cast<size_t>(options.nprobe), ivf.nlist);
  return RunFaiss(Status::InvalidArgument, context, [&] {
    if (rep.ivf_search != nullptr && ivf.is_trained) {
      rep.ivf_search->Search(n, queries, k, nprobe, distances, ids);
      return;
    }
    std::vector<idx_t> probes(static_cast<size_t>(n) * nprobe);
    std::vector<float> probe_distances(probes.size());
    ivf.quantizer->search(n, queries, static_cast<idx_t>(nprobe), probe_distances.data(), probes.data());
    faiss::SearchParametersIVF params;
    params.nprobe = nprobe;
    params.max_codes = 0;  // no cap: scan every probed list completely
    ivf.search_preassigned(n, queries, k, probes.data(), probe_distances.data(), distances, ids,
                           /*store_pairs=*/false, &params, /*stats=*/nullptr);
  });
}

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

Status VectorIndex::Save(const std::string& path) const {
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  if (rep.mapped_file != nullptr) {
    return WriteFileAtomically(
        path, std::string_view(reinterpret_cast<const char*>(rep.mapped_file), rep.mapped_file_size));
  }
  // Serialize after room reserved for the header, so the file is assembled in one buffer without a copy.
  faiss::VectorIOWriter writer;
  writer.data.resize(kIndexFileHeaderSize);
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::IOError, path + ": serializing index",
                                 [&] { faiss::write_index(rep.index.get(), &writer); }));
  IndexFileHeader header;
  header.dim = rep.dim;
  header.metric = MetricCode(rep.metric);
  header.spec = rep.spec_string;
  header.ntotal = rep.index->ntotal;
  header.payload_size = writer.data.size() - kIndexFileHeaderSize;
  header.payload_crc = Crc32(writer.data.data() + kIndexFileHeaderSize, header.payload_size);
  const std::string encoded = EncodeIndexFileHeader(header);
  std::memcpy(writer.data.data(), encoded.data(), kIndexFileHeaderSize);
  return WriteFileAtomically(
      path, std::string_view(reinterpret_cast<const char*>(writer.data.data()), writer.data.size()));
}

Status VectorIndex::Load(const std::string& path, const LoadOptions& options,
                         std::unique_ptr<VectorIndex>* out) {
  UniqueFile file(std::fopen(path.c_str(), "rbe"));
  if (file == nullptr) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such index file");
    return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(::fileno(file.get()), &st) != 0) {
    return Status::IOError(path + ": fstat failed: " + std::strerror(errno));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  std::string header_bytes(std::min<uint64_t>(file_size, kIndexFileHeaderSize), '\0');
  if (!header_bytes.empty() &&
      std::fread(header_bytes.data(), 1, header_bytes.size(), file.get()) != header_bytes.size()) {
    return Status::IOError(path + ": read failed");
  }
  IndexFileHeader header;
  MNEMO_RETURN_IF_ERROR(DecodeIndexFileHeader(header_bytes, path, &header));
  if (header.payload_size != file_size - kIndexFileHeaderSize) {
    return Status::Corruption(path + ": header promises a " + std::to_string(header.payload_size) +
                              "-byte index but the file holds " +
                              std::to_string(file_size - kIndexFileHeaderSize) +
                              " bytes after the header (truncated or overwritten?)");
  }
  auto rep = std::make_unique<Rep>();
  if (!MetricFromCode(header.metric, &rep->metric)) {
    return Status::Corruption(path + ": unknown metric code " + std::to_string(header.metric));
  }
  Status s = ParseIndexSpec(header.spec, header.dim, &rep->spec);
  if (!s.ok()) return Status::Corruption(path + ": header holds an invalid spec: " + s.message());
  if (options.expected_dim != -1 && options.expected_dim != header.dim) {
    return Status::InvalidArgument(path + ": index has dimension " + std::to_string(header.dim) +
                                   ", expected " + std::to_string(options.expected_dim));
  }
  rep->dim = header.dim;
  rep->spec_string = rep->spec.ToString();
  rep->read_only = options.mmap;

  // Flat indexes have no inverted lists to map, so they are always read into memory.
  const bool mapped = options.mmap && rep->spec.is_ivf();
  const std::string context = path + ": cannot parse FAISS index";
  if (mapped) {
    if (options.verify_checksum) {
      uint32_t crc = 0;
      MNEMO_RETURN_IF_ERROR(StreamCrc32(file.get(), header.payload_size, path, &crc));
      if (crc != header.payload_crc) {
        return Status::Corruption(path + ": index payload checksum mismatch (expected " +
                                  Hex(header.payload_crc) + ", got " + Hex(crc) + ")");
      }
    }
    if (std::fseek(file.get(), kIndexFileHeaderSize, SEEK_SET) != 0) {
      return Status::IOError(path + ": seek failed");
    }
    // IO_FLAG_MMAP maps the file and records each list's offset from the current file position, so the
    // header in front of the payload is fine. The mapping outlives the FILE.
    MNEMO_RETURN_IF_ERROR(RunFaiss(Status::Corruption, context, [&] {
      rep->index.reset(faiss::read_index(file.get(), faiss::IO_FLAG_MMAP | faiss::IO_FLAG_READ_ONLY |
                                                   faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE));
    }));
  } else {
    faiss::VectorIOReader reader;
    reader.name = path;
    MNEMO_RETURN_IF_ERROR(ReadPayload(file.get(), header.payload_size, path, &reader.data));
    const uint32_t crc = Crc32(reader.data.data(), reader.data.size());
    if (crc != header.payload_crc) {
      return Status::Corruption(path + ": index payload checksum mismatch (expected " +
                                Hex(header.payload_crc) + ", got " + Hex(crc) + ")");
    }
    MNEMO_RETURN_IF_ERROR(
        RunFaiss(Status::Corruption, context, [&] {
          rep->index.reset(faiss::read_index(&reader, faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE));
        }));
  }
  if (rep->index == nullptr) return Status::Corruption(context);
  rep->flat = dynamic_cast<faiss::IndexIDMap2*>(rep->index.get());
  rep->ivf = dynamic_cast<faiss::IndexIVF*>(rep->index.get());
  MNEMO_RETURN_IF_ERROR(rep->CheckLoaded(header, mapped, path));
  if (rep->index->is_trained) {
    MNEMO_RETURN_IF_ERROR(RunFaiss(Status::Corruption, context, [&] { rep->PrepareSearch(); }));
  }
  if (mapped) {
    const auto* on_disk = static_cast<const faiss::OnDiskInvertedLists*>(rep->ivf->invlists);
    if (on_disk->totsize != file_size) return Status::Corruption(path + ": file changed while loading");
    rep->mapped_file = on_disk->ptr;
    rep->mapped_file_size = on_disk->totsize;
  }
  out->reset(new VectorIndex(std::move(rep)));
  return Status::OK();
}

Status VectorIndex::CreateEmptyLike(std::unique_ptr<VectorIndex>* out) const {
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  if (!rep.index->is_trained) {
    return Status::FailedPrecondition("\"" + rep.spec_string + "\" index is not trained; nothing to copy");
  }
  std::unique_ptr<VectorIndex> copy;
  MNEMO_RETURN_IF_ERROR(Create(rep.dim, rep.spec_string, rep.metric, &copy));
  if (rep.flat != nullptr) {
    *out = std::move(copy);
    return Status::OK();
  }
  faiss::IndexIVF* target = copy->rep_->ivf;
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::InvalidArgument, "copying trained \"" + rep.spec_string + "\"", [&] {
    // The coarse quantizer is an IndexFlat of nlist centroids: copy them in order, so list l is list l.
    const auto* centroids = dynamic_cast<const faiss::IndexFlat*>(rep.ivf->quantizer);
    if (centroids == nullptr) throw std::runtime_error("coarse quantizer is not flat");
    target->quantizer->add(centroids->ntotal, centroids->get_xb());
    target->quantizer->is_trained = true;
    if (rep.spec.kind == IndexSpec::Kind::kIvfPq) {
      const auto* source_pq = static_cast<const faiss::IndexIVFPQ*>(rep.ivf);
      auto* target_pq = static_cast<faiss::IndexIVFPQ*>(target);
      target_pq->pq.centroids = source_pq->pq.centroids;
      target_pq->by_residual = source_pq->by_residual;
      target_pq->is_trained = true;
    }
    target->is_trained = true;
    copy->rep_->PrepareSearch();
  }));
  *out = std::move(copy);
  return Status::OK();
}

uint64_t VectorIndex::TrainedFingerprint() const {
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  if (!rep.index->is_trained) return 0;
  uint64_t h = Fnv1a64(rep.spec_string);
  const uint32_t metric = MetricCode(rep.metric);
  h = Fnv1a64(&metric, sizeof(metric), h);
  if (rep.ivf != nullptr) {
    const auto* centroids = dynamic_cast<const faiss::IndexFlat*>(rep.ivf->quantizer);
    if (centroids != nullptr) h = Fnv1a64(centroids->codes.data(), centroids->codes.size(), h);
    if (rep.spec.kind == IndexSpec::Kind::kIvfPq) {
      const auto& pq = static_cast<const faiss::IndexIVFPQ*>(rep.ivf)->pq.centroids;
      h = Fnv1a64(pq.data(), pq.size() * sizeof(float), h);
    }
  }
  return h;
}

int64_t VectorIndex::size() const {
  std::shared_lock lock(rep_->mu);
  return rep_->index->ntotal;
}

bool VectorIndex::Contains(int64_t id) const {
  std::shared_lock lock(rep_->mu);
  return rep_->ContainsLocked(id);
}

std::vector<int64_t> VectorIndex::Ids() const {
  std::shared_lock lock(rep_->mu);
  std::vector<int64_t> out;
  if (rep_->flat != nullptr) {
    out.assign(rep_->flat->id_map.begin(), rep_->flat->id_map.end());
  } else {
    out.reserve(rep_->ivf->direct_map.hashtable.size());
    for (const auto& entry : rep_->ivf->direct_map.hashtable) out.push_back(entry.first);
  }
  std::sort(out.begin(), out.end());
  return out;
}

int VectorIndex::dim() const { return rep_->dim; }
Metric VectorIndex::metric() const { return rep_->metric; }
const std::string& VectorIndex::spec() const { return rep_->spec_string; }
bool VectorIndex::read_only() const { return rep_->read_only; }

}  // namespace mnemo
