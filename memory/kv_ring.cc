#include "memory/kv_ring.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <queue>
#include <limits>
#include <string>

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
};

KvRing::KvRing(const KvRingOptions& options) : options_(options), lanes_(static_cast<size_t>(options.lanes)) {
  for (Lane& lane : lanes_) {
    lane.keys.resize(options.fp16 ? 0 : options.heads);
    lane.values.resize(options.fp16 ? 0 : options.heads);
    lane.keys16.resize(options.fp16 ? options.heads : 0);
    lane.values16.resize(options.fp16 ? options.heads : 0);
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
  out->reset(new KvRing(options));
  return Status::OK();
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
  return 2 * options_.heads * options_.head_dim * per_float + 2 * static_cast<int64_t>(sizeof(int64_t));
}

std::vector<int64_t> KvRing::Tags(int64_t lane) const {
  if (!CheckLane(lane).ok()) return {};
  const Lane& l = lanes_[lane];
  std::vector<int64_t> slots(static_cast<size_t>(l.count));
  std::iota(slots.begin(), slots.end(), 0);
  std::sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) { return l.order[a] < l.order[b]; });
  std::vector<int64_t> tags;
  for (int64_t s : slots) tags.push_back(l.tags[s]);
  return tags;
}

Status KvRing::Append(int64_t lane, const float* keys, const float* values, const int64_t* tags, int64_t n) {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  if (n < 0) return Status::InvalidArgument("cannot append a negative number of tokens");
  for (int64_t t = 0; t < n; ++t) {
    if (tags[t] < 0) return Status::InvalidArgument("memory tags must be >= 0 (-1 marks an empty slot)");
  }
  Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim, cap = options_.capacity;
  for (int64_t t = 0; t < n; ++t) {
    int64_t slot;
    if (cap > 0 && l.count == cap) {
      slot = l.start;
      l.start = (l.start + 1) % cap;
      ++l.evicted;
    } else {
      slot = l.count++;
      l.tags.resize(l.count);
      l.order.resize(l.count);
      for (int64_t h = 0; h < H; ++h) {
        if (options_.fp16) {
          l.keys16[h].resize(l.count * D), l.values16[h].resize(l.count * D);
        } else {
          l.keys[h].resize(l.count * D), l.values[h].resize(l.count * D);
        }
      }
    }
    l.tags[slot] = tags[t];
    l.order[slot] = l.next_order++;
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

Status KvRing::Search(int64_t lane, const float* queries, int64_t n, int64_t k, float* keys_out, float* values_out,
                      int64_t* tags_out) const {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  if (n < 0 || k < 1) return Status::InvalidArgument("a memory search needs n >= 0 queries and k >= 1");
  const Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim, count = l.count;
  std::fill(keys_out, keys_out + H * n * k * D, 0.0f);
  std::fill(values_out, values_out + H * n * k * D, 0.0f);
  if (tags_out != nullptr) std::fill(tags_out, tags_out + H * n * k, int64_t{-1});
  if (count == 0 || n == 0) return Status::OK();
  // better(a, b): a ranks before b.
  auto better = [&l](float sa, int64_t a, float sb, int64_t b) {
    return sa > sb || (sa == sb && l.order[a] < l.order[b]);
  };
  auto worse_on_top = [&](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return better(a.first, a.second, b.first, b.second);
  };
  // Keys are scored a block at a time (FAISS's exhaustive search does the same), so the block's scores
  // (kBlock x n floats) stay in cache while every query's heap takes them.
  constexpr int64_t kBlock = 2048;
  std::vector<float> scores(static_cast<size_t>(std::min(count, kBlock) * n)), decoded;
  std::vector<std::vector<std::pair<float, int64_t>>> heaps(static_cast<size_t>(n));
  std::vector<float> worst(static_cast<size_t>(n));
  for (int64_t h = 0; h < H; ++h) {
    for (auto& heap : heaps) heap.clear();
    std::fill(worst.begin(), worst.end(), -std::numeric_limits<float>::infinity());
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
      // scores[t * rows + s] = <key first + s, query t>: column-major C (rows x n) = K' (rows x D) * Q' (D x n).
      const int m = static_cast<int>(rows), nn = static_cast<int>(n), d = static_cast<int>(D);
      const float one = 1.0f, zero = 0.0f;
      sgemm_("T", "N", &m, &nn, &d, &one, K, &d, queries + h * n * D, &d, &zero, scores.data(), &m);
      // A heap of the k best so far per query, worst on top. Once it is full, a token needs a score of at
      // least the worst's to be looked at: most are rejected by that one comparison (NaN fails it too: a
      // NaN query retrieves nothing).
      for (int64_t t = 0; t < n; ++t) {
        const float* row = scores.data() + t * rows;
        auto& heap = heaps[t];
        float w = worst[t];
        for (int64_t i = 0; i < rows; ++i) {
          const float v = row[i];
          if (!(v >= w)) continue;
          const int64_t slot = first + i;
          if (static_cast<int64_t>(heap.size()) < k) {
            heap.emplace_back(v, slot);
            std::push_heap(heap.begin(), heap.end(), worse_on_top);
            if (static_cast<int64_t>(heap.size()) == k) w = heap.front().first;
          } else if (better(v, slot, heap.front().first, heap.front().second)) {
            std::pop_heap(heap.begin(), heap.end(), worse_on_top);
            heap.back() = {v, slot};
            std::push_heap(heap.begin(), heap.end(), worse_on_top);
            w = heap.front().first;
          }
        }
        worst[t] = w;
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      auto& heap = heaps[t];
      std::sort_heap(heap.begin(), heap.end(), worse_on_top);  // best first
      for (size_t r = 0; r < heap.size(); ++r) {
        const int64_t slot = heap[r].second;
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
    }
  }
  return Status::OK();
}

Status KvRing::RemoveTags(int64_t lane, int64_t first, int64_t last, int64_t* removed) {
  MNEMO_RETURN_IF_ERROR(CheckLane(lane));
  Lane& l = lanes_[lane];
  const int64_t H = options_.heads, D = options_.head_dim;
  std::vector<int64_t> keep;
  for (int64_t s = 0; s < l.count; ++s) {
    if (l.tags[s] < first || l.tags[s] > last) keep.push_back(s);
  }
  const int64_t gone = l.count - static_cast<int64_t>(keep.size());
  if (removed != nullptr) *removed = gone;
  if (gone == 0) return Status::OK();
  std::sort(keep.begin(), keep.end(), [&](int64_t a, int64_t b) { return l.order[a] < l.order[b]; });
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
