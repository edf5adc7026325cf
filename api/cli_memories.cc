// The memories of a state, offline (the server's /v1/memories routes do the same while serving):
// memory create|read|ls|rm|verify-deleted --state S. A command opens the state (taking its lock, so not
// while a server owns it) with its model, does its work and closes it.
#include <iostream>

#include "api/cli.h"
#include "api/cli_memory.h"
#include "api/common_flags.h"
#include "api/fact_json.h"
#include "lm/documents.h"
#include "retriever/state_service.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {

struct MemoryStateArgs {
  std::string state;
  bool json = false;
  DeviceFlag device;
};

void AddArgs(CLI::App* cmd, MemoryStateArgs* a) {
  cmd->add_option("--state", a->state, "State directory (from mnemo init) whose model has a memory layer")->required();
  cmd->add_flag("--json", a->json, "Machine-readable output");
}

// Opens the state with its model; FailedPrecondition when the model has no memory layer.
Status OpenMemories(const MemoryStateArgs& a, std::unique_ptr<StateService>* state) {
  StateOptions open;
  MNEMO_RETURN_IF_ERROR(a.device.Resolve(&open.device));
  MNEMO_RETURN_IF_ERROR(StateService::Open(a.state, open, state));
  return (*state)->RequireMemories();
}

void Print(const MemoryStateArgs& a, const Json& j) { std::cout << (a.json ? DumpJson(j) : j.dump(2)) << "\n"; }

}  // namespace

void RegisterMemoryStateCommands(CLI::App* mem, Command* selected) {
  // memory create -----------------------------------------------------------------------------------------
  auto* create = mem->add_subcommand("create", "Create a memory in a state: a FIFO ring of --capacity tokens, or unbounded");
  struct CreateArgs {
    MemoryStateArgs st;
    std::string name;
    int64_t capacity = 0;
  };
  auto ca = std::make_shared<CreateArgs>();
  AddArgs(create, &ca->st);
  create->add_option("--name", ca->name, "A name for people (need not be unique)");
  create->add_option("--capacity", ca->capacity, "Tokens the memory holds, oldest leaving first (0: unbounded)")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{INT32_MAX}));
  create->callback([ca, selected] {
    *selected = [ca] {
      std::unique_ptr<StateService> state;
      Status s = OpenMemories(ca->st, &state);
      MemoryInfo info;
      if (s.ok()) s = state->memories()->Create(ca->name, ca->capacity, &info);
      if (!s.ok()) return Fail(s);
      Print(ca->st, api::MemoryToJson(info));
      return 0;
    };
  });

  // memory read -------------------------------------------------------------------------------------------
  auto* read = mem->add_subcommand("read", "Read documents into a memory: --text, --text-file, or --documents JSONL");
  struct ReadArgs {
    MemoryStateArgs st;
    int64_t memory = 0;
    std::string text, text_file, documents, metadata;
  };
  auto ra = std::make_shared<ReadArgs>();
  AddArgs(read, &ra->st);
  ra->st.device.Register(read);
  read->add_option("--memory", ra->memory, "Memory id")->required();
  auto* t = read->add_option("--text", ra->text, "The document's text");
  auto* tf = read->add_option("--text-file", ra->text_file, "The document's text, from a file")->check(CLI::ExistingFile)->excludes(t);
  read->add_option("--documents", ra->documents, "JSONL, one {\"text\", \"source\"?} per line, read in order")
      ->check(CLI::ExistingFile)->excludes(t)->excludes(tf);
  read->add_option("--metadata", ra->metadata, "A JSON object stored with the document (--text, --text-file)");
  read->callback([ra, selected] {
    *selected = [ra] {
      std::vector<std::pair<std::string, std::string>> docs;  // (text, metadata)
      Status s;
      if (!ra->documents.empty()) {
        std::vector<Document> read_docs;
        s = ReadDocuments(ra->documents, &read_docs);
        for (const Document& d : read_docs) docs.push_back({d.text, DumpJson(Json{{"source", d.source}})});
      } else if (!ra->text_file.empty()) {
        std::string text;
        s = ReadFileToString(ra->text_file, &text);
        docs.push_back({text, ra->metadata});
      } else if (!ra->text.empty()) {
        docs.push_back({ra->text, ra->metadata});
      } else {
        s = Status::InvalidArgument("give --text, --text-file or --documents");
      }
      std::unique_ptr<StateService> state;
      if (s.ok()) s = OpenMemories(ra->st, &state);
      Json out = Json::array();
      for (size_t i = 0; s.ok() && i < docs.size(); ++i) {
        MemoryDocument d;
        int64_t evicted = 0;
        s = state->ReadDocument(ra->memory, docs[i].first, docs[i].second, &d, &evicted);
        if (!s.ok()) {
          if (docs.size() > 1) {
            std::cerr << "mnemo: document " << i + 1 << " of " << docs.size() << " failed; the " << i
                      << " before it were read\n";
          }
          break;
        }
        Json j = api::MemoryDocumentToJson(d);
        j["evicted_tokens"] = evicted;
        out.push_back(j);
      }
      if (!out.empty()) Print(ra->st, out.size() == 1 ? out[0] : out);
      return s.ok() ? 0 : Fail(s);
    };
  });

  // memory ls ---------------------------------------------------------------------------------------------
  auto* ls = mem->add_subcommand("ls", "List the state's memories, or with --memory that memory's documents");
  struct LsArgs {
    MemoryStateArgs st;
    int64_t memory = 0, after = 0, limit = 100;
  };
  auto la = std::make_shared<LsArgs>();
  AddArgs(ls, &la->st);
  ls->add_option("--memory", la->memory, "List this memory's documents");
  ls->add_option("--after", la->after, "Documents after this id (paging)")->check(CLI::NonNegativeNumber);
  ls->add_option("--limit", la->limit, "Documents per page")->capture_default_str()->check(CLI::Range(1, 10000));
  ls->callback([la, selected] {
    *selected = [la] {
      std::unique_ptr<StateService> state;
      Status s = OpenMemories(la->st, &state);
      Json out = Json::array();
      int64_t next = 0;
      if (s.ok() && la->memory == 0) {
        std::vector<MemoryInfo> all;
        s = state->memories()->List(&all);
        for (const MemoryInfo& m : all) out.push_back(api::MemoryToJson(m));
      } else if (s.ok()) {
        std::vector<MemoryDocument> page;
        s = state->memories()->ListDocuments(la->memory, la->after, la->limit, &page, &next);
        for (const MemoryDocument& d : page) out.push_back(api::MemoryDocumentToJson(d));
      }
      if (!s.ok()) return Fail(s);
      if (la->st.json) {
        std::cout << DumpJson({{"data", out}, {"next_after", next == 0 ? Json(nullptr) : Json(next)}}) << "\n";
        return 0;
      }
      for (const Json& j : out) {
        if (la->memory == 0) {
          std::cout << "memory " << j["id"] << "  " << j["name"].get<std::string>() << "  "
                    << (j["capacity"].is_null() ? std::string("unbounded") : "fifo " + j["capacity"].dump() + " tokens")
                    << "  " << j["documents"] << " documents, " << j["stored_tokens"] << " tokens stored, "
                    << j["resident_tokens"] << " resident\n";
        } else {
          std::cout << "document " << j["id"] << "  " << j["tokens"] << " tokens (" << j["resident_tokens"]
                    << " resident)  " << j["metadata"].dump() << "\n";
        }
      }
      if (next != 0) std::cout << "(more: --after " << next << ")\n";
      return 0;
    };
  });

  // memory rm ---------------------------------------------------------------------------------------------
  auto* rm = mem->add_subcommand("rm", "Delete a document from a memory (--document), or a whole memory");
  struct RmArgs {
    MemoryStateArgs st;
    int64_t memory = 0, document = 0;
  };
  auto xa = std::make_shared<RmArgs>();
  AddArgs(rm, &xa->st);
  rm->add_option("--memory", xa->memory, "Memory id")->required();
  rm->add_option("--document", xa->document, "Document id (absent: delete the memory and all its documents)")
      ->check(CLI::PositiveNumber);
  rm->callback([xa, selected] {
    *selected = [xa] {
      std::unique_ptr<StateService> state;
      Status s = OpenMemories(xa->st, &state);
      Json out;
      if (s.ok() && xa->document > 0) {
        MemoryDocument d;
        s = state->memories()->DeleteDocument(xa->memory, xa->document, &d);
        out = {{"memory_id", xa->memory}, {"document_id", xa->document}, {"deleted", true}, {"tokens", d.tokens}};
        if (s.ok()) {
          LogCliAction(state->store(), CliAction("memories.documents.delete",
                                                 {std::to_string(xa->memory) + "/" + std::to_string(xa->document)},
                                                 Json{{"tokens", d.tokens}}.dump()));
        }
      } else if (s.ok()) {
        int64_t documents = 0;
        s = state->memories()->Delete(xa->memory, &documents);
        out = {{"memory_id", xa->memory}, {"deleted", true}, {"documents_deleted", documents}};
        if (s.ok()) {
          LogCliAction(state->store(), CliAction("memories.delete", {std::to_string(xa->memory)},
                                                 Json{{"documents_deleted", documents}}.dump()));
        }
      }
      if (!s.ok()) return Fail(s);
      Print(xa->st, out);
      return 0;
    };
  });

  // memory verify-deleted ---------------------------------------------------------------------------------
  auto* verify = mem->add_subcommand(
      "verify-deleted", "Check that a document deleted from a memory left no trace; with its text, probe the memory with it");
  struct VerifyArgs {
    MemoryStateArgs st;
    int64_t memory = 0, document = 0;
    std::string text, text_file;
  };
  auto va = std::make_shared<VerifyArgs>();
  AddArgs(verify, &va->st);
  va->st.device.Register(verify);
  verify->add_option("--memory", va->memory, "Memory id")->required();
  verify->add_option("--document", va->document, "The deleted document's id")->required();
  auto* vt = verify->add_option("--text", va->text, "The deleted document's text (mnemo keeps no copy)");
  verify->add_option("--text-file", va->text_file, "The deleted document's text, from a file")
      ->check(CLI::ExistingFile)->excludes(vt);
  verify->callback([va, selected] {
    *selected = [va] {
      std::string text = va->text;
      Status s;
      if (!va->text_file.empty()) s = ReadFileToString(va->text_file, &text);
      std::unique_ptr<StateService> state;
      if (s.ok()) s = OpenMemories(va->st, &state);
      MemoryDeletionVerdict v;
      if (s.ok()) s = state->VerifyMemoryDocumentDeleted(va->memory, va->document, text.empty() ? nullptr : &text, &v);
      if (!s.ok()) return Fail(s);
      const Json receipt = api::MemoryDeletionVerdictToJson(va->memory, va->document, v);
      LogCliAction(state->store(), CliAction("memories.documents.verify-deleted",
                                             {std::to_string(va->memory) + "/" + std::to_string(va->document)},
                                             receipt.dump()));
      Print(va->st, receipt);
      return v.passed ? 0 : 1;
    };
  });
}

}  // namespace mnemo::cli
