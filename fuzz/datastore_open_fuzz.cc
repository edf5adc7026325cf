// memory/datastore.h: Datastore::Open, which reads a datastore directory: manifest.json
// (DatastoreManifest::FromJson), documents.jsonl (the provenance reader: header line, one line per
// document, tombstones), the key and value files (memory-mapped, sizes and optional CRC32s checked against
// the manifest) and the index (VectorIndex::Load, its size checked against the manifest). Open promises
// Corruption for files that disagree; so once it succeeds, every entry number it can hand out must lie
// inside the mapped files.
//
// Input: one mode byte, manifest.json, a NUL byte, documents.jsonl (no NUL: no documents.jsonl at all).
// Mode % 3 picks one of three real datastores built by the product at start-up (fuzz/datastore_fixture.h)
// whose keys, values and index stay; bit 2 (of mode / 3) memory-maps the index, bit 3 verifies checksums.
// Opened read-only (a committed but unapplied deletion is then FailedPrecondition instead of being
// rolled forward, so no input changes the fixture's files).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/datastore_fixture.h"
#include "fuzz/fuzz_util.h"
#include "memory/datastore.h"

namespace {

std::vector<std::string>& BaseDirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  FUZZ_CHECK(::stat(path.c_str(), &st) == 0);
  return st.st_size;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const mnemo_fuzz::BaseDatastore& b : mnemo_fuzz::BaseDatastores()) {
    const std::string dir = mnemo_fuzz::ScratchDir() + "/" + b.name;
    mnemo_fuzz::BuildBaseDatastore(b, dir);
    BaseDirs().push_back(dir);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string& dir = BaseDirs()[mode % BaseDirs().size()];
  const std::string_view input = mnemo_fuzz::AsText(data + 1, size - 1);
  const size_t nul = input.find('\0');
  mnemo_fuzz::WriteFileOrDie(dir + "/manifest.json", input.substr(0, nul));
  if (nul == std::string_view::npos) {
    ::unlink((dir + "/documents.jsonl").c_str());
  } else {
    mnemo_fuzz::WriteFileOrDie(dir + "/documents.jsonl", input.substr(nul + 1));
  }
  mnemo::DatastoreOpenOptions options;
  options.read_only = true;
  options.mmap_index = (mode / 3) & 1;
  options.verify_checksums = (mode / 3) & 2;
  std::unique_ptr<mnemo::Datastore> ds;
  const mnemo::Status s = mnemo::Datastore::Open(dir, options, &ds);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption() || s.IsNotFound() || s.IsFailedPrecondition() || s.IsInvalidArgument());
    return 0;
  }

  // The manifest's numbers are those of the files.
  const mnemo::DatastoreManifest m = ds->manifest();
  const int64_t slots = ds->slots();
  FUZZ_CHECK(slots == m.count && ds->dim() == m.dim && ds->size() == ds->index().size());
  int64_t key_bytes = 0, value_bytes = 0;
  FUZZ_CHECK(!__builtin_mul_overflow(slots, static_cast<int64_t>(ds->dim()) * 2, &key_bytes));
  FUZZ_CHECK(!__builtin_mul_overflow(slots, int64_t{4}, &value_bytes));
  FUZZ_CHECK(key_bytes == FileSize(dir + "/keys.f16") && value_bytes == FileSize(dir + "/values.i32"));

  // Documents tile [0, slots) in order; deleted ranges lie inside it.
  if (ds->has_provenance()) {
    int64_t next = 0;
    for (const mnemo::DatastoreDocument& d : ds->Documents()) {
      FUZZ_CHECK(d.first == next && d.count >= 0 && d.count <= slots - d.first);
      next = d.first + d.count;
      mnemo::DatastoreDocument got;
      FUZZ_CHECK(ds->GetDocument(d.id, &got).ok() && got.first == d.first);
      if (d.deleted()) {
        mnemo::DocumentTraces traces;
        FUZZ_CHECK(ds->FindDocumentTraces(d.id, &traces).ok());
      }
    }
    FUZZ_CHECK(next == slots);
  }
  for (const auto& [first, count] : ds->DeletedRanges()) FUZZ_CHECK(first >= 0 && count >= 0 && count <= slots - first);

  // Searches hand out entries inside the files (with exact re-ranking against the mapped keys too).
  std::vector<float> query(ds->dim(), 0.5f);
  for (bool recompute : {false, true}) {
    mnemo::MemorySearchOptions search;
    search.k = 4;
    search.nprobe = 2;
    search.recompute = recompute;
    std::vector<mnemo::Neighbor> out;
    FUZZ_CHECK(ds->Search(query.data(), 1, search, &out).ok());
    for (const mnemo::Neighbor& n : out) FUZZ_CHECK(n.entry >= -1 && n.entry < slots);
  }
  return 0;
}
