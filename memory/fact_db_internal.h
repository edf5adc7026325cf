// What fact_db.cc and fact_db_actions.cc share: the action log's table and its insert. Internal to memory/.
#pragma once

#include <cstdint>

#include "memory/fact_db.h"
#include "memory/sqlite_db.h"

namespace mnemo {

// The action log (ActionRecord): ids and detail as JSON text. Rows are never updated or deleted.
constexpr char kActionsSchema[] =
    "CREATE TABLE IF NOT EXISTS actions(seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,"
    "                                   actor TEXT NOT NULL, action TEXT NOT NULL, ids TEXT NOT NULL,"
    "                                   detail TEXT NOT NULL);";

// Inserts `action` (time `at_ms`) inside the caller's transaction, or as its own statement; *seq (may be
// null) receives the new row's seq. InvalidArgument for an empty actor or action, or a detail that is not
// a JSON object.
Status InsertAction(SqliteDb* db, const ActionRecord& action, int64_t at_ms, int64_t* seq);

}  // namespace mnemo
