// KnnLm: nearest-neighbour language modelling over a KnnMemory (Khandelwal et al. 2020): a Datastore, or a
// FactStore (datastore plus runtime facts).
//
//   p_kNN(y | c) = sum over the k nearest entries i with value y of softmax_i(-d(q, k_i) / T)
//   p(y | c)     = lambda * p_kNN(y | c) + (1 - lambda) * p_LM(y | c)      (computed in log space)
//
// d is the squared L2 distance from the index, or, with `recompute`, the exact squared L2 against the
// stored fp16 keys (which matters for PQ indexes, whose distances are approximate). Tokens no neighbour
// carries get p_kNN = 0.
//
// Adaptive retrieval (after He et al. 2021): when `skip_confidence` > 0 and the LM's most likely token
// has probability >= skip_confidence, the search is skipped and p = p_LM for that position.
//
// Thread-safety: all methods are const and may run concurrently (KnnMemory searches are thread-safe).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "memory/knn_memory.h"

namespace mnemo {

struct KnnOptions {
  bool enabled = true;
  static constexpr int kMaxK = 4096;  // The largest k any caller may ask for.
  int k = 1024;                  // The paper's k.
  double lambda = 0.25;          // The paper's in-domain value (0.65 for domain adaptation).
  double temperature = 1.0;      // The paper's T.
  bool recompute = false;        // Exact distances against stored keys for the k candidates.
  int nprobe = 32;               // IVF lists visited per query.
  double skip_confidence = 0;    // Adaptive retrieval threshold on max p_LM; 0 never skips.
  // RetoMaton pointers (scoring: ScoreTargetsFollowing; generation: Distributions with pointers): where at
  // least this many of the previous position's neighbours carried the token that came (or was sampled)
  // and have a successor, those successors are this position's neighbours and the search is skipped;
  // 0: always search.
  int min_pointers = 0;
  Status Validate() const;
};

struct KnnStats {
  int64_t queries = 0;   // Positions scored.
  int64_t searched = 0;  // Positions that ran a search (the rest were confident or followed pointers).
  double searched_fraction() const { return queries > 0 ? static_cast<double>(searched) / queries : 0.0; }
};

// softmax(-distance / T) over the valid (entry >= 0) neighbours, in place; padding keeps weight 0.
void ComputeNeighborWeights(std::vector<Neighbor>::iterator begin, std::vector<Neighbor>::iterator end,
                            double temperature);
// log p_kNN(token): log of the summed weights of neighbours carrying `token`; -inf when none does.
double KnnLogProb(std::vector<Neighbor>::const_iterator begin, std::vector<Neighbor>::const_iterator end,
                  int32_t token);
// log(lambda * exp(log_knn) + (1 - lambda) * exp(log_lm)), exact at lambda = 0 and 1 and log_knn = -inf.
double InterpolateLogProb(double log_knn, double log_lm, double lambda);

// RetoMaton pointers after a position whose token turned out to be `token`: its neighbours that carried it
// (their successors continue the text the token continued).
void NextPointers(const std::vector<Neighbor>& neighbors, int32_t token, std::vector<Neighbor>* pointers);

class KnnLm {
 public:
  explicit KnnLm(const KnnMemory& memory) : memory_(memory) {}

  // k neighbours per query (n x dim floats), best first, weights filled in. out has n * k entries.
  Status Search(const float* queries, int64_t n, const KnnOptions& options, std::vector<Neighbor>* out) const;

  // Interpolated log-probabilities of targets[r] for each row r of keys [n, dim] and lm_logprobs [n, V].
  Status ScoreTargets(const torch::Tensor& keys, const torch::Tensor& lm_logprobs, const int32_t* targets,
                      const KnnOptions& options, std::vector<float>* out, KnnStats* stats) const;

  // ScoreTargets for consecutive positions of one text, following RetoMaton pointers
  // (options.min_pointers > 0, after Alon et al. 2022): a searched or followed position's neighbours that
  // carry its target token point, through KnnMemory::Successors, at the entries that continue their text;
  // the next position uses those (exact distances to its own key) instead of a search when there are at
  // least min_pointers of them. `pointers` carries them from one call to the next (start empty); a
  // memory without text order searches every position. stats->searched counts the searches.
  Status ScoreTargetsFollowing(const torch::Tensor& keys, const torch::Tensor& lm_logprobs, const int32_t* targets,
                               const KnnOptions& options, std::vector<Neighbor>* pointers, std::vector<float>* out,
                               KnnStats* stats) const;

  // The full interpolated distribution [V] for one position (generation). `neighbors` (may be null)
  // receives the neighbours used (empty when skipped); pointers and stats as for Distributions.
  Status Distribution(const torch::Tensor& key, const torch::Tensor& lm_logprobs, const KnnOptions& options,
                      torch::Tensor* out, std::vector<Neighbor>* neighbors,
                      const std::vector<Neighbor>* pointers = nullptr, KnnStats* stats = nullptr) const;
  // The same for the rows of keys [n, dim] and lm_logprobs [n, V] with one search for all of them (a
  // decoding step of a batch): (*out)[r] and (*neighbors)[r] (neighbors may be null) as Distribution
  // gives them for row r alone. Generation following RetoMaton pointers (options.min_pointers > 0):
  // (*pointers)[r] are row r's pointers (NextPointers of its previous step; may be empty); a row whose
  // pointers lead to at least min_pointers successors takes them as its neighbours instead of searching.
  // *stats (may be null) becomes one entry per row: a query, and searched when it searched.
  Status Distributions(const torch::Tensor& keys, const torch::Tensor& lm_logprobs, const KnnOptions& options,
                       std::vector<torch::Tensor>* out, std::vector<std::vector<Neighbor>>* neighbors,
                       const std::vector<std::vector<Neighbor>>* pointers = nullptr,
                       std::vector<KnnStats>* stats = nullptr) const;

  const KnnMemory& memory() const { return memory_; }

 private:
  const KnnMemory& memory_;
};

}  // namespace mnemo
