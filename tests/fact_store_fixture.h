// Shared helpers of the fact store tests (fact_store_test.cc, fact_store_crash_test.cc and the crash
// child): a state directory over a random base datastore, and synthetic facts whose keys are derived
// from their text, so a test can recompute them.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "memory/datastore.h"
#include "memory/fact_db.h"
#include "memory/state_dir.h"
#include "util/half.h"
#include "util/hash.h"

namespace mnemo::testing {

inline constexpr int kFactDim = 16;
inline constexpr int kFactVocab = 50;
inline constexpr char kFactModel[] = "test-model";

// A base datastore of n random entries in `dir` (index `spec`) and a state in `state` that uses it
// (or no base when n == 0). Returns the base keys (fp16-rounded) through *keys when non-null.
inline Status MakeState(const std::string& state, const std::string& base_dir, int64_t n, const std::string& spec,
                        std::vector<float>* keys = nullptr) {
  StateConfig config;
  config.model_path = "/nonexistent-model";
  config.model_fingerprint = kFactModel;
  config.dim = kFactDim;
  if (n > 0) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::vector<float> k(static_cast<size_t>(n) * kFactDim);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& x : k) x = HalfToFloat(FloatToHalf(normal(rng)));
    for (auto& t : v) t = static_cast<int32_t>(rng() % kFactVocab);
    std::unique_ptr<DatastoreWriter> w;
    MNEMO_RETURN_IF_ERROR(DatastoreWriter::Create(base_dir, kFactDim, &w));
    MNEMO_RETURN_IF_ERROR(w->Append(n, k.data(), v.data()));
    DatastoreManifest m;
    m.model_fingerprint = kFactModel;
    m.key_layer = "test";
    m.source = "random";
    DatastoreFinishOptions finish;
    finish.index_spec = spec;
    finish.progress = false;
    MNEMO_RETURN_IF_ERROR(w->Finish(m, finish));
    config.datastore_path = base_dir;
    if (keys != nullptr) *keys = k;
  }
  return CreateStateDir(state, config);
}

// A fact of `tokens` tokens whose tokens and keys are a function of its text.
inline NewFact SyntheticFact(const std::string& text, int tokens = 8, const std::string& client_id = "",
                             const std::string& metadata = "") {
  NewFact f;
  f.text = text;
  f.client_id = client_id;
  f.metadata_json = metadata;
  std::mt19937_64 rng(Fnv1a64(text));
  std::normal_distribution<float> normal;
  for (int i = 0; i < tokens; ++i) f.tokens.push_back(static_cast<int32_t>(rng() % kFactVocab));
  for (int i = 0; i < (tokens - 1) * kFactDim; ++i) f.keys.push_back(FloatToHalf(normal(rng)));
  return f;
}

// Entry p's key of a fact, as floats.
inline std::vector<float> FactKey(const NewFact& f, int p) {
  std::vector<float> k(kFactDim);
  for (int d = 0; d < kFactDim; ++d) k[d] = HalfToFloat(f.keys[p * kFactDim + d]);
  return k;
}

}  // namespace mnemo::testing
