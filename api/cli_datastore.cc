// Datastore commands: build (run the LM over documents or a text, store key -> next token, index the keys),
// documents, rm, verify-deleted, recall, info and split (shards: memory/datastore_shards.h).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "api/cli.h"
#include "api/common_flags.h"
#include "lm/checkpoint.h"
#include "api/fact_json.h"
#include "indexes/auto_index.h"
#include "indexes/index_spec.h"
#include <cstdio>
#include <filesystem>

#include "memory/datastore_shards.h"
#include "retriever/datastore_builder.h"
#include "retriever/deletion_verifier.h"
#include "retriever/recall.h"
#include "util/file_util.h"

namespace mnemo::cli {

void RegisterDatastoreCommands(CLI::App& app, Command* selected) {
  auto* ds = app.add_subcommand("datastore", "kNN-LM datastores");
  ds->require_subcommand(1);

  auto* build = ds->add_subcommand(
      "build", "Build a datastore of (context key -> next token) entries from documents or a text");
  struct BuildArgs {
    std::string model, text_file, documents, train_text, out;
    bool lines = false;
    DatastoreBuildOptions options;
    DeviceFlag device;
    bool json = false, quiet = false;
    int shards = 0;
  };
  auto b = std::make_shared<BuildArgs>();
  build->add_option("--model", b->model, "Model directory")->required();
  auto* docs = build->add_option("--documents", b->documents,
                                 "JSON Lines of {\"text\", \"id\"?, \"metadata\"?, \"train\"?}: one document per "
                                 "line, each scored on its own and deletable later (datastore rm)")
                   ->check(CLI::ExistingFile);
  auto* text = build->add_option("--text-file", b->text_file,
                                 "Text to memorise: a single document (with --lines: one per non-blank line)")
                   ->check(CLI::ExistingFile)->excludes(docs);
  build->add_flag("--lines", b->lines, "With --text-file: every non-blank line is a document (ids: line numbers)")
      ->needs(text);
  build->add_option("--train-text", b->train_text,
                    "A separate (public) text whose keys train the IVF/PQ structures; its entries are not stored, and "
                    "deleting any document is then exact without retraining")->check(CLI::ExistingFile);
  build->add_option("--out", b->out, "Output datastore directory")->required();
  build->add_option("--shards", b->shards,
                    "Write N shards that share the trained structures (as `datastore split` does, from the whole "
                    "built beside --out first: twice the disk while it runs); 0: one datastore")
      ->check(CLI::Range(0, 4096));
  b->options.finish.index_spec = "auto";
  build->add_option("--index", b->options.finish.index_spec,
                    "Index: auto (Flat, exact, below " + std::to_string(kAutoExactBelow) +
                        " entries; IVF-PQ with about 4 sqrt(entries) lists and dim/4 codes above), Flat, "
                        "IVF<n>,Flat or IVF<n>,PQ<m>")
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
      if (b->documents.empty() && b->text_file.empty()) {
        return Fail(Status::InvalidArgument("give the corpus with --documents FILE.jsonl or --text-file FILE"));
      }
      std::error_code ec;
      if (b->shards > 0 && std::filesystem::exists(b->out, ec) && !std::filesystem::is_empty(b->out, ec)) {
        return Fail(Status::InvalidArgument("--out " + b->out + " is not empty: the shards need a new directory"));
      }
      // With --shards, the whole is built here first, then split into --out and removed.
      const std::string whole = b->shards > 0 ? b->out + ".whole" : b->out;
      if (b->shards > 0) std::filesystem::remove_all(whole, ec);  // a build that died before its split
      torch::Device device = torch::kCPU;
      Status s = b->device.Resolve(&device);
      if (!s.ok()) return Fail(s);
      std::vector<DatastoreDocumentInput> documents;
      s = b->documents.empty() ? ReadTextDocuments(b->text_file, b->lines, &documents)
                               : ReadDatastoreDocuments(b->documents, &documents);
      std::string train_text;
      if (s.ok() && !b->train_text.empty()) s = ReadFileToString(b->train_text, &train_text);
      std::unique_ptr<LanguageModel> model;
      if (s.ok()) s = LoadLanguageModel(b->model, &model, device);
      if (s.ok() && b->options.finish.index_spec != "auto") {
        // A bad spec is refused before the model runs over the text, not after.
        IndexSpec spec;
        s = ParseIndexSpec(b->options.finish.index_spec, static_cast<int>(model->config.n_embd), &spec);
        if (!s.ok()) s = Status::InvalidArgument("--index: " + s.message());
      }
      DatastoreBuildOptions options = b->options;
      options.finish.progress = !b->quiet;
      DatastoreBuildReport report;
      const std::string source = b->documents.empty() ? b->text_file : b->documents;
      if (s.ok()) {
        s = BuildDatastoreFromDocuments(*model, documents, source, b->train_text.empty() ? nullptr : &train_text,
                                        b->train_text, whole, options, &report);
      }
      if (!s.ok()) return Fail(s);
      std::unique_ptr<Datastore> built;
      s = Datastore::Open(whole, DatastoreOpenOptions(), &built);
      if (!s.ok()) return Fail(s);
      const std::string pool = built->manifest().training_pool;
      const std::string index = built->manifest().index_spec;
      built.reset();
      Json out = {{"out", b->out}, {"entries", report.entries}, {"documents", report.documents},
                  {"index", index}, {"training_pool", pool},
                  {"forward_seconds", report.forward_seconds}, {"index_seconds", report.index_seconds},
                  {"entries_per_second", report.entries / (report.forward_seconds + report.index_seconds)}};
      if (b->shards > 0) {
        SplitOptions split;
        split.shards = b->shards;
        split.progress = !b->quiet;
        SplitReport split_report;
        s = SplitDatastore(whole, b->out, split, &split_report);
        if (!s.ok()) {
          std::fprintf(stderr, "the whole datastore is kept at %s\n", whole.c_str());
          return Fail(s);
        }
        std::filesystem::remove_all(whole, ec);
        out["shards"] = b->shards;
        out["split_seconds"] = split_report.seconds;
      }
      if (b->json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        printf("wrote %ld entries of %ld documents to %s (model %.1fs, index %.1fs)\n",
               static_cast<long>(report.entries), static_cast<long>(report.documents), b->out.c_str(),
               report.forward_seconds, report.index_seconds);
        if (pool == "all" && report.documents > 0) {
          printf("note: the index was trained on a sample of all entries, so deleting a document will need "
                 "--retrain; build with --train-text (or mark training documents \"train\": true) to avoid it\n");
        }
      }
      return 0;
    };
  });

  // datastore documents ---------------------------------------------------------------------------------
  auto* list = ds->add_subcommand("documents", "List a datastore's documents (provenance), or show one");
  struct ListArgs {
    std::string datastore, id;
  };
  auto la = std::make_shared<ListArgs>();
  list->add_option("--datastore", la->datastore, "Datastore directory")->required();
  list->add_option("--document", la->id, "Only this document");
  list->callback([la, selected] {
    *selected = [la] {
      std::unique_ptr<Datastore> ds;
      Status s = Datastore::Open(la->datastore, DatastoreOpenOptions(), &ds);
      if (!s.ok()) return Fail(s);
      if (!la->id.empty()) {
        DatastoreDocument d;
        s = ds->GetDocument(la->id, &d);
        if (!s.ok()) return Fail(s);
        std::cout << DumpJson(api::DatastoreDocumentToJson(*ds, d)) << "\n";
        return 0;
      }
      if (!ds->has_provenance()) {
        DatastoreDocument none;
        return Fail(ds->GetDocument("", &none));
      }
      for (const DatastoreDocument& d : ds->Documents()) std::cout << api::DatastoreDocumentToJson(*ds, d).dump() << "\n";
      return 0;
    };
  });

  // datastore rm ----------------------------------------------------------------------------------------
  auto* rm = ds->add_subcommand(
      "rm", "Delete documents from a datastore: their entries leave the index, keys and values (see verify-deleted)");
  struct RmArgs {
    std::string datastore, ids_file;
    std::vector<std::string> ids;
    bool retrain = false, json = false, quiet = false;
  };
  auto ra = std::make_shared<RmArgs>();
  rm->add_option("--datastore", ra->datastore, "Datastore directory")->required();
  auto* one = rm->add_option("--document", ra->ids, "Document id (repeatable)");
  rm->add_option("--ids-file", ra->ids_file, "Document ids, one per line (deleted as one batch)")
      ->check(CLI::ExistingFile)->excludes(one);
  rm->add_flag("--retrain", ra->retrain,
               "Allow deleting documents the index's centroids were trained on: train again on the remaining "
               "pool and re-add every live entry");
  rm->add_flag("--quiet", ra->quiet, "No progress output");
  rm->add_flag("--json", ra->json, "Machine-readable output");
  rm->callback([ra, selected] {
    *selected = [ra] {
      std::vector<std::string> ids = ra->ids;
      if (!ra->ids_file.empty()) {
        std::string text;
        Status s = ReadFileToString(ra->ids_file, &text);
        if (!s.ok()) return Fail(s);
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
          if (!line.empty() && line.back() == '\r') line.pop_back();
          if (!line.empty()) ids.push_back(line);
        }
      }
      if (ids.empty()) return Fail(Status::InvalidArgument("name documents with --document ID or --ids-file FILE"));
      std::unique_ptr<Datastore> ds;
      Status s = Datastore::Open(ra->datastore, DatastoreOpenOptions(), &ds);
      DocumentDeleteOptions options;
      options.retrain = ra->retrain;
      options.progress = !ra->quiet;
      DocumentDeleteReport report;
      if (s.ok()) s = ds->DeleteDocuments(ids, options, &report);
      if (!s.ok()) return Fail(s);
      Json out = {{"datastore", ra->datastore}, {"deleted", report.deleted.size()}, {"entries", report.entries},
                  {"deletion", report.seq}, {"retrained", report.retrained}, {"seconds", report.seconds},
                  {"index_seconds", report.index_seconds}, {"live_entries", ds->size()}};
      if (ra->json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        printf("deleted %zu documents (%ld entries) in %.2fs%s; %ld entries remain\n", report.deleted.size(),
               static_cast<long>(report.entries), report.seconds, report.retrained ? ", index retrained" : "",
               static_cast<long>(ds->size()));
      }
      return 0;
    };
  });

  // datastore verify-deleted ----------------------------------------------------------------------------
  auto* verify = ds->add_subcommand(
      "verify-deleted", "Check that a deleted document left no trace in the datastore's files; with its text and "
                        "model, also scan every file for its keys");
  struct VerifyArgs {
    std::string datastore, id, model, text_file;
    DeviceFlag device;
  };
  auto va = std::make_shared<VerifyArgs>();
  verify->add_option("--datastore", va->datastore, "Datastore directory")->required();
  verify->add_option("--document", va->id, "The deleted document's id")->required();
  auto* vm = verify->add_option("--model", va->model, "The datastore's model (with --text-file)");
  verify->add_option("--text-file", va->text_file, "The deleted document's text (the datastore keeps no copy)")
      ->check(CLI::ExistingFile)->needs(vm);
  va->device.Register(verify);
  verify->callback([va, selected] {
    *selected = [va] {
      std::unique_ptr<Datastore> ds;
      Status s = Datastore::Open(va->datastore, DatastoreOpenOptions(), &ds);
      if (!s.ok()) return Fail(s);
      DocumentDeletionVerdict v;
      std::string text;
      std::unique_ptr<LanguageModel> model;
      if (!va->text_file.empty()) {
        torch::Device device = torch::kCPU;
        s = va->device.Resolve(&device);
        if (s.ok()) s = ReadFileToString(va->text_file, &text);
        if (s.ok()) s = LoadLanguageModel(va->model, &model, device);
        if (s.ok() && ModelFingerprint(model->net) != ds->manifest().model_fingerprint) {
          s = Status::InvalidArgument(va->model + ": not the model the datastore was built with");
        }
      } else if (!va->model.empty()) {
        s = Status::InvalidArgument("--model is only used with --text-file");
      }
      if (s.ok()) s = VerifyDocumentDeleted(model.get(), *ds, va->id, va->text_file.empty() ? nullptr : &text, &v);
      if (!s.ok()) return Fail(s);
      std::cout << DumpJson(api::DocumentDeletionVerdictToJson(v)) << "\n";
      return v.passed ? 0 : 1;
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
      DatastoreOpenOptions open;
      open.verify_checksums = true;
      if (IsShardedDatastore(*dir)) {  // the set, after checking every shard (checksums included)
        std::unique_ptr<ShardedDatastore> sharded;
        Status s = ShardedDatastore::Open(*dir, open, nullptr, &sharded);
        if (!s.ok()) return Fail(s);
        std::cout << sharded->manifest().ToJson();
        return 0;
      }
      std::unique_ptr<Datastore> ds;
      Status s = Datastore::Open(*dir, open, &ds);
      if (!s.ok()) return Fail(s);
      std::cout << ds->manifest().ToJson();
      return 0;
    };
  });

  // datastore split -------------------------------------------------------------------------------------
  auto* split = ds->add_subcommand(
      "split", "Split a datastore into shards that share its trained structures (served by one process, or one "
               "per shard under mpirun: docs/ARCHITECTURE.md)");
  struct SplitArgs {
    std::string datastore, out;
    int shards = 2;
    bool quiet = false, json = false;
  };
  auto sa = std::make_shared<SplitArgs>();
  split->add_option("--datastore", sa->datastore, "Datastore directory to split (left as it is)")
      ->required()->check(CLI::ExistingDirectory);
  split->add_option("--shards", sa->shards, "Number of shards")->required()->check(CLI::Range(1, 4096));
  split->add_option("--out", sa->out, "Directory to create: shards.json, trained.faiss, shard-<i>/")->required();
  split->add_flag("--quiet", sa->quiet, "No progress output");
  split->add_flag("--json", sa->json, "Machine-readable output");
  split->callback([sa, selected] {
    *selected = [sa] {
      SplitOptions options;
      options.shards = sa->shards;
      options.progress = !sa->quiet;
      SplitReport report;
      Status s = SplitDatastore(sa->datastore, sa->out, options, &report);
      if (!s.ok()) return Fail(s);
      Json shards = Json::array();
      for (const auto& sh : report.shards) shards.push_back({{"dir", sh.dir}, {"first", sh.first}, {"count", sh.count}});
      if (sa->json) {
        std::cout << DumpJson({{"out", sa->out}, {"shards", shards}, {"seconds", report.seconds}}) << "\n";
      } else {
        printf("split %s into %zu shards in %.2fs:\n", sa->datastore.c_str(), report.shards.size(), report.seconds);
        for (const auto& sh : report.shards) {
          printf("  %s/%s  entries [%ld, %ld)\n", sa->out.c_str(), sh.dir.c_str(), static_cast<long>(sh.first),
                 static_cast<long>(sh.first + sh.count));
        }
      }
      return 0;
    };
  });
}

}  // namespace mnemo::cli
