// lm/safetensors.h: SafetensorsFile::Open, the reader of model checkpoints (model.safetensors), which
// promises to validate the whole header so that every TensorView points at exactly `nbytes` bytes of the
// file. The input is the file (written to tmpfs: Open maps a path). Every tensor it hands out is checked
// against the header re-read here, byte for byte; a file that opens is written back with
// WriteSafetensors and must open again to the same tensors.
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "lm/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mnemo_fuzz::ScratchDir() + "/model.safetensors";
  mnemo_fuzz::WriteFileOrDie(path, mnemo_fuzz::AsText(data, size));
  std::unique_ptr<mnemo::SafetensorsFile> file;
  const mnemo::Status s = mnemo::SafetensorsFile::Open(path, &file);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption());
    return 0;
  }
  // Opened: the header is valid JSON of length N after 8 bytes, and each tensor is where it says.
  FUZZ_CHECK(size >= 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  FUZZ_CHECK(header_len <= size - 8);
  const char* header_begin = reinterpret_cast<const char*>(data) + 8;
  const nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, nullptr, false);
  FUZZ_CHECK(header.is_object());
  const uint64_t data_start = 8 + header_len;
  size_t listed = 0;
  for (const mnemo::TensorView& t : file->tensors()) {
    FUZZ_CHECK(file->Find(t.name) == &t);
    FUZZ_CHECK(header.contains(t.name));
    const nlohmann::json& entry = header[t.name];
    const uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
    const uint64_t end = entry["data_offsets"][1].get<uint64_t>();
    FUZZ_CHECK(begin <= end && end - begin == t.nbytes && data_start + end <= size);
    uint64_t elements = 1;
    for (int64_t d : t.shape) {
      FUZZ_CHECK(d >= 0);
      elements *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(elements * mnemo::DTypeSize(t.dtype) == t.nbytes);
    FUZZ_CHECK(t.nbytes == 0 || std::memcmp(t.data, data + data_start + begin, t.nbytes) == 0);
    ++listed;
  }
  FUZZ_CHECK(listed + (header.contains("__metadata__") ? 1 : 0) == header.size());

  if (size > (1 << 20)) return 0;
  std::vector<mnemo::TensorData> tensors;
  for (const mnemo::TensorView& t : file->tensors()) tensors.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  const std::string copy = mnemo_fuzz::ScratchDir() + "/copy.safetensors";
  FUZZ_CHECK(mnemo::WriteSafetensors(copy, tensors, file->metadata()).ok());
  std::unique_ptr<mnemo::SafetensorsFile> reopened;
  FUZZ_CHECK(mnemo::SafetensorsFile::Open(copy, &reopened).ok());
  FUZZ_CHECK(reopened->metadata() == file->metadata());
  FUZZ_CHECK(reopened->tensors().size() == file->tensors().size());
  for (const mnemo::TensorView& t : file->tensors()) {
    const mnemo::TensorView* r = reopened->Find(t.name);
    FUZZ_CHECK(r != nullptr && r->dtype == t.dtype && r->shape == t.shape && r->nbytes == t.nbytes);
    FUZZ_CHECK(t.nbytes == 0 || std::memcmp(r->data, t.data, t.nbytes) == 0);
  }
  return 0;
}
