// The documents of the LayerMemories crash test (tests/layer_memories_crash_test.cc and its child,
// tests/layer_memories_crash_child.cc): document number `index` is a pure function of the index, so the
// parent can check any stored document bit for bit without being told its content.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "memory/layer_memories.h"

namespace mnemo::testing {

inline constexpr int64_t kCrashHeads = 2;
inline constexpr int64_t kCrashHeadDim = 8;

inline std::string CrashDocText(int64_t index) { return "doc " + std::to_string(index); }

// 3..12 tokens; keys and values in [-1, 1), 24 random bits each (no std distributions: exact everywhere).
inline NewMemoryDocument CrashDoc(int64_t index) {
  std::mt19937_64 rng(0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(index) * 0x100000001b3ull);
  NewMemoryDocument d;
  d.text = CrashDocText(index);
  d.metadata_json = "{\"index\":" + std::to_string(index) + "}";
  const int64_t n = 3 + static_cast<int64_t>(rng() % 10);
  for (int64_t t = 0; t < n; ++t) d.tokens.push_back(static_cast<int32_t>(rng() % 50257));
  auto value = [&rng] { return static_cast<float>(static_cast<double>(rng() >> 40) / (1 << 23) - 1.0); };
  d.keys.resize(static_cast<size_t>(kCrashHeads * n * kCrashHeadDim));
  d.values.resize(d.keys.size());
  for (float& k : d.keys) k = value();
  for (float& v : d.values) v = value();
  return d;
}

}  // namespace mnemo::testing
