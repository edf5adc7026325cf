#include "api/fact_json.h"

namespace mnemo::api {

Json FactToJson(const FactRecord& f) {
  Json j = {{"id", f.id}, {"object", "fact"}, {"text", f.text}};
  j["client_id"] = f.client_id.empty() ? Json(nullptr) : Json(f.client_id);
  j["metadata"] = f.metadata_json.empty() ? Json::object() : Json::parse(f.metadata_json, nullptr, false);
  j["tokens"] = f.num_tokens;
  j["created_at_ms"] = f.created_at_ms;
  return j;
}

std::string MetadataMatchValue(const std::string& text) {
  const Json v = Json::parse(text, nullptr, false);
  return !v.is_discarded() && v.is_primitive() && !v.is_null() ? text : Dump(text);
}

}  // namespace mnemo::api
