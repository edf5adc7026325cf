// VectorIndex::CopyIdRange and VectorIndex::Append: moving stored vectors between indexes with the same
// trained structures without encoding them again (the facts' segment is snapshotted in chunks of fact ids
// and put back together from them at start-up).
//
// Both keep order: Flat keeps insertion order and IVF each list's order, which is what the removal contract
// of vector_index.h (tie order) rests on. Codes are copied byte for byte, so a copied vector is found at the
// same distance as in its source.
#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <shared_mutex>
#include <unordered_set>
#include <vector>

#include "indexes/vector_index.h"
#include "indexes/vector_index_rep.h"

namespace mnemo {
namespace {

// An id of an inverted list. The lists of a memory-mapped index point into the file, where an id can sit at
// any byte offset, so it is read with memcpy rather than through an idx_t pointer (fuzz/index_file_fuzz).
idx_t IdAt(faiss::InvertedLists::ScopedIds& ids, size_t i) {
  idx_t id;
  std::memcpy(&id, ids.get() + i, sizeof(id));
  return id;
}

// Appends the entries i of list `list_no` of `from` for which keep(id) holds to the same list of `to`
// (ArrayInvertedLists) under id - shift, recording each in to's direct map. Returns how many it appended.
template <typename Keep>
int64_t AppendList(const faiss::IndexIVF& from, size_t list_no, faiss::IndexIVF* to, Keep keep, idx_t shift = 0) {
  const faiss::InvertedLists& source = *from.invlists;
  const size_t n = source.list_size(list_no);
  if (n == 0) return 0;
  faiss::InvertedLists::ScopedIds ids(&source, list_no);
  faiss::InvertedLists::ScopedCodes codes(&source, list_no);
  const size_t code_size = source.code_size;
  std::vector<idx_t> kept_ids;
  std::vector<uint8_t> kept_codes;
  for (size_t i = 0; i < n; ++i) {
    const idx_t id = IdAt(ids, i);
    if (!keep(id)) continue;
    kept_ids.push_back(id - shift);
    kept_codes.insert(kept_codes.end(), codes.get() + i * code_size, codes.get() + (i + 1) * code_size);
  }
  if (kept_ids.empty()) return 0;
  const size_t offset = to->invlists->list_size(list_no);
  to->invlists->add_entries(list_no, kept_ids.size(), kept_ids.data(), kept_codes.data());
  for (size_t i = 0; i < kept_ids.size(); ++i) {
    to->direct_map.hashtable[kept_ids[i]] = static_cast<idx_t>(faiss::lo_build(list_no, offset + i));
  }
  to->ntotal += static_cast<idx_t>(kept_ids.size());
  return static_cast<int64_t>(kept_ids.size());
}

// Appends the rows of the Flat id map `from` for which keep(id) holds to `to`, under id - shift.
template <typename Keep>
void AppendFlat(const faiss::IndexIDMap2& from, faiss::IndexIDMap2* to, int dim, Keep keep, idx_t shift = 0) {
  const auto* flat = dynamic_cast<const faiss::IndexFlat*>(from.index);
  if (flat == nullptr) throw std::runtime_error("Flat index without an IndexFlat");
  std::vector<idx_t> kept_ids;
  std::vector<float> kept;
  const float* xb = flat->get_xb();
  for (size_t i = 0; i < from.id_map.size(); ++i) {
    if (!keep(from.id_map[i])) continue;
    kept_ids.push_back(from.id_map[i] - shift);
    kept.insert(kept.end(), xb + i * dim, xb + (i + 1) * dim);
  }
  if (!kept_ids.empty()) to->add_with_ids(static_cast<idx_t>(kept_ids.size()), kept.data(), kept_ids.data());
}

// Appends the entries of `from` at the given (list, offset) locations, sorted, to the same lists of `to`.
void AppendLocations(const faiss::IndexIVF& from, std::vector<std::pair<size_t, size_t>> locations,
                     faiss::IndexIVF* to) {
  std::sort(locations.begin(), locations.end());
  const size_t code_size = from.invlists->code_size;
  for (size_t begin = 0; begin < locations.size();) {
    const size_t list_no = locations[begin].first;
    size_t end = begin;
    while (end < locations.size() && locations[end].first == list_no) ++end;
    faiss::InvertedLists::ScopedIds ids(from.invlists, list_no);
    faiss::InvertedLists::ScopedCodes codes(from.invlists, list_no);
    std::vector<idx_t> kept_ids;
    std::vector<uint8_t> kept_codes;
    for (size_t i = begin; i < end; ++i) {
      const size_t offset = locations[i].second;
      kept_ids.push_back(IdAt(ids, offset));
      kept_codes.insert(kept_codes.end(), codes.get() + offset * code_size, codes.get() + (offset + 1) * code_size);
    }
    const size_t first = to->invlists->list_size(list_no);
    to->invlists->add_entries(list_no, kept_ids.size(), kept_ids.data(), kept_codes.data());
    for (size_t i = 0; i < kept_ids.size(); ++i) {
      to->direct_map.hashtable[kept_ids[i]] = static_cast<idx_t>(faiss::lo_build(list_no, first + i));
    }
    to->ntotal += static_cast<idx_t>(kept_ids.size());
    begin = end;
  }
}

}  // namespace

Status VectorIndex::CopyIds(const int64_t* ids, int64_t n, std::unique_ptr<VectorIndex>* out) const {
  if (n < 0 || (n > 0 && ids == nullptr)) return Status::InvalidArgument("CopyIds: bad id list");
  std::unique_ptr<VectorIndex> copy;
  MNEMO_RETURN_IF_ERROR(CreateEmptyLike(&copy));
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  Rep& target = *copy->rep_;
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::InvalidArgument, "copying ids of \"" + rep.spec_string + "\"", [&] {
    if (rep.flat != nullptr) {
      std::vector<size_t> rows;
      for (int64_t i = 0; i < n; ++i) {
        auto it = rep.flat->rev_map.find(ids[i]);
        if (it != rep.flat->rev_map.end()) rows.push_back(static_cast<size_t>(it->second));
      }
      std::sort(rows.begin(), rows.end());
      rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
      const auto* flat = dynamic_cast<const faiss::IndexFlat*>(rep.flat->index);
      if (flat == nullptr) throw std::runtime_error("Flat index without an IndexFlat");
      std::vector<idx_t> kept_ids;
      std::vector<float> kept;
      for (size_t r : rows) {
        kept_ids.push_back(rep.flat->id_map[r]);
        kept.insert(kept.end(), flat->get_xb() + r * rep.dim, flat->get_xb() + (r + 1) * rep.dim);
      }
      if (!kept_ids.empty()) target.flat->add_with_ids(static_cast<idx_t>(kept_ids.size()), kept.data(), kept_ids.data());
    } else {
      std::vector<std::pair<size_t, size_t>> locations;
      std::unordered_set<int64_t> seen;
      for (int64_t i = 0; i < n; ++i) {
        auto it = rep.ivf->direct_map.hashtable.find(ids[i]);
        if (it == rep.ivf->direct_map.hashtable.end() || !seen.insert(ids[i]).second) continue;
        locations.emplace_back(faiss::lo_listno(it->second), faiss::lo_offset(it->second));
      }
      AppendLocations(*rep.ivf, std::move(locations), target.ivf);
    }
  }));
  *out = std::move(copy);
  return Status::OK();
}

Status VectorIndex::CopyIdRange(int64_t lo, int64_t hi, std::unique_ptr<VectorIndex>* out, bool renumber) const {
  if (lo > hi) return Status::InvalidArgument("CopyIdRange: empty range [" + std::to_string(lo) + ", " +
                                              std::to_string(hi) + ")");
  std::unique_ptr<VectorIndex> copy;
  MNEMO_RETURN_IF_ERROR(CreateEmptyLike(&copy));
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  Rep& target = *copy->rep_;
  auto in_range = [lo, hi](idx_t id) { return id >= lo && id < hi; };
  const idx_t shift = renumber ? lo : 0;
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::InvalidArgument, "copying ids of \"" + rep.spec_string + "\"", [&] {
    if (rep.flat != nullptr) {
      AppendFlat(*rep.flat, target.flat, rep.dim, in_range, shift);
    } else {
      for (size_t l = 0; l < rep.ivf->nlist; ++l) AppendList(*rep.ivf, l, target.ivf, in_range, shift);
    }
  }));
  *out = std::move(copy);
  return Status::OK();
}

Status VectorIndex::Append(const VectorIndex& other) {
  if (&other == this) return Status::InvalidArgument("Append: an index cannot be appended to itself");
  if (other.TrainedFingerprint() != TrainedFingerprint() || !other.is_trained()) {
    return Status::InvalidArgument("Append: \"" + other.spec() + "\" does not have this index's (\"" + spec() +
                                   "\") trained structures");
  }
  Rep& rep = *rep_;
  const Rep& from = *other.rep_;
  std::unique_lock lock(rep.mu);
  std::shared_lock other_lock(from.mu);
  if (rep.read_only) return ReadOnlyError("Append");
  if (rep.gpu_device >= 0) return GpuCopyError("Append");
  // All or nothing: every id must be new here (and, as other's, unique).
  std::vector<int64_t> ids;
  if (from.flat != nullptr) {
    ids.assign(from.flat->id_map.begin(), from.flat->id_map.end());
  } else {
    for (const auto& entry : from.ivf->direct_map.hashtable) ids.push_back(entry.first);
  }
  for (int64_t id : ids) {
    if (rep.ContainsLocked(id)) {
      return Status::InvalidArgument("Append: id " + std::to_string(id) + " is already in the index");
    }
  }
  return RunFaiss(Status::InvalidArgument, "appending to \"" + rep.spec_string + "\"", [&] {
    auto all = [](idx_t) { return true; };
    rep.flat_projection.reset();
    if (rep.flat != nullptr) {
      AppendFlat(*from.flat, rep.flat, rep.dim, all);
    } else {
      for (size_t l = 0; l < rep.ivf->nlist; ++l) AppendList(*from.ivf, l, rep.ivf, all);
    }
  });
}

}  // namespace mnemo
