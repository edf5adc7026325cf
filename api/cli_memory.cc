#include "api/cli_memory.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "api/cli.h"
#include "lm/checkpoint.h"
#include "lm/documents.h"
#include "lm/memory_scorer.h"
#include "lm/safetensors.h"
#include "memory/kv_ring.h"
#include "util/blas_threads.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {

Json ReportJson(const PerplexityReport& r, double seconds) {
  return {{"tokens", r.tokens},
          {"bytes", r.bytes},
          {"nll", r.nll},
          {"perplexity", r.perplexity()},
          {"bits_per_byte", r.bits_per_byte()},
          {"seconds", seconds},
          {"tokens_per_second", seconds > 0 ? r.tokens / seconds : 0.0}};
}

// A few tokens of `ids` around `position`, the token at `position` in [brackets].
std::string Snippet(const Tokenizer& tok, const std::vector<int32_t>& ids, int64_t position, int64_t before,
                    int64_t after) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t from = std::max<int64_t>(0, position - before), to = std::min(n, position + after + 1);
  std::string out = tok.Decode(std::vector<int32_t>(ids.begin() + from, ids.begin() + position));
  out += "[" + tok.Decode({ids[position]}) + "]";
  out += tok.Decode(std::vector<int32_t>(ids.begin() + position + 1, ids.begin() + to));
  return out;
}

// The memory for --documents runs: a KvRing of flags.memory_size tokens, searching as flags.search says.
// *search gets what it does ("exact" or "ivf N lists, nprobe P, from F tokens").
Status MakeDocumentMemory(const std::string& model_dir, const GptConfig& config, const MemoryFlags& flags,
                          std::unique_ptr<KvMemory>* out, std::string* search) {
  KvRingOptions o;
  o.heads = config.n_head, o.head_dim = config.n_embd / config.n_head, o.capacity = flags.memory_size;
  o.fp16 = flags.fp16;
  *search = "exact";
  // auto with a ring that can never reach ivf_from tokens: no lists to keep.
  const bool never_ivf = flags.search == "auto" && flags.memory_size > 0 && flags.memory_size < flags.ivf_from;
  if (flags.search != "exact" && !never_ivf) {
    Status s = LoadMemoryIndex(model_dir, config, &o.centroids, &o.lists);
    if (s.IsNotFound() && flags.search == "auto") {
      s = Status::OK();
    } else if (s.IsNotFound()) {
      return Status::InvalidArgument(model_dir + " has no " + kMemoryIndexFile +
                                     ": build one with `mnemo memory index --model " + model_dir +
                                     " --documents TRAIN.jsonl` or search with --memory-search exact");
    }
    MNEMO_RETURN_IF_ERROR(s);
    if (o.lists > 0) {
      o.nprobe = flags.nprobe;
      o.ivf_from = flags.search == "ivf" ? 1 : flags.ivf_from;
      *search = "ivf " + std::to_string(o.lists) + " lists, nprobe " + std::to_string(o.nprobe) + ", from " +
                std::to_string(o.ivf_from) + " tokens";
    }
  }
  std::unique_ptr<KvRing> ring;
  MNEMO_RETURN_IF_ERROR(KvRing::Create(o, &ring));
  *out = std::move(ring);
  return Status::OK();
}

// What every --documents command starts with: BLAS threads as the model's, the model (with a memory layer
// when a memory is asked for), the documents, and (check_document) flags.document among them.
Status OpenDocumentRun(const std::string& model_dir, const MemoryFlags& flags, const DeviceFlag& device_flag,
                       bool check_document, std::unique_ptr<LanguageModel>* model, std::vector<Document>* docs) {
  // The memory's searches and the model's products (both OpenBLAS) get the threads the model gets
  // (--threads), not a pool of every core busy-waiting between small products.
  SetBlasThreads(std::max(1, torch::get_num_threads()));
  torch::Device device = torch::kCPU;
  MNEMO_RETURN_IF_ERROR(device_flag.Resolve(&device));
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(model_dir, model, device));
  if (flags.memory_size > 0 && !(*model)->config.has_memory()) {
    return Status::InvalidArgument(model_dir + " has no memory layer (config.json mnemo_memory_layer): "
                                   "--memory-size needs a model trained or fine-tuned with --memory-layer");
  }
  MNEMO_RETURN_IF_ERROR(ReadDocuments(flags.documents, docs));
  if (check_document && flags.document >= static_cast<int64_t>(docs->size())) {
    return Status::InvalidArgument("--document " + std::to_string(flags.document) + ": " + flags.documents + " has " +
                                   std::to_string(docs->size()) + " documents");
  }
  return Status::OK();
}

void RegisterSearchFlags(CLI::App* app, MemoryFlags* flags) {
  app->add_option("--memory-search", flags->search,
                  "exact, ivf (the model's memory index; `mnemo memory index`) or auto (ivf for memories of at "
                  "least --memory-ivf-from tokens where the index exists)")
      ->capture_default_str()->check(CLI::IsMember({"auto", "exact", "ivf"}));
  app->add_option("--memory-nprobe", flags->nprobe, "Memory IVF lists each query scans")->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--memory-ivf-from", flags->ivf_from, "auto: search the memory by IVF once it holds this many tokens")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
}

}  // namespace

void MemoryFlags::RegisterMemory(CLI::App* app) {
  app->add_option("--memory-size", memory_size, "Memory of the memorizing layer, in tokens (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--memory-topk", memory_topk, "Pairs each query retrieves (default: the model's)")
      ->check(CLI::Range(1, 4096));
  app->add_flag("--memory-fp16", fp16, "Keep the memory's keys and values in fp16");
  RegisterSearchFlags(app, this);
}

void MemoryFlags::RegisterDocument(CLI::App* app, const char* documents_help) {
  app->add_option("--documents", documents, documents_help)->check(CLI::ExistingFile);
  app->add_option("--document", document, "Which document (0-based)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

Status MemoryFlags::CheckWithoutDocuments() const {
  if (!documents.empty()) return Status::OK();
  if (memory_size > 0) return Status::InvalidArgument("--memory-size needs --documents");
  if (copy) return Status::InvalidArgument("--copy needs --documents");
  return Status::OK();
}

void MemoryFlags::Register(CLI::App* app) {
  app->add_option("--documents", documents,
                  "Score JSONL documents ({\"text\", \"source\"?} per line) in order, each with a memory of its "
                  "earlier tokens, instead of --text-file")->check(CLI::ExistingFile);
  RegisterMemory(app);
  app->add_flag("--copy", copy, "Read each document twice and score only the second copy (the copy test)");
  app->add_option("--max-tokens", max_tokens, "Stop after the document that reaches this many scored tokens")
      ->check(CLI::PositiveNumber);
  app->add_option("--examples", examples, "Report this many tokens whose prediction the memory raised most")
      ->check(CLI::Range(0, 1000));
}

void MemoryFlags::RegisterGenerate(CLI::App* app) {
  RegisterDocument(app, "JSONL documents: continue one of them (--document), its earlier tokens in the memory");
  app->add_option("--prefix-tokens", prefix_tokens, "Read only the document's first N tokens (default: all)")
      ->check(CLI::PositiveNumber);
  RegisterMemory(app);
}

void MemoryFlags::RegisterScore(CLI::App* app) {
  RegisterDocument(app, "JSONL documents: score one of them (--document) with a memory of its earlier tokens");
  RegisterMemory(app);
  app->add_flag("--copy", copy, "Read the document twice and score only the second copy (the copy test)");
}

int RunDocumentScore(const std::string& model_dir, const MemoryFlags& flags, const DeviceFlag& device_flag,
                     bool json) {
  std::unique_ptr<LanguageModel> model;
  std::vector<Document> docs;
  Status s = OpenDocumentRun(model_dir, flags, device_flag, true, &model, &docs);
  if (!s.ok()) return Fail(s);
  const Tokenizer& tok = *model->tokenizer;
  const std::vector<std::vector<int32_t>> ids = EncodeDocuments(tok, {docs[flags.document]});
  std::unique_ptr<KvMemory> memory;
  std::string search = "none";
  if (flags.memory_size > 0) {
    s = MakeDocumentMemory(model_dir, model->config, flags, &memory, &search);
    if (!s.ok()) return Fail(s);
  }
  MemoryScoreOptions o;
  o.memory = memory.get();
  o.topk = flags.memory_topk;
  o.copy = flags.copy;
  o.keep_logprobs = true;
  MemoryScoreReport r;
  s = ScoreDocumentsWithMemory(model->net, tok, ids, o, &r);
  if (!s.ok()) return Fail(s);
  if (r.base.tokens == 0) return Fail(Status::InvalidArgument("document " + std::to_string(flags.document) +
                                                              " has nothing to score (fewer than two tokens)"));
  int64_t first = 0;
  const std::vector<int32_t> seq = MemoryScoredSequence(ids[0], tok.eot_id() >= 0 ? tok.eot_id() : 0, flags.copy, &first);
  const std::vector<float>& mem = memory ? r.memory_logprobs : r.base_logprobs;
  if (json) {
    Json tokens = Json::array(), lp = Json::array(), base = Json::array();
    for (size_t k = static_cast<size_t>(first); k < seq.size(); ++k) tokens.push_back(tok.TokenBytes(seq[k]));
    for (float v : mem) lp.push_back(v);
    for (float v : r.base_logprobs) base.push_back(v);
    std::cout << DumpJson({{"document", docs[flags.document].source},
                           {"copy", flags.copy},
                           {"memory_size", flags.memory_size},
                           {"memory_search", search},
                           {"ids", std::vector<int32_t>(seq.begin() + first, seq.end())},
                           {"tokens", tokens},
                           {"logprobs", lp},
                           {"base_logprobs", base},
                           {"perplexity", memory ? r.memory.perplexity() : r.base.perplexity()},
                           {"base_perplexity", r.base.perplexity()},
                           {"bits_per_byte", memory ? r.memory.bits_per_byte() : r.base.bits_per_byte()},
                           {"base_bits_per_byte", r.base.bits_per_byte()}})
              << "\n";
    return 0;
  }
  printf("%6s  %10s  %10s  %s\n", "id", "memory", "base", "token");
  for (size_t k = 0; k < mem.size(); ++k) {
    const int32_t id = seq[static_cast<size_t>(first) + k];
    printf("%6d  %10.4f  %10.4f  %s\n", id, mem[k], r.base_logprobs[k], tok.TokenBytes(id).c_str());
  }
  printf("tokens %zu, perplexity %.4f with memory %ld, %.4f without\n", mem.size(),
         memory ? r.memory.perplexity() : r.base.perplexity(), static_cast<long>(flags.memory_size),
         r.base.perplexity());
  return 0;
}

int RunDocumentGenerate(const std::string& model_dir, const MemoryFlags& flags, const std::string& prompt,
                        const GenerateOptions& generate, const DeviceFlag& device_flag, bool json) {
  std::unique_ptr<LanguageModel> model;
  std::vector<Document> docs;
  Status s = OpenDocumentRun(model_dir, flags, device_flag, true, &model, &docs);
  if (!s.ok()) return Fail(s);
  const Tokenizer& tok = *model->tokenizer;
  std::vector<int32_t> ids = {tok.eot_id() >= 0 ? tok.eot_id() : 0};
  std::vector<int32_t> doc = tok.Encode(docs[flags.document].text);
  if (flags.prefix_tokens > 0 && static_cast<int64_t>(doc.size()) > flags.prefix_tokens) doc.resize(flags.prefix_tokens);
  ids.insert(ids.end(), doc.begin(), doc.end());
  const std::vector<int32_t> extra = tok.Encode(prompt);
  ids.insert(ids.end(), extra.begin(), extra.end());
  // The window starts with the last half window of the context; the rest is in memory (or, without one, gone).
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(ids.size()), model->config.n_positions / 2);
  const int64_t begin = static_cast<int64_t>(ids.size()) - keep;
  std::unique_ptr<KvMemory> memory;
  GenerateOptions options = generate;
  options.stop_token = tok.eot_id();
  std::string search = "none";
  if (flags.memory_size > 0) {
    s = MakeDocumentMemory(model_dir, model->config, flags, &memory, &search);
    if (s.ok()) s = ReadIntoMemory(model->net, ids, begin, WindowOptions{}, memory.get(), 0, 0);
    if (!s.ok()) return Fail(s);
    options.memory = memory.get();
    options.memory_topk = flags.memory_topk;
    options.memory_first_tag = begin;
  }
  const int64_t memory_tokens = memory ? memory->size(0) : 0;
  std::vector<int32_t> window(ids.begin() + begin, ids.end()), out;
  const auto start = std::chrono::steady_clock::now();
  if (!json) std::cout << tok.Decode(window) << std::flush;
  s = Generate(model->net, window, options, &out, [&](int32_t token, float) {
    if (!json && token != options.stop_token) std::cout << tok.TokenBytes(token) << std::flush;
    return true;
  });
  if (!s.ok()) return Fail(s);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (json) {
    std::cout << DumpJson({{"document", docs[flags.document].source},
                           {"context_tokens", ids.size() - 1},
                           {"window", tok.Decode(window)},
                           {"memory_size", flags.memory_size},
                           {"memory_tokens", memory_tokens},
                           {"memory_search", search},
                           {"text", tok.Decode(out)},
                           {"ids", out},
                           {"completion_tokens", out.size()},
                           {"ms_per_token", out.empty() ? 0.0 : ms / out.size()}})
              << "\n";
  } else {
    std::cout << "\n";
  }
  return 0;
}

int RunDocumentPerplexity(const std::string& model_dir, const MemoryFlags& flags, const WindowOptions& window,
                          const DeviceFlag& device_flag, bool json) {
  std::unique_ptr<LanguageModel> model;
  std::vector<Document> docs;
  Status s = OpenDocumentRun(model_dir, flags, device_flag, false, &model, &docs);
  if (!s.ok()) return Fail(s);
  const std::vector<std::vector<int32_t>> ids = EncodeDocuments(*model->tokenizer, docs);
  std::unique_ptr<KvMemory> memory;
  std::string search = "none";
  if (flags.memory_size > 0) {
    s = MakeDocumentMemory(model_dir, model->config, flags, &memory, &search);
    if (!s.ok()) return Fail(s);
  }
  MemoryScoreOptions o;
  o.window = window;
  o.memory = memory.get();
  o.topk = flags.memory_topk;
  o.copy = flags.copy;
  o.max_tokens = flags.max_tokens;
  o.examples = flags.examples;
  MemoryScoreReport r;
  s = ScoreDocumentsWithMemory(model->net, *model->tokenizer, ids, o, &r);
  if (!s.ok()) return Fail(s);
  if (r.base.tokens == 0) return Fail(Status::InvalidArgument(flags.documents + ": nothing to score"));
  Json out = {{"documents", r.documents},
              {"copy", flags.copy},
              {"memory_size", flags.memory_size},
              {"memory_topk", memory ? (flags.memory_topk > 0 ? flags.memory_topk : model->config.memory_topk) : 0},
              {"memory_layer", model->config.memory_layer},
              {"memory_mode", model->config.has_memory() ? model->config.memory_mode : ""},
              {"memory_search", search}};
  out["base"] = ReportJson(r.base, r.base_seconds);
  // With no memory the memorizing layer is plain local attention: "memory" is the base model.
  out["memory"] = memory ? ReportJson(r.memory, r.memory_seconds) : out["base"];
  out["memory"]["mean_memory_tokens"] = r.mean_memory_tokens;
  out["memory"]["max_memory_tokens"] = r.max_memory_tokens;
  out["memory_cost"] = memory && r.base_seconds > 0 ? r.memory_seconds / r.base_seconds : 1.0;
  if (flags.examples > 0) {
    Json examples = Json::array();
    const Tokenizer& tok = *model->tokenizer;
    for (const MemoryExample& ex : r.examples) {
      int64_t first = 0;
      const std::vector<int32_t> seq =
          MemoryScoredSequence(ids[ex.document], tok.eot_id() >= 0 ? tok.eot_id() : 0, flags.copy, &first);
      Json hits = Json::array();
      for (const MemoryExample::Hit& h : ex.hits) {
        hits.push_back({{"position", h.position}, {"head", h.head}, {"weight", h.weight},
                        {"context", Snippet(tok, seq, h.position, 12, 4)}});
      }
      examples.push_back({{"source", docs[ex.document].source},
                          {"position", ex.position},
                          {"token", tok.Decode({seq[ex.position]})},
                          {"base_logprob", ex.base_logprob},
                          {"memory_logprob", ex.memory_logprob},
                          {"context", Snippet(tok, seq, ex.position, 16, 0)},
                          {"retrieved", std::move(hits)}});
    }
    out["examples"] = std::move(examples);
  }
  if (json) {
    std::cout << DumpJson(out) << "\n";
    return 0;
  }
  auto line = [](const char* name, const Json& j) {
    printf("%-8s tokens %ld  bytes %ld  perplexity %.4f  bits/byte %.4f  %.0f tokens/s\n", name,
           j["tokens"].get<long>(), j["bytes"].get<long>(), j["perplexity"].get<double>(),
           j["bits_per_byte"].get<double>(), j["tokens_per_second"].get<double>());
  };
  printf("%ld documents%s, memory %ld tokens (mean %.0f searched)\n", static_cast<long>(r.documents),
         flags.copy ? " (second copies)" : "", static_cast<long>(flags.memory_size), r.mean_memory_tokens);
  line("base", out["base"]);
  line("memory", out["memory"]);
  return 0;
}

void RegisterMemoryCommands(CLI::App& app, Command* selected) {
  auto* mem = app.add_subcommand("memory", "The memorizing layer's memory: its index, and a state's memories");
  mem->require_subcommand(1);
  RegisterMemoryStateCommands(mem, selected);
  struct IndexFlags {
    std::string model, documents;
    int64_t lists = 1024, tokens = 65536;
    uint64_t seed = 1234;
    bool json = false;
  };
  auto f = std::make_shared<IndexFlags>();
  auto* index = mem->add_subcommand(
      "index", "Train the memory index of a memorizing model: per-head k-means centroids of its memory layer's "
               "keys on documents (its training documents), written to MODEL/memory_index.safetensors; large "
               "memories then search by IVF (--memory-search)");
  index->add_option("--model", f->model, "Model directory with a memory layer")->required()
      ->check(CLI::ExistingDirectory);
  index->add_option("--documents", f->documents, "JSONL documents whose keys train the centroids (use training "
                                                 "documents, never the ones you evaluate on)")
      ->required()->check(CLI::ExistingFile);
  index->add_option("--lists", f->lists, "Centroids (inverted lists) per head")->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  index->add_option("--tokens", f->tokens, "Keys read from the documents (at most)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  index->add_option("--seed", f->seed, "k-means seed")->capture_default_str();
  index->add_flag("--json", f->json, "Print the result as JSON");
  index->callback([f, selected] {
    *selected = [f] {
      const auto start = std::chrono::steady_clock::now();
      std::unique_ptr<LanguageModel> model;
      Status s = LoadLanguageModel(f->model, &model, torch::kCPU);
      if (!s.ok()) return Fail(s);
      const GptConfig& config = model->config;
      if (!config.has_memory()) {
        return Fail(Status::InvalidArgument(f->model + " has no memory layer (config.json mnemo_memory_layer)"));
      }
      std::vector<Document> docs;
      s = ReadDocuments(f->documents, &docs);
      if (!s.ok()) return Fail(s);
      const int64_t H = config.n_head, D = config.n_embd / config.n_head;
      std::vector<float> keys, doc_keys, doc_values;
      int64_t n = 0;
      const int32_t bos = model->tokenizer->eot_id() >= 0 ? model->tokenizer->eot_id() : 0;
      std::vector<std::vector<float>> per_head(static_cast<size_t>(H));
      for (size_t d = 0; s.ok() && d < docs.size() && n < f->tokens; ++d) {
        std::vector<int32_t> ids = {bos};
        const std::vector<int32_t> text = model->tokenizer->Encode(docs[d].text);
        ids.insert(ids.end(), text.begin(), text.end());
        const int64_t count = std::min<int64_t>(static_cast<int64_t>(ids.size()), f->tokens - n);
        s = ComputeMemoryPairs(model->net, ids, count, WindowOptions{}, &doc_keys, &doc_values);
        for (int64_t h = 0; s.ok() && h < H; ++h) {
          per_head[h].insert(per_head[h].end(), doc_keys.begin() + h * count * D, doc_keys.begin() + (h + 1) * count * D);
        }
        n += count;
      }
      for (const auto& k : per_head) keys.insert(keys.end(), k.begin(), k.end());
      std::vector<float> centroids;
      if (s.ok()) s = TrainKvCentroids(keys.data(), H, n, D, f->lists, f->seed, &centroids);
      const std::string path = f->model + "/" + kMemoryIndexFile;
      if (s.ok()) {
        s = WriteSafetensors(path, {{"centroids", DType::kF32, {H, f->lists, D}, centroids.data(),
                                     centroids.size() * sizeof(float)}},
                             {{"format", "mnemo memory index"},
                              {"memory_layer", std::to_string(config.memory_layer)},
                              {"keys", std::to_string(n)}});
      }
      if (!s.ok()) return Fail(s);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (f->json) {
        std::cout << DumpJson({{"path", path}, {"lists", f->lists}, {"heads", H}, {"keys", n}, {"seconds", seconds}})
                  << "\n";
      } else {
        printf("%s: %ld lists per head from %ld keys (%.1f s)\n", path.c_str(), static_cast<long>(f->lists),
               static_cast<long>(n), seconds);
      }
      return 0;
    };
  });
}

}  // namespace mnemo::cli
