// Facts and deletion evidence as JSON, shared by the CLI (facts get/ls) and the HTTP server (/v1/facts), so both print a fact
// the same way and read a metadata filter value the same way.
#pragma once

#include <string>

#include "api/json_fields.h"
#include "memory/fact_db.h"
#include "retriever/deletion_verifier.h"
#include "retriever/state_service.h"

namespace mnemo::api {

// {"id", "object": "fact", "text", "client_id" (null when none), "metadata" ({} when none), "tokens",
// "created_at_ms"}.
Json FactToJson(const FactRecord& fact);

// verify-deleted's evidence: {"fact_id", "verdict", "passed", "reason"?, "structural": {...}, "probe": {...}
// or the reason it was skipped}. The CLI prints it and the server returns it.
Json DeletionVerdictToJson(const DeletionVerdict& v);

// Memories of the memorizing layer (CLI `memory ls/read/rm`, /v1/memories): {"id", "object": "memory",
// "name", "capacity" (null: unbounded), "policy" ("fifo" or "unbounded"), "documents", "stored_tokens",
// "resident_tokens", "created_at_ms"}.
Json MemoryToJson(const MemoryInfo& m);
// {"id", "object": "memory.document", "memory_id", "metadata", "tokens", "resident_tokens",
// "created_at_ms", "text"? (when read with it)}.
Json MemoryDocumentToJson(const MemoryDocument& d);
// {"memory_id", "document_id", "verdict", "passed", "reason"?, "structural": {...}, "probe": {...} or why
// it was skipped}.
Json MemoryDeletionVerdictToJson(int64_t memory_id, int64_t document_id, const MemoryDeletionVerdict& v);

// A base datastore's document (provenance; CLI `datastore documents`, GET /v1/datastore/documents): {"id",
// "object": "datastore.document", "first_entry", "entries", "deleted", and for a live one "tokens",
// "metadata", "train", "delete_needs_retrain"; for a deleted one "deletion" (its number)}.
Json DatastoreDocumentToJson(const Datastore& datastore, const DatastoreDocument& d);
// {"document_id", "verdict", "passed", "reason"?, "structural": {...}, "probe": {...} or why it was skipped}.
Json DocumentDeletionVerdictToJson(const DocumentDeletionVerdict& v);

// The JSON to match for a metadata filter given as text (--where field=value, ?metadata.field=value): the
// text itself when it is a JSON scalar (1, true, "x"), else the text as a JSON string.
std::string MetadataMatchValue(const std::string& text);

}  // namespace mnemo::api
