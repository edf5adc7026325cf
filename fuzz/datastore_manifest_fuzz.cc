// memory/datastore.h: DatastoreManifest::FromJson, the reader of a datastore's manifest.json (Datastore::Open
// reads the file and calls it; datastore_open_fuzz covers the rest of Open). A parsed manifest must survive
// ToJson -> FromJson unchanged.
#include <string>

#include "fuzz/fuzz_util.h"
#include "memory/datastore.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(mnemo_fuzz::AsText(data, size));
  mnemo::DatastoreManifest m;
  const mnemo::Status s = mnemo::DatastoreManifest::FromJson(text, "manifest.json", &m);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption());
    return 0;
  }
  FUZZ_CHECK(m.dim > 0 && m.count >= 0 && m.live >= 0 && m.live <= m.count);
  mnemo::DatastoreManifest again;
  FUZZ_CHECK(mnemo::DatastoreManifest::FromJson(m.ToJson(), "manifest.json", &again).ok());
  FUZZ_CHECK(again.format_version == m.format_version && again.model_fingerprint == m.model_fingerprint &&
             again.key_layer == m.key_layer && again.dim == m.dim && again.count == m.count &&
             again.index_spec == m.index_spec && again.source == m.source &&
             again.source_tokens == m.source_tokens && again.keys_crc32 == m.keys_crc32 &&
             again.values_crc32 == m.values_crc32 && again.live == m.live && again.provenance == m.provenance &&
             again.deletions_applied == m.deletions_applied && again.training_pool == m.training_pool &&
             again.training_source == m.training_source && again.train_sample == m.train_sample &&
             again.train_seed == m.train_seed && again.window == m.window && again.stride == m.stride);
  return 0;
}
