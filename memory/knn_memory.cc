#include "memory/knn_memory.h"

#include <algorithm>

namespace mnemo {

void SortNeighborsByDistance(std::vector<Neighbor>::iterator begin, std::vector<Neighbor>::iterator end) {
  std::stable_sort(begin, end, [](const Neighbor& a, const Neighbor& b) {
    const bool a_valid = a.entry >= 0, b_valid = b.entry >= 0;
    if (a_valid != b_valid) return a_valid;
    return a_valid && a.distance < b.distance;
  });
}

Status BaseMemory::Search(const float* queries, int64_t n, const MemorySearchOptions& options,
                          std::vector<Neighbor>* out) const {
  std::vector<float> exact;
  MNEMO_RETURN_IF_ERROR(SearchIndex(queries, n, options, out, options.recompute ? &exact : nullptr));
  if (options.recompute) RecomputeAndSort(exact, n, options.k, out);
  return Status::OK();
}

void RecomputeAndSort(const std::vector<float>& exact, int64_t n, int k, std::vector<Neighbor>* out) {
  for (int64_t q = 0; q < n; ++q) {
    for (int j = 0; j < k; ++j) {
      Neighbor& nb = (*out)[q * k + j];
      if (nb.entry >= 0) nb.distance = exact[q * k + j];
    }
    SortNeighborsByDistance(out->begin() + q * k, out->begin() + (q + 1) * k);
  }
}

}  // namespace mnemo
