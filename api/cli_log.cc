// mnemo log: the state's action log (who did what to which ids, when; deletion receipts), read straight
// from the database, so it works beside a running server.
#include <ctime>
#include <iostream>
#include <memory>

#include "api/cli.h"
#include "api/common_flags.h"
#include "memory/fact_db.h"
#include "memory/state_dir.h"

namespace mnemo::cli {
namespace {

std::string Utc(int64_t at_ms) {
  const std::time_t t = static_cast<std::time_t>(at_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

void RegisterLogCommand(CLI::App& app, Command* selected) {
  auto* log = app.add_subcommand(
      "log", "The state's action log: who (the API key's name, cli:<user>) did what to which ids, when; "
             "verify-deleted results are kept as deletion receipts. Never fact text.");
  struct LogArgs {
    std::string state;
    bool json = false;
    ActionQuery query;
    bool all = false;
  };
  auto la = std::make_shared<LogArgs>();
  log->add_option("--state", la->state, "State directory (from mnemo init)")->required();
  log->add_flag("--json", la->json, "One JSON object per line");
  log->add_option("--after", la->query.after_seq, "Entries after this seq")->check(CLI::NonNegativeNumber);
  log->add_option("--limit", la->query.limit, "Entries per page (1..1000)")->capture_default_str()->check(CLI::Range(1, 1000));
  log->add_option("--action", la->query.action, "Only this action or those under it (facts, facts.delete, ...)");
  log->add_option("--id", la->query.id, "Only entries naming this id (a fact id, a document id, memory/document)");
  log->add_option("--actor", la->query.actor, "Only this actor");
  log->add_flag("--all", la->all, "Every page, not only the first");
  log->callback([la, selected] {
    *selected = [la] {
      StateConfig config;
      Status s = ReadStateConfig(la->state, &config);  // a clear NotFound for a directory without a state
      std::unique_ptr<FactDb> db;
      if (s.ok()) s = FactDb::OpenForReading(FactDbPath(la->state), &db);
      ActionQuery query = la->query;
      for (;;) {
        std::vector<ActionRecord> page;
        int64_t next = 0;
        if (s.ok()) s = db->ListActions(query, &page, &next);
        if (!s.ok()) return Fail(s);
        for (const ActionRecord& a : page) {
          Json detail = Json::parse(a.detail_json, nullptr, /*allow_exceptions=*/false);
          if (detail.is_discarded()) detail = Json::object();
          if (la->json) {
            std::cout << DumpJson({{"seq", a.seq}, {"at_ms", a.at_ms}, {"actor", a.actor}, {"action", a.action},
                                   {"ids", a.ids}, {"detail", detail}})
                      << "\n";
          } else {
            std::string ids;
            for (const std::string& id : a.ids) ids += (ids.empty() ? "" : ",") + id;
            std::cout << a.seq << "  " << Utc(a.at_ms) << "  " << a.actor << "  " << a.action << "  " << ids;
            if (detail.contains("passed")) std::cout << "  " << (detail["passed"].get<bool>() ? "passed" : "FAILED");
            std::cout << "\n";
          }
        }
        if (!la->all || next == 0) break;
        query.after_seq = next;
      }
      return 0;
    };
  });
}

}  // namespace mnemo::cli
