// indexes/vector_index.h: VectorIndex::Load, the reader of index files (a datastore's index.faiss, the fact
// store's snapshot chunks): the 128-byte header, then FAISS's payload, then CheckLoaded, which promises
// that whatever FAISS deserialized is consistent enough that no later call can read out of bounds.
// A loaded index is therefore used: searched (IvfSearch's own scan of the inverted lists), listed, copied,
// an entry removed (IVF removal walks the DirectMap), saved and loaded again.
//
// Input: one mode byte, then the file (written to tmpfs: Load takes a path). Mode bit 0 loads
// memory-mapped (LoadOptions::mmap). Checksums are always verified: LoadOptions::verify_checksum = false is
// documented as only for files the process just wrote.
//
// Two targets are built from this file:
//   index_file_fuzz          damaged files: the bytes as they are, so a mutated payload stops at its CRC32
//                            and FAISS parses only payloads mnemo wrote (the header, the checksums, the
//                            valid layouts memory-mapped or not, and everything done with a loaded index).
//   index_file_crafted_fuzz  crafted files (MNEMO_FUZZ_CRAFTED): the header's payload size and both CRC32s
//                            are rewritten to match the bytes, so every mutation reaches FAISS's
//                            deserializer and CheckLoaded, as a deliberately crafted file would. FAISS
//                            1.7.3's reader itself crashes on some such payloads (docs/FUZZING.md), so this
//                            target is run on demand, not by default.
#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "indexes/index_file_format.h"
#include "indexes/index_spec.h"
#include "indexes/vector_index.h"
#include "util/hash.h"

// ---- Allocation failure as in production ------------------------------------------------------------
// FAISS 1.7.3 sizes each vector it reads from the size field in front of it (up to 2^40 elements) before
// reading the elements, so a payload that passes the checksums can ask for terabytes. In production the
// allocation fails and operator new throws std::bad_alloc, which VectorIndex::Load reports as Corruption
// ("out of memory"); ASan's own operator new cannot throw and aborts instead. So this target replaces the
// global operator new/delete with malloc/free (still ASan's, still checked) and throws bad_alloc when malloc
// returns null, and caps one allocation at 512 MiB (the options below): a larger request fails as it would
// on a machine with less memory. Requests that do fit are the gap described in docs/FUZZING.md.
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1:max_allocation_size_mb=512";
}

// FAISS's readers leak what they have read when a later read throws: see fuzz/faiss_lsan_suppressions.cc,
// linked into this target.

void* operator new(std::size_t n) {
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return std::malloc(n == 0 ? 1 : n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return std::malloc(n == 0 ? 1 : n); }
void* operator new(std::size_t n, std::align_val_t a) {
  const std::size_t align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  const std::size_t align = static_cast<std::size_t>(a);
  return std::aligned_alloc(align, (n + align - 1) / align * align);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept {
  return operator new(n, a, t);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

#if defined(MNEMO_FUZZ_CRAFTED)
constexpr bool kCrafted = true;
#else
constexpr bool kCrafted = false;  // mapped payloads are mnemo's own: their lists agree with the id map
#endif

void Put32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void Put64(std::string* s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

void Exercise(mnemo::VectorIndex& index) {
  const int64_t size = index.size();
  FUZZ_CHECK(size >= 0);
  mnemo::IndexSpec spec;
  FUZZ_CHECK(mnemo::ParseIndexSpec(index.spec(), index.dim(), &spec).ok());
  const std::vector<int64_t> ids = index.Ids();
  FUZZ_CHECK(static_cast<int64_t>(ids.size()) == size);
  FUZZ_CHECK(std::is_sorted(ids.begin(), ids.end()) && std::adjacent_find(ids.begin(), ids.end()) == ids.end());
  for (int64_t id : ids) FUZZ_CHECK(id >= 0 && index.Contains(id));
  (void)index.TrainedFingerprint();
  if (!index.is_trained()) return;

  // Two queries: zeros, and a ramp.
  const int dim = index.dim();
  std::vector<float> queries(2 * static_cast<size_t>(dim), 0.0f);
  for (int d = 0; d < dim; ++d) queries[dim + d] = static_cast<float>(d % 7) - 3.0f;
  const int k = 5;
  for (int nprobe : {1, 3, 1 << 20}) {
    std::vector<float> distances(2 * k);
    std::vector<int64_t> found(2 * k);
    mnemo::SearchOptions options;
    options.nprobe = nprobe;
    const mnemo::Status searched = index.Search(2, queries.data(), k, distances.data(), found.data(), options);
    if (!searched.ok()) std::fprintf(stderr, "Search: %s\n", searched.ToString().c_str());
    FUZZ_CHECK(searched.ok());
    for (int q = 0; q < 2; ++q) {
      bool padding = false;
      for (int j = 0; j < k; ++j) {
        const int64_t id = found[q * k + j];
        if (id == -1) {
          padding = true;
          continue;
        }
        // A memory-mapped load checks only that the lists lie inside the file, not the ids in them (that
        // would read every list), so a crafted mapped file can return any id, negative ones included, that
        // its id map does not hold: callers bounds-check result ids (Datastore::Search does).
        if (kCrafted && index.read_only()) continue;
        if (padding || !index.Contains(id)) {
          std::fprintf(stderr, "query %d result %d: id %lld after padding %d, contained %d (size %lld, spec %s)\n", q, j,
                       static_cast<long long>(id), padding, index.Contains(id), static_cast<long long>(index.size()),
                       index.spec().c_str());
          for (int i = 0; i < k; ++i) std::fprintf(stderr, "  %lld %g\n", static_cast<long long>(found[q * k + i]), distances[q * k + i]);
        }
        FUZZ_CHECK(!padding && index.Contains(id));  // Padding only at the tail, real ids only.
      }
    }
  }
  std::unique_ptr<mnemo::VectorIndex> copy;
  FUZZ_CHECK(index.CopyIdRange(0, INT64_MAX, &copy).ok());
  // (A copy of a mapped index takes the ids in its lists, which a crafted file need not match; see above.)
  FUZZ_CHECK(((kCrafted && index.read_only()) || copy->size() == size) &&
             copy->TrainedFingerprint() == index.TrainedFingerprint());

  if (!index.read_only() && size > 0) {
    int64_t removed = 0;
    FUZZ_CHECK(index.Remove(&ids[size / 2], 1, &removed).ok());
    FUZZ_CHECK(removed == 1 && index.size() == size - 1 && !index.Contains(ids[size / 2]));
  }
  const std::string saved = mnemo_fuzz::ScratchDir() + "/saved.idx";
  FUZZ_CHECK(index.Save(saved).ok());
  // Loaded as the original was (a mapped load checks less: see above).
  mnemo::LoadOptions options;
  options.mmap = index.read_only();
  std::unique_ptr<mnemo::VectorIndex> reloaded;
  FUZZ_CHECK(mnemo::VectorIndex::Load(saved, options, &reloaded).ok());
  FUZZ_CHECK(reloaded->size() == index.size() && reloaded->spec() == index.spec() &&
             reloaded->TrainedFingerprint() == index.TrainedFingerprint());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string file(mnemo_fuzz::AsText(data + 1, size - 1));
  if (kCrafted && file.size() >= mnemo::kIndexFileHeaderSize) {
    const size_t payload = file.size() - mnemo::kIndexFileHeaderSize;
    Put64(&file, 96, payload);
    Put32(&file, 104, mnemo::Crc32(file.data() + mnemo::kIndexFileHeaderSize, payload));
    Put32(&file, 124, mnemo::Crc32(file.data(), 124));
  }
  const std::string path = mnemo_fuzz::ScratchDir() + "/index.faiss";
  mnemo_fuzz::WriteFileOrDie(path, file);
  mnemo::LoadOptions options;
  options.mmap = (mode & 1) != 0;
  std::unique_ptr<mnemo::VectorIndex> index;
  const mnemo::Status s = mnemo::VectorIndex::Load(path, options, &index);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption() || s.IsIOError());
    return 0;
  }
  Exercise(*index);
  return 0;
}
