#include "memory/kv_ring.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <queue>
#include <limits>
#include <string>

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>

#include "util/half.h"

// The BLAS FAISS links (Fortran interface).
extern "C" int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                      const float* beta, float* c, const int* ldc);

namespace mnemo {

// One lane: `count` tokens in slots [0, count). A full bounded lane overwrites slot `start` (its oldest
// token) next. Per head h, slot s's key is keys[h][s * D .. s * D + D) (or keys16 with fp16 storage).
struct KvRing::Lane {
  std::vector<std::vector<float>> keys, values;
  std::vector<std::vector<uint16_t>> keys16, values16;
  std::vector<int64_t> tags;   // per slot
  std::vector<int64_t> order;  // per slot: insertion order, the tie-break of equal scores
  int64_t count = 0;
  int64_t start = 0;
  int64_t next_order = 0;
  int64_t evicted = 0;
  // IVF (options.lists > 0): per head, each slot's list and its index in that list, and the lists.
  std::vector<std::vector<int32_t>> list_of, pos_in_list;
  std::vector<std::vector<std::vector<int32_t>>> lists;
};

namespace {

// C (rows x cols, row-major) = A (rows x D, row-major) * B' (B: cols x D, row-major).
void MultiplyTransposed(const float* a, int64_t rows, const float* b, int64_t cols, int64_t D, float* c) {
  // Column-major view: C' (cols x rows) = B (cols x D) * A' (D x rows).
  const int m = static_cast<int>(cols), n = static_cast<int>(rows), d = static_cast<int>(D);
  const float one = 1.0f, zero = 0.0f;
  sgemm_("T", "N", &m, &n, &d, &one, b, &d, a, &d, &zero, c, &m);
}

// <a, b> with eight partial sums (vectorisable without reassociating a single sum).
inline float Dot(const float* a, const float* b, int64_t D) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= D; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float v = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < D; ++i) v += a[i] * b[i];
  return v;
}

// The lane's slots, oldest token first.
std::vector<int64_t> SlotsOldestFirst(const std::vector<int64_t>& order, int64_t count) {
  std::vector<int64_t> slots(static_cast<size_t>(count));
  std::iota(slots.begin(), slots.end(), 0);
  std::sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) { return order[a] < order[b]; });
  return slots;
}

}  // namespace

KvRing::KvRing(const KvRingOptions& options) : options_(options), lanes_(static_cast<size_t>(options.lanes)) {
  const int64_t D = options.head_dim;
  centroid_norms_.resize(options.centroids.size() / static_cast<size_t>(std::max<int64_t>(D, 1)));
  for (size_t c = 0; c < centroid_norms_.size(); ++c) {
    float norm = 0;
    for (int64_t i = 0; i < D; ++i) norm += options.centroids[c * D + i] * options.centroids[c * D + i];
    centroid_norms_[c] = norm;
  }
  for (Lane& lane : lanes_) {
    lane.keys.resize(options.fp16 ? 0 : options.heads);
    lane.values.resize(options.fp16 ? 0 : options.heads);
    lane.keys16.resize(options.fp16 ? options.heads : 0);
    lane.values16.resize(options.fp16 ? options.heads : 0);
    if (options.lists > 0) {
      lane.list_of.resize(options.heads), lane.pos_in_list.resize(options.heads);
      lane.lists.assign(options.heads, std::vector<std::vector<int32_t>>(options.lists));
    }
  }
}

KvRing::~KvRing() = default;

Status KvRing::Create(const KvRingOptions& options, std::unique_ptr<KvRing>* out) {
  if (options.lanes < 1 || options.heads < 1 || options.head_dim < 1 || options.capacity < 0) {
    return Status::InvalidArgument("a memory needs lanes, heads and head_dim >= 1 and a capacity >= 0");
  }
  if (options.capacity > (int64_t{1} << 31) - 1) {
    return Status::InvalidArgument("memory capacity " + std::to_string(options.capacity) + " is past 2^31 - 1 tokens");
  }
  if (options.lists < 0 || (options.lists > 0 && (options.nprobe < 1 || options.ivf_from < 0 ||
                                                  static_cast<int64_t>(options.centroids.size()) !=
                                                      options.heads * options.lists * options.head_dim))) {
    return Status::InvalidArgument("IVF memory search needs heads x lists x head_dim centroids and nprobe >= 1");
  }
  out->reset(new KvRing(options));
  return Status::OK();
}

bool KvRing::searches_by_ivf(int64_t lane) const {
  return options_.lists > 0 && CheckLane(lane).ok() && lanes_[lane].count >= std::max<int64_t>(1, options_.ivf_from);
}

void KvRing::Assign(const float* keys, int64_t n, std::vector<int32_t>* list_ids) const {
  const int64_t H = options_.heads, D = options_.head_dim, C = options_.lists;
  list_ids->assign(static_cast<size_t>(H * n), 0);
  std::vector<float> scores(static_cast<size_t>(n * C)), rounded;
  for (int64_t h = 0; h < H; ++h) {
    const float* k = keys + h * n * D;
    if (options_.fp16) {  // assign the key the ring stores, so a rebuilt ring assigns alike
      rounded.resize(static_cast<size_t>(n * D));
      for (int64_t i = 0; i < n * D; ++i) rounded[i] = HalfToFloat(FloatToHalf(k[i]));
      k = rounded.data();
    }
    MultiplyTransposed(k, n, options_.centroids.data() + h * C * D, C, D, scores.data());
    // The nearest centroid (L2): argmax of 2 <k, c> - |c|^2, the first of ties. The maximum first, in eight
    // independent lanes (vectorised), then the first index that holds it.
    const float* norms = centroid_norms_.data() + h * C;
    for (int64_t t = 0; t < n; ++t) {
      float* row = scores.data() + t * C;
      for (int64_t c = 0; c < C; ++c) row[c] = 2.0f * row[c] - norms[c];
      float lane_max[8];
      std::fill(lane_max, lane_max + 8, -std::numeric_limits<float>::infinity());
      int64_t c = 0;
      for (; c + 8 <= C; c += 8) {
        for (int j = 0; j < 8; ++j) lane_max[j] = row[c + j] > lane_max[j] ? row[c + j] : lane_max[j];
      }
      float best = *std::max_element(lane_max, lane_max + 8);
      for (; c < C; ++c) best = row[c] > best ? row[c] : best;
      int64_t at = 0;
      while (at < C && !(row[at] == best)) ++at;
      if (at == C) at = std::max_element(row, row + C) - row;  // no finite maximum (NaN keys): as before
      (*list_ids)[h * n + t] = static_cast<int32_t>(at);
    }
  }
}

void KvRing::ListAdd(Lane& l, int64_t h, int64_t slot, int32_t list) const {
  if (static_cast<int64_t>(l.list_of[h].size()) <= slot) {
    l.list_of[h].resize(slot + 1), l.pos_in_list[h].resize(slot + 1);
  }
  auto& members = l.lists[h][list];
  l.list_of[h][slot] = list;
  l.pos_in_list[h][slot] = static_cast<int32_t>(members.size());
  members.push_back(static_cast<int32_t>(slot));
}

void KvRing::ListRemove(Lane& l, int64_t h, int64_t slot) const {
  auto& members = l.lists[h][l.list_of[h][slot]];
  const int32_t at = l.pos_in_list[h][slot];
  members[at] = members.back();
  l.pos_in_list[h][members[at]] = at;
  members.pop_back();
}

Status KvRing::CheckLane(int64_t lane) const {
  if (lane < 0 || lane >= options_.lanes) {
    return Status::InvalidArgument("memory lane " + std::to_string(lane) + " is outside [0, " +
                                   std::to_string(options_.lanes) + ")");
  }
  return Status::OK();
}

int64_t KvRing::size(int64_t lane) const { return CheckLane(lane).ok() ? lanes_[lane].count : 0; }

int64_t KvRing::evicted(int64_t lane) const { return CheckLane(lane).ok() ? lanes_[lane].evicted : 0; }

int64_t KvRing::bytes_per_token() const {
  const int64_t per_float = options_.fp16 ? 2 : 4;
  const int64_t ivf = options_.lists > 0 ? 3 * options_.heads * static_cast<int64_t>(sizeof(int32_t)) : 0;
  return 2 * options_.heads * options_.head_dim * per_float + 2 * static_cast<int64_t>(sizeof(int64_t)) + ivf;
}

std::vector<int64_t> KvRing::Tags(int64_t lane) const {
  if (!CheckLane(lane).ok()) return {};
  const Lane& l = lanes_[lane];
  std::vector<int64_t> tags;
  for (int64_t s : SlotsOldestFirst(l.order, l.count)) tags.push_back(l.tags[s]);
  return tags;
}

namespace {

template <typename T>
void Put(std::string* out, const T* data, size_t n) {
  out->append(reinterpret_cast<const char*>(data), n * sizeof(T));
}

// Reads n values from bytes at *at; false when the bytes run out.
template <typename T>
bool Take(std::string_view bytes, size_t* at, T* data, size_t n) {
  const size_t size = n * sizeof(T);
  if (bytes.size() - *at < size) return false;
  if (size > 0) std::memcpy(data, bytes.data() + *at, size);
  *at += size;
  return true;
}

}  // namespace

void KvRing::Save(int64_t lane, std::string* out) const {
  if (!CheckLane(lane).ok()) return;
  const Lane& l = lanes_[lane];
  const size_t per_token = sizeof(int64_t) * 2 + static_cast<size_t>(options_.heads) *
                           (2 * static_cast<size_t>(options_.head_dim) * (options_.fp16 ? 2 : 4) +
                            (options_.lists > 0 ? 2 * sizeof(int32_t) : 0));
  out->reserve(out->size() + 4 * sizeof(int64_t) + static_cast<size_t>(l.count) * per_token);
  const int64_t head[4] = {l.count, l.start, l.next_order, l.evicted};
  Put(out, head, 4);
  Put(out, l.tags.data(), static_cast<size_t>(l.count));
  Put(out, l.order.data(), static_cast<size_t>(l.count));
  const size_t pairs = static_cast<size_t>(l.count * options_.head_dim);
  for (int64_t h = 0; h < options_.heads; ++h) {
    if (options_.fp16) {
      Put(out, l.keys16[h].data(), pairs), Put(out, l.values16[h].data(), pairs);
    } else {
      Put(out, l.keys[h].data(), pairs), Put(out, l.values[h].data(), pairs);
    }
  }
  if (options_.lists > 0) {  // each slot's list; the lists follow from them in slot order within a list
    for (int64_t h = 0; h < options_.heads; ++h) {
      Put(out, l.list_of[h].data(), static_cast<size_t>(l.count));
      Put(out, l.pos_in_list[h].data(), static_cast<size_t>(l.count));
    }
  }
}

Status KvRing::Restore(int64_t lane, std::string_view bytes) {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  const int64_t H = options_.heads, D = options_.head_dim, cap = options_.capacity, C = options_.lists;
  const Status bad = Status::Corruption("ring snapshot does not match the memory's shape");
  size_t at = 0;
  int64_t head[4];
  if (!Take(bytes, &at, head, 4)) return bad;
  Lane l;
  l.keys.resize(options_.fp16 ? 0 : H), l.values.resize(options_.fp16 ? 0 : H);
  l.keys16.resize(options_.fp16 ? H : 0), l.values16.resize(options_.fp16 ? H : 0);
  if (C > 0) {
    l.list_of.resize(H), l.pos_in_list.resize(H);
    l.lists.assign(H, std::vector<std::vector<int32_t>>(C));
  }
  l.count = head[0], l.start = head[1], l.next_order = head[2], l.evicted = head[3];
  // start is 0 unless the ring is full (a bounded ring overwrites from start only once it is full).
  if (l.count < 0 || (cap > 0 && l.count > cap) || l.start < 0 || (l.start > 0 && (cap == 0 || l.count < cap)) ||
      (cap > 0 && l.start >= cap) || l.evicted < 0 || l.next_order < l.count) {
    return bad;
  }
  // The exact size, checked before anything is allocated.
  const size_t per_token = 2 * sizeof(int64_t) + static_cast<size_t>(H) *
                           (2 * static_cast<size_t>(D) * (options_.fp16 ? 2 : 4) + (C > 0 ? 2 * sizeof(int32_t) : 0));
  if (static_cast<uint64_t>(l.count) > (bytes.size() - at) / per_token ||
      bytes.size() - at != static_cast<size_t>(l.count) * per_token) {
    return bad;
  }
  const size_t n = static_cast<size_t>(l.count), pairs = n * static_cast<size_t>(D);
  l.tags.assign(n, 0), l.order.assign(n, 0);
  if (!Take(bytes, &at, l.tags.data(), n) || !Take(bytes, &at, l.order.data(), n)) return bad;
  for (size_t i = 0; i < n; ++i) {
    if (l.tags[i] < 0 || l.order[i] < 0 || l.order[i] >= l.next_order) return bad;
  }
  // Insertion orders are distinct and, read from `start` round the ring, increasing (oldest first).
  for (size_t i = 1; i < n; ++i) {
    const size_t a = (static_cast<size_t>(l.start) + i - 1) % n, b = (static_cast<size_t>(l.start) + i) % n;
    if (l.order[a] >= l.order[b]) return bad;
  }
  for (int64_t h = 0; h < H; ++h) {
    if (options_.fp16) {
      l.keys16[h].assign(pairs, 0), l.values16[h].assign(pairs, 0);
      if (!Take(bytes, &at, l.keys16[h].data(), pairs) || !Take(bytes, &at, l.values16[h].data(), pairs)) return bad;
    } else {
      l.keys[h].assign(pairs, 0.0f), l.values[h].assign(pairs, 0.0f);
      if (!Take(bytes, &at, l.keys[h].data(), pairs) || !Take(bytes, &at, l.values[h].data(), pairs)) return bad;
    }
  }
  if (C > 0) {
    for (int64_t h = 0; h < H; ++h) {
      l.list_of[h].assign(n, 0), l.pos_in_list[h].assign(n, 0);
      if (!Take(bytes, &at, l.list_of[h].data(), n) || !Take(bytes, &at, l.pos_in_list[h].data(), n)) return bad;
      auto& lists = l.lists[h];
      for (auto& members : lists) members.clear();
      std::vector<int64_t> sizes(static_cast<size_t>(C), 0);
      for (size_t i = 0; i < n; ++i) {
        if (l.list_of[h][i] < 0 || l.list_of[h][i] >= C) return bad;
        ++sizes[l.list_of[h][i]];
      }
      for (int64_t c = 0; c < C; ++c) lists[c].assign(static_cast<size_t>(sizes[c]), -1);
      for (size_t i = 0; i < n; ++i) {
        auto& members = lists[l.list_of[h][i]];
        const int32_t pos = l.pos_in_list[h][i];
        if (pos < 0 || static_cast<size_t>(pos) >= members.size() || members[pos] != -1) return bad;
        members[pos] = static_cast<int32_t>(i);
      }
    }
  }
  if (at != bytes.size()) return bad;
  lanes_[lane] = std::move(l);
  return Status::OK();
}

void KvRing::Reserve(int64_t lane, int64_t tokens) {
  if (!CheckLane(lane).ok() || tokens <= 0) return;
  Lane& l = lanes_[lane];
  const int64_t n = options_.capacity > 0 ? std::min(tokens, options_.capacity) : tokens, D = options_.head_dim;
  l.tags.reserve(n), l.order.reserve(n);
  for (auto& v : l.keys) v.reserve(n * D);
  for (auto& v : l.values) v.reserve(n * D);
  for (auto& v : l.keys16) v.reserve(n * D);
  for (auto& v : l.values16) v.reserve(n * D);
  for (auto& v : l.list_of) v.reserve(n);
  for (auto& v : l.pos_in_list) v.reserve(n);
}

Status KvRing::Append(int64_t lane, const float* keys, const float* values, const int64_t* tags, int64_t n) {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  if (n < 0) return Status::InvalidArgument("cannot append a negative number of tokens");
  for (int64_t t = 0; t < n; ++t) {
    if (tags[t] < 0) return Status::InvalidArgument("memory tags must be >= 0 (-1 marks an empty slot)");
  }
  Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim, cap = options_.capacity;
  const bool ivf = options_.lists > 0;
  std::vector<int32_t> list_ids;
  if (ivf && n > 0) Assign(keys, n, &list_ids);
  for (int64_t t = 0; t < n; ++t) {
    int64_t slot;
    if (cap > 0 && l.count == cap) {
      slot = l.start;
      l.start = (l.start + 1) % cap;
      ++l.evicted;
      for (int64_t h = 0; ivf && h < H; ++h) ListRemove(l, h, slot);
    } else {
      slot = l.count++;
      if (static_cast<int64_t>(l.tags.size()) < l.count) {  // grow once for every token of this call that fits
        const int64_t size = cap > 0 ? std::min(cap, l.count - 1 + (n - t)) : l.count - 1 + (n - t);
        l.tags.resize(size);
        l.order.resize(size);
        for (int64_t h = 0; h < H; ++h) {
          if (options_.fp16) {
            l.keys16[h].resize(size * D), l.values16[h].resize(size * D);
          } else {
            l.keys[h].resize(size * D), l.values[h].resize(size * D);
          }
        }
      }
    }
    l.tags[slot] = tags[t];
    l.order[slot] = l.next_order++;
    for (int64_t h = 0; ivf && h < H; ++h) ListAdd(l, h, slot, list_ids[h * n + t]);
    for (int64_t h = 0; h < H; ++h) {
      const float* k = keys + (h * n + t) * D;
      const float* v = values + (h * n + t) * D;
      if (options_.fp16) {
        for (int64_t d = 0; d < D; ++d) {
          l.keys16[h][slot * D + d] = FloatToHalf(k[d]);
          l.values16[h][slot * D + d] = FloatToHalf(v[d]);
        }
      } else {
        std::memcpy(&l.keys[h][slot * D], k, D * sizeof(float));
        std::memcpy(&l.values[h][slot * D], v, D * sizeof(float));
      }
    }
  }
  return Status::OK();
}

namespace {

// The k best (score, slot) pairs one query has seen, under the ring's total order (score descending, then
// insertion order ascending), in a heap with the worst on top. Once it is full, a candidate needs a score
// of at least the worst's to be looked at: most are rejected by that one comparison (NaN fails it too: a
// NaN query retrieves nothing).
class Best {
 public:
  Best(const std::vector<int64_t>* order, int64_t k) : order_(order), k_(k) {}
  void Reset() { heap_.clear(), worst_ = -std::numeric_limits<float>::infinity(); }
  // The score a candidate needs to be looked at (callers keep it in a register across a row).
  float threshold() const { return worst_; }
  void Offer(float v, int64_t slot) {
    if (!(v >= worst_)) return;
    auto worse_on_top = [this](const Entry& a, const Entry& b) { return Better(a, b); };
    if (static_cast<int64_t>(heap_.size()) < k_) {
      heap_.emplace_back(v, slot);
      std::push_heap(heap_.begin(), heap_.end(), worse_on_top);
      if (static_cast<int64_t>(heap_.size()) == k_) worst_ = heap_.front().first;
    } else if (Better({v, slot}, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), worse_on_top);
      heap_.back() = {v, slot};
      std::push_heap(heap_.begin(), heap_.end(), worse_on_top);
      worst_ = heap_.front().first;
    }
  }
  // Best first; the heap is spent.
  const std::vector<std::pair<float, int64_t>>& Sorted() {
    std::sort_heap(heap_.begin(), heap_.end(), [this](const Entry& a, const Entry& b) { return Better(a, b); });
    return heap_;
  }

 private:
  using Entry = std::pair<float, int64_t>;
  bool Better(const Entry& a, const Entry& b) const {
    return a.first > b.first || (a.first == b.first && (*order_)[a.second] < (*order_)[b.second]);
  }
  const std::vector<int64_t>* order_;
  int64_t k_;
  std::vector<Entry> heap_;
  float worst_ = -std::numeric_limits<float>::infinity();
};

}  // namespace

Status KvRing::Search(int64_t lane, const float* queries, int64_t n, int64_t k, float* keys_out, float* values_out,
                      int64_t* tags_out) const {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  if (n < 0 || k < 1) return Status::InvalidArgument("a memory search needs n >= 0 queries and k >= 1");
  const Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim, count = l.count;
  if (count == 0 || n == 0) {
    std::fill(keys_out, keys_out + H * n * k * D, 0.0f);
    std::fill(values_out, values_out + H * n * k * D, 0.0f);
    if (tags_out != nullptr) std::fill(tags_out, tags_out + H * n * k, int64_t{-1});
    return Status::OK();
  }
  const bool ivf = searches_by_ivf(lane);
  std::vector<Best> best(static_cast<size_t>(n), Best(&l.order, k));
  // Exact: keys are scored a block at a time (FAISS's exhaustive search does the same), so the block's
  // scores (kBlock x n floats) stay in cache while every query's heap takes them.
  constexpr int64_t kBlock = 2048;
  const int64_t C = options_.lists, nprobe = std::min(options_.nprobe, std::max<int64_t>(C, 1));
  std::vector<float> scores(static_cast<size_t>(ivf ? n * C : std::min(count, kBlock) * n)), decoded, key(D);
  std::vector<int32_t> probe(static_cast<size_t>(C));
  for (int64_t h = 0; h < H; ++h) {
    for (Best& b : best) b.Reset();
    const float* Q = queries + h * n * D;
    if (ivf) {
      // Each query's nprobe best centroids (ties: the lower list), then every token in those lists.
      MultiplyTransposed(Q, n, options_.centroids.data() + h * C * D, C, D, scores.data());
      for (int64_t t = 0; t < n; ++t) {
        const float* row = scores.data() + t * C;
        std::iota(probe.begin(), probe.end(), 0);
        std::partial_sort(probe.begin(), probe.begin() + nprobe, probe.end(),
                          [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        const float* q = Q + t * D;
        for (int64_t p = 0; p < nprobe; ++p) {
          for (int32_t slot : l.lists[h][probe[p]]) {
            const float* kk;
            if (options_.fp16) {
              for (int64_t i = 0; i < D; ++i) key[i] = HalfToFloat(l.keys16[h][slot * D + i]);
              kk = key.data();
            } else {
              kk = l.keys[h].data() + slot * D;
            }
            best[t].Offer(Dot(q, kk, D), slot);
          }
        }
      }
    } else {
      for (int64_t first = 0; first < count; first += kBlock) {
        const int64_t rows = std::min(kBlock, count - first);
        const float* K = nullptr;
        if (options_.fp16) {
          decoded.resize(static_cast<size_t>(rows * D));
          for (int64_t i = 0; i < rows * D; ++i) decoded[i] = HalfToFloat(l.keys16[h][first * D + i]);
          K = decoded.data();
        } else {
          K = l.keys[h].data() + first * D;
        }
        // scores[t * rows + s] = <key first + s, query t>.
        MultiplyTransposed(Q, n, K, rows, D, scores.data());
        for (int64_t t = 0; t < n; ++t) {
          const float* row = scores.data() + t * rows;
          Best& b = best[t];
          float w = b.threshold();
          for (int64_t i = 0; i < rows; ++i) {
            if (row[i] >= w) b.Offer(row[i], first + i), w = b.threshold();
          }
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const auto& sorted = best[t].Sorted();
      for (size_t r = 0; r < sorted.size(); ++r) {
        const int64_t slot = sorted[r].second;
        const int64_t at = (h * n + t) * k + static_cast<int64_t>(r);
        if (options_.fp16) {
          for (int64_t i = 0; i < D; ++i) {
            keys_out[at * D + i] = HalfToFloat(l.keys16[h][slot * D + i]);
            values_out[at * D + i] = HalfToFloat(l.values16[h][slot * D + i]);
          }
        } else {
          std::memcpy(keys_out + at * D, &l.keys[h][slot * D], D * sizeof(float));
          std::memcpy(values_out + at * D, &l.values[h][slot * D], D * sizeof(float));
        }
        if (tags_out != nullptr) tags_out[at] = l.tags[slot];
      }
      // Slots past what was found: zero pairs, tag -1.
      const int64_t found = static_cast<int64_t>(sorted.size()), at = (h * n + t) * k;
      std::fill(keys_out + (at + found) * D, keys_out + (at + k) * D, 0.0f);
      std::fill(values_out + (at + found) * D, values_out + (at + k) * D, 0.0f);
      if (tags_out != nullptr) std::fill(tags_out + at + found, tags_out + at + k, int64_t{-1});
    }
  }
  return Status::OK();
}

Status KvRing::RemoveTags(int64_t lane, int64_t first, int64_t last, int64_t* removed) {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim;
  std::vector<int64_t> keep;  // oldest first
  for (int64_t s : SlotsOldestFirst(l.order, l.count)) {
    if (l.tags[s] < first || l.tags[s] > last) keep.push_back(s);
  }
  const int64_t gone = l.count - static_cast<int64_t>(keep.size());
  if (removed != nullptr) *removed = gone;
  if (gone == 0) return Status::OK();
  const int64_t kept = static_cast<int64_t>(keep.size());
  // Compact in insertion order into fresh arrays; the old ones are zeroed before they are freed, so the
  // removed pairs leave no copy in this process's memory.
  auto compact = [&](auto& per_head) {
    for (int64_t h = 0; h < H; ++h) {
      auto& old = per_head[h];
      std::remove_reference_t<decltype(old)> fresh(static_cast<size_t>(kept * D));
      for (int64_t i = 0; i < kept; ++i) std::copy_n(old.begin() + keep[i] * D, D, fresh.begin() + i * D);
      std::fill(old.begin(), old.end(), 0);
      old.swap(fresh);
    }
  };
  if (options_.fp16) {
    compact(l.keys16), compact(l.values16);
  } else {
    compact(l.keys), compact(l.values);
  }
  std::vector<int64_t> tags(static_cast<size_t>(kept)), order(static_cast<size_t>(kept));
  for (int64_t i = 0; i < kept; ++i) tags[i] = l.tags[keep[i]], order[i] = l.order[keep[i]];
  std::fill(l.tags.begin(), l.tags.end(), 0);
  l.tags.swap(tags), l.order.swap(order);
  l.count = kept;
  l.start = 0;  // slots are in insertion order now, oldest first
  if (options_.lists > 0) {  // the lists again, from each kept token's list
    for (int64_t h = 0; h < H; ++h) {
      std::vector<int32_t> list_of(static_cast<size_t>(kept));
      for (int64_t i = 0; i < kept; ++i) list_of[i] = l.list_of[h][keep[i]];
      for (auto& members : l.lists[h]) members.clear();
      l.list_of[h].clear(), l.pos_in_list[h].clear();
      for (int64_t i = 0; i < kept; ++i) ListAdd(l, h, i, list_of[i]);
    }
  }
  return Status::OK();
}

std::vector<float> KvRing::Keys(int64_t lane) const { return Pairs(lane, /*values=*/false); }

std::vector<float> KvRing::Values(int64_t lane) const { return Pairs(lane, /*values=*/true); }

std::vector<float> KvRing::Pairs(int64_t lane, bool values) const {
  if (!CheckLane(lane).ok()) return {};
  const Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim;
  const std::vector<int64_t> slots = SlotsOldestFirst(l.order, l.count);
  std::vector<float> out(static_cast<size_t>(H * l.count * D));
  for (int64_t h = 0; h < H; ++h) {
    const auto& half = values ? l.values16 : l.keys16;
    const auto& full = values ? l.values : l.keys;
    for (int64_t i = 0; i < l.count; ++i) {
      for (int64_t d = 0; d < D; ++d) {
        out[(h * l.count + i) * D + d] =
            options_.fp16 ? HalfToFloat(half[h][slots[i] * D + d]) : full[h][slots[i] * D + d];
      }
    }
  }
  return out;
}

Status TrainKvCentroids(const float* keys, int64_t heads, int64_t n, int64_t head_dim, int64_t lists, uint64_t seed,
                        std::vector<float>* out) {
  if (heads < 1 || head_dim < 1 || lists < 1) return Status::InvalidArgument("centroids need heads, dims and lists >= 1");
  if (n < lists) {
    return Status::InvalidArgument("cannot train " + std::to_string(lists) + " centroids on " + std::to_string(n) +
                                   " keys: read more tokens or ask for fewer lists");
  }
  out->assign(static_cast<size_t>(heads * lists * head_dim), 0.0f);
  for (int64_t h = 0; h < heads; ++h) {
    faiss::ClusteringParameters cp;
    cp.niter = 10;
    cp.seed = static_cast<int>(seed + h);
    cp.max_points_per_centroid = 64;
    cp.verbose = false;
    faiss::Clustering clustering(static_cast<int>(head_dim), static_cast<int>(lists), cp);
    // L2 assignment, as KvRing::Assign. (Inner-product assignment, IndexIVFFlat's IP quantizer, puts most
    // keys in the lists of the few largest-norm centroids: docs/PERFORMANCE.md, "Memories over HTTP".)
    faiss::IndexFlatL2 assign(head_dim);
    try {
      clustering.train(n, keys + h * n * head_dim, assign);
    } catch (const std::exception& e) {
      return Status::InvalidArgument(std::string("k-means of memory keys: ") + e.what());
    }
    std::copy(clustering.centroids.begin(), clustering.centroids.end(), out->begin() + h * lists * head_dim);
  }
  return Status::OK();
}

void KvRing::Clear(int64_t lane) {
  if (!CheckLane(lane).ok()) return;
  Lane& l = lanes_[lane];
  auto wipe = [](auto& per_head) {
    for (auto& v : per_head) {
      std::fill(v.begin(), v.end(), 0);
      v.clear();
      v.shrink_to_fit();
    }
  };
  wipe(l.keys), wipe(l.values), wipe(l.keys16), wipe(l.values16);
  std::fill(l.tags.begin(), l.tags.end(), 0);
  l.tags.clear(), l.order.clear();
  for (auto& per_head : l.lists) {
    for (auto& members : per_head) std::vector<int32_t>().swap(members);
  }
  for (auto& v : l.list_of) std::vector<int32_t>().swap(v);
  for (auto& v : l.pos_in_list) std::vector<int32_t>().swap(v);
  l.count = l.start = l.evicted = 0;
  l.next_order = 0;
}

Status MakeKvRing(int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity, bool fp16,
                  std::unique_ptr<KvMemory>* out) {
  KvRingOptions o;
  o.lanes = lanes, o.heads = heads, o.head_dim = head_dim, o.capacity = capacity, o.fp16 = fp16;
  std::unique_ptr<KvRing> ring;
  MNEMO_RETURN_IF_ERROR(KvRing::Create(o, &ring));
  *out = std::move(ring);
  return Status::OK();
}

Status MakeKvRing(int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity, std::unique_ptr<KvMemory>* out) {
  return MakeKvRing(lanes, heads, head_dim, capacity, /*fp16=*/false, out);
}

}  // namespace mnemo
