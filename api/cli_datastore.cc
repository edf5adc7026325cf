// Datastore commands: build (run the LM over a text, store key -> next token, index the keys) and info.
#include <iostream>

#include "api/cli.h"
#include "api/common_flags.h"
#include "lm/checkpoint.h"
#include "retriever/datastore_builder.h"
#include "retriever/recall.h"
#include "util/file_util.h"

namespace mnemo::cli {

void RegisterDatastoreCommands(CLI::App& app, Command* selected) {
  auto* ds = app.add_subcommand("datastore", "kNN-LM datastores");
  ds->require_subcommand(1);

  auto* build = ds->add_subcommand("build", "Build a datastore of (context key -> next token) entries from a text");
  struct BuildArgs {
    std::string model, text_file, out;
    DatastoreBuildOptions options;
    DeviceFlag device;
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
  b->device.Register(build);
  build->add_flag("--quiet", b->quiet, "No progress output");
  build->add_flag("--json", b->json, "Machine-readable output");
  build->callback([b, selected] {
    *selected = [b] {
      torch::Device device = torch::kCPU;
      Status s = b->device.Resolve(&device);
      if (!s.ok()) return Fail(s);
      std::unique_ptr<LanguageModel> model;
      s = LoadLanguageModel(b->model, &model, device);
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

  auto* recall = ds->add_subcommand(
      "recall", "Recall@k of a datastore's index against exact search, with queries from the model over a text");
  struct RecallArgs {
    std::string datastore, model, text_file;
    int64_t queries = 1000;
    int k = 64, nprobe = 32;
    DeviceFlag device;
  };
  auto r = std::make_shared<RecallArgs>();
  recall->add_option("--datastore", r->datastore, "Datastore directory")->required();
  recall->add_option("--model", r->model, "Model the datastore was built with")->required();
  recall->add_option("--text-file", r->text_file, "Text whose contexts are the queries")->required()
      ->check(CLI::ExistingFile);
  recall->add_option("--queries", r->queries, "Number of queries (the text's first contexts)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  recall->add_option("--k", r->k, "Neighbours compared")->capture_default_str()->check(CLI::Range(1, KnnOptions::kMaxK));
  recall->add_option("--nprobe", r->nprobe, "IVF lists searched")->capture_default_str()->check(CLI::PositiveNumber);
  r->device.Register(recall);
  recall->callback([r, selected] {
    *selected = [r] {
      torch::Device device = torch::kCPU;
      Status s = r->device.Resolve(&device);
      if (!s.ok()) return Fail(s);
      std::unique_ptr<LanguageModel> model;
      s = LoadLanguageModel(r->model, &model, device);
      std::unique_ptr<Datastore> ds;
      DatastoreOpenOptions open;
      if (s.ok()) open.expected_model_fingerprint = ModelFingerprint(model->net);
      if (s.ok()) s = Datastore::Open(r->datastore, open, &ds);
      std::string text;
      if (s.ok()) s = ReadFileToString(r->text_file, &text);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> ids = model->tokenizer->Encode(text);
      std::vector<torch::Tensor> keys;
      int64_t have = 0;
      SpanRequest request;
      request.logprobs = false;
      request.knn_keys = true;
      s = ForEachScoredSpan(model->net, ids, {}, request, [&](const ScoredSpan& span) {
        if (have < r->queries) {
          const int64_t take = std::min(span.count, r->queries - have);
          keys.push_back(span.knn_keys.slice(0, 0, take));
          have += take;
        }
        return Status::OK();
      });
      RecallReport report;
      if (s.ok() && keys.empty()) s = Status::InvalidArgument(r->text_file + ": no contexts to query with");
      if (s.ok()) s = MeasureRecall(*ds, torch::cat(keys, 0), r->k, r->nprobe, &report);
      if (!s.ok()) return Fail(s);
      std::cout << DumpJson({{"datastore", r->datastore}, {"index", ds->manifest().index_spec},
                             {"entries", ds->size()}, {"queries", report.queries}, {"k", report.k},
                             {"nprobe", r->nprobe}, {"recall", report.recall},
                             {"exact_seconds", report.exact_seconds}, {"index_seconds", report.index_seconds}})
                << "\n";
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
