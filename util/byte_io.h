// ByteWriter and ByteReader: a message as raw bytes in this host's byte order, for messages between
// processes of one job (memory/mpi_shards.cc, memory/fact_shard.cc). Not a file format: files are
// little-endian whatever the host (memory/sqlite_db.h, indexes/index_file_format.h).
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace mnemo {

class ByteWriter {
 public:
  template <typename T>
  void Put(const T& v) { PutBytes(&v, sizeof(T)); }
  void PutBytes(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  // A count, then the values.
  template <typename T>
  void PutVector(const std::vector<T>& v) {
    Put(static_cast<int64_t>(v.size()));
    PutBytes(v.data(), v.size() * sizeof(T));
  }
  std::string& buf() { return buf_; }

 private:
  std::string buf_;
};

// Every Get is false, reading nothing, when fewer bytes are left than it needs.
class ByteReader {
 public:
  explicit ByteReader(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}
  template <typename T>
  bool Get(T* v) { return GetBytes(v, sizeof(T)); }
  bool GetBytes(void* out, size_t n) {
    if (left() < n) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }
  template <typename T>
  bool GetVector(std::vector<T>* v) {
    int64_t n = 0;
    if (!Get(&n) || n < 0 || static_cast<size_t>(n) > left() / sizeof(T)) return false;
    v->resize(static_cast<size_t>(n));
    return GetBytes(v->data(), v->size() * sizeof(T));
  }
  size_t left() const { return static_cast<size_t>(end_ - p_); }

 private:
  const char* p_;
  const char* end_;
};

}  // namespace mnemo
