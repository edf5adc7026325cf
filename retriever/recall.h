// Recall of a datastore's index against exact search over its own stored keys: for each query, the
// fraction of the true k nearest entries (squared L2 to the fp16 keys, computed by brute force through
// LibTorch's matrix product) that the index returns. Used to compare index types (docs/RESULTS.md).
#pragma once

#include <torch/torch.h>

#include "memory/datastore.h"
#include "retriever/knn_lm.h"

namespace mnemo {

struct RecallReport {
  int64_t queries = 0;
  int k = 0;
  double recall = 0;          // Mean |approximate ∩ exact| / k.
  double exact_seconds = 0;   // Brute force.
  double index_seconds = 0;   // The index's search.
};

// queries: [n, dim] float. Exact neighbours are computed over key chunks of `chunk` rows at a time.
Status MeasureRecall(const Datastore& datastore, const torch::Tensor& queries, int k, int nprobe,
                     RecallReport* report, int64_t chunk = 131072);

}  // namespace mnemo
