#include "retriever/recall.h"

#include <algorithm>
#include <chrono>
#include <unordered_set>

#include "util/half.h"

namespace mnemo {

Status MeasureRecall(const Datastore& datastore, const torch::Tensor& queries_in, int k, int nprobe,
                     RecallReport* report, int64_t chunk) {
  const int64_t n = queries_in.size(0), size = datastore.slots();
  const auto deleted = datastore.DeletedRanges();  // holes of deleted documents: zero keys, not entries
  const int dim = datastore.dim();
  if (queries_in.dim() != 2 || queries_in.size(1) != dim) {
    return Status::InvalidArgument("recall queries must be [n, " + std::to_string(dim) + "]");
  }
  if (k < 1 || k > datastore.size()) return Status::InvalidArgument("recall k must be in [1, datastore size]");
  torch::NoGradGuard no_grad;
  torch::Tensor queries = queries_in.to(torch::kFloat32).contiguous();

  // Exact: ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2 over key chunks, keeping a running top k.
  auto start = std::chrono::steady_clock::now();
  torch::Tensor best_d = torch::full({n, k}, std::numeric_limits<float>::infinity());
  torch::Tensor best_i = torch::full({n, k}, -1, torch::kLong);
  torch::Tensor q_norm = queries.pow(2).sum(1, /*keepdim=*/true);
  for (int64_t begin = 0; begin < size; begin += chunk) {
    const int64_t rows = std::min(chunk, size - begin);
    torch::Tensor keys = torch::empty({rows, dim});
    float* dst = keys.data_ptr<float>();
    const uint16_t* src = datastore.key(begin);
    for (int64_t i = 0; i < rows * dim; ++i) dst[i] = HalfToFloat(src[i]);
    torch::Tensor d = q_norm - 2 * torch::matmul(queries, keys.t()) + keys.pow(2).sum(1).unsqueeze(0);
    for (const auto& [first, count] : deleted) {
      const int64_t lo = std::max(first, begin), hi = std::min(first + count, begin + rows);
      if (lo < hi) d.narrow(1, lo - begin, hi - lo).fill_(std::numeric_limits<float>::infinity());
    }
    torch::Tensor ids = torch::arange(begin, begin + rows, torch::kLong).unsqueeze(0).expand({n, rows});
    auto merged_d = torch::cat({best_d, d}, 1), merged_i = torch::cat({best_i, ids}, 1);
    auto top = merged_d.topk(k, 1, /*largest=*/false);
    best_d = std::get<0>(top);
    best_i = merged_i.gather(1, std::get<1>(top));
  }
  report->exact_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  start = std::chrono::steady_clock::now();
  std::vector<float> distances(n * k);
  std::vector<int64_t> found(n * k);
  SearchOptions search;
  search.nprobe = nprobe;
  MNEMO_RETURN_IF_ERROR(datastore.index().Search(n, queries.data_ptr<float>(), k, distances.data(), found.data(), search));
  report->index_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto exact = best_i.contiguous();
  const int64_t* e = exact.data_ptr<int64_t>();
  double total = 0;
  for (int64_t q = 0; q < n; ++q) {
    std::unordered_set<int64_t> truth(e + q * k, e + (q + 1) * k);
    int64_t hits = 0;
    for (int j = 0; j < k; ++j) hits += truth.count(found[q * k + j]);
    total += static_cast<double>(hits) / k;
  }
  report->queries = n;
  report->k = k;
  report->recall = n > 0 ? total / n : 0;
  return Status::OK();
}

}  // namespace mnemo
