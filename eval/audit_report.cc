// The audit's reports: report.json, report.html and the CLI's plain-text summary (eval/audit.h).
#include <cstdio>

#include "eval/audit.h"
#include "eval/report_html.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using json = nlohmann::ordered_json;

std::string Fixed(double v, int decimals = 2) {
  char buf[64];
  snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

}  // namespace

Status WriteAuditReport(const std::string& dir, const json& report) {
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  // report.json last: its presence means the audit finished (the server lists past audits by it).
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/report.html", RenderAuditHtml(report)));
  return WriteFileAtomically(dir + "/report.json", report.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

std::string AuditSummary(const json& report) {
  // A copy: operator[] on a missing key then yields null, whose get<> throws json::type_error (a report
  // from elsewhere), where the const operator[] would be undefined behaviour.
  json r = report;
  std::string out;
  auto line = [&](const std::string& s) { out += s + "\n"; };
  json& c = r["config"];
  line("audit of " + c["state"]["dir"].get<std::string>() + " (" + std::to_string(c["state"]["facts"].get<int64_t>()) +
       " facts, " + std::to_string(c["state"]["base_entries"].get<int64_t>()) + " base entries), seed " +
       std::to_string(c["seed"].get<uint64_t>()) + ", " + Fixed(c["seconds"].get<double>(), 1) + " s");
  line("");
  line("exposure, mean extrapolated bits (max " + Fixed(c["exposure_max_bits"].get<double>()) +
       "; never inserted ~1.44)      kNN-LM   base LM");
  json& ek = r["exposure"]["knn_lm"];
  json& eb = r["exposure"]["base_lm"];
  auto row = [&](const std::string& label, json k, json b) {
    char buf[160];
    snprintf(buf, sizeof(buf), "  %-40s %8.2f  %8.2f", label.c_str(), k["mean_extrapolated"].get<double>(),
             b["mean_extrapolated"].get<double>());
    line(buf);
  };
  for (auto [rep, v] : ek["inserted"].items()) row("inserted x" + rep, v, eb["inserted"][rep]);
  row("never inserted", ek["never_inserted"], eb["never_inserted"]);
  for (auto [rep, v] : ek["after_deletion"].items()) row("after deletion x" + rep, v, eb["after_deletion"][rep]);
  for (auto [rep, v] : ek["rebuilt"].items()) row("rebuilt without x" + rep, v, eb["rebuilt"][rep]);
  line("");
  line("membership inference (" + std::to_string(r["membership"]["members"].get<int>()) + " members vs " +
       std::to_string(r["membership"]["non_members"].get<int>()) + " held out)   AUC   TPR@0.1%FPR   TPR@1%FPR");
  for (const char* model : {"knn_lm", "base_lm"}) {
    for (auto [name, m] : r["membership"][model].items()) {
      char buf[160];
      snprintf(buf, sizeof(buf), "  %-8s %-10s %22.3f %13.3f %11.3f", model, name.c_str(), m["auc"].get<double>(),
               m["tpr_at_0.1pct_fpr"].get<double>(), m["tpr_at_1pct_fpr"].get<double>());
      line(buf);
    }
  }
  line("");
  line("extraction of stored facts (greedy k-prefix)      kNN-LM   base LM");
  json& xk = r["extraction"]["knn_lm"];
  json& xb = r["extraction"]["base_lm"];
  for (size_t i = 0; i < xk["greedy"].size(); ++i) {
    char buf[160];
    snprintf(buf, sizeof(buf), "  k = %-42d %6.3f  %8.3f", xk["greedy"][i]["k"].get<int>(),
             xk["greedy"][i]["rate"].get<double>(), xb["greedy"][i]["rate"].get<double>());
    line(buf);
  }
  {
    char buf[160];
    snprintf(buf, sizeof(buf), "  sampled (T = 1, k = %d) %27.3f  %8.3f", xk["sampled"]["k"].get<int>(),
             xk["sampled"]["rate"].get<double>(), xb["sampled"]["rate"].get<double>());
    line(buf);
  }
  for (auto [rep, v] : xk["canary_secret"].items()) {
    char buf[160];
    snprintf(buf, sizeof(buf), "  canary secret, inserted x%-22s %6.3f  %8.3f", rep.c_str(), v["rate"].get<double>(),
             xb["canary_secret"][rep]["rate"].get<double>());
    line(buf);
  }
  line("");
  json& d = r["deletion_audit"];
  std::string privleak;
  for (auto [name, v] : d["privleak"].items()) privleak += " " + name + " " + Fixed(v.get<double>(), 4);
  line("deletion audit (" + std::to_string(d["deleted_facts"].get<int64_t>()) + " facts deleted): PrivLeak" +
       privleak);
  line("  exposure before / after / rebuilt: " + Fixed(d["before"]["exposure_mean_extrapolated"].get<double>()) + " / " +
       Fixed(d["after"]["exposure_mean_extrapolated"].get<double>()) + " / " +
       Fixed(d["rebuilt"]["exposure_mean_extrapolated"].get<double>()) + " bits; after deletion " +
       (d["matches_rebuilt"].get<bool>() ? "MATCHES" : "DIFFERS FROM") + " the rebuilt memory bit for bit");
  if (r.contains("parametric_vs_datastore")) {
    line("");
    line("parametric vs datastore (exposure bits, before -> after deleting from the datastore)");
    for (auto row : r["parametric_vs_datastore"]["rows"]) {
      line("  " + row["placement"].get<std::string>() + ": " +
           Fixed(row["before"]["mean_extrapolated"].get<double>()) + " -> " +
           Fixed(row["after_deletion"]["mean_extrapolated"].get<double>()) + "; secret extraction " +
           Fixed(row["extraction_before"].get<double>()) + " -> " + Fixed(row["extraction_after_deletion"].get<double>()));
    }
  }
  line("");
  std::string points;
  for (auto p : r["forgetting"]["points"]) {
    points += " " + std::to_string(p["added_after"].get<int>()) + ": " +
              Fixed(p["exposure"]["mean_extrapolated"].get<double>()) + ";";
  }
  line("forgetting (exposure bits by facts added after):" + points + " after deletion: " +
       Fixed(r["forgetting"]["after_deletion"]["exposure"]["mean_extrapolated"].get<double>()));
  json m = r.contains("memory") && r["memory"].is_object() ? r["memory"] : json::object();
  if (m.value("measured", false)) {
    line("");
    line("memory (memorizing layer " + std::to_string(m["layer"].get<int64_t>()) + ", FIFO capacity " +
         std::to_string(m["capacity"].get<int64_t>()) + " tokens): exposure bits by tokens read after the canaries");
    line("  read after  resident  memory  never read  kNN-LM  secret extraction memory / kNN-LM");
    for (json p : m["forgetting"]["points"]) {
      char buf[200];
      snprintf(buf, sizeof(buf), "  %10lld  %8lld  %6.2f  %10.2f  %6.2f  %.3f / %.3f%s",
               static_cast<long long>(p["read_after"].get<int64_t>()),
               static_cast<long long>(p["canary_tokens_resident"].get<int64_t>()),
               p["memory"]["exposure"]["mean_extrapolated"].get<double>(),
               p["never_read"]["exposure"]["mean_extrapolated"].get<double>(),
               p["knn_lm"]["exposure"]["mean_extrapolated"].get<double>(), p["memory"]["extraction_rate"].get<double>(),
               p["knn_lm"]["extraction_rate"].get<double>(),
               p["matches_never_read"].get<bool>() ? "  (= never read, bit for bit)" : "");
      line(buf);
    }
    line("  model alone: " + Fixed(m["forgetting"]["base_lm"]["exposure"]["mean_extrapolated"].get<double>()) +
         " bits; kNN-LM after deleting the canary facts: " +
         Fixed(m["forgetting"]["knn_lm_after_deletion"]["exposure"]["mean_extrapolated"].get<double>()) + " bits");
    for (json d : m["deletion"]) {
      std::string privleak;
      for (auto [name, v] : d["privleak"].items()) privleak += " " + name + " " + Fixed(v.get<double>(), 4);
      line(std::string("  deletion from ") + (d["policy"] == "fifo" ? "a FIFO" : "an unbounded") + " memory (" +
           std::to_string(d["deleted_documents"].get<int64_t>()) + " documents): PrivLeak" + privleak);
      line("    exposure before / after / never read: " +
           Fixed(d["before"]["exposure"]["mean_extrapolated"].get<double>()) + " / " +
           Fixed(d["after"]["exposure"]["mean_extrapolated"].get<double>()) + " / " +
           Fixed(d["rebuilt"]["exposure"]["mean_extrapolated"].get<double>()) + " bits; after deletion " +
           (d["matches_rebuilt"].get<bool>() ? "MATCHES" : "DIFFERS FROM") +
           " a memory that never read them, bit for bit; verify-deleted passed " +
           std::to_string(d["verified"]["passed"].get<int64_t>()) + " of " +
           std::to_string(d["verified"]["documents"].get<int64_t>()));
    }
  } else if (r.contains("memory")) {
    line("");
    line("memory: not measured (" + m.value("reason", std::string()) + ")");
  }
  json dd = r.contains("datastore_documents") && r["datastore_documents"].is_object() ? r["datastore_documents"]
                                                                                     : json::object();
  if (dd.value("measured", false)) {
    std::string privleak;
    for (auto [name, v] : dd["privleak"].items()) privleak += " " + name + " " + Fixed(v.get<double>(), 4);
    line("");
    line("base datastore documents (" + std::to_string(dd["deleted_documents"].get<int64_t>()) + " of " +
         std::to_string(dd["documents"].get<int64_t>()) + " deleted from an " + dd["index"].get<std::string>() +
         " datastore): PrivLeak" + privleak);
    line("  exposure before / after / rebuilt: " + Fixed(dd["before"]["exposure"]["mean_extrapolated"].get<double>()) +
         " / " + Fixed(dd["after"]["exposure"]["mean_extrapolated"].get<double>()) + " / " +
         Fixed(dd["rebuilt"]["exposure"]["mean_extrapolated"].get<double>()) + " bits; after deletion " +
         (dd["matches_rebuilt"].get<bool>() ? "MATCHES" : "DIFFERS FROM") +
         " a datastore built without them, bit for bit; verify-deleted passed " +
         std::to_string(dd["verified"]["passed"].get<int64_t>()) + " of " +
         std::to_string(dd["verified"]["documents"].get<int64_t>()));
  } else if (r.contains("datastore_documents")) {
    line("");
    line("base datastore documents: not measured (" + dd.value("reason", std::string()) + ")");
  }
  return out;
}

}  // namespace mnemo
