// api/api_keys.h: ApiKeys::Load, the reader of the server's key file (--api-keys), and Authenticate.
// Load only takes a path, so each input is written to a file on tmpfs first.
#include <string>

#include "api/api_keys.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mnemo_fuzz::ScratchDir() + "/keys";
  const std::string_view text = mnemo_fuzz::AsText(data, size);
  mnemo_fuzz::WriteFileOrDie(path, text);
  mnemo::ApiKeys keys;
  const mnemo::Status s = mnemo::ApiKeys::Load(path, &keys);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsInvalidArgument() || s.IsIOError() || s.IsNotFound());
    return 0;
  }
  FUZZ_CHECK(!keys.empty());
  // Every whitespace-separated word of the file is presented as a key: a key that authenticates has a
  // role and a name that is never the key itself.
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = text.find_first_not_of(" \t\r\n\v\f", pos);
    if (start == std::string_view::npos) break;
    size_t end = text.find_first_of(" \t\r\n\v\f", start);
    if (end == std::string_view::npos) end = text.size();
    const std::string word(text.substr(start, end - start));
    std::string name;
    const mnemo::Role role = keys.Authenticate(word, &name);
    if (role == mnemo::Role::kNone) {
      FUZZ_CHECK(name.empty());
    } else {
      FUZZ_CHECK(!name.empty() && name != word && word.size() >= 16);
    }
    pos = end;
  }
  std::string name = "x";
  FUZZ_CHECK(keys.Authenticate("", &name) == mnemo::Role::kNone && name.empty());
  return 0;
}
