// Order-preserving removal from IVF inverted lists (see ivf_removal.h).
#include "indexes/ivf_removal.h"

#include <faiss/IndexIVF.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace mnemo {

int64_t RemoveFromIvfPreservingOrder(faiss::IndexIVF* ivf, faiss::ArrayInvertedLists* lists, const int64_t* ids,
                                     int64_t n) {
  using idx_t = faiss::Index::idx_t;
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

}  // namespace mnemo
