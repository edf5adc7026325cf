// On-disk format of a saved VectorIndex: one file, a fixed 128-byte header followed by the FAISS blob.
//
//   offset  size  field
//        0     8  magic "MNEMOIDX"
//        8     4  format version (kIndexFileVersion)
//       12     4  vector dimension
//       16     4  metric: 0 = squared L2, 1 = inner product
//       20     4  spec length n (at most kMaxIndexFileSpecLength)
//       24    64  canonical index spec (see index_spec.h), n bytes then zero padding
//       88     8  number of stored vectors
//       96     8  payload size in bytes
//      104     4  CRC32 (zlib) of the payload
//      108    16  reserved, zero
//      124     4  CRC32 (zlib) of header bytes [0, 124)
//      128     -  payload: the index exactly as faiss::write_index writes it
// Integers are little-endian.
//
// Why this shape: the header is checked (magic, own checksum, payload size == file size - 128) before
// FAISS sees a byte, so truncated or foreign files are rejected without parsing them. It has a fixed size
// so the payload sits at a known offset, which FAISS needs to memory-map inverted lists in place, and it
// has its own checksum so a memory-mapped load can trust the metadata without reading the whole payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/hash.h"  // Crc32 covers the header and the payload.

#include "util/status.h"

namespace mnemo {

constexpr char kIndexFileMagic[8] = {'M', 'N', 'E', 'M', 'O', 'I', 'D', 'X'};
constexpr uint32_t kIndexFileVersion = 1;
constexpr size_t kIndexFileHeaderSize = 128;
constexpr size_t kMaxIndexFileSpecLength = 64;

struct IndexFileHeader {
  int32_t dim = 0;
  uint32_t metric = 0;
  std::string spec;
  int64_t ntotal = 0;
  uint64_t payload_size = 0;
  uint32_t payload_crc = 0;
};

// Returns exactly kIndexFileHeaderSize bytes. The caller guarantees spec.size() <= kMaxIndexFileSpecLength.
std::string EncodeIndexFileHeader(const IndexFileHeader& header);

// Parses the first kIndexFileHeaderSize bytes of `bytes`. Corruption naming `file_name` for a short
// buffer, wrong magic, header checksum mismatch, unknown version or out-of-range field.
Status DecodeIndexFileHeader(std::string_view bytes, const std::string& file_name, IndexFileHeader* out);


}  // namespace mnemo
