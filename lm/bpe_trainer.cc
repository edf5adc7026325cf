#include "lm/bpe_trainer.h"

#include <algorithm>
#include <array>
#include <queue>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mnemo {
namespace {

// A pair of adjacent symbol ids packed as (left << 32 | right): ordering the keys orders the pairs
// by (left, right), which is the tie-break.
using PairKey = uint64_t;

PairKey MakePair(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t LeftOf(PairKey pair) { return static_cast<int32_t>(pair >> 32); }
int32_t RightOf(PairKey pair) { return static_cast<int32_t>(pair & 0xFFFFFFFFu); }

struct HeapEntry {
  int64_t count;  // The pair's count when pushed; stale once the real count has moved.
  PairKey pair;
};
// std::priority_queue pops the "largest": the highest count, then the smallest pair.
struct HeapOrder {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    return a.count != b.count ? a.count < b.count : a.pair > b.pair;
  }
};

// The state of one training run. Words are the distinct pre-tokens, each a sequence of symbol ids.
class MergeLearner {
 public:
  explicit MergeLearner(const BpeTrainerOptions& options) : options_(options) {}

  Status Run(const std::string& corpus, std::unique_ptr<BpeTokenizer>* out) {
    InitVocabulary();
    CountWords(corpus);
    CountPairs();
    Report();
    while (static_cast<int>(tokens_.size()) + 1 < options_.vocab_size && !heap_.empty()) {
      const HeapEntry top = heap_.top();
      heap_.pop();
      auto it = pair_counts_.find(top.pair);
      const int64_t current = it == pair_counts_.end() ? 0 : it->second;
      if (current != top.count) {
        // Counts of existing pairs only fall and every rise is pushed afresh, so an entry that
        // disagrees is an overestimate: requeue it at its true count and look again.
        if (current > 0) heap_.push({current, top.pair});
        continue;
      }
      if (current < std::max<int64_t>(1, options_.min_frequency)) break;
      MergeEverywhere(top.pair);
      if (merges_.size() % 256 == 0) Report();
    }
    const std::string kEndOfText = "<|endoftext|>";
    if (token_ids_.count(kEndOfText) == 0) tokens_.push_back(kEndOfText);
    Report();
    return BpeTokenizer::FromVocabAndMerges(std::move(tokens_), std::move(merges_), out);
  }

 private:
  void InitVocabulary() {
    const std::array<uint8_t, 256>& order = ByteLevelOrder();
    for (int i = 0; i < 256; ++i) {
      byte_ids_[order[i]] = i;
      AddToken(std::string(ByteLevelSymbol(order[i])));
    }
  }

  int32_t AddToken(std::string token) {
    // Two different merges can spell the same string ("a"+"bc", "ab"+"c"); they share its id.
    auto [it, inserted] = token_ids_.emplace(token, static_cast<int32_t>(tokens_.size()));
    if (inserted) tokens_.push_back(std::move(token));
    return it->second;
  }

  void CountWords(const std::string& corpus) {
    std::unordered_map<std::string_view, int64_t> counts;
    Gpt2PreTokenize(corpus, [&](std::string_view piece) { ++counts[piece]; });
    // Sorted so that word indices, and everything derived from them, do not depend on hashing.
    std::vector<std::pair<std::string_view, int64_t>> sorted(counts.begin(), counts.end());
    counts.clear();
    std::sort(sorted.begin(), sorted.end());
    words_.reserve(sorted.size());
    frequencies_.reserve(sorted.size());
    for (const auto& [piece, count] : sorted) {
      if (piece.size() < 2) continue;  // A single byte has no pair to merge.
      std::vector<int32_t> symbols(piece.size());
      for (size_t i = 0; i < piece.size(); ++i) symbols[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
      words_.push_back(std::move(symbols));
      frequencies_.push_back(count);
    }
  }

  void CountPairs() {
    for (int32_t w = 0; w < static_cast<int32_t>(words_.size()); ++w) {
      const std::vector<int32_t>& symbols = words_[w];
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        Add(MakePair(symbols[i], symbols[i + 1]), frequencies_[w], w);
      }
    }
    std::vector<HeapEntry> entries;
    entries.reserve(pair_counts_.size());
    for (const auto& [pair, count] : pair_counts_) entries.push_back({count, pair});
    heap_ = decltype(heap_)(HeapOrder(), std::move(entries));
    touched_.clear();
  }

  // Adds `delta` occurrences of `pair`; a rise is recorded against word `w` for the index and heap.
  void Add(PairKey pair, int64_t delta, int32_t w) {
    pair_counts_[pair] += delta;
    if (delta <= 0) return;
    std::vector<int32_t>& in = pair_words_[pair];
    if (in.empty() || in.back() != w) in.push_back(w);
    touched_.push_back(pair);
  }

  void MergeEverywhere(PairKey pair) {
    const int32_t left = LeftOf(pair), right = RightOf(pair);
    merges_.emplace_back(tokens_[left], tokens_[right]);
    const int32_t merged = AddToken(tokens_[left] + tokens_[right]);
    // The index may list a word twice or list words that lost the pair since; both are harmless.
    std::vector<int32_t> in = std::move(pair_words_[pair]);
    pair_words_.erase(pair);
    std::sort(in.begin(), in.end());
    in.erase(std::unique(in.begin(), in.end()), in.end());
    for (int32_t w : in) MergeInWord(w, left, right, merged);
    pair_counts_.erase(pair);
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (PairKey p : touched_) {
      const int64_t count = pair_counts_[p];
      if (count > 0) heap_.push({count, p});
    }
    touched_.clear();
  }

  // Replaces every non-overlapping (left, right) in word w, scanning left to right as BPE encoding
  // does, and moves the neighbours' pair counts from the old symbols to the merged one.
  void MergeInWord(int32_t w, int32_t left, int32_t right, int32_t merged) {
    std::vector<int32_t>& s = words_[w];
    const int64_t f = frequencies_[w];
    const size_t n = s.size();
    size_t out = 0;  // Write position; always <= i, so s[i..] still holds the old symbols.
    for (size_t i = 0; i < n;) {
      if (i + 1 < n && s[i] == left && s[i + 1] == right) {
        if (out > 0) {
          Add(MakePair(s[out - 1], left), -f, w);
          Add(MakePair(s[out - 1], merged), f, w);
        }
        if (i + 2 < n) {
          Add(MakePair(right, s[i + 2]), -f, w);
          Add(MakePair(merged, s[i + 2]), f, w);
        }
        s[out++] = merged;
        i += 2;
      } else {
        s[out++] = s[i++];
      }
    }
    s.resize(out);
  }

  void Report() {
    if (options_.progress) options_.progress(static_cast<int>(tokens_.size()), options_.vocab_size);
  }

  const BpeTrainerOptions& options_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> token_ids_;
  std::vector<BpeTokenizer::Merge> merges_;
  std::vector<std::vector<int32_t>> words_;
  std::vector<int64_t> frequencies_;
  std::unordered_map<PairKey, int64_t> pair_counts_;
  std::unordered_map<PairKey, std::vector<int32_t>> pair_words_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapOrder> heap_;
  std::vector<PairKey> touched_;  // Pairs whose count rose during the current merge.
};

}  // namespace

Status TrainBpe(const std::string& corpus_text, const BpeTrainerOptions& options,
                std::unique_ptr<BpeTokenizer>* out) {
  if (options.vocab_size < 257) {
    return Status::InvalidArgument("BPE vocab_size " + std::to_string(options.vocab_size) +
                                   " is too small: need 256 byte tokens plus <|endoftext|>");
  }
  MergeLearner trainer(options);
  return trainer.Run(corpus_text, out);
}

Status TrainBpe(const std::string& corpus_text, int vocab_size, std::unique_ptr<BpeTokenizer>* out) {
  BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  return TrainBpe(corpus_text, options, out);
}

}  // namespace mnemo
