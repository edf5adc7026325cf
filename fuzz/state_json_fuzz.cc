// memory/state_dir.h: StateConfig::FromJson, the reader of a state directory's state.json (ReadStateConfig
// reads the file and calls it). A parsed config must survive ToJson -> FromJson unchanged.
#include <string>

#include "fuzz/fuzz_util.h"
#include "memory/state_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(mnemo_fuzz::AsText(data, size));
  mnemo::StateConfig config;
  const mnemo::Status s = mnemo::StateConfig::FromJson(text, "state.json", &config);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption());
    return 0;
  }
  FUZZ_CHECK(config.dim >= 1 && config.format_version <= mnemo::StateConfig::kFormatVersion);
  std::string json;
  try {
    json = config.ToJson();
  } catch (const std::exception&) {
    return 0;  // Not reachable: FromJson only accepts valid UTF-8 strings, which ToJson can write.
  }
  mnemo::StateConfig again;
  FUZZ_CHECK(mnemo::StateConfig::FromJson(json, "state.json", &again).ok());
  FUZZ_CHECK(again.format_version == config.format_version && again.model_path == config.model_path &&
             again.datastore_path == config.datastore_path && again.model_fingerprint == config.model_fingerprint &&
             again.dim == config.dim && again.created_at_ms == config.created_at_ms);
  return 0;
}
