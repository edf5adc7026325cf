// lm/bpe_tokenizer.h: BpeTokenizer::Encode of arbitrary bytes (every prompt, fact and document the server
// is sent), Decode, TokenBytes and Gpt2PreTokenize (the PCRE2 pre-tokenizer regex, the invalid-UTF-8
// splitting). The vocabulary is GPT-2's (50257 tokens) when the checkout has ../shared/gpt2 beside it or
// MNEMO_FUZZ_TOKENIZER_DIR names a tokenizer directory, else a small built-in one.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "fuzz/fuzz_util.h"
#include "fuzz/tokenizer_util.h"
#include "lm/bpe_tokenizer.h"

namespace {

const mnemo::BpeTokenizer& Tokenizer() {
  static const std::unique_ptr<mnemo::BpeTokenizer> tok = [] {
    const char* env = std::getenv("MNEMO_FUZZ_TOKENIZER_DIR");
    const std::string dir = env != nullptr && *env != '\0' ? env : std::string(MNEMO_FUZZ_SHARED_DIR) + "/gpt2";
    std::unique_ptr<mnemo::BpeTokenizer> loaded;
    const mnemo::Status s = mnemo::BpeTokenizer::Load(dir, &loaded);
    if (s.ok()) {
      std::fprintf(stderr, "tokenizer_encode_fuzz: vocabulary of %d tokens from %s\n", loaded->vocab_size(),
                   dir.c_str());
      return loaded;
    }
    if (env != nullptr && *env != '\0') {
      std::fprintf(stderr, "tokenizer_encode_fuzz: %s\n", s.ToString().c_str());
      std::abort();
    }
    auto builtin = mnemo_fuzz::BuiltinTokenizer();
    std::fprintf(stderr, "tokenizer_encode_fuzz: no %s (%s); built-in vocabulary of %d tokens\n", dir.c_str(),
                 s.ToString().c_str(), builtin->vocab_size());
    return builtin;
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mnemo_fuzz::CheckTokenizer(Tokenizer(), mnemo_fuzz::AsText(data, size));
  return 0;
}
