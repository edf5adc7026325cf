// Fact encoding: turns fact texts into datastore entries with the language model. For a text of n
// tokens t[0..n), entry p (p < n - 1) is the kNN key of the context t[0..p] (the same tap as
// `mnemo datastore build`, stored as fp16) with value t[p+1]: scoring the fact's own text finds, at
// every position, an entry at distance 0 that predicts the next token.
//
// Texts up to the context window (plus their last token, which is only a value) run together in padded
// batches (causal attention: padding on the right cannot change earlier positions); longer texts use the
// strided windows of the scorer.
//
// Thread-safety: only reads the model; may run concurrently with scoring.
//
// A fact of n tokens runs its first n - 1 through the model: the last token is only a value.
#pragma once

#include <string>
#include <vector>

#include "lm/checkpoint.h"
#include "memory/fact_db.h"

namespace mnemo {

struct FactText {
  std::string text;
  std::string client_id;
  std::string metadata_json;  // "" or a JSON object.
};

struct FactEncodeOptions {
  int64_t batch_tokens = 4096;  // Padded tokens per forward pass.
  // Threads running forward passes side by side, one batch each (each with LibTorch's current intra-op
  // thread count). The keys do not depend on it: a batch's passes are the same whichever thread runs them.
  int threads = 1;
};

// InvalidArgument naming the fact for a text of fewer than 2 tokens or with more than kMaxFactEntries
// entries (fact_store.h); nothing is encoded then.
Status EncodeFacts(LanguageModel& model, const std::vector<FactText>& facts, const FactEncodeOptions& options,
                   std::vector<NewFact>* out);

}  // namespace mnemo
