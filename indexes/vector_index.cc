// VectorIndex (vector_index.h) over FAISS: creation from a spec, training, add, remove, the CPU search
// (Flat through FAISS, L2 IVF through IvfSearch, other IVF through search_preassigned), trained copies and
// fingerprints. Rep and the shared FAISS helpers are in vector_index_rep.h; Save/Load in
// vector_index_io.cc; the GPU search copy in vector_index_gpu.cc; IVF removal in ivf_removal.h.
#include "indexes/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <unordered_set>
#include <utility>

#include "indexes/flat_search.h"
#include "indexes/index_spec.h"
#include "indexes/ivf_removal.h"
#include "indexes/ivf_search.h"
#include "indexes/vector_index_rep.h"
#include "util/hash.h"

namespace mnemo {
namespace {

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

}  // namespace

std::shared_ptr<const FlatProjection> VectorIndex::Rep::FlatProjectionLocked() const {
  std::lock_guard guard(projection_mu);
  if (flat_projection == nullptr) {
    const auto* storage = static_cast<const faiss::IndexFlat*>(flat->index);
    flat_projection = FlatProjection::Build(storage->get_xb(), storage->ntotal, dim);
  }
  return flat_projection;
}

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
    rep.flat_projection.reset();
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
                  [&] {
                    rep.flat_projection.reset();
                    rep.index->add_with_ids(n, vectors, ids);
                  });
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
      rep.flat_projection.reset();
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
  if (rep.SearchesOnGpu(k, options.nprobe)) return rep.SearchOnGpu(n, queries, k, options.nprobe, distances, ids);
  const std::string context = "searching \"" + rep.spec_string + "\"";
  if (rep.flat != nullptr && rep.metric == Metric::kL2) {
    // flat_search.h: screened by sgemm, ranked by FAISS's exact distances, the removal contract kept.
    const auto* flat = static_cast<const faiss::IndexFlat*>(rep.flat->index);
    return RunFaiss(Status::InvalidArgument, context, [&] {
      std::shared_ptr<const FlatProjection> projection;
      if (n >= kMinGemmQueries && flat->ntotal >= kMinProjectedCount) projection = rep.FlatProjectionLocked();
      FlatL2Search(flat->get_xb(), rep.flat->id_map.data(), flat->ntotal, rep.dim, n, queries, k, distances, ids,
                   projection.get());
    });
  }
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
