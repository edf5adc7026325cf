// The action log over HTTP: who acted (ActorOf), logging the actions that are not facts' own transactions
// (LogAction), and GET /v1/log (admin).
#include <cstdio>

#include "api/server_impl.h"

namespace mnemo {

using api::Json;

std::string Server::Impl::ActorOf(const httplib::Request& req) const {
  if (keys.empty()) return "local";  // a server without keys listens on loopback only
  std::string name;
  RoleOf(req, &name);
  return name.empty() ? "unknown" : name;
}

ActionRecord Server::Impl::ActionFor(const httplib::Request& req, const std::string& action,
                                     std::vector<std::string> ids, const Json& detail) const {
  ActionRecord a;
  a.actor = ActorOf(req);
  a.action = action;
  a.ids = std::move(ids);
  a.detail_json = detail.is_object() ? detail.dump() : "{}";
  return a;
}

void Server::Impl::LogAction(const ActionRecord& action) {
  // The action itself succeeded and its answer stands; a lost entry is counted and reported.
  Status s = store->LogAction(action);
  if (s.ok()) return;
  metrics.GetCounter("mnemo_action_log_failures_total", "Action log entries that could not be written").Increment();
  std::fprintf(stderr, "mnemo: action log: %s: %s\n", action.action.c_str(), s.ToString().c_str());
}

Json ActionToJson(const ActionRecord& a) {
  Json detail = Json::parse(a.detail_json, nullptr, /*allow_exceptions=*/false);
  if (detail.is_discarded()) detail = Json::object();
  return {{"seq", a.seq}, {"at_ms", a.at_ms}, {"actor", a.actor}, {"action", a.action}, {"ids", a.ids}, {"detail", detail}};
}

void Server::Impl::HandleLog(const httplib::Request& req, httplib::Response& res) {
  ActionQuery query;
  Status s = QueryInt(req, "after", 0, INT64_MAX, &query.after_seq);
  if (s.ok()) s = QueryInt(req, "limit", 1, 1000, &query.limit);
  if (req.has_param("action")) query.action = req.get_param_value("action");
  if (req.has_param("id")) query.id = req.get_param_value("id");
  if (req.has_param("actor")) query.actor = req.get_param_value("actor");
  std::vector<ActionRecord> page;
  int64_t next = 0;
  if (s.ok()) s = store->ListActions(query, &page, &next);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  Json data = Json::array();
  for (const ActionRecord& a : page) data.push_back(ActionToJson(a));
  SendJson(res, {{"object", "list"}, {"data", data}, {"next_after", next == 0 ? Json(nullptr) : Json(next)}});
}

}  // namespace mnemo
