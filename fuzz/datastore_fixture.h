// Small datastores built with the product's own DatastoreWriter: the key, value and index files that
// datastore_open_fuzz pairs with fuzzed manifests and documents files, and (make_seeds) the valid
// manifest.json + documents.jsonl seeds for them. Deterministic: the same bytes on every run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "memory/datastore.h"

namespace mnemo_fuzz {

constexpr int kDatastoreDim = 4;

struct BaseDatastore {
  const char* name;
  const char* index_spec;
  bool delete_b;  // document "b" deleted (a tombstone, holes in keys/values, fewer live entries)
};

// 0: Flat, two documents; 1: the same after deleting "b"; 2: IVF2,Flat trained on the document marked
// "train" ("a"), after deleting "b".
inline const std::vector<BaseDatastore>& BaseDatastores() {
  static const std::vector<BaseDatastore> bases = {
      {"flat", "Flat", false}, {"flat-deleted", "Flat", true}, {"ivf-deleted", "IVF2,Flat", true}};
  return bases;
}

// Builds base `b` in `dir` (which must not exist yet); aborts on failure (a broken fixture).
inline void BuildBaseDatastore(const BaseDatastore& b, const std::string& dir) {
  auto check = [&](const mnemo::Status& s) {
    if (!s.ok()) {
      std::fprintf(stderr, "datastore fixture %s: %s\n", b.name, s.ToString().c_str());
      std::abort();
    }
  };
  std::unique_ptr<mnemo::DatastoreWriter> w;
  check(mnemo::DatastoreWriter::Create(dir, kDatastoreDim, &w));
  std::vector<float> keys;
  for (int i = 0; i < 6 * kDatastoreDim; ++i) keys.push_back(static_cast<float>((i * 7) % 11) - 5.0f);
  const std::vector<int32_t> values = {11, 12, 13, 21, 22, 23};
  check(w->BeginDocument("a", 4, R"({"lang":"en"})", /*train=*/true));
  check(w->Append(3, keys.data(), values.data()));
  check(w->BeginDocument("b", 4, R"({"n":[1,2]})", /*train=*/false));
  check(w->Append(3, keys.data() + 3 * kDatastoreDim, values.data() + 3));
  mnemo::DatastoreManifest manifest;
  manifest.model_fingerprint = "fuzz-model";
  manifest.key_layer = "h.0.ln_2";
  manifest.source = "fuzz fixture";
  manifest.source_tokens = 8;
  mnemo::DatastoreFinishOptions options;
  options.index_spec = b.index_spec;
  options.train_sample = 16;
  options.progress = false;
  check(w->Finish(manifest, options));
  w.reset();
  if (b.delete_b) {
    std::unique_ptr<mnemo::Datastore> ds;
    check(mnemo::Datastore::Open(dir, mnemo::DatastoreOpenOptions(), &ds));
    mnemo::DocumentDeleteReport report;
    check(ds->DeleteDocuments({"b"}, mnemo::DocumentDeleteOptions(), &report));
  }
}

}  // namespace mnemo_fuzz
