// Tokenizer: text <-> token ids. The model layer depends only on this interface.
//
// Thread-safety: const methods may be called concurrently from many threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mnemo {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  // Exact inverse of Encode for any byte string Encode produced (byte-level: every UTF-8 text round-trips).
  // Ids outside [0, vocab_size) are a programming error in the caller; they decode to nothing.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // The bytes of one token (may be a partial UTF-8 sequence).
  virtual std::string TokenBytes(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  // The end-of-text token ("<|endoftext|>" for GPT-2), or -1 when the vocabulary has none.
  virtual int32_t eot_id() const = 0;
};

}  // namespace mnemo
