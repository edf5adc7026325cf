// CompileFilter: a FactFilter (fact_db.h) as SQL over the facts table, i.e. the " AND ..." clauses that
// FactDb's List, Count and DeleteMatching append to their WHERE and the values for their placeholders.
// Also defines IsValidMetadataField, which fact_db.h declares. Internal to memory/.
//
// Metadata matches keep JSON's types: json_extract() returns SQL values, which lose them (true and 1 both
// come back as 1), so a json_type() clause pins the type and the value compare runs only within it.
#pragma once

#include <string>
#include <vector>

#include "memory/fact_db.h"
#include "memory/sqlite_db.h"
#include "util/status.h"

namespace mnemo {

// A FactFilter as SQL: " AND ..." clauses and the values for their placeholders, in order.
struct CompiledFilter {
  std::string sql;
  std::vector<SqlValue> args;
  void Bind(Statement* s, int first) const {
    for (size_t i = 0; i < args.size(); ++i) s->BindValue(first + static_cast<int>(i), args[i]);
  }
};

// Fills *out for `filter` (an empty filter gives no clause). InvalidArgument for a metadata field that
// IsValidMetadataField refuses, a value without a field, or a value that is not a JSON string, number,
// true or false.
Status CompileFilter(const FactFilter& filter, CompiledFilter* out);

}  // namespace mnemo
