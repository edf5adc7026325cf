// indexes/index_spec.h: ParseIndexSpec (the --index-spec flag, a datastore manifest's "index_spec", an index
// file's header) and indexes/index_file_format.h: DecodeIndexFileHeader (the 128-byte header every index
// file starts with, checked before FAISS sees a byte).
//
// Input: one mode byte, a 4-byte dimension, then the text that is both the spec and the header bytes.
// Mode bit 0 rewrites the header's own CRC32 so that the fields behind the checksum get parsed too.
#include <fuzzer/FuzzedDataProvider.h>

#include <memory>
#include <string>

#include "fuzz/fuzz_util.h"
#include "indexes/index_file_format.h"
#include "indexes/index_spec.h"
#include "indexes/vector_index.h"
#include "util/hash.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const uint8_t mode = in.ConsumeIntegral<uint8_t>();
  const int dim = in.ConsumeIntegral<int32_t>();
  std::string bytes = in.ConsumeRemainingBytesAsString();

  mnemo::IndexSpec spec;
  const mnemo::Status s = mnemo::ParseIndexSpec(bytes, dim, &spec);
  if (s.ok()) {
    FUZZ_CHECK(dim >= 1 && dim <= mnemo::kMaxIndexDim);
    const std::string canonical = spec.ToString();
    mnemo::IndexSpec again;
    FUZZ_CHECK(mnemo::ParseIndexSpec(canonical, dim, &again).ok());
    FUZZ_CHECK(again.kind == spec.kind && again.nlist == spec.nlist && again.pq_m == spec.pq_m &&
               again.pq_bits == spec.pq_bits && again.ToString() == canonical);
    if (spec.is_ivf()) {
      FUZZ_CHECK(spec.nlist >= 1 && spec.nlist <= mnemo::kMaxIndexLists && spec.MinTrainingVectors() >= spec.nlist);
    }
    if (spec.kind == mnemo::IndexSpec::Kind::kIvfPq) {
      FUZZ_CHECK(spec.pq_m >= 1 && dim % spec.pq_m == 0 && spec.pq_bits >= 1 && spec.pq_bits <= 16);
    }
    // Small ones are cheap enough to build (FAISS allocates nlist inverted lists up front). FAISS 1.7.3's
    // IndexIVFPQ takes at most 8 bits per code, though ParseIndexSpec accepts up to 16: Create refuses those
    // with InvalidArgument (FAISS's message), the one spec that parses but does not build.
    if (spec.nlist <= 64 && dim <= 256) {
      std::unique_ptr<mnemo::VectorIndex> index;
      const mnemo::Status c = mnemo::VectorIndex::Create(dim, bytes, mnemo::Metric::kL2, &index);
      if (spec.kind == mnemo::IndexSpec::Kind::kIvfPq && spec.pq_bits > 8) {
        FUZZ_CHECK(c.IsInvalidArgument());
        return 0;
      }
      if (!c.ok()) std::fprintf(stderr, "Create(%d, \"%s\"): %s\n", dim, bytes.c_str(), c.ToString().c_str());
      FUZZ_CHECK(c.ok());
      FUZZ_CHECK(index->spec() == canonical && index->dim() == dim && index->size() == 0 &&
                 index->is_trained() == !spec.is_ivf());
    }
  } else {
    FUZZ_CHECK(s.IsInvalidArgument());
  }

  if ((mode & 1) && bytes.size() >= mnemo::kIndexFileHeaderSize) {
    const uint32_t crc = mnemo::Crc32(bytes.data(), 124);
    for (int i = 0; i < 4; ++i) bytes[124 + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
  }
  mnemo::IndexFileHeader header;
  const mnemo::Status h = mnemo::DecodeIndexFileHeader(bytes, "index.faiss", &header);
  if (!h.ok()) {
    FUZZ_CHECK(h.IsCorruption());
    return 0;
  }
  FUZZ_CHECK(header.dim >= 1 && !header.spec.empty() && header.spec.size() <= mnemo::kMaxIndexFileSpecLength &&
             header.ntotal >= 0);
  const std::string encoded = mnemo::EncodeIndexFileHeader(header);
  FUZZ_CHECK(encoded.size() == mnemo::kIndexFileHeaderSize);
  mnemo::IndexFileHeader again;
  FUZZ_CHECK(mnemo::DecodeIndexFileHeader(encoded, "index.faiss", &again).ok());
  FUZZ_CHECK(again.dim == header.dim && again.metric == header.metric && again.spec == header.spec &&
             again.ntotal == header.ntotal && again.payload_size == header.payload_size &&
             again.payload_crc == header.payload_crc);
  return 0;
}
