// Hashes and checksums fixed by their specifications (unlike std::hash), so values written to disk or
// used to split data stay the same across compilers, platforms and runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mnemo {

// 64-bit FNV-1a (Fowler/Noll/Vo). Pass a previous result as `hash` to continue over more data.
constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;
uint64_t Fnv1a64(const void* data, size_t size, uint64_t hash = kFnv1a64Basis);
inline uint64_t Fnv1a64(std::string_view data) { return Fnv1a64(data.data(), data.size()); }

// zlib's CRC32 of `data`, continuing from `crc` (0 to start); handles inputs larger than 4 GiB.
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace mnemo
