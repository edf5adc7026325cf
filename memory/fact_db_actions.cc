// FactDb's action log (fact_db.h, ActionRecord): appending, listing and filtering entries.
#include <nlohmann/json.hpp>

#include <mutex>
#include <string>
#include <vector>

#include "memory/fact_db.h"
#include "memory/fact_db_internal.h"
#include "memory/sqlite_db.h"

namespace mnemo {
namespace {

constexpr int64_t kMaxActionsPage = 1000;

}  // namespace

Status InsertAction(SqliteDb* db, const ActionRecord& action, int64_t at_ms, int64_t* seq) {
  if (action.actor.empty() || action.action.empty()) {
    return Status::InvalidArgument("an action log entry needs an actor and an action");
  }
  const auto detail = nlohmann::json::parse(action.detail_json, nullptr, /*allow_exceptions=*/false);
  if (detail.is_discarded() || !detail.is_object()) {
    return Status::InvalidArgument("an action log entry's detail must be a JSON object");
  }
  Statement s(db);
  MNEMO_RETURN_IF_ERROR(s.Prepare("INSERT INTO actions(at_ms, actor, action, ids, detail) VALUES(?, ?, ?, ?, ?)"));
  s.BindInt(1, at_ms);
  s.BindText(2, action.actor);
  s.BindText(3, action.action);
  // Invalid UTF-8 (a login name, say) is replaced, never thrown inside the caller's transaction.
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  s.BindText(4, nlohmann::json(action.ids).dump(-1, ' ', false, kReplace));
  s.BindText(5, detail.dump(-1, ' ', false, kReplace));
  MNEMO_RETURN_IF_ERROR(s.Run());
  if (seq != nullptr) *seq = db->LastInsertRowid();
  return Status::OK();
}

Status FactDb::LogAction(const ActionRecord& action, int64_t* seq) {
  std::lock_guard<std::mutex> lock(mu_);
  return InsertAction(db_.get(), action, UnixTimeMs(), seq);
}

Status FactDb::ListActions(const ActionQuery& query, std::vector<ActionRecord>* out, int64_t* next_after_seq) {
  if (query.limit < 1 || query.limit > kMaxActionsPage) {
    return Status::InvalidArgument("log limit must be 1.." + std::to_string(kMaxActionsPage) + ", not " +
                                   std::to_string(query.limit));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!has_actions_) {  // a database from before the action log, opened for reading: nothing logged yet
    out->clear();
    *next_after_seq = 0;
    return Status::OK();
  }
  std::string sql = "SELECT seq, at_ms, actor, action, ids, detail FROM actions WHERE seq > ?";
  std::vector<std::string> args;
  if (!query.action.empty()) {
    sql += " AND (action = ? OR substr(action, 1, ?) = ?)";
  }
  if (!query.id.empty()) sql += " AND EXISTS (SELECT 1 FROM json_each(actions.ids) WHERE json_each.value = ?)";
  if (!query.actor.empty()) sql += " AND actor = ?";
  sql += " ORDER BY seq LIMIT ?";
  Statement s(db_.get());
  MNEMO_RETURN_IF_ERROR(s.Prepare(sql));
  int i = 1;
  s.BindInt(i++, query.after_seq);
  if (!query.action.empty()) {
    const std::string prefix = query.action + ".";
    s.BindText(i++, query.action);
    s.BindInt(i++, static_cast<int64_t>(prefix.size()));
    s.BindText(i++, prefix);
  }
  if (!query.id.empty()) s.BindText(i++, query.id);
  if (!query.actor.empty()) s.BindText(i++, query.actor);
  s.BindInt(i++, query.limit + 1);  // one more tells whether another page follows
  std::vector<ActionRecord> page;
  bool more = false;
  for (bool row = true;;) {
    MNEMO_RETURN_IF_ERROR(s.Next(&row));
    if (!row) break;
    if (static_cast<int64_t>(page.size()) == query.limit) {
      more = true;
      break;
    }
    ActionRecord a;
    a.seq = s.Int(0);
    a.at_ms = s.Int(1);
    a.actor = s.Text(2);
    a.action = s.Text(3);
    const auto ids = nlohmann::json::parse(s.Text(4), nullptr, /*allow_exceptions=*/false);
    if (!ids.is_array()) return Status::Corruption(path_ + ": action " + std::to_string(a.seq) + " has invalid ids");
    for (const auto& id : ids) {
      if (!id.is_string()) return Status::Corruption(path_ + ": action " + std::to_string(a.seq) + " has invalid ids");
      a.ids.push_back(id.get<std::string>());
    }
    a.detail_json = s.Text(5);
    page.push_back(std::move(a));
  }
  *next_after_seq = more ? page.back().seq : 0;
  *out = std::move(page);
  return Status::OK();
}

}  // namespace mnemo
