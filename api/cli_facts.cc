// State and fact commands for offline use: init, facts add|get|ls|rm|verify-deleted, fsck. A command
// opens the state (taking its lock, so not while a server owns it), does its work and closes it.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "api/cli.h"
#include "api/common_flags.h"
#include "api/fact_json.h"
#include "lm/checkpoint.h"
#include "lm/gpt_config.h"
#include "memory/fact_store.h"
#include "memory/layer_memories.h"
#include "memory/state_dir.h"
#include "retriever/state_service.h"
#include "util/blas_threads.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {

Status OpenStore(const std::string& dir, std::unique_ptr<FactStore>* out) {
  return FactStore::Open(dir, FactStoreOptions(), out);
}

// --where field=value: the value is JSON when it parses as a scalar (1, true, "x"), else a string.
Status ParseWhere(const std::string& where, FactFilter* filter) {
  if (where.empty()) return Status::OK();
  const size_t eq = where.find('=');
  if (eq == std::string::npos || eq == 0) return Status::InvalidArgument("--where needs field=value, got \"" + where + "\"");
  filter->metadata_field = where.substr(0, eq);
  filter->metadata_value_json = api::MetadataMatchValue(where.substr(eq + 1));
  return Status::OK();
}

struct StateArgs {
  std::string state;
  bool json = false;
};

void AddStateFlags(CLI::App* cmd, StateArgs* a) {
  cmd->add_option("--state", a->state, "State directory (from mnemo init)")->required();
  cmd->add_flag("--json", a->json, "Machine-readable output");
}

}  // namespace

void RegisterFactCommands(CLI::App& app, Command* selected) {
  // init ------------------------------------------------------------------------------------------------
  auto* init = app.add_subcommand("init", "Create a state directory: a model, an optional base datastore, facts");
  struct InitArgs {
    std::string state, model, datastore;
    bool json = false;
  };
  auto ia = std::make_shared<InitArgs>();
  init->add_option("--state", ia->state, "State directory to create")->required();
  init->add_option("--model", ia->model, "Model directory")->required()->check(CLI::ExistingDirectory);
  init->add_option("--datastore", ia->datastore, "Base datastore (mnemo datastore build)")->check(CLI::ExistingDirectory);
  init->add_flag("--json", ia->json, "Machine-readable output");
  init->callback([ia, selected] {
    *selected = [ia] {
      StateConfig config;
      Status s = StateService::Create(ia->state, ia->model, ia->datastore, &config);
      if (!s.ok()) return Fail(s);
      if (ia->json) {
        std::cout << DumpJson(Json::parse(config.ToJson())) << "\n";
      } else {
        printf("created state %s (model %s%s%s)\n", ia->state.c_str(), config.model_path.c_str(),
               config.datastore_path.empty() ? "" : ", datastore ", config.datastore_path.c_str());
      }
      return 0;
    };
  });

  auto* facts = app.add_subcommand("facts", "Add, list and delete facts in a state (offline; the server exposes the same)");
  facts->require_subcommand(1);

  // facts add --------------------------------------------------------------------------------------------
  auto* add = facts->add_subcommand("add", "Add facts: --text, or --jsonl with one {\"text\", \"client_id\", \"metadata\"} per line");
  struct AddArgs {
    StateArgs st;
    std::string text, jsonl, client_id, metadata;
    DeviceFlag device;
    int encode_threads = 0;
  };
  auto aa = std::make_shared<AddArgs>();
  AddStateFlags(add, &aa->st);
  auto* text_opt = add->add_option("--text", aa->text, "The fact's text");
  add->add_option("--jsonl", aa->jsonl, "A file of facts, one JSON object per line")->check(CLI::ExistingFile)->excludes(text_opt);
  add->add_option("--client-id", aa->client_id, "Client id of the fact (with --text)");
  add->add_option("--metadata", aa->metadata, "Metadata JSON object (with --text)");
  add->add_option("--encode-threads", aa->encode_threads,
                  "Forward passes side by side on the CPU, each on one LibTorch and one BLAS thread (0: cores / --threads)")
      ->check(CLI::Range(0, 256));
  aa->device.Register(add);
  add->callback([aa, selected] {
    *selected = [aa] {
      torch::Device device = torch::kCPU;
      if (Status s = aa->device.Resolve(&device); !s.ok()) return Fail(s);
      std::vector<FactText> texts;
      if (!aa->jsonl.empty()) {
        std::ifstream in(aa->jsonl);
        std::string line;
        int64_t number = 0;
        while (std::getline(in, line)) {
          ++number;
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
          auto j = Json::parse(line, nullptr, false);
          const std::string where = aa->jsonl + ":" + std::to_string(number) + ": ";
          if (j.is_discarded() || !j.is_object()) return Fail(Status::InvalidArgument(where + "not a JSON object"));
          if (!j.contains("text") || !j["text"].is_string()) {
            return Fail(Status::InvalidArgument(where + "\"text\" must be a string"));
          }
          FactText f;
          f.text = j["text"].get<std::string>();
          if (j.contains("client_id")) {
            if (!j["client_id"].is_string()) return Fail(Status::InvalidArgument(where + "\"client_id\" must be a string"));
            f.client_id = j["client_id"].get<std::string>();
          }
          if (j.contains("metadata")) {
            if (!j["metadata"].is_object()) return Fail(Status::InvalidArgument(where + "\"metadata\" must be an object"));
            f.metadata_json = j["metadata"].dump();
          }
          texts.push_back(std::move(f));
        }
        if (texts.empty()) return Fail(Status::InvalidArgument(aa->jsonl + ": no facts"));
      } else if (!aa->text.empty()) {
        if (!aa->metadata.empty()) {
          auto j = Json::parse(aa->metadata, nullptr, false);
          if (j.is_discarded() || !j.is_object()) return Fail(Status::InvalidArgument("--metadata must be a JSON object"));
        }
        texts.push_back({aa->text, aa->client_id, aa->metadata});
      } else {
        return Fail(Status::InvalidArgument("give --text or --jsonl"));
      }
      StateOptions open;
      open.device = device;
      if (device.is_cpu() && texts.size() > 1) {
        // A file of facts encodes one batch per core, each pass on one BLAS thread: on 2 cores this beats
        // one pass using both (docs/PERFORMANCE.md, Facts at runtime).
        const int cores = HardwareThreads();
        open.encode_threads = aa->encode_threads > 0 ? aa->encode_threads : std::max(1, cores / torch::get_num_threads());
        if (open.encode_threads > 1) SetBlasThreads(1);
      }
      std::unique_ptr<StateService> state;
      Status s = StateService::Open(aa->st.state, open, &state);
      std::vector<int64_t> ids;
      const ActionRecord action = CliAction("facts.add");
      if (s.ok()) s = state->AddFacts(texts, &ids, 1, &action);
      if (s.ok()) s = state->Close();
      if (!s.ok()) return Fail(s);
      if (aa->st.json) {
        std::cout << DumpJson(ids.size() == 1 ? Json{{"id", ids[0]}} : Json{{"ids", ids}}) << "\n";
      } else {
        for (int64_t id : ids) printf("%ld\n", static_cast<long>(id));
      }
      return 0;
    };
  });

  // facts get --------------------------------------------------------------------------------------------
  auto* get = facts->add_subcommand("get", "Show one fact");
  struct GetArgs {
    StateArgs st;
    int64_t id = 0;
  };
  auto ga = std::make_shared<GetArgs>();
  AddStateFlags(get, &ga->st);
  get->add_option("--id", ga->id, "Fact id")->required();
  get->callback([ga, selected] {
    *selected = [ga] {
      std::unique_ptr<FactStore> store;
      Status s = OpenStore(ga->st.state, &store);
      FactRecord f;
      if (s.ok()) s = store->Get(ga->id, false, &f);
      if (s.IsNotFound()) {
        Tombstone t;
        if (store->GetTombstone(ga->id, &t).ok()) s = Status::NotFound("fact " + std::to_string(ga->id) + " was deleted");
      }
      if (!s.ok()) return Fail(s);
      Json j = api::FactToJson(f);
      if (ga->st.json) {
        std::cout << DumpJson(j) << "\n";
      } else {
        std::cout << j.dump(2) << "\n";
      }
      return 0;
    };
  });

  // facts ls ---------------------------------------------------------------------------------------------
  auto* ls = facts->add_subcommand("ls", "List facts, oldest first, a page at a time");
  struct LsArgs {
    StateArgs st;
    std::string client_id, where;
    int64_t after = 0, limit = 100;
  };
  auto la = std::make_shared<LsArgs>();
  AddStateFlags(ls, &la->st);
  ls->add_option("--client-id", la->client_id, "Only this client's facts");
  ls->add_option("--where", la->where, "Only facts whose metadata field equals a value: field=value");
  ls->add_option("--after", la->after, "Page: facts with id greater than this")->check(CLI::NonNegativeNumber);
  ls->add_option("--limit", la->limit, "Page size")->capture_default_str()->check(CLI::Range(1, 10000));
  ls->callback([la, selected] {
    *selected = [la] {
      ListOptions options;
      options.filter.client_id = la->client_id;
      options.after_id = la->after;
      options.limit = la->limit;
      Status s = ParseWhere(la->where, &options.filter);
      std::unique_ptr<FactStore> store;
      if (s.ok()) s = OpenStore(la->st.state, &store);
      std::vector<FactRecord> page;
      int64_t next = 0, total = 0;
      if (s.ok()) s = store->List(options, &page, &next);
      if (s.ok()) s = store->Count(options.filter, &total);
      if (!s.ok()) return Fail(s);
      if (la->st.json) {
        Json items = Json::array();
        for (const FactRecord& f : page) items.push_back(api::FactToJson(f));
        Json out = {{"facts", items}, {"total", total}};
        out["next_after"] = next == 0 ? Json(nullptr) : Json(next);
        std::cout << DumpJson(out) << "\n";
      } else {
        for (const FactRecord& f : page) printf("%ld\t%s\n", static_cast<long>(f.id), f.text.c_str());
        if (next != 0) fprintf(stderr, "more: --after %ld\n", static_cast<long>(next));
      }
      return 0;
    };
  });

  // facts rm ---------------------------------------------------------------------------------------------
  auto* rm = facts->add_subcommand("rm", "Delete facts by id, client id or metadata field");
  struct RmArgs {
    StateArgs st;
    std::vector<int64_t> ids;
    std::string client_id, where;
    bool verify = false;
    DeviceFlag device;  // Of the model --verify runs.
  };
  auto ra = std::make_shared<RmArgs>();
  AddStateFlags(rm, &ra->st);
  auto* id_opt = rm->add_option("--id", ra->ids, "Fact id (repeatable)");
  rm->add_option("--client-id", ra->client_id, "Delete every fact of this client")->excludes(id_opt);
  rm->add_option("--where", ra->where, "Delete every fact whose metadata field equals a value: field=value")->excludes(id_opt);
  rm->add_flag("--verify", ra->verify, "Then verify each deletion, probing with the fact's text while it is still in memory");
  ra->device.Register(rm);
  rm->callback([ra, selected] {
    *selected = [ra] {
      torch::Device device = torch::kCPU;
      Status s = ra->device.Resolve(&device);
      if (!s.ok()) return Fail(s);
      FactFilter filter;
      filter.client_id = ra->client_id;
      s = ParseWhere(ra->where, &filter);
      if (s.ok() && ra->ids.empty() && filter.empty()) s = Status::InvalidArgument("give --id, --client-id or --where");
      // --verify probes with the model, so it opens the state with it (checked before anything is deleted).
      std::unique_ptr<StateService> state;
      std::unique_ptr<FactStore> owned;
      FactStore* store = nullptr;
      if (s.ok() && ra->verify) {
        StateOptions open;
        open.device = device;
        s = StateService::Open(ra->st.state, open, &state);
        if (s.ok()) store = &state->store();
      } else if (s.ok()) {
        s = OpenStore(ra->st.state, &owned);
        store = owned.get();
      }
      std::vector<FactRecord> deleted;
      // The log names the filter's fields, never their values.
      Json fields = Json::array();
      if (!filter.client_id.empty()) fields.push_back("client_id");
      if (!filter.metadata_field.empty()) fields.push_back("metadata." + filter.metadata_field);
      const ActionRecord action =
          CliAction("facts.delete", {}, ra->ids.empty() ? Json{{"filter_fields", fields}}.dump() : "{}");
      if (s.ok()) {
        s = ra->ids.empty() ? store->DeleteMatching(filter, &deleted, &action) : store->Delete(ra->ids, &deleted, &action);
      }
      if (s.ok()) s = store->Close();
      if (!s.ok()) return Fail(s);
      Json out = {{"deleted", Json::array()}};
      for (const FactRecord& f : deleted) out["deleted"].push_back(f.id);
      bool all_passed = true;
      if (state != nullptr && !deleted.empty()) {
        out["verification"] = Json::array();
        for (const FactRecord& f : deleted) {
          DeletionVerdict v;
          s = state->VerifyDeleted(f.id, &f.text, KnnOptions(), &v);
          if (!s.ok()) return Fail(s);
          all_passed = all_passed && v.passed;
          out["verification"].push_back(api::DeletionVerdictToJson(v));
          LogCliAction(*store, CliAction("facts.verify-deleted", {std::to_string(f.id)}, out["verification"].back().dump()));
        }
      }
      if (ra->st.json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        printf("deleted %zu fact(s)\n", deleted.size());
        if (out.contains("verification")) std::cout << out["verification"].dump(2) << "\n";
      }
      return all_passed ? 0 : 1;
    };
  });

  // facts verify-deleted ---------------------------------------------------------------------------------
  auto* verify = facts->add_subcommand(
      "verify-deleted", "Check that a deleted fact left no trace; with its text, probe with its prefixes against a rebuilt state");
  struct VerifyArgs {
    StateArgs st;
    int64_t id = 0;
    std::string text, text_file;
    KnnFlags knn;
    DeviceFlag device;
  };
  auto va = std::make_shared<VerifyArgs>();
  AddStateFlags(verify, &va->st);
  verify->add_option("--id", va->id, "The deleted fact's id")->required();
  auto* vt = verify->add_option("--text", va->text, "The deleted fact's text (mnemo keeps no copy)");
  verify->add_option("--text-file", va->text_file, "The deleted fact's text, from a file")->check(CLI::ExistingFile)->excludes(vt);
  va->knn.RegisterKnobs(verify);
  va->device.Register(verify);
  verify->callback([va, selected] {
    *selected = [va] {
      torch::Device device = torch::kCPU;
      Status s = va->device.Resolve(&device);
      if (s.ok()) s = va->knn.options.Validate();
      std::string text = va->text;
      if (s.ok() && !va->text_file.empty()) s = ReadFileToString(va->text_file, &text);
      StateOptions open;
      open.device = device;
      std::unique_ptr<StateService> state;
      if (s.ok()) s = StateService::Open(va->st.state, open, &state);
      DeletionVerdict v;
      if (s.ok()) s = state->VerifyDeleted(va->id, text.empty() ? nullptr : &text, va->knn.options, &v);
      if (!s.ok()) return Fail(s);
      const Json evidence = api::DeletionVerdictToJson(v);
      // The verdict is kept in the state's action log as the deletion's receipt.
      LogCliAction(state->store(), CliAction("facts.verify-deleted", {std::to_string(va->id)}, evidence.dump()));
      std::cout << (va->st.json ? DumpJson(evidence) : evidence.dump(2)) << "\n";
      return v.passed ? 0 : 1;
    };
  });

  // fsck -------------------------------------------------------------------------------------------------
  auto* fsck = app.add_subcommand("fsck", "Check a state: database, snapshot + replay against the database, trained structures");
  struct FsckArgs {
    StateArgs st;
    bool repair = false;
  };
  auto fa = std::make_shared<FsckArgs>();
  AddStateFlags(fsck, &fa->st);
  fsck->add_flag("--repair", fa->repair, "Fix what is found: rebuild the index from the database, write a fresh snapshot");
  fsck->callback([fa, selected] {
    *selected = [fa] {
      FactStoreOptions options;
      options.read_only_check = !fa->repair;
      std::unique_ptr<FactStore> store;
      Status s = FactStore::Open(fa->st.state, options, &store);
      if (!s.ok()) return Fail(s);
      const RecoveryReport& r = store->recovery();
      const bool trained_ok = store->segment_trained_fingerprint() == store->base_trained_fingerprint();
      std::string database_check;
      s = store->CheckDatabase(&database_check);
      if (!s.ok()) return Fail(s);
      // The memorizing layer's memories, when the state has them: the database and every ring against it.
      std::string memories_check = "none";
      if (std::filesystem::exists(MemoriesDbPath(fa->st.state))) {
        StateConfig config;
        std::string config_text;
        GptConfig gpt;
        LayerMemoriesOptions mo;
        std::unique_ptr<LayerMemories> memories;
        s = ReadStateConfig(fa->st.state, &config);
        if (s.ok()) s = ReadFileToString(config.model_path + "/config.json", &config_text);
        if (s.ok()) s = GptConfig::FromJson(config_text, config.model_path + "/config.json", &gpt);
        mo.heads = gpt.n_head;
        mo.head_dim = gpt.head_dim();
        if (s.ok()) s = LayerMemories::Open(MemoriesDbPath(fa->st.state), mo, &memories);
        if (s.ok()) s = memories->Check(&memories_check);
        if (!s.ok()) return Fail(s);
        if (memories_check.empty()) memories_check = "ok";
      }
      // Facts on shards: each shard's own check, and what it held against the catalogue at open.
      std::string shards_check;
      s = store->CheckFactShards(&shards_check);
      if (!s.ok()) return Fail(s);
      const bool shards_in_line =
          r.shard_facts_missing == 0 && r.shard_facts_orphans == 0 && r.shard_facts_uncommitted == 0;
      const bool consistent = r.missing_entries == 0 && r.orphan_entries == 0 && r.snapshot_problem.empty() &&
                              trained_ok && database_check == "ok" && (memories_check == "ok" || memories_check == "none") &&
                              (shards_check == "ok" || shards_check == "none") && shards_in_line;
      Json out = {{"state", fa->st.state},
                  {"facts", r.facts},
                  {"fact_entries", r.fact_entries},
                  {"base_entries", store->base_entries()},
                  {"snapshot_seq", r.snapshot_seq},
                  {"snapshot_problem", r.snapshot_problem},
                  {"replayed_changes", r.replayed_changes},
                  {"snapshot_chunks", r.chunks},
                  {"chunks_loaded", r.chunks_loaded},
                  {"chunks_rebuilt", r.chunks_rebuilt},
                  {"missing_entries", r.missing_entries},
                  {"orphan_entries", r.orphan_entries},
                  {"trained_structures_match_base", trained_ok},
                  {"database_check", database_check},
                  {"memories_check", memories_check},
                  {"facts_on_shards", r.facts_on_shards},
                  {"shard_facts_missing", r.shard_facts_missing},
                  {"shard_facts_orphans", r.shard_facts_orphans},
                  {"shard_facts_uncommitted", r.shard_facts_uncommitted},
                  {"shards_check", shards_check},
                  {"consistent", consistent},
                  {"repaired", fa->repair && (r.rebuilt || !shards_in_line)},
                  {"seconds", r.seconds}};
      if (fa->st.json) {
        std::cout << DumpJson(out) << "\n";
      } else {
        std::cout << out.dump(2) << "\n";
      }
      return consistent || fa->repair ? 0 : 1;
    };
  });
}

}  // namespace mnemo::cli
