#include "util/hash.h"

#include <zlib.h>

#include <algorithm>

namespace mnemo {

uint64_t Fnv1a64(const void* data, size_t size, uint64_t hash) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;  // The FNV-1a 64-bit prime.
  }
  return hash;
}

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  // zlib takes uInt lengths; feed it in 1 GiB slices.
  constexpr size_t kSlice = size_t{1} << 30;
  const Bytef* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (size > 0) {
    const size_t n = std::min(size, kSlice);
    c = crc32(c, p, static_cast<uInt>(n));
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

}  // namespace mnemo
