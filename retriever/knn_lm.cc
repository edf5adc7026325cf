#include "retriever/knn_lm.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mnemo {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

bool Confident(const torch::Tensor& lm_logprobs_row, double threshold) {
  return threshold > 0 && lm_logprobs_row.max().item<double>() >= std::log(threshold);
}

}  // namespace

Status KnnOptions::Validate() const {
  if (k < 1 || k > kMaxK) return Status::InvalidArgument("k must be in [1, " + std::to_string(kMaxK) + "]");
  if (!(lambda >= 0 && lambda <= 1)) return Status::InvalidArgument("lambda must be in [0, 1]");
  if (!(temperature > 0)) return Status::InvalidArgument("knn temperature must be positive");
  if (nprobe < 1) return Status::InvalidArgument("nprobe must be positive");
  if (!(skip_confidence >= 0 && skip_confidence <= 1)) {
    return Status::InvalidArgument("skip confidence must be in [0, 1]");
  }
  if (min_pointers < 0) return Status::InvalidArgument("pointers must not be negative");
  return Status::OK();
}

void ComputeNeighborWeights(std::vector<Neighbor>::iterator begin, std::vector<Neighbor>::iterator end,
                            double temperature) {
  double best = std::numeric_limits<double>::infinity();
  for (auto it = begin; it != end; ++it) {
    if (it->entry >= 0) best = std::min(best, static_cast<double>(it->distance));
  }
  double total = 0;
  for (auto it = begin; it != end; ++it) {
    // Subtracting the smallest distance keeps exp() in range; it cancels in the normalisation.
    it->weight = it->entry >= 0 ? static_cast<float>(std::exp(-(it->distance - best) / temperature)) : 0.0f;
    total += it->weight;
  }
  if (total > 0) {
    for (auto it = begin; it != end; ++it) it->weight = static_cast<float>(it->weight / total);
  }
}

double KnnLogProb(std::vector<Neighbor>::const_iterator begin, std::vector<Neighbor>::const_iterator end,
                  int32_t token) {
  double sum = 0;
  for (auto it = begin; it != end; ++it) {
    if (it->entry >= 0 && it->token == token) sum += it->weight;
  }
  return sum > 0 ? std::log(sum) : kNegInf;
}

double InterpolateLogProb(double log_knn, double log_lm, double lambda) {
  if (lambda <= 0 || log_knn == kNegInf) return log_lm + std::log1p(-lambda);
  if (lambda >= 1) return log_knn;
  const double a = std::log(lambda) + log_knn, b = std::log1p(-lambda) + log_lm;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(std::min(a, b) - hi));
}

Status KnnLm::Search(const float* queries, int64_t n, const KnnOptions& options, std::vector<Neighbor>* out) const {
  MemorySearchOptions search;
  search.k = options.k;
  search.nprobe = options.nprobe;
  search.recompute = options.recompute;
  MNEMO_RETURN_IF_ERROR(memory_.Search(queries, n, search, out));
  for (int64_t q = 0; q < n; ++q) {
    ComputeNeighborWeights(out->begin() + q * options.k, out->begin() + (q + 1) * options.k, options.temperature);
  }
  return Status::OK();
}

Status KnnLm::ScoreTargets(const torch::Tensor& keys, const torch::Tensor& lm_logprobs, const int32_t* targets,
                           const KnnOptions& options, std::vector<float>* out, KnnStats* stats) const {
  const int64_t n = keys.size(0);
  out->resize(n);
  torch::Tensor lp = lm_logprobs.to(torch::kFloat32).contiguous();
  auto acc = lp.accessor<float, 2>();
  torch::Tensor best = std::get<0>(lp.max(1)).contiguous();
  const float* best_lp = best.data_ptr<float>();
  const double skip_below = options.skip_confidence > 0 ? std::log(options.skip_confidence) : 1.0;
  // Only the positions that are not confidently predicted are searched.
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < n; ++r) {
    (*out)[r] = acc[r][targets[r]];
    if (options.enabled && options.lambda > 0 && best_lp[r] < skip_below) rows.push_back(r);
  }
  if (stats != nullptr) stats->queries += n, stats->searched += static_cast<int64_t>(rows.size());
  if (rows.empty()) return Status::OK();
  torch::Tensor queries =
      keys.to(torch::kFloat32).index_select(0, torch::tensor(rows, torch::kLong)).contiguous();
  std::vector<Neighbor> neighbors;
  MNEMO_RETURN_IF_ERROR(Search(queries.data_ptr<float>(), static_cast<int64_t>(rows.size()), options, &neighbors));
  for (size_t i = 0; i < rows.size(); ++i) {
    auto first = neighbors.cbegin() + i * options.k;
    const int64_t r = rows[i];
    const double log_knn = KnnLogProb(first, first + options.k, targets[r]);
    (*out)[r] = static_cast<float>(InterpolateLogProb(log_knn, (*out)[r], options.lambda));
  }
  return Status::OK();
}

Status KnnLm::ScoreTargetsFollowing(const torch::Tensor& keys, const torch::Tensor& lm_logprobs,
                                    const int32_t* targets, const KnnOptions& options,
                                    std::vector<Neighbor>* pointers, std::vector<float>* out,
                                    KnnStats* stats) const {
  if (options.min_pointers <= 0) return ScoreTargets(keys, lm_logprobs, targets, options, out, stats);
  const int64_t n = keys.size(0);
  out->resize(n);
  torch::Tensor lp = lm_logprobs.to(torch::kFloat32).contiguous();
  torch::Tensor q = keys.to(torch::kFloat32).contiguous();
  auto acc = lp.accessor<float, 2>();
  const int64_t dim = q.size(1);
  std::vector<Neighbor> neighbors, followed;
  for (int64_t r = 0; r < n; ++r) {
    (*out)[r] = acc[r][targets[r]];
    if (stats != nullptr) ++stats->queries;
    if (!options.enabled || options.lambda <= 0 || Confident(lp[r], options.skip_confidence)) {
      pointers->clear();
      continue;
    }
    const float* query = q.data_ptr<float>() + r * dim;
    followed.clear();
    if (static_cast<int>(pointers->size()) >= options.min_pointers) {
      MNEMO_RETURN_IF_ERROR(memory_.Successors(query, *pointers, &followed));
    }
    if (static_cast<int>(followed.size()) >= options.min_pointers) {
      SortNeighborsByDistance(followed.begin(), followed.end());
      neighbors.swap(followed);
      ComputeNeighborWeights(neighbors.begin(), neighbors.end(), options.temperature);
    } else {
      MNEMO_RETURN_IF_ERROR(Search(query, 1, options, &neighbors));
      if (stats != nullptr) ++stats->searched;
    }
    const double log_knn = KnnLogProb(neighbors.cbegin(), neighbors.cend(), targets[r]);
    (*out)[r] = static_cast<float>(InterpolateLogProb(log_knn, (*out)[r], options.lambda));
    NextPointers(neighbors, targets[r], pointers);
  }
  return Status::OK();
}

Status KnnLm::Distribution(const torch::Tensor& key, const torch::Tensor& lm_logprobs, const KnnOptions& options,
                           torch::Tensor* out, std::vector<Neighbor>* neighbors, const std::vector<Neighbor>* pointers,
                           KnnStats* stats) const {
  std::vector<torch::Tensor> rows;
  std::vector<std::vector<Neighbor>> found;
  std::vector<std::vector<Neighbor>> row_pointers;
  if (pointers != nullptr) row_pointers.push_back(*pointers);
  std::vector<KnnStats> row_stats(1);
  MNEMO_RETURN_IF_ERROR(Distributions(key.reshape({1, -1}), lm_logprobs.reshape({1, -1}), options, &rows,
                                      neighbors != nullptr ? &found : nullptr,
                                      pointers != nullptr ? &row_pointers : nullptr, &row_stats));
  if (stats != nullptr) stats->queries += row_stats[0].queries, stats->searched += row_stats[0].searched;
  *out = rows[0];
  if (neighbors != nullptr) *neighbors = std::move(found[0]);
  return Status::OK();
}

Status KnnLm::Distributions(const torch::Tensor& keys, const torch::Tensor& lm_logprobs, const KnnOptions& options,
                            std::vector<torch::Tensor>* out, std::vector<std::vector<Neighbor>>* neighbors,
                            const std::vector<std::vector<Neighbor>>* pointers, std::vector<KnnStats>* stats) const {
  const int64_t n = lm_logprobs.size(0);
  torch::Tensor lp = lm_logprobs.to(torch::kFloat32).contiguous();
  out->clear();
  for (int64_t r = 0; r < n; ++r) out->push_back(lp[r]);
  if (neighbors != nullptr) neighbors->assign(static_cast<size_t>(n), {});
  if (pointers != nullptr && static_cast<int64_t>(pointers->size()) != n) {
    return Status::InvalidArgument("kNN distributions: " + std::to_string(pointers->size()) + " rows of pointers for " +
                                   std::to_string(n) + " rows");
  }
  if (stats != nullptr) stats->assign(static_cast<size_t>(n), KnnStats{1, 0});
  // Confidently predicted rows keep p_LM (adaptive retrieval); the others are searched together.
  std::vector<int64_t> rows;
  if (options.enabled && options.lambda > 0) {
    for (int64_t r = 0; r < n; ++r) {
      if (!Confident(lp[r], options.skip_confidence)) rows.push_back(r);
    }
  }
  if (rows.empty()) return Status::OK();
  const torch::Tensor q = keys.to(torch::kFloat32).contiguous();
  const int64_t dim = q.size(1);
  const float* queries = q.data_ptr<float>();
  // A row whose pointers lead to at least min_pointers successors takes them (exact distances to its
  // key); the others search, together.
  std::vector<std::vector<Neighbor>> found(rows.size());
  std::vector<size_t> searching;
  for (size_t i = 0; i < rows.size(); ++i) {
    const size_t r = static_cast<size_t>(rows[i]);
    std::vector<Neighbor>& mine = found[i];
    if (options.min_pointers > 0 && pointers != nullptr && static_cast<int>((*pointers)[r].size()) >= options.min_pointers) {
      MNEMO_RETURN_IF_ERROR(memory_.Successors(queries + rows[i] * dim, (*pointers)[r], &mine));
    }
    if (options.min_pointers > 0 && static_cast<int>(mine.size()) >= options.min_pointers) {
      SortNeighborsByDistance(mine.begin(), mine.end());
      ComputeNeighborWeights(mine.begin(), mine.end(), options.temperature);
    } else {
      mine.clear();
      searching.push_back(i);
    }
  }
  if (!searching.empty()) {
    std::vector<float> batch(searching.size() * static_cast<size_t>(dim));
    for (size_t j = 0; j < searching.size(); ++j) {
      std::copy_n(queries + rows[searching[j]] * dim, dim, batch.begin() + static_cast<int64_t>(j) * dim);
    }
    std::vector<Neighbor> all;
    MNEMO_RETURN_IF_ERROR(Search(batch.data(), static_cast<int64_t>(searching.size()), options, &all));
    for (size_t j = 0; j < searching.size(); ++j) {
      const auto first = all.begin() + static_cast<int64_t>(j) * options.k;
      found[searching[j]].assign(first, first + options.k);
    }
    if (stats != nullptr) {
      for (size_t i : searching) ++(*stats)[static_cast<size_t>(rows[i])].searched;
    }
  }
  const int64_t vocab = lp.size(1);
  for (size_t i = 0; i < rows.size(); ++i) {
    // p = lambda * p_kNN + (1 - lambda) * p_LM over the whole vocabulary.
    torch::Tensor p = lp[rows[i]].exp() * static_cast<float>(1 - options.lambda);
    float* pp = p.data_ptr<float>();
    for (const Neighbor& nb : found[i]) {
      if (nb.entry >= 0 && nb.token >= 0 && nb.token < vocab) pp[nb.token] += static_cast<float>(options.lambda) * nb.weight;
    }
    (*out)[static_cast<size_t>(rows[i])] = p.log();
    if (neighbors != nullptr) (*neighbors)[static_cast<size_t>(rows[i])] = std::move(found[i]);
  }
  return Status::OK();
}

void NextPointers(const std::vector<Neighbor>& neighbors, int32_t token, std::vector<Neighbor>* pointers) {
  pointers->clear();
  for (const Neighbor& nb : neighbors) {
    if (nb.entry >= 0 && nb.token == token) pointers->push_back(nb);
  }
}

}  // namespace mnemo
