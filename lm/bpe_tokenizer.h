// BpeTokenizer: GPT-2's byte-level BPE (Radford et al. 2019), bit-for-bit compatible with the
// reference encoder.py and with Hugging Face's GPT2Tokenizer.
//
// Vocabulary tokens are kept in GPT-2's "byte-to-unicode" form: every byte is shown as one printable
// code point (space -> "Ġ", newline -> "Ċ"), so a token is a string of those symbols and a merges
// line "Ġ t" never contains a real space.
//
// Encoding: the text is split by GPT-2's pre-tokenizer regex, then each piece is merged by rank.
// The text is always plain text: "<|endoftext|>" inside it is encoded as ordinary characters, never
// as eot_id(). Callers that want the special token append eot_id() themselves.
//
// Invalid UTF-8: the regex is defined on code points, so the input is split into maximal valid UTF-8
// runs; each run is pre-tokenized by the regex and every byte that does not start a valid sequence
// becomes a pre-token of its own (and so encodes to its byte token). Decode still returns the exact
// input bytes, and valid UTF-8 text is encoded exactly as GPT-2 does.
//
// Thread-safety: after construction every const method may be called concurrently from many threads
// without external synchronization (the word cache is internally locked).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lm/tokenizer.h"
#include "util/status.h"

namespace mnemo {

class BpeTokenizer : public Tokenizer {
 public:
  // A merge rule: two byte-level tokens whose concatenation is also in the vocabulary.
  using Merge = std::pair<std::string, std::string>;

  // Loads from `dir`, which holds either Hugging Face files (vocab.json + merges.txt) or OpenAI's
  // original files (encoder.json + vocab.bpe); the Hugging Face pair wins when both are present.
  static Status Load(const std::string& dir, std::unique_ptr<BpeTokenizer>* out);

  // vocab_json: a JSON object mapping each token to its id, ids dense in [0, n). merges: one
  // "left right" pair per line in rank order; lines starting with "#version" are skipped.
  // Every one of the 256 byte symbols must be in the vocabulary (so any input can be encoded), and
  // both halves and the result of every merge must be too ("vocab/merges mismatch" otherwise).
  // Errors are NotFound (missing file) or Corruption, and name the offending file.
  static Status FromFiles(const std::string& vocab_json_path, const std::string& merges_path,
                          std::unique_ptr<BpeTokenizer>* out);

  // Same validation as FromFiles, for a vocabulary built in memory (the trainer). id_to_token[i] is
  // the byte-level form of token i. Errors are InvalidArgument.
  static Status FromVocabAndMerges(std::vector<std::string> id_to_token, std::vector<Merge> merges,
                                   std::unique_ptr<BpeTokenizer>* out);

  // Writes Hugging Face files dir/vocab.json (ids in order) and dir/merges.txt, each atomically;
  // creates `dir` if needed.
  Status Save(const std::string& dir) const;

  std::vector<int32_t> Encode(std::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  std::string TokenBytes(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t eot_id() const override { return eot_id_; }

  // Byte-level form of every token, indexed by id ("Ġthe").
  const std::vector<std::string>& tokens() const { return id_to_token_; }
  const std::vector<Merge>& merges() const { return merges_; }
  // Id of a byte-level token string, or -1 when it is not in the vocabulary.
  int32_t TokenId(std::string_view byte_level_token) const;

  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

 private:
  struct CacheShard;

  BpeTokenizer();
  // Shared by every factory; `vocab_name`/`merges_name` prefix error messages and
  // `merge_lines[i]` is the file line of merges[i] (empty for in-memory input).
  static Status Build(std::vector<std::string> id_to_token, std::vector<Merge> merges,
                      const std::string& vocab_name, const std::string& merges_name,
                      const std::vector<int>& merge_lines, std::unique_ptr<BpeTokenizer>* out);
  // Appends the ids of one pre-token.
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;
  void MergePiece(std::string_view piece, std::vector<int32_t>* ids) const;

  std::vector<std::string> id_to_token_;
  std::vector<std::string> id_to_bytes_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<Merge> merges_;
  // (left id << 32 | right id) -> {rank, merged id}.
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_ranks_;
  std::array<int32_t, 256> byte_to_id_{};
  int32_t eot_id_ = -1;
  std::unique_ptr<CacheShard[]> cache_;
};

// GPT-2's bytes_to_unicode(): the printable symbol (UTF-8) that stands for `byte` in vocabularies.
std::string_view ByteLevelSymbol(uint8_t byte);

// The bytes in the order of bytes_to_unicode()'s keys ('!'..'~', '¡'..'¬', '®'..'ÿ', then the rest
// ascending). GPT-2's encoder.json gives id i to the symbol of ByteLevelOrder()[i]; the trainer too.
const std::array<uint8_t, 256>& ByteLevelOrder();

// Splits `text` with GPT-2's pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// calling `emit` for each piece in order; the pieces concatenate to `text`. \s means Unicode
// White_Space, as in Python's `regex` module that GPT-2's encoder.py used. Invalid UTF-8 is handled
// as described at the top of this file. Thread-safe.
void Gpt2PreTokenize(std::string_view text, const std::function<void(std::string_view)>& emit);

}  // namespace mnemo
