// Facts and deletion evidence as JSON, shared by the CLI (facts get/ls) and the HTTP server (/v1/facts), so both print a fact
// the same way and read a metadata filter value the same way.
#pragma once

#include <string>

#include "api/json_fields.h"
#include "memory/fact_db.h"
#include "retriever/deletion_verifier.h"

namespace mnemo::api {

// {"id", "object": "fact", "text", "client_id" (null when none), "metadata" ({} when none), "tokens",
// "created_at_ms"}.
Json FactToJson(const FactRecord& fact);

// verify-deleted's evidence: {"fact_id", "verdict", "passed", "reason"?, "structural": {...}, "probe": {...}
// or the reason it was skipped}. The CLI prints it and the server returns it.
Json DeletionVerdictToJson(const DeletionVerdict& v);

// The JSON to match for a metadata filter given as text (--where field=value, ?metadata.field=value): the
// text itself when it is a JSON scalar (1, true, "x"), else the text as a JSON string.
std::string MetadataMatchValue(const std::string& text);

}  // namespace mnemo::api
