#include "api/cli_memory.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "api/cli.h"
#include "lm/checkpoint.h"
#include "lm/documents.h"
#include "lm/memory_scorer.h"
#include "memory/kv_ring.h"

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

}  // namespace

void MemoryFlags::Register(CLI::App* app) {
  app->add_option("--documents", documents,
                  "Score JSONL documents ({\"text\", \"source\"?} per line) in order, each with a memory of its "
                  "earlier tokens, instead of --text-file")->check(CLI::ExistingFile);
  app->add_option("--memory-size", memory_size, "Memory of the memorizing layer, in tokens (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--memory-topk", memory_topk, "Pairs each query retrieves (default: the model's)")
      ->check(CLI::Range(1, 4096));
  app->add_flag("--memory-fp16", fp16, "Keep the memory's keys and values in fp16");
  app->add_flag("--copy", copy, "Read each document twice and score only the second copy (the copy test)");
  app->add_option("--max-tokens", max_tokens, "Stop after the document that reaches this many scored tokens")
      ->check(CLI::PositiveNumber);
  app->add_option("--examples", examples, "Report this many tokens whose prediction the memory raised most")
      ->check(CLI::Range(0, 1000));
}

void MemoryFlags::RegisterGenerate(CLI::App* app) {
  app->add_option("--documents", documents,
                  "JSONL documents: continue one of them (--document), its earlier tokens in the memory")
      ->check(CLI::ExistingFile);
  app->add_option("--document", document, "Which document (0-based)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--prefix-tokens", prefix_tokens, "Read only the document's first N tokens (default: all)")
      ->check(CLI::PositiveNumber);
  app->add_option("--memory-size", memory_size, "Memory of the memorizing layer, in tokens (0: none)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--memory-topk", memory_topk, "Pairs each query retrieves (default: the model's)")
      ->check(CLI::Range(1, 4096));
}

int RunDocumentGenerate(const std::string& model_dir, const MemoryFlags& flags, const std::string& prompt,
                        const GenerateOptions& generate, const DeviceFlag& device_flag, bool json) {
  torch::Device device = torch::kCPU;
  Status s = device_flag.Resolve(&device);
  std::unique_ptr<LanguageModel> model;
  if (s.ok()) s = LoadLanguageModel(model_dir, &model, device);
  if (!s.ok()) return Fail(s);
  if (flags.memory_size > 0 && !model->config.has_memory()) {
    return Fail(Status::InvalidArgument(model_dir + " has no memory layer (config.json mnemo_memory_layer): "
                                        "--memory-size needs a model trained or fine-tuned with --memory-layer"));
  }
  std::vector<Document> docs;
  s = ReadDocuments(flags.documents, &docs);
  if (!s.ok()) return Fail(s);
  if (flags.document >= static_cast<int64_t>(docs.size())) {
    return Fail(Status::InvalidArgument("--document " + std::to_string(flags.document) + ": " + flags.documents +
                                        " has " + std::to_string(docs.size()) + " documents"));
  }
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
  if (flags.memory_size > 0) {
    s = MakeKvRing(1, model->config.n_head, model->config.n_embd / model->config.n_head, flags.memory_size, flags.fp16,
                   &memory);
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
  torch::Device device = torch::kCPU;
  Status s = device_flag.Resolve(&device);
  std::unique_ptr<LanguageModel> model;
  if (s.ok()) s = LoadLanguageModel(model_dir, &model, device);
  if (!s.ok()) return Fail(s);
  if (flags.memory_size > 0 && !model->config.has_memory()) {
    return Fail(Status::InvalidArgument(model_dir + " has no memory layer (config.json mnemo_memory_layer): "
                                        "--memory-size needs a model trained or fine-tuned with --memory-layer"));
  }
  std::vector<Document> docs;
  s = ReadDocuments(flags.documents, &docs);
  if (!s.ok()) return Fail(s);
  const std::vector<std::vector<int32_t>> ids = EncodeDocuments(*model->tokenizer, docs);
  std::unique_ptr<KvMemory> memory;
  if (flags.memory_size > 0) {
    s = MakeKvRing(1, model->config.n_head, model->config.n_embd / model->config.n_head, flags.memory_size,
                   flags.fp16, &memory);
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
              {"memory_mode", model->config.has_memory() ? model->config.memory_mode : ""}};
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

}  // namespace mnemo::cli
