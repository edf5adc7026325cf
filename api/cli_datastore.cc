// Datastore commands: build (run the LM over a text, store key -> next token, index the keys) and info.
#include <iostream>

#include "api/cli.h"
#include "api/common_flags.h"
#include "lm/checkpoint.h"
#include "retriever/datastore_builder.h"
#include "util/file_util.h"

namespace mnemo::cli {

void RegisterDatastoreCommands(CLI::App& app, Command* selected) {
  auto* ds = app.add_subcommand("datastore", "kNN-LM datastores");
  ds->require_subcommand(1);

  auto* build = ds->add_subcommand("build", "Build a datastore of (context key -> next token) entries from a text");
  struct BuildArgs {
    std::string model, text_file, out;
    DatastoreBuildOptions options;
    bool json = false, quiet = false;
  };
  auto b = std::make_shared<BuildArgs>();
  build->add_option("--model", b->model, "Model directory")->required();
  build->add_option("--text-file", b->text_file, "Text to memorise")->required()->check(CLI::ExistingFile);
  build->add_option("--out", b->out, "Output datastore directory")->required();
  build->add_option("--index", b->options.finish.index_spec, "Index: Flat, IVF<n>,Flat or IVF<n>,PQ<m>")
      ->capture_default_str();
  build->add_option("--train-sample", b->options.finish.train_sample, "Keys sampled to train IVF/PQ")
      ->capture_default_str()->check(CLI::PositiveNumber);
  build->add_option("--max-entries", b->options.max_entries, "Stop after N entries (0: the whole text)")
      ->check(CLI::NonNegativeNumber);
  RegisterWindowFlags(build, &b->options.window);
  build->add_option("--seed", b->options.finish.seed, "Seed of the training sample")->capture_default_str();
  build->add_flag("--quiet", b->quiet, "No progress output");
  build->add_flag("--json", b->json, "Machine-readable output");
  build->callback([b, selected] {
    *selected = [b] {
      std::unique_ptr<LanguageModel> model;
      Status s = LoadLanguageModel(b->model, &model);
      std::string text;
      if (s.ok()) s = ReadFileToString(b->text_file, &text);
      DatastoreBuildOptions options = b->options;
      options.finish.progress = !b->quiet;
      DatastoreBuildReport report;
      if (s.ok()) s = BuildDatastore(*model, text, b->text_file, b->out, options, &report);
      if (!s.ok()) return Fail(s);
      Json out = {{"out", b->out}, {"entries", report.entries}, {"index", options.finish.index_spec},
                  {"forward_seconds", report.forward_seconds}, {"index_seconds", report.index_seconds},
                  {"entries_per_second", report.entries / (report.forward_seconds + report.index_seconds)}};
      if (b->json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        printf("wrote %ld entries to %s (model %.1fs, index %.1fs)\n", static_cast<long>(report.entries),
               b->out.c_str(), report.forward_seconds, report.index_seconds);
      }
      return 0;
    };
  });

  auto* info = ds->add_subcommand("info", "Print a datastore's manifest (and verify its checksums)");
  auto dir = std::make_shared<std::string>();
  info->add_option("--datastore", *dir, "Datastore directory")->required();
  info->callback([dir, selected] {
    *selected = [dir] {
      std::unique_ptr<Datastore> ds;
      DatastoreOpenOptions open;
      open.verify_checksums = true;
      Status s = Datastore::Open(*dir, open, &ds);
      if (!s.ok()) return Fail(s);
      std::cout << ds->manifest().ToJson();
      return 0;
    };
  });
}

}  // namespace mnemo::cli
