// api/json_fields.h: the strict field readers every HTTP route uses on its JSON body (OptionalInt,
// OptionalNumber, OptionalBool, OptionalString) and Dump, which writes every response.
//
// The input is a request body. It is parsed as the server's ParseBody does (api::Json, no exceptions),
// then every field name the routes read is read with the range the route uses (server_generation.cc,
// server_facts.cc, server_memories.cc, server_audits.cc, server_datastore.cc, server.cc), at the top level
// and inside the nested objects they read ("knn", "memory", each of "facts"). The route handlers themselves
// include LibTorch and are not compiled here (docs/FUZZING.md, "Not fuzzed").
#include <cmath>
#include <cstdint>
#include <string>

#include "api/json_fields.h"
#include "fuzz/fuzz_util.h"

namespace {

using mnemo::api::Json;

struct IntField {
  const char* name;
  int64_t min, max;
};
struct NumberField {
  const char* name;
  double min, max;
};

constexpr IntField kInts[] = {
    {"best_of", INT32_MIN, INT32_MAX}, {"canaries", 0, INT32_MAX},        {"capacity", 0, INT32_MAX},
    {"datastore_documents", 0, INT32_MAX}, {"extraction_samples", 0, INT32_MAX}, {"finetune_steps", 0, INT32_MAX},
    {"logprobs", 0, 20},               {"max_tokens", 0, 4096},           {"members", 0, INT32_MAX},
    {"memory_capacity", 0, INT32_MAX}, {"n", INT32_MIN, INT32_MAX},       {"references", 0, INT32_MAX},
    {"return_neighbors", INT32_MIN, INT32_MAX}, {"seed", 0, INT64_MAX},   {"seed", INT64_MIN, INT64_MAX},
    {"k", 1, 4096},                    {"nprobe", 1, 65536},              {"id", 1, INT64_MAX},
    {"topk", 1, 1024},
};
constexpr NumberField kNumbers[] = {
    {"temperature", -HUGE_VAL, HUGE_VAL}, {"top_p", -HUGE_VAL, HUGE_VAL}, {"lambda", 0, 1}, {"temperature", 1e-6, 1e9},
};
constexpr const char* kBools[] = {"echo", "ignore_eos", "stream", "truncate_prompt", "enabled", "recompute"};
constexpr const char* kStrings[] = {"client_id", "model", "name", "text", "prompt", "stop"};

void ReadFields(const Json& body) {
  if (!body.is_object()) return;
  for (const IntField& f : kInts) {
    int64_t v = 7;
    bool present = true;
    const mnemo::Status s = mnemo::api::OptionalInt(body, f.name, f.min, f.max, &v, &present);
    if (s.ok() && present) {
      FUZZ_CHECK(v >= f.min && v <= f.max && body[f.name].is_number_integer());
    } else if (s.ok()) {
      FUZZ_CHECK(v == 7 && (!body.contains(f.name) || body[f.name].is_null()));
    } else {
      FUZZ_CHECK(s.IsInvalidArgument() && !present && v == 7);
    }
  }
  for (const NumberField& f : kNumbers) {
    double v = 0.5;
    bool present = true;
    const mnemo::Status s = mnemo::api::OptionalNumber(body, f.name, f.min, f.max, &v, &present);
    if (s.ok() && present) {
      FUZZ_CHECK(std::isfinite(v) && v >= f.min && v <= f.max && body[f.name].is_number());
    } else {
      FUZZ_CHECK((s.ok() || s.IsInvalidArgument()) && !present && v == 0.5);
    }
  }
  for (const char* name : kBools) {
    bool v = false, present = true;
    const mnemo::Status s = mnemo::api::OptionalBool(body, name, &v, &present);
    FUZZ_CHECK(s.ok() || s.IsInvalidArgument());
    if (s.ok() && present) FUZZ_CHECK(body[name].is_boolean() && v == body[name].get<bool>());
  }
  for (const char* name : kStrings) {
    std::string v;
    bool present = true;
    const mnemo::Status s = mnemo::api::OptionalString(body, name, &v, &present);
    FUZZ_CHECK(s.ok() || s.IsInvalidArgument());
    if (s.ok() && present) FUZZ_CHECK(body[name].is_string() && v == body[name].get_ref<const std::string&>());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(mnemo_fuzz::AsText(data, size));

  // Dump must write any string, even one that is not UTF-8 (text cut inside a character), as valid JSON.
  const std::string dumped = mnemo::api::Dump(Json(text));
  FUZZ_CHECK(!Json::parse(dumped, nullptr, false).is_discarded());

  const Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  ReadFields(body);
  if (body.is_object()) {
    for (const char* nested : {"knn", "memory"}) {
      if (body.contains(nested)) ReadFields(body[nested]);
    }
    if (body.contains("facts") && body["facts"].is_array()) {
      for (const Json& fact : body["facts"]) ReadFields(fact);
    }
  }
  // What a response echoes back must round-trip.
  const Json again = Json::parse(mnemo::api::Dump(body), nullptr, false);
  FUZZ_CHECK(!again.is_discarded());
  FUZZ_CHECK(mnemo::api::Dump(again) == mnemo::api::Dump(body));
  return 0;
}
