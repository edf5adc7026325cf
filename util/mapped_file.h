// MappedFile: a whole file memory-mapped read-only (PROT_READ, MAP_PRIVATE), unmapped on destruction.
// Used for model weights and datastore keys/values, which can be larger than what should be copied
// into memory; the page cache is shared between processes that map the same file.
//
// Thread-safety: the bytes are immutable; any number of threads may read them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"

namespace mnemo {

class MappedFile {
 public:
  // NotFound if `path` does not exist, IOError if it cannot be opened, is not a regular file, or cannot
  // be mapped. An empty file maps to size() == 0 and data() == nullptr.
  static Status Open(const std::string& path, std::unique_ptr<MappedFile>* out);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(data_); }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mnemo
