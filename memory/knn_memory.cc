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

}  // namespace mnemo
