// Inference commands: score, eval ppl, generate — each with the base LM or, given --datastore, kNN-LM.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <sstream>

#include "api/cli.h"
#include "api/cli_memory.h"
#include "api/common_flags.h"
#include "lm/checkpoint.h"
#include "lm/generator.h"
#include "lm/scorer.h"
#include "retriever/dual_scorer.h"
#include "util/blas_threads.h"
#include "util/parse.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {

constexpr const char* kOverlapHelp =
    "Search each batch's positions on a second thread beside the next batch's forward pass (default: measured "
    "on the first batches, whichever is faster)";
constexpr const char* kNoOverlapHelp =
    "Search each batch's positions after its forward pass, on every core (default: measured on the first "
    "batches, whichever is faster)";

// Batch scoring with a datastore: where the searches run (lm/scorer.h WindowOptions::Placement). After the
// pass they get every core with automatic --threads (N with --threads N).
void SetUpSearchPlacement(bool overlap, bool no_overlap, WindowOptions* window) {
  window->placement = overlap ? WindowOptions::Placement::kBeside
                      : no_overlap ? WindowOptions::Placement::kAfter
                                   : WindowOptions::Placement::kAuto;
  window->callback_threads = ThreadsFlag() == 0 ? HardwareThreads() : 0;
}

void AddPointersFlag(CLI::App* app, KnnOptions* options) {
  app->add_option("--pointers", options->min_pointers,
                  "RetoMaton pointers: skip the search where at least this many of the previous position's "
                  "neighbours carried the token that came and continue in the datastore (0: search every position)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
}

Status ParseIdList(const std::string& text, std::vector<int32_t>* ids) {
  std::vector<int64_t> values;
  Status s = ParseInt64List(text, 0, INT32_MAX, &values);
  if (!s.ok()) return Status::InvalidArgument("--ids: " + s.message() + ": not a token id (give comma-separated ids)");
  ids->assign(values.begin(), values.end());
  return Status::OK();
}

Json PerplexityJson(const std::vector<float>& logprobs, int64_t bytes) {
  const PerplexityReport r = PerplexityReport::FromLogprobs(logprobs, bytes);
  return {{"tokens", r.tokens}, {"bytes", r.bytes}, {"nll", r.nll}, {"perplexity", r.perplexity()},
          {"bits_per_byte", r.bits_per_byte()}};
}

struct ModelAndMemory {
  std::unique_ptr<LanguageModel> model;
  std::unique_ptr<KnnMemory> datastore;
};

// Checks the device and the kNN flags before loading anything, then loads the model onto the device and
// opens its memory.
Status LoadAll(const std::string& model_dir, const KnnFlags& knn, const DeviceFlag& device_flag, ModelAndMemory* out) {
  torch::Device device = torch::kCPU;
  MNEMO_RETURN_IF_ERROR(device_flag.Resolve(&device));
  MNEMO_RETURN_IF_ERROR(knn.Validate());
  MNEMO_RETURN_IF_ERROR(LoadLanguageModel(model_dir, &out->model, device));
  return knn.Open(*out->model, &out->datastore);
}

void AddScoreCommand(CLI::App& app, Command* selected) {
  auto* score = app.add_subcommand("score", "Per-token log-probabilities and perplexity of a text");
  struct Args {
    std::string model, text, text_file, ids;
    KnnFlags knn;
    MemoryFlags memory;
    bool overlap = false, no_overlap = false;
    DeviceFlag device;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  score->add_option("--model", a->model, "Model directory")->required();
  auto* t = score->add_option("--text", a->text, "Text to score");
  auto* f = score->add_option("--text-file", a->text_file, "File whose text to score")->check(CLI::ExistingFile);
  auto* i = score->add_option("--ids", a->ids, "Comma-separated token ids to score");
  t->excludes(f)->excludes(i);
  f->excludes(i);
  a->knn.Register(score);
  a->memory.RegisterScore(score);
  AddPointersFlag(score, &a->knn.options);
  score->add_flag("--overlap", a->overlap, kOverlapHelp);
  score->add_flag("--no-overlap", a->no_overlap, kNoOverlapHelp)->excludes("--overlap");
  a->device.Register(score);
  score->add_flag("--json", a->json, "Machine-readable output");
  score->callback([a, t, f, i, selected] {
    *selected = [a, t, f, i] {
      if (a->memory.active()) {
        if (t->count() + f->count() + i->count() != 0 || !a->knn.datastore.empty() || !a->knn.state.empty()) {
          return Fail(Status::InvalidArgument("--documents scores a document with the memory layer; it takes no "
                                              "--text, --text-file, --ids, --datastore or --state"));
        }
        return RunDocumentScore(a->model, a->memory, a->device, a->json);
      }
      if (Status m = a->memory.CheckWithoutDocuments(); !m.ok()) return Fail(m);
      if (t->count() + f->count() + i->count() != 1) {
        return Fail(Status::InvalidArgument("score needs one of --text, --text-file, --ids or --documents"));
      }
      ModelAndMemory m;
      Status s = LoadAll(a->model, a->knn, a->device, &m);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> ids;
      if (i->count()) {
        s = ParseIdList(a->ids, &ids);
      } else {
        std::string text = a->text;
        if (f->count()) s = ReadFileToString(a->text_file, &text);
        if (s.ok()) ids = m.model->tokenizer->Encode(text);
      }
      if (s.ok()) s = CheckScorable(m.model->config, ids);
      DualScores scores;
      WindowOptions window;
      if (m.datastore != nullptr) SetUpSearchPlacement(a->overlap, a->no_overlap, &window);
      if (s.ok()) s = ScoreBoth(*m.model, m.datastore.get(), a->knn.options, ids, window, &scores);
      if (!s.ok()) return Fail(s);
      const std::vector<float>& main = m.datastore ? scores.knn : scores.lm;
      const PerplexityReport report = PerplexityReport::FromLogprobs(main);
      const double nll = report.nll, ppl = report.perplexity();
      if (a->json) {
        Json tokens = Json::array(), lp = Json::array({nullptr}), base = Json::array({nullptr});
        for (int32_t id : ids) tokens.push_back(m.model->tokenizer->TokenBytes(id));
        for (float v : main) lp.push_back(v);
        for (float v : scores.lm) base.push_back(v);
        Json out = {{"ids", ids}, {"tokens", tokens}, {"logprobs", lp}, {"scored_tokens", main.size()},
                    {"nll", nll}, {"perplexity", ppl}, {"knn", m.datastore != nullptr}};
        if (m.datastore) {
          out["lm_logprobs"] = base;
          out["searched_fraction"] = scores.stats.searched_fraction();
        }
        std::cout << DumpJson(out) << "\n";
      } else {
        for (size_t k = 0; k < ids.size(); ++k) {
          std::string piece = m.model->tokenizer->TokenBytes(ids[k]);
          if (k == 0) {
            printf("%6d  %10s  %s\n", ids[k], "-", piece.c_str());
          } else {
            printf("%6d  %10.4f  %s\n", ids[k], main[k - 1], piece.c_str());
          }
        }
        printf("tokens %zu, scored %zu, perplexity %.4f%s\n", ids.size(), main.size(), ppl,
               m.datastore ? " (kNN-LM)" : "");
      }
      return 0;
    };
  });
}

void AddEvalCommands(CLI::App& app, Command* selected) {
  auto* eval = app.add_subcommand("eval", "Evaluation");
  eval->require_subcommand(1);
  auto* ppl = eval->add_subcommand(
      "ppl", "Strided sliding-window perplexity and bits per byte; with --datastore, base and kNN-LM side by side");
  struct Args {
    std::string model, text_file;
    WindowOptions window;
    KnnFlags knn;
    MemoryFlags memory;
    bool overlap = false, no_overlap = false;
    DeviceFlag device;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  ppl->add_option("--model", a->model, "Model directory")->required();
  auto* text_file = ppl->add_option("--text-file", a->text_file, "Text to evaluate")->check(CLI::ExistingFile);
  a->memory.Register(ppl);
  text_file->excludes(ppl->get_option("--documents"));
  RegisterWindowFlags(ppl, &a->window);
  a->knn.Register(ppl);
  AddPointersFlag(ppl, &a->knn.options);
  ppl->add_flag("--overlap", a->overlap, kOverlapHelp);
  ppl->add_flag("--no-overlap", a->no_overlap, kNoOverlapHelp)->excludes("--overlap");
  a->device.Register(ppl);
  ppl->add_flag("--json", a->json, "Machine-readable output");
  ppl->callback([a, selected] {
    *selected = [a] {
      if (a->memory.active()) {
        if (a->knn.active()) {
          return Fail(Status::InvalidArgument("--documents scores with the memory layer; the kNN-LM datastore "
                                              "(--datastore) takes --text-file"));
        }
        return RunDocumentPerplexity(a->model, a->memory, a->window, a->device, a->json);
      }
      if (a->text_file.empty()) return Fail(Status::InvalidArgument("eval ppl needs --text-file or --documents"));
      if (Status m = a->memory.CheckWithoutDocuments(); !m.ok()) return Fail(m);
      ModelAndMemory m;
      Status s = LoadAll(a->model, a->knn, a->device, &m);
      std::string text;
      if (s.ok()) s = ReadFileToString(a->text_file, &text);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> ids = m.model->tokenizer->Encode(text);
      if (ids.size() < 2) return Fail(Status::InvalidArgument(a->text_file + ": needs at least two tokens"));
      DualScores scores;
      if (m.datastore != nullptr) SetUpSearchPlacement(a->overlap, a->no_overlap, &a->window);
      s = ScoreBoth(*m.model, m.datastore.get(), a->knn.options, ids, a->window, &scores);
      if (!s.ok()) return Fail(s);
      // The first token is context only: its bytes are not predicted.
      const int64_t bytes = static_cast<int64_t>(text.size() - m.model->tokenizer->TokenBytes(ids[0]).size());
      Json base = PerplexityJson(scores.lm, bytes);
      Json out = base;
      out["seconds"] = scores.seconds;
      out["tokens_per_second"] = scores.lm.size() / scores.seconds;
      if (m.datastore) {
        out = {{"base", base}, {"knn", PerplexityJson(scores.knn, bytes)}};
        out["knn"]["k"] = a->knn.options.k;
        out["knn"]["lambda"] = a->knn.options.lambda;
        out["knn"]["temperature"] = a->knn.options.temperature;
        out["knn"]["recompute"] = a->knn.options.recompute;
        out["knn"]["pointers"] = a->knn.options.min_pointers;
        out["knn"]["search_placement"] =
            scores.placement == WindowOptions::Placement::kBeside ? "beside the passes" : "after each pass";
        out["knn"]["searched_fraction"] = scores.stats.searched_fraction();
        out["datastore_entries"] = m.datastore->size();
        out["seconds"] = scores.seconds;
        out["tokens_per_second"] = scores.lm.size() / scores.seconds;
      }
      if (a->json) {
        std::cout << DumpJson(out) << "\n";
        return 0;
      }
      auto line = [](const char* name, const Json& j) {
        printf("%-8s tokens %ld  bytes %ld  perplexity %.4f  bits/byte %.4f\n", name, j["tokens"].get<long>(),
               j["bytes"].get<long>(), j["perplexity"].get<double>(), j["bits_per_byte"].get<double>());
      };
      line("base", base);
      if (m.datastore) line("kNN-LM", out["knn"]);
      if (m.datastore) printf("searched %.1f%% of positions\n", 100 * out["knn"]["searched_fraction"].get<double>());
      printf("%.0f tokens/s\n", scores.lm.size() / scores.seconds);
      return 0;
    };
  });
}

void AddGenerateCommand(CLI::App& app, Command* selected) {
  auto* gen = app.add_subcommand("generate", "Continue a prompt (with --datastore: kNN-LM decoding)");
  struct Args {
    std::string model, prompt;
    GenerateOptions options;
    KnnFlags knn;
    MemoryFlags memory;
    DeviceFlag device;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  gen->add_option("--model", a->model, "Model directory")->required();
  gen->add_option("--prompt", a->prompt, "Text to continue (with --documents: read after the document)");
  gen->add_option("--max-tokens", a->options.max_tokens, "Tokens to generate")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  gen->add_option("--temperature", a->options.sampling.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", a->options.sampling.top_k, "Keep the K most likely tokens (0: all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", a->options.sampling.top_p, "Nucleus sampling mass")->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", a->options.seed, "Random seed")->capture_default_str();
  a->knn.Register(gen);
  AddPointersFlag(gen, &a->knn.options);
  a->memory.RegisterGenerate(gen);
  a->device.Register(gen);
  gen->add_flag("--json", a->json, "Machine-readable output");
  gen->callback([a, selected] {
    *selected = [a] {
      if (a->memory.active()) {
        if (a->knn.active()) {
          return Fail(Status::InvalidArgument("--documents continues a document with the memory layer; the kNN-LM "
                                              "datastore (--datastore) takes --prompt"));
        }
        return RunDocumentGenerate(a->model, a->memory, a->prompt, a->options, a->device, a->json);
      }
      if (a->prompt.empty()) return Fail(Status::InvalidArgument("generate needs --prompt (or --documents)"));
      if (Status m = a->memory.CheckWithoutDocuments(); !m.ok()) return Fail(m);
      ModelAndMemory m;
      Status s = LoadAll(a->model, a->knn, a->device, &m);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> prompt = m.model->tokenizer->Encode(a->prompt);
      GenerateOptions options = a->options;
      options.stop_token = m.model->tokenizer->eot_id();
      std::unique_ptr<KnnLm> knn;
      std::vector<Neighbor> neighbors, pointers;  // RetoMaton pointers with --pointers
      KnnStats stats;
      if (m.datastore) {
        knn = std::make_unique<KnnLm>(*m.datastore);
        options.hook = [&](const torch::Tensor& key, const torch::Tensor& lp, torch::Tensor* out) {
          return knn->Distribution(key, lp, a->knn.options, out, &neighbors, &pointers, &stats);
        };
      }
      std::vector<int32_t> out;
      const bool stream = !a->json;
      if (stream) std::cout << a->prompt << std::flush;
      auto start = std::chrono::steady_clock::now();
      s = Generate(m.model->net, prompt, options, &out, [&](int32_t token, float) {
        if (a->knn.options.min_pointers > 0) NextPointers(neighbors, token, &pointers);
        if (stream && token != options.stop_token) std::cout << m.model->tokenizer->TokenBytes(token) << std::flush;
        return true;
      });
      if (!s.ok()) return Fail(s);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (a->json) {
        std::cout << DumpJson({{"prompt", a->prompt}, {"text", m.model->tokenizer->Decode(out)}, {"ids", out},
                               {"prompt_tokens", prompt.size()}, {"completion_tokens", out.size()},
                               {"knn", m.datastore != nullptr}, {"searched_fraction", stats.searched_fraction()},
                               {"ms_per_token", out.empty() ? 0.0 : ms / out.size()}})
                  << "\n";
      } else {
        std::cout << "\n";
      }
      return 0;
    };
  });
}

}  // namespace

void RegisterInferenceCommands(CLI::App& app, Command* selected) {
  AddScoreCommand(app, selected);
  AddEvalCommands(app, selected);
  AddGenerateCommand(app, selected);
}

}  // namespace mnemo::cli
