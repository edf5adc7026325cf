#include "indexes/index_file_format.h"

#include "util/hash.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace mnemo {
namespace {

constexpr size_t kVersionOffset = 8;
constexpr size_t kDimOffset = 12;
constexpr size_t kMetricOffset = 16;
constexpr size_t kSpecLengthOffset = 20;
constexpr size_t kSpecOffset = 24;
constexpr size_t kNtotalOffset = 88;
constexpr size_t kPayloadSizeOffset = 96;
constexpr size_t kPayloadCrcOffset = 104;
constexpr size_t kHeaderCrcOffset = 124;
static_assert(kSpecOffset + kMaxIndexFileSpecLength == kNtotalOffset, "spec field overlaps ntotal");
static_assert(kHeaderCrcOffset + 4 == kIndexFileHeaderSize, "header checksum must end the header");

void PutFixed32(char* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void PutFixed64(char* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t GetFixed32(const char* src) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(src[i])) << (8 * i);
  return v;
}
uint64_t GetFixed64(const char* src) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(src[i])) << (8 * i);
  return v;
}

}  // namespace

std::string EncodeIndexFileHeader(const IndexFileHeader& header) {
  std::string out(kIndexFileHeaderSize, '\0');
  char* p = out.data();
  std::memcpy(p, kIndexFileMagic, sizeof(kIndexFileMagic));
  PutFixed32(p + kVersionOffset, kIndexFileVersion);
  PutFixed32(p + kDimOffset, static_cast<uint32_t>(header.dim));
  PutFixed32(p + kMetricOffset, header.metric);
  const size_t spec_length = std::min(header.spec.size(), kMaxIndexFileSpecLength);
  PutFixed32(p + kSpecLengthOffset, static_cast<uint32_t>(spec_length));
  std::memcpy(p + kSpecOffset, header.spec.data(), spec_length);
  PutFixed64(p + kNtotalOffset, static_cast<uint64_t>(header.ntotal));
  PutFixed64(p + kPayloadSizeOffset, header.payload_size);
  PutFixed32(p + kPayloadCrcOffset, header.payload_crc);
  PutFixed32(p + kHeaderCrcOffset, Crc32(p, kHeaderCrcOffset));
  return out;
}

Status DecodeIndexFileHeader(std::string_view bytes, const std::string& file_name, IndexFileHeader* out) {
  auto corrupt = [&file_name](const std::string& what) {
    return Status::Corruption(file_name + ": " + what);
  };
  if (bytes.size() < kIndexFileHeaderSize) {
    return corrupt("file is " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                   std::to_string(kIndexFileHeaderSize) + "-byte index header");
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kIndexFileMagic, sizeof(kIndexFileMagic)) != 0) {
    return corrupt("bad magic (not a mnemo vector index file)");
  }
  // Checksum before looking at any field, so a flipped bit is reported as such and not as a bad value.
  const uint32_t stored_crc = GetFixed32(p + kHeaderCrcOffset);
  const uint32_t actual_crc = Crc32(p, kHeaderCrcOffset);
  if (stored_crc != actual_crc) return corrupt("index header checksum mismatch");
  const uint32_t version = GetFixed32(p + kVersionOffset);
  if (version != kIndexFileVersion) {
    return corrupt("unsupported index format version " + std::to_string(version) + " (this build reads " +
                   std::to_string(kIndexFileVersion) + ")");
  }
  IndexFileHeader h;
  const uint32_t dim = GetFixed32(p + kDimOffset);
  if (dim == 0 || dim > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    return corrupt("invalid dimension " + std::to_string(dim));
  }
  h.dim = static_cast<int32_t>(dim);
  h.metric = GetFixed32(p + kMetricOffset);
  const uint32_t spec_length = GetFixed32(p + kSpecLengthOffset);
  if (spec_length == 0 || spec_length > kMaxIndexFileSpecLength) {
    return corrupt("invalid spec length " + std::to_string(spec_length));
  }
  h.spec.assign(p + kSpecOffset, spec_length);
  const uint64_t ntotal = GetFixed64(p + kNtotalOffset);
  if (ntotal > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return corrupt("invalid vector count " + std::to_string(ntotal));
  }
  h.ntotal = static_cast<int64_t>(ntotal);
  h.payload_size = GetFixed64(p + kPayloadSizeOffset);
  h.payload_crc = GetFixed32(p + kPayloadCrcOffset);
  *out = std::move(h);
  return Status::OK();
}

}  // namespace mnemo
