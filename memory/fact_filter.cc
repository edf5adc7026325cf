// FactFilter -> SQL (see fact_filter.h) and the metadata field names a filter accepts.
#include "memory/fact_filter.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <utility>

namespace mnemo {
namespace {

SqlValue TextValue(std::string s) {
  SqlValue v;
  v.text = std::move(s);
  return v;
}

}  // namespace

Status CompileFilter(const FactFilter& filter, CompiledFilter* out) {
  *out = CompiledFilter();
  if (!filter.client_id.empty()) {
    out->sql += " AND client_id = ?";
    out->args.push_back(TextValue(filter.client_id));
  }
  if (filter.metadata_field.empty()) {
    if (!filter.metadata_value_json.empty()) {
      return Status::InvalidArgument("metadata filter value " + filter.metadata_value_json + " has no field");
    }
    return Status::OK();
  }
  if (!IsValidMetadataField(filter.metadata_field)) {
    return Status::InvalidArgument("invalid metadata field \"" + filter.metadata_field +
                                   "\" (letters, digits, '_' and '.' between names)");
  }
  const auto value = nlohmann::json::parse(filter.metadata_value_json, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !(value.is_string() || value.is_number() || value.is_boolean())) {
    return Status::InvalidArgument("metadata filter value for \"" + filter.metadata_field +
                                   "\" must be a JSON string, number, true or false, not \"" +
                                   filter.metadata_value_json + "\"");
  }
  // json_extract() returns SQL values, which lose the JSON type (true and 1 both come back as 1), so
  // json_type() pins the type and the value compare runs only within it. JSON has one number type:
  // 1 matches 1.0.
  const SqlValue path = TextValue("$." + filter.metadata_field);
  if (value.is_boolean()) {
    out->sql += value.get<bool>() ? " AND json_type(metadata, ?) = 'true'" : " AND json_type(metadata, ?) = 'false'";
    out->args.push_back(path);
    return Status::OK();
  }
  SqlValue want;
  if (value.is_string()) {
    out->sql += " AND json_type(metadata, ?) = 'text'";
    want = TextValue(value.get<std::string>());
  } else {
    out->sql += " AND json_type(metadata, ?) IN ('integer', 'real')";
    // Integers beyond int64 (nlohmann parses positive ones as unsigned) compare as reals, as SQLite reads them.
    if (value.is_number_integer() && !(value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX)) {
      want.type = SqlValue::Type::kInt;
      want.i = value.get<int64_t>();
    } else {
      want.type = SqlValue::Type::kReal;
      want.d = value.get<double>();
    }
  }
  out->sql += " AND json_extract(metadata, ?) = ?";
  out->args.insert(out->args.end(), {path, path, want});
  return Status::OK();
}

bool IsValidMetadataField(const std::string& field) {
  if (field.empty() || field.front() == '.' || field.back() == '.') return false;
  char prev = 0;
  for (char c : field) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

}  // namespace mnemo
