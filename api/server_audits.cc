// Leakage audits over HTTP (eval/audit.h): POST /v1/audits starts one on its own thread (one at a time;
// serving goes on), GET /v1/audits/{id} reports its status and progress, .../report.json and
// .../report.html return the reports, DELETE /v1/audits/{id} cancels a running one, GET /v1/audits lists
// them. Admin-only (the pre-routing handler checks the role).
//
// Reports live in <audit dir>/<id>/ and survive restarts; a job's status does not (an id whose directory
// holds a report is "succeeded", one without is "failed", stage "interrupted": the server stopped while it ran).
#include <malloc.h>

#include <cstdint>
#include <filesystem>
#include <regex>
#include <set>
#include <system_error>

#include "api/server_impl.h"
#include "eval/audit.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using api::Json;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status OptionalIntList(const Json& body, const char* name, int min, int max, std::vector<int>* out) {
  if (!body.contains(name) || body[name].is_null()) return Status::OK();
  const Json& v = body[name];
  if (!v.is_array() || v.empty()) return Status::InvalidArgument(std::string(name) + ": must be a non-empty array of integers");
  out->clear();
  for (const Json& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < min || x.get<int64_t>() > max) {
      return Status::InvalidArgument(std::string(name) + ": each value must be an integer in [" + std::to_string(min) +
                                     ", " + std::to_string(max) + "]");
    }
    out->push_back(x.get<int>());
  }
  return Status::OK();
}

Status ParseAuditOptions(const Json& body, const KnnOptions& knn_defaults, AuditOptions* o) {
  for (const auto& [key, value] : body.items()) {
    static const std::set<std::string> kKnown = {"canaries", "references", "repetitions", "members",
                                                 "extraction_prefixes", "extraction_samples", "forgetting_added",
                                                 "finetune_steps", "memory_capacity", "datastore_documents",
                                                 "seed", "knn"};
    if (kKnown.count(key) == 0) return Status::InvalidArgument(key + ": unknown audit option");
  }
  // Only the JSON types and the int range are checked here; AuditOptions::Validate holds the bounds.
  int64_t canaries = o->canaries, references = o->references, members = o->members,
          samples = o->extraction_samples, steps = o->finetune_steps, seed = static_cast<int64_t>(o->seed);
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "canaries", 0, INT32_MAX, &canaries));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "references", 0, INT32_MAX, &references));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "members", 0, INT32_MAX, &members));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "extraction_samples", 0, INT32_MAX, &samples));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "finetune_steps", 0, INT32_MAX, &steps));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "seed", 0, INT64_MAX, &seed));
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "memory_capacity", 0, INT32_MAX, &o->memory_capacity));
  int64_t datastore_documents = o->datastore_documents;
  MNEMO_RETURN_IF_ERROR(api::OptionalInt(body, "datastore_documents", 0, INT32_MAX, &datastore_documents));
  o->datastore_documents = static_cast<int>(datastore_documents);
  MNEMO_RETURN_IF_ERROR(OptionalIntList(body, "repetitions", 0, INT32_MAX, &o->repetitions));
  MNEMO_RETURN_IF_ERROR(OptionalIntList(body, "extraction_prefixes", 0, INT32_MAX, &o->extraction_prefixes));
  MNEMO_RETURN_IF_ERROR(OptionalIntList(body, "forgetting_added", 0, INT32_MAX, &o->forgetting_added));
  MNEMO_RETURN_IF_ERROR(ParseKnn(body, knn_defaults, &o->knn));
  o->canaries = static_cast<int>(canaries);
  o->references = static_cast<int>(references);
  o->members = static_cast<int>(members);
  o->extraction_samples = static_cast<int>(samples);
  o->finetune_steps = static_cast<int>(steps);
  o->seed = static_cast<uint64_t>(seed);
  o->knn.enabled = true;
  return Status::OK();
}

// The ids this server makes: audit-<unix ms>-<counter>.
bool IsAuditId(const std::string& id) {
  static const std::regex kId("audit-[0-9]+-[0-9]+");
  return std::regex_match(id, kId);
}

}  // namespace

struct Server::Impl::AuditJob {
  std::string id, dir;
  std::atomic<bool> cancel{false};
  // Guarded by Impl::audit_mu.
  std::string status = "running";  // running, succeeded, failed, cancelled
  std::string stage;
  double progress = 0;
  std::string error;
  int64_t created_at_ms = 0, finished_at_ms = 0;
  std::string summary;
};

std::string Server::Impl::AuditDir() const {
  return options.audit_dir.empty() ? options.state + "/audits" : options.audit_dir;
}

Json Server::Impl::AuditStatusJson(const AuditJob& job) const {
  Json j = {{"id", job.id},
            {"object", "audit"},
            {"status", job.status},
            {"stage", job.stage},
            {"progress", job.progress},
            {"created_at_ms", job.created_at_ms}};
  if (job.finished_at_ms > 0) j["finished_at_ms"] = job.finished_at_ms;
  if (!job.error.empty()) j["error"] = job.error;
  if (job.status == "succeeded") {
    j["report_json"] = "/v1/audits/" + job.id + "/report.json";
    j["report_html"] = "/v1/audits/" + job.id + "/report.html";
    j["summary"] = job.summary;
  }
  return j;
}

void Server::Impl::HandleStartAudit(const httplib::Request& req, httplib::Response& res) {
  Json body = Json::object();
  if (!req.body.empty() && !ParseBody(req, res, &body)) return;
  AuditOptions o;
  Status s = ParseAuditOptions(body, options.knn, &o);
  auto job = std::make_shared<AuditJob>();
  job->created_at_ms = NowMs();
  {
    std::lock_guard<std::mutex> lock(audit_mu);
    job->id = "audit-" + std::to_string(job->created_at_ms) + "-" + std::to_string(++audit_counter);
  }
  job->dir = AuditDir() + "/" + job->id;
  o.scratch_dir = job->dir + "/scratch";
  if (s.ok()) s = o.Validate();
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  {
    std::lock_guard<std::mutex> lock(audit_mu);
    if (running_audit != nullptr) {
      return SendError(res, {409, "audit " + running_audit->id + " is running; one audit runs at a time", "conflict"});
    }
    if (audit_thread.joinable()) audit_thread.join();  // the previous one has finished
    s = EnsureDirectory(job->dir);
    if (!s.ok()) return SendError(res, ErrorFromStatus(s));
    running_audit = job;
    audits[job->id] = job;
    o.cancel = &job->cancel;
    o.progress = [this, job](const std::string& stage, double fraction) {
      std::lock_guard<std::mutex> lock(audit_mu);
      job->stage = stage;
      job->progress = fraction;
    };
    try {
      audit_thread = std::thread([this, job, o] {
        torch::set_num_threads(1);  // one core for the audit, the rest for serving
        Json report;
        std::string summary;
        Status run;
        try {  // an exception here must fail the job, not terminate the server
          run = RunAudit(*model, *store, o, &report);
          if (run.ok()) run = WriteAuditReport(job->dir, report);
          if (run.ok()) summary = AuditSummary(report);
        } catch (const std::exception& e) {
          run = Status::Internal(std::string("audit failed: ") + e.what());
        }
        if (!run.ok()) {
          std::error_code ec;
          std::filesystem::remove_all(job->dir, ec);  // nothing half-written stays behind
        }
#ifdef __GLIBC__
        malloc_trim(0);  // the audit's models and copies are freed: give their pages back (docs/RELIABILITY.md, "Soak")
#endif
        std::lock_guard<std::mutex> lock(audit_mu);
        job->finished_at_ms = NowMs();
        if (run.ok()) {
          job->status = "succeeded";
          job->summary = summary;
        } else {
          job->status = run.IsCancelled() ? "cancelled" : "failed";
          job->error = run.ToString();
          std::fprintf(stderr, "mnemo serve: audit %s %s: %s\n", job->id.c_str(), job->status.c_str(),
                       job->error.c_str());
        }
        running_audit.reset();
      });
    } catch (const std::system_error& e) {
      running_audit.reset();
      audits.erase(job->id);
      return SendError(res, {500, std::string("cannot start the audit thread: ") + e.what(), "server_error"});
    }
    LogAction(ActionFor(req, "audits.start", {job->id}));
    SendJson(res, AuditStatusJson(*job), 202);
  }
  res.set_header("Location", "/v1/audits/" + job->id);
}

std::shared_ptr<Server::Impl::AuditJob> Server::Impl::FindAudit(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(audit_mu);
    auto it = audits.find(id);
    if (it != audits.end()) return it->second;
  }
  // A finished audit of an earlier run of the server: its report is on disk (report.json is written
  // last). Read outside the lock, which progress updates and status requests take.
  const std::string dir = AuditDir() + "/" + id;
  std::string text;
  if (!IsAuditId(id)) return nullptr;
  auto job = std::make_shared<AuditJob>();
  job->id = id;
  job->dir = dir;
  if (!ReadFileToString(dir + "/report.json", &text).ok()) {
    // A directory without a report that no job of this process owns: the server stopped (or was
    // killed) while the audit ran; its scratch copy went at start-up. Reported as failed, not forgotten
    // (the action log names the audit it started).
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return nullptr;
    job->status = "failed";
    job->stage = "interrupted";
    job->error = "interrupted: the server stopped while this audit ran; no report was written";
  } else {
    job->status = "succeeded";
    job->progress = 1;
    job->stage = "done";
  }
  Json report = Json::parse(text, nullptr, false);
  if (job->status == "succeeded" && !report.is_discarded()) {
    try {
      job->summary = AuditSummary(report);
    } catch (const std::exception&) {  // a report of another version: served, not summarised
    }
  }
  std::lock_guard<std::mutex> lock(audit_mu);
  return audits.emplace(id, job).first->second;
}

void Server::Impl::HandleGetAudit(const httplib::Request& req, httplib::Response& res) {
  auto job = FindAudit(req.matches[1].str());
  if (job == nullptr) return SendError(res, {404, "no audit " + req.matches[1].str(), "not_found"});
  std::lock_guard<std::mutex> lock(audit_mu);
  SendJson(res, AuditStatusJson(*job));
}

void Server::Impl::HandleAuditReport(const httplib::Request& req, httplib::Response& res) {
  auto job = FindAudit(req.matches[1].str());
  if (job == nullptr) return SendError(res, {404, "no audit " + req.matches[1].str(), "not_found"});
  {
    std::lock_guard<std::mutex> lock(audit_mu);
    if (job->status != "succeeded") {
      return SendError(res, {409, "audit " + job->id + " is " + job->status + "; its report exists once it succeeds",
                             "conflict"});
    }
  }
  const std::string kind = req.matches[2].str();
  std::string body;
  Status s = ReadFileToString(job->dir + "/report." + kind, &body);
  if (!s.ok()) return SendError(res, ErrorFromStatus(s));
  res.set_content(body, kind == "json" ? "application/json" : "text/html; charset=utf-8");
}

void Server::Impl::HandleCancelAudit(const httplib::Request& req, httplib::Response& res) {
  auto job = FindAudit(req.matches[1].str());
  if (job == nullptr) return SendError(res, {404, "no audit " + req.matches[1].str(), "not_found"});
  job->cancel = true;
  std::lock_guard<std::mutex> lock(audit_mu);
  if (job->status == "running") LogAction(ActionFor(req, "audits.cancel", {job->id}));
  SendJson(res, AuditStatusJson(*job));
}

void Server::Impl::HandleListAudits(const httplib::Request&, httplib::Response& res) {
  // Finished audits of earlier runs first, so they are listed too.
  std::error_code ec;
  std::vector<std::string> ids;
  for (const auto& entry : std::filesystem::directory_iterator(AuditDir(), ec)) {
    ids.push_back(entry.path().filename().string());
  }
  for (const std::string& id : ids) {
    if (IsAuditId(id)) FindAudit(id);
  }
  Json data = Json::array();
  std::lock_guard<std::mutex> lock(audit_mu);
  for (const auto& [id, job] : audits) data.push_back(AuditStatusJson(*job));
  SendJson(res, {{"object", "list"}, {"data", data}});
}

void Server::Impl::StopAudits() {
  std::shared_ptr<AuditJob> job;
  {
    std::lock_guard<std::mutex> lock(audit_mu);
    job = running_audit;
  }
  if (job != nullptr) job->cancel = true;
  if (audit_thread.joinable()) audit_thread.join();
}

void Server::Impl::CleanAuditScratch() {
  // Scratch copies of audits that a crash interrupted.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(AuditDir(), ec)) {
    if (IsAuditId(entry.path().filename().string())) std::filesystem::remove_all(entry.path() / "scratch", ec);
  }
}

}  // namespace mnemo
