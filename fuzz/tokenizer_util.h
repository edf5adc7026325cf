// The tokenizer invariants both tokenizer targets check, and a small built-in vocabulary.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "lm/bpe_tokenizer.h"

namespace mnemo_fuzz {

// Encode gives ids in range that Decode turns back into exactly `text` (byte-level BPE loses nothing, for
// any bytes, valid UTF-8 or not), each id's TokenBytes concatenate to the same text, and the pre-tokenizer's
// pieces are non-empty and concatenate to `text`.
inline void CheckTokenizer(const mnemo::BpeTokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.Encode(text);
  std::string joined;
  for (int32_t id : ids) {
    FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
    joined += tok.TokenBytes(id);
  }
  FUZZ_CHECK(joined == text);
  FUZZ_CHECK(tok.Decode(ids) == text);
  FUZZ_CHECK(ids.size() <= text.size());
  std::string pieces;
  mnemo::Gpt2PreTokenize(text, [&](std::string_view piece) {
    FUZZ_CHECK(!piece.empty());
    pieces.append(piece);
  });
  FUZZ_CHECK(pieces == text);
}

// 256 byte tokens in GPT-2's order, a few English merges and <|endoftext|>: what a tiny trained model has.
inline std::unique_ptr<mnemo::BpeTokenizer> BuiltinTokenizer() {
  std::vector<std::string> tokens;
  for (uint8_t b : mnemo::ByteLevelOrder()) tokens.emplace_back(mnemo::ByteLevelSymbol(b));
  const std::vector<mnemo::BpeTokenizer::Merge> merges = {
      {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"}, {"o", "n"}, {"Ġ", "s"},
      {"r", "e"}, {"in", "g"}, {"Ġ", "w"}, {"Ġa", "n"}, {"Ġan", "d"}, {"Ċ", "Ċ"}, {"Ġ", "Ġ"}, {"ĠĠ", "ĠĠ"},
      {"1", "2"}, {"Ã", "©"}, {"â", "Ģ"}, {"âĢ", "Ļ"}};
  for (const auto& [left, right] : merges) tokens.push_back(left + right);
  tokens.push_back("<|endoftext|>");
  std::unique_ptr<mnemo::BpeTokenizer> tok;
  const mnemo::Status s = mnemo::BpeTokenizer::FromVocabAndMerges(tokens, merges, &tok);
  if (!s.ok()) {
    std::fprintf(stderr, "built-in vocabulary: %s\n", s.ToString().c_str());
    std::abort();
  }
  return tok;
}

}  // namespace mnemo_fuzz
