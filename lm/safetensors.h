// Safetensors checkpoint files, read and written without LibTorch.
//
// Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 N, then N bytes of
// JSON header, then the data buffer. The header maps each tensor name to
//   {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
// with offsets relative to the start of the data buffer, plus an optional "__metadata__" object of
// string -> string. The header may be padded with trailing spaces.
//
// SafetensorsFile::Open validates the whole header up front (types, dtypes, bounds, sizes, overlaps), so
// every TensorView it hands out points at exactly `nbytes` readable bytes. A malformed file yields
// Status::Corruption naming the file and the problem; it never crashes.
//
// Thread-safety: a SafetensorsFile is immutable after Open; const methods may be called concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

class MappedFile;

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element (BOOL is one byte, as in safetensors).
size_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "BF16", "BOOL", ...
const char* DTypeName(DType dtype);
// Parses a safetensors dtype string; false for anything else (e.g. "F8_E4M3", which mnemo does not use).
bool ParseDType(const std::string& name, DType* out);

// One tensor inside an open file. `data` points into the file mapping, is valid while the owning
// SafetensorsFile lives, and is NOT necessarily aligned for the element type (copy with memcpy).
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;
  size_t nbytes;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates its header. NotFound if it cannot be opened, IOError if it cannot
  // be mapped, Corruption for a malformed file.
  static Status Open(const std::string& path, std::unique_ptr<SafetensorsFile>* out);

  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // nullptr when the file has no tensor called `name`.
  const TensorView* Find(const std::string& name) const;
  // Every tensor, in data-buffer order (by begin offset, then name).
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  std::unique_ptr<MappedFile> mapping_;  // TensorView::data points into it.
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write; `data` must hold `nbytes` bytes in little-endian element order.
struct TensorData {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes a safetensors file the reference implementation can read: header entries in the given order,
// data laid out contiguously in that order, header padded with spaces to a multiple of 8 bytes (so the
// data buffer starts 8-byte aligned), "__metadata__" present only when `metadata` is non-empty.
// InvalidArgument for duplicate or reserved ("__metadata__") names, negative dimensions, or
// nbytes != product(shape) * DTypeSize(dtype). The file is assembled in memory and written with
// WriteFileAtomically, so readers never see a partial checkpoint.
Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors,
                        const std::map<std::string, std::string>& metadata);

}  // namespace mnemo
