#include "lm/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "util/file_util.h"
#include "util/mapped_file.h"

namespace mnemo {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "TensorView data is handed out in file (little-endian) byte order");

// The reference implementation refuses headers above 100 MB (safetensors' MAX_HEADER_SIZE), which also
// bounds the memory a hostile header can make the JSON parser allocate.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr char kMetadataKey[] = "__metadata__";

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2}, {DType::kF64, "F64", 8},
    {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4}, {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1},
};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // Unreachable for a valid enum value.
}

// product(shape) * elem_size in bytes; false on a negative dimension or overflow.
bool ByteLength(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* out) {
  uint64_t n = elem_size;
  for (int64_t dim : shape) {
    if (dim < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return false;
  }
  *out = n;
  return true;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Reads a non-negative JSON integer that fits in int64_t (also what a dimension must be).
bool NonNegativeInt(const nlohmann::json& j, int64_t* out) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = v;
    return true;
  }
  return false;
}

struct ParsedEntry {
  TensorView view;
  uint64_t begin;
  uint64_t end;
};

// Validates one header entry against a data buffer of `data_size` bytes.
Status ParseEntry(const std::string& path, const std::string& name, const nlohmann::json& j,
                  uint64_t data_size, ParsedEntry* out) {
  const std::string where = path + ": tensor '" + name + "': ";
  if (!j.is_object()) return Status::Corruption(where + "entry is not a JSON object");
  auto dtype_it = j.find("dtype");
  auto shape_it = j.find("shape");
  auto offsets_it = j.find("data_offsets");
  if (dtype_it == j.end()) return Status::Corruption(where + "missing \"dtype\"");
  if (shape_it == j.end()) return Status::Corruption(where + "missing \"shape\"");
  if (offsets_it == j.end()) return Status::Corruption(where + "missing \"data_offsets\"");
  if (!dtype_it->is_string()) return Status::Corruption(where + "\"dtype\" is not a string");
  if (!shape_it->is_array()) return Status::Corruption(where + "\"shape\" is not an array");
  if (!offsets_it->is_array() || offsets_it->size() != 2) {
    return Status::Corruption(where + "\"data_offsets\" is not an array of two integers");
  }

  TensorView& view = out->view;
  view.name = name;
  const std::string dtype_name = dtype_it->get<std::string>();
  if (!ParseDType(dtype_name, &view.dtype)) {
    return Status::Corruption(where + "unknown dtype \"" + dtype_name + "\"");
  }
  view.shape.clear();
  for (const nlohmann::json& dim : *shape_it) {
    if (!dim.is_number_integer()) return Status::Corruption(where + "shape has a non-integer dimension");
    int64_t d;
    if (!NonNegativeInt(dim, &d)) {
      return Status::Corruption(where + "shape has a negative or out-of-range dimension");
    }
    view.shape.push_back(d);
  }
  int64_t begin, end;
  if (!NonNegativeInt((*offsets_it)[0], &begin) || !NonNegativeInt((*offsets_it)[1], &end)) {
    return Status::Corruption(where + "\"data_offsets\" are not non-negative integers");
  }
  out->begin = static_cast<uint64_t>(begin);
  out->end = static_cast<uint64_t>(end);
  if (out->begin > out->end) {
    return Status::Corruption(where + "data_offsets begin " + std::to_string(begin) + " > end " +
                              std::to_string(end));
  }
  if (out->end > data_size) {
    return Status::Corruption(where + "data_offsets [" + std::to_string(begin) + ", " +
                              std::to_string(end) + ") out of the " + std::to_string(data_size) +
                              "-byte data buffer");
  }
  uint64_t expected;
  if (!ByteLength(view.shape, DTypeSize(view.dtype), &expected)) {
    return Status::Corruption(where + "shape " + ShapeString(view.shape) + " overflows");
  }
  if (expected != out->end - out->begin) {
    return Status::Corruption(where + "byte length " + std::to_string(out->end - out->begin) +
                              " != " + std::to_string(expected) + " for shape " +
                              ShapeString(view.shape) + " of " + dtype_name);
  }
  view.nbytes = static_cast<size_t>(expected);
  return Status::OK();
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
const char* DTypeName(DType dtype) { return Info(dtype).name; }

bool ParseDType(const std::string& name, DType* out) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) {
      *out = info.dtype;
      return true;
    }
  }
  return false;
}

Status SafetensorsFile::Open(const std::string& path, std::unique_ptr<SafetensorsFile>* out) {
  std::unique_ptr<MappedFile> mapping;
  MNEMO_RETURN_IF_ERROR(MappedFile::Open(path, &mapping));
  const uint64_t file_size = mapping->size();
  if (file_size < 8) {
    return Status::Corruption(path + ": file is " + std::to_string(file_size) +
                              " bytes, shorter than the 8-byte header length");
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const uint8_t* bytes = mapping->data();
  file->mapping_ = std::move(mapping);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return Status::Corruption(path + ": oversized header: " + std::to_string(header_len) +
                              " bytes, limit " + std::to_string(kMaxHeaderBytes));
  }
  if (header_len > file_size - 8) {
    return Status::Corruption(path + ": header length " + std::to_string(header_len) +
                              " exceeds file size " + std::to_string(file_size) + " minus 8");
  }

  // nlohmann keeps the last of duplicate keys silently; a tensor listed twice is corruption, so catch
  // duplicates among the top-level keys while parsing.
  std::set<std::string> seen_keys;
  std::string duplicate_key;
  nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                   nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second && duplicate_key.empty()) duplicate_key = key;
    }
    return true;
  };
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len, on_event,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded()) return Status::Corruption(path + ": header is not valid JSON");
  if (!header.is_object()) return Status::Corruption(path + ": header is not a JSON object");
  if (!duplicate_key.empty()) {
    return Status::Corruption(path + ": header lists '" + duplicate_key + "' twice");
  }

  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  std::vector<ParsedEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (!it->is_object()) return Status::Corruption(path + ": __metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Status::Corruption(path + ": __metadata__ value of '" + m.key() + "' is not a string");
        }
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    ParsedEntry entry;
    MNEMO_RETURN_IF_ERROR(ParseEntry(path, it.key(), *it, data_size, &entry));
    entry.view.data = data + entry.begin;
    entries.push_back(std::move(entry));
  }

  std::sort(entries.begin(), entries.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    return a.view.name < b.view.name;
  });
  // Empty tensors occupy no bytes and may share an offset with anything; among the others each must
  // start at or after the end of every earlier one.
  uint64_t covered_end = 0;
  const std::string* covered_by = nullptr;
  for (const ParsedEntry& e : entries) {
    if (e.begin == e.end) continue;
    if (covered_by != nullptr && e.begin < covered_end) {
      return Status::Corruption(path + ": tensors '" + *covered_by + "' and '" + e.view.name +
                                "' overlap in the data buffer");
    }
    covered_end = e.end;
    covered_by = &e.view.name;
  }

  file->tensors_.reserve(entries.size());
  for (ParsedEntry& e : entries) {
    file->index_[e.view.name] = file->tensors_.size();
    file->tensors_.push_back(std::move(e.view));
  }
  *out = std::move(file);
  return Status::OK();
}

SafetensorsFile::~SafetensorsFile() = default;
// Moving keeps every TensorView valid: the mapping itself does not move.
SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept = default;

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps insertion order, so the header lists tensors in the caller's order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorData& t : tensors) {
    const std::string where = path + ": tensor '" + t.name + "': ";
    if (t.name == kMetadataKey) return Status::InvalidArgument(where + "name is reserved");
    if (!names.insert(t.name).second) return Status::InvalidArgument(where + "duplicate name");
    uint64_t expected;
    if (!ByteLength(t.shape, DTypeSize(t.dtype), &expected)) {
      return Status::InvalidArgument(where + "invalid shape " + ShapeString(t.shape));
    }
    if (expected != t.nbytes) {
      return Status::InvalidArgument(where + "nbytes " + std::to_string(t.nbytes) + " != " +
                                     std::to_string(expected) + " for shape " + ShapeString(t.shape) +
                                     " of " + DTypeName(t.dtype));
    }
    if (t.nbytes > 0 && t.data == nullptr) return Status::InvalidArgument(where + "data is null");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = DTypeName(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + t.nbytes};
    header[t.name] = std::move(entry);
    offset += t.nbytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::type_error&) {  // Thrown for names or metadata that are not UTF-8.
    return Status::InvalidArgument(path + ": tensor names and metadata must be valid UTF-8");
  }
  // Pad like the reference writer so the data buffer starts 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string file;
  file.reserve(8 + header_text.size() + offset);
  const uint64_t header_len = header_text.size();
  for (int i = 0; i < 8; ++i) file.push_back(static_cast<char>((header_len >> (8 * i)) & 0xFF));
  file += header_text;
  for (const TensorData& t : tensors) {
    if (t.nbytes > 0) file.append(static_cast<const char*>(t.data), t.nbytes);
  }
  return WriteFileAtomically(path, file);
}

}  // namespace mnemo
