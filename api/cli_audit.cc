// Leakage commands: `mnemo audit` (the whole audit of a state, on a scratch copy; eval/audit.h) and
// `mnemo exposure` (how exposed one secret inside a stored fact or a text is).
#include <cmath>
#include <filesystem>
#include <iostream>

#include "api/cli.h"
#include "api/common_flags.h"
#include "eval/audit.h"
#include "eval/leakage.h"
#include "retriever/state_service.h"
#include "util/parse.h"

namespace mnemo::cli {
namespace {

// "1,4,16" -> {1, 4, 16}.
Status ParseInts(const std::string& flag, const std::string& text, std::vector<int>* out) {
  std::vector<int64_t> values;
  Status s = ParseInt64List(text, INT32_MIN, INT32_MAX, &values);
  if (!s.ok()) return Status::InvalidArgument(flag + " takes comma-separated integers, got \"" + text + "\"");
  out->assign(values.begin(), values.end());
  return Status::OK();
}

}  // namespace

void RegisterAuditCommands(CLI::App& app, Command* selected) {
  // audit -----------------------------------------------------------------------------------------------
  auto* audit = app.add_subcommand(
      "audit", "Leakage and unlearning audit of a state (exposure, membership inference, extraction, deletion, "
               "forgetting) on a scratch copy; writes report.json and report.html");
  struct AuditArgs {
    std::string state, out, repetitions = "1,4,16", prefixes = "2,4,8", forgetting = "0,100,400,1600";
    AuditOptions options;
    KnnFlags knn;
    DeviceFlag device;  // The parametric experiment's fine-tuning runs on the CPU whatever it is.
    bool json = false;
  };
  auto aa = std::make_shared<AuditArgs>();
  // The kNN-LM settings `make serve` serves with (scripts/serve.sh); the default audit of the default
  // state then takes under 3 minutes on 2 cores (docs/RESULTS.md). Pass the settings you serve with.
  aa->knn.options.k = 64;
  aa->knn.options.nprobe = 8;
  audit->add_option("--state", aa->state, "State directory (from mnemo init); only read")->required()
      ->check(CLI::ExistingDirectory);
  audit->add_option("--out", aa->out, "Directory for report.json and report.html")->required();
  audit->add_option("--canaries", aa->options.canaries, "Canaries per repetition count (as many never inserted)")
      ->capture_default_str();
  audit->add_option("--references", aa->options.references, "Random secrets each canary is ranked against")
      ->capture_default_str();
  audit->add_option("--repetitions", aa->repetitions, "Copies of a canary inserted, one group per count")
      ->capture_default_str();
  audit->add_option("--members", aa->options.members, "Synthetic facts stored for membership inference "
                                                       "(as many held out)")->capture_default_str();
  audit->add_option("--extraction-prefixes", aa->prefixes, "Prefix lengths k of k-prefix extraction")
      ->capture_default_str();
  audit->add_option("--extraction-samples", aa->options.extraction_samples, "Stored facts tried for extraction")
      ->capture_default_str();
  audit->add_option("--forgetting", aa->forgetting, "Facts added after the tracked canaries, one point each")
      ->capture_default_str();
  audit->add_option("--finetune-steps", aa->options.finetune_steps,
                    "Steps fine-tuning a copy of the model for parametric vs datastore (0: skip)")
      ->capture_default_str();
  audit->add_option("--memory-capacity", aa->options.memory_capacity,
                    "Tokens M of the FIFO memories of the memory section (models with a memorizing layer; points "
                    "at M/4, M/2, M, 2M tokens read after the canaries; 0: skip)")
      ->capture_default_str();
  audit->add_option("--datastore-documents", aa->options.datastore_documents,
                    "Filler documents of the base-datastore section's scratch datastore (members and canaries are "
                    "deleted from it as documents; 0: skip)")
      ->capture_default_str();
  audit->add_option("--seed", aa->options.seed, "Seed of every random choice")->capture_default_str();
  aa->knn.RegisterKnobs(audit);
  aa->device.Register(audit);
  audit->add_flag("--json", aa->json, "Print report.json instead of the summary");
  audit->callback([aa, selected] {
    *selected = [aa] {
      AuditOptions& o = aa->options;
      torch::Device device = torch::kCPU;
      Status s = aa->device.Resolve(&device);
      if (s.ok()) s = ParseInts("--repetitions", aa->repetitions, &o.repetitions);
      if (s.ok()) s = ParseInts("--extraction-prefixes", aa->prefixes, &o.extraction_prefixes);
      if (s.ok()) s = ParseInts("--forgetting", aa->forgetting, &o.forgetting_added);
      o.knn = aa->knn.options;
      o.scratch_dir = aa->out + "/.audit-scratch";
      if (s.ok()) s = o.Validate();
      if (!s.ok()) return Fail(s);
      // A scratch copy left by an interrupted run of this command is ours to remove.
      std::error_code ec;
      std::filesystem::remove_all(o.scratch_dir, ec);
      StateOptions open;
      open.device = device;
      open.store.snapshot_every = 0;
      open.store.read_only_check = true;  // never write to the live state
      std::unique_ptr<StateService> state;
      s = StateService::Open(aa->state, open, &state);
      if (!s.ok()) return Fail(s);
      std::string last;
      o.progress = [&last](const std::string& stage, double fraction) {
        if (stage == last) return;
        last = stage;
        fprintf(stderr, "audit: %3.0f%% %s\n", 100 * fraction, stage.c_str());
      };
      Json report;
      s = RunAudit(state->model(), state->store(), o, &report);
      if (s.ok()) s = WriteAuditReport(aa->out, report);
      if (!s.ok()) return Fail(s);
      if (aa->json) {
        std::cout << DumpJson(report) << "\n";
      } else {
        std::cout << AuditSummary(report) << "\nreports: " << aa->out << "/report.json, " << aa->out
                  << "/report.html\n";
      }
      return 0;
    };
  });

  // exposure --------------------------------------------------------------------------------------------
  auto* exposure = app.add_subcommand(
      "exposure", "How exposed is a secret inside a stored fact or a text: its rank among random strings of the "
                  "same shape, under the kNN-LM and the base LM");
  struct ExposureArgs {
    std::string state, text, secret;
    int64_t fact = 0;
    int references = 1000;
    uint64_t seed = 1;
    KnnFlags knn;
    DeviceFlag device;
    bool json = false;
  };
  auto ea = std::make_shared<ExposureArgs>();
  exposure->add_option("--state", ea->state, "State directory (from mnemo init)")->required()
      ->check(CLI::ExistingDirectory);
  auto* fact = exposure->add_option("--fact", ea->fact, "Id of the stored fact that holds the secret");
  exposure->add_option("--text", ea->text, "A text that holds the secret (instead of --fact)")->excludes(fact);
  exposure->add_option("--secret", ea->secret, "The secret: a substring of the text (its first occurrence)")
      ->required();
  exposure->add_option("--references", ea->references, "Random strings of the secret's shape to rank against")
      ->capture_default_str()->check(CLI::Range(7, 1000000));
  exposure->add_option("--seed", ea->seed, "Seed of the references")->capture_default_str();
  ea->knn.RegisterKnobs(exposure);
  ea->device.Register(exposure);
  exposure->add_flag("--json", ea->json, "Machine-readable output");
  exposure->callback([ea, selected] {
    *selected = [ea] {
      if (ea->fact <= 0 && ea->text.empty()) return Fail(Status::InvalidArgument("give --fact ID or --text TEXT"));
      torch::Device device = torch::kCPU;
      Status s = ea->device.Resolve(&device);
      if (s.ok()) s = ea->knn.options.Validate();
      if (!s.ok()) return Fail(s);
      StateOptions open;
      open.device = device;
      open.store.read_only_check = true;
      std::unique_ptr<StateService> state;
      s = StateService::Open(ea->state, open, &state);
      std::string text = ea->text;
      if (s.ok() && ea->fact > 0) {
        FactRecord record;
        s = state->store().Get(ea->fact, false, &record);
        text = record.text;
      }
      if (!s.ok()) return Fail(s);
      const size_t at = text.find(ea->secret);
      if (ea->secret.empty() || at == std::string::npos) {
        return Fail(Status::InvalidArgument("the secret \"" + ea->secret + "\" does not occur in the text"));
      }
      ScoredModel knn{&state->model(), &state->store(), ea->knn.options};
      ScoredModel base{&state->model(), nullptr, ea->knn.options};
      base.knn.enabled = false;
      ExposureResult with_knn, without;
      s = SecretExposure(knn, text, at, ea->secret.size(), ea->references, ea->seed, &with_knn);
      if (s.ok()) s = SecretExposure(base, text, at, ea->secret.size(), ea->references, ea->seed, &without);
      if (!s.ok()) return Fail(s);
      auto result = [](const ExposureResult& r) {
        return Json{{"secret_bits", r.canary_bits},
                    {"rank_exposure", r.rank_exposure},
                    {"extrapolated_exposure", r.extrapolated_exposure}};
      };
      Json out = {{"text", text},
                  {"secret", ea->secret},
                  {"references", ea->references},
                  {"rank_exposure_max_bits", std::log2(ea->references + 1.0)},
                  {"knn_lm", result(with_knn)},
                  {"base_lm", result(without)}};
      if (ea->json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        printf("exposure of \"%s\" (bits; rank exposure at most %.2f with %d references, ~1.44 when not "
               "memorized)\n  kNN-LM:  rank %.2f, extrapolated %.2f\n  base LM: rank %.2f, extrapolated %.2f\n",
               ea->secret.c_str(), std::log2(ea->references + 1.0), ea->references, with_knn.rank_exposure,
               with_knn.extrapolated_exposure, without.rank_exposure, without.extrapolated_exposure);
      }
      return 0;
    };
  });
}

}  // namespace mnemo::cli
