// lm/bpe_tokenizer.h: BpeTokenizer::FromFiles, the reader of tokenizer files (vocab.json + merges.txt, or
// encoder.json + vocab.bpe: the same parsers), as found in a checkpoint directory.
//
// Input: vocab.json, a NUL byte, merges.txt, optionally a NUL byte and text to encode. The two files are
// written to tmpfs (FromFiles takes paths). A vocabulary that loads must encode the text (or, without one,
// the merges file) and decode it back exactly.
#include <memory>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "fuzz/tokenizer_util.h"
#include "lm/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = mnemo_fuzz::AsText(data, size);
  const size_t first = input.find('\0');
  const std::string_view vocab = input.substr(0, first);
  std::string_view merges, text;
  if (first != std::string_view::npos) {
    merges = input.substr(first + 1);
    const size_t second = merges.find('\0');
    if (second != std::string_view::npos) {
      text = merges.substr(second + 1);
      merges = merges.substr(0, second);
    } else {
      text = merges;
    }
  }
  const std::string dir = mnemo_fuzz::ScratchDir();
  mnemo_fuzz::WriteFileOrDie(dir + "/vocab.json", vocab);
  mnemo_fuzz::WriteFileOrDie(dir + "/merges.txt", merges);
  std::unique_ptr<mnemo::BpeTokenizer> tok;
  const mnemo::Status s = mnemo::BpeTokenizer::FromFiles(dir + "/vocab.json", dir + "/merges.txt", &tok);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption());
    return 0;
  }
  FUZZ_CHECK(tok->vocab_size() >= 256);
  FUZZ_CHECK(tok->eot_id() == tok->TokenId("<|endoftext|>"));
  for (int32_t id = 0; id < tok->vocab_size(); ++id) FUZZ_CHECK(tok->TokenId(tok->tokens()[id]) == id);
  mnemo_fuzz::CheckTokenizer(*tok, text);
  return 0;
}
