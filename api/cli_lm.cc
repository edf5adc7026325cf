// Language-model commands: tokenizer train, tokenize, detokenize, corpus prepare, train, score,
// eval ppl, generate.
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/cli.h"
#include "lm/bpe_trainer.h"
#include "lm/checkpoint.h"
#include "lm/corpus.h"
#include "lm/generator.h"
#include "lm/scorer.h"
#include "lm/trainer.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {

using Json = nlohmann::ordered_json;

// Text from the model may end inside a UTF-8 sequence; JSON output replaces such bytes with U+FFFD.
std::string DumpJson(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Status ParseIdList(const std::string& text, std::vector<int32_t>* ids) {
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids->push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return Status::InvalidArgument("--ids: \"" + item + "\" is not a token id");
    }
  }
  if (ids->empty()) return Status::InvalidArgument("--ids: no token ids given");
  return Status::OK();
}

void AddTokenizerCommands(CLI::App& app, Command* selected) {
  auto* tok = app.add_subcommand("tokenizer", "Tokenizer tools");
  tok->require_subcommand(1);
  auto* train = tok->add_subcommand("train", "Train a GPT-2-format byte-level BPE vocabulary on a text file");
  struct TrainArgs {
    std::string corpus, out;
    int vocab_size = 4096;
    bool json = false;
  };
  auto targs = std::make_shared<TrainArgs>();
  train->add_option("--corpus", targs->corpus, "UTF-8 text file")->required()->check(CLI::ExistingFile);
  train->add_option("--vocab-size", targs->vocab_size, "Vocabulary size including <|endoftext|>")
      ->capture_default_str()->check(CLI::Range(257, 1 << 20));
  train->add_option("--out", targs->out, "Output directory (vocab.json + merges.txt)")->required();
  train->add_flag("--json", targs->json, "Machine-readable output");
  train->callback([targs, selected] {
    *selected = [targs] {
      std::string text;
      Status s = ReadFileToString(targs->corpus, &text);
      std::unique_ptr<BpeTokenizer> tokenizer;
      if (s.ok()) s = TrainBpe(text, targs->vocab_size, &tokenizer);
      if (s.ok()) s = EnsureDirectory(targs->out);
      if (s.ok()) s = tokenizer->Save(targs->out);
      if (!s.ok()) return Fail(s);
      if (targs->json) {
        std::cout << DumpJson({{"out", targs->out}, {"vocab_size", tokenizer->vocab_size()}}) << "\n";
      } else {
        std::cout << "wrote " << targs->out << "/vocab.json and merges.txt (" << tokenizer->vocab_size()
                  << " tokens)\n";
      }
      return 0;
    };
  });

  // tokenize / detokenize: JSON lines on stdin -> JSON lines on stdout.
  for (bool encode : {true, false}) {
    auto* sub = app.add_subcommand(encode ? "tokenize" : "detokenize",
                                   encode ? "Read {\"text\": ...} JSON lines on stdin, write {\"ids\": [...]}"
                                          : "Read {\"ids\": [...]} JSON lines on stdin, write {\"text\": ...}");
    auto dir = std::make_shared<std::string>();
    sub->add_option("--tokenizer", *dir, "Directory with vocab.json+merges.txt or encoder.json+vocab.bpe "
                                          "(a model directory works)")->required();
    sub->callback([dir, encode, selected] {
      *selected = [dir, encode] {
        std::unique_ptr<BpeTokenizer> tokenizer;
        Status s = BpeTokenizer::Load(*dir, &tokenizer);
        if (!s.ok()) return Fail(s);
        std::string line;
        for (int64_t line_no = 1; std::getline(std::cin, line); ++line_no) {
          if (line.empty()) continue;
          Json in = Json::parse(line, nullptr, false);
          const char* field = encode ? "text" : "ids";
          if (in.is_discarded() || !in.is_object() || !in.contains(field)) {
            return Fail(Status::InvalidArgument("stdin line " + std::to_string(line_no) + ": expected a JSON object with \"" +
                                                field + "\""));
          }
          if (encode) {
            if (!in["text"].is_string()) {
              return Fail(Status::InvalidArgument("stdin line " + std::to_string(line_no) + ": \"text\" must be a string"));
            }
            std::cout << DumpJson({{"ids", tokenizer->Encode(in["text"].get<std::string>())}}) << "\n";
          } else {
            std::vector<int32_t> ids;
            bool ok = in["ids"].is_array();
            for (const auto& v : in["ids"]) {
              ok = ok && v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < tokenizer->vocab_size();
              if (ok) ids.push_back(v.get<int32_t>());
            }
            if (!ok) {
              return Fail(Status::InvalidArgument("stdin line " + std::to_string(line_no) +
                                                  ": \"ids\" must be an array of token ids in [0, " +
                                                  std::to_string(tokenizer->vocab_size()) + ")"));
            }
            std::cout << DumpJson({{"text", tokenizer->Decode(ids)}}) << "\n";
          }
        }
        return 0;
      };
    });
  }
}

void AddCorpusCommands(CLI::App& app, Command* selected) {
  auto* corpus = app.add_subcommand("corpus", "Training corpora from Debian's dictionary packages");
  corpus->require_subcommand(1);
  auto* prepare = corpus->add_subcommand(
      "prepare", "Write train/valid/test splits of GCIDE (general English) and FOLDOC (computing)");
  auto out = std::make_shared<std::string>();
  auto opts = std::make_shared<CorpusOptions>();
  auto json = std::make_shared<bool>(false);
  prepare->add_option("--out", *out, "Output directory")->required();
  prepare->add_option("--dictd-dir", opts->dictd_dir, "Where dict-gcide and dict-foldoc put their files")
      ->capture_default_str();
  prepare->add_flag("--json", *json, "Machine-readable output");
  prepare->callback([out, opts, json, selected] {
    *selected = [out, opts, json] {
      CorpusStats stats;
      Status s = PrepareCorpus(*out, *opts, &stats);
      if (!s.ok()) return Fail(s);
      std::string text;
      s = ReadFileToString(*out + "/stats.json", &text);
      if (!s.ok()) return Fail(s);
      std::cout << (*json ? DumpJson(Json::parse(text)) : text) << (*json ? "\n" : "");
      return 0;
    };
  });
}

void AddTrainCommand(CLI::App& app, Command* selected) {
  auto* train = app.add_subcommand("train", "Train a GPT-2-architecture model (resumes if --out has a run)");
  auto o = std::make_shared<TrainOptions>();
  auto json = std::make_shared<bool>(false);
  train->add_option("--corpus", o->train_path, "Training text file")->required()->check(CLI::ExistingFile);
  train->add_option("--valid", o->valid_path, "Validation text file")->required()->check(CLI::ExistingFile);
  train->add_option("--out", o->out_dir, "Output model directory (HF GPT-2 layout)")->required();
  train->add_option("--tokenizer", o->tokenizer_dir, "Existing tokenizer; default: train a BPE vocabulary first");
  train->add_option("--vocab-size", o->vocab_size, "Vocabulary size when training a tokenizer")
      ->capture_default_str()->check(CLI::Range(257, 1 << 20));
  train->add_option("--config", o->config, "Model size preset: tiny, small or default")->capture_default_str();
  train->add_option("--steps", o->steps, "Optimizer steps (default: the preset's)")->check(CLI::PositiveNumber);
  train->add_option("--batch-size", o->batch_size, "Sequences per step (default: the preset's)")
      ->check(CLI::PositiveNumber);
  train->add_option("--seq-len", o->seq_len, "Tokens per sequence (default: n_positions)")->check(CLI::PositiveNumber);
  train->add_option("--lr", o->learning_rate, "Peak learning rate (default: the preset's)")->check(CLI::PositiveNumber);
  train->add_option("--eval-interval", o->eval_interval, "Validate and checkpoint every N steps")
      ->check(CLI::PositiveNumber);
  train->add_option("--eval-tokens", o->eval_tokens, "Validation tokens per evaluation")->capture_default_str()
      ->check(CLI::PositiveNumber);
  train->add_option("--seed", o->seed, "Random seed (initialisation and batch order)")->capture_default_str();
  train->add_option("--stop-after", o->stop_after, "Checkpoint and exit after N steps; rerun to resume")
      ->check(CLI::PositiveNumber);
  train->add_flag("--quiet", o->quiet, "No progress output");
  train->add_flag("--json", *json, "Print the training report as JSON");
  train->callback([o, json, selected] {
    *selected = [o, json] {
      TrainReport report;
      Status s = Train(*o, &report);
      if (!s.ok()) return Fail(s);
      if (*json) {
        std::cout << report.ToJson() << "\n";
      } else {
        printf("trained %ld steps (%ld tokens, %.0f tokens/s); valid loss %.4f nats/token, %.4f bits/byte -> %s\n",
               static_cast<long>(report.steps), static_cast<long>(report.tokens_seen), report.tokens_per_second,
               report.final_valid_loss, report.final_valid_bits_per_byte, o->out_dir.c_str());
      }
      return 0;
    };
  });
}

void AddScoreCommand(CLI::App& app, Command* selected) {
  auto* score = app.add_subcommand("score", "Per-token log-probabilities and perplexity of a text");
  struct Args {
    std::string model, text, text_file, ids;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  score->add_option("--model", a->model, "Model directory")->required();
  auto* t = score->add_option("--text", a->text, "Text to score");
  auto* f = score->add_option("--text-file", a->text_file, "File whose text to score")->check(CLI::ExistingFile);
  auto* i = score->add_option("--ids", a->ids, "Comma-separated token ids to score");
  t->excludes(f)->excludes(i);
  f->excludes(i);
  score->add_flag("--json", a->json, "Machine-readable output");
  score->callback([a, t, f, i, selected] {
    *selected = [a, t, f, i] {
      if (t->count() + f->count() + i->count() != 1) {
        return Fail(Status::InvalidArgument("score needs one of --text, --text-file or --ids"));
      }
      std::unique_ptr<LanguageModel> model;
      Status s = LoadLanguageModel(a->model, &model);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> ids;
      if (i->count()) {
        s = ParseIdList(a->ids, &ids);
      } else {
        std::string text = a->text;
        if (f->count()) s = ReadFileToString(a->text_file, &text);
        if (s.ok()) ids = model->tokenizer->Encode(text);
      }
      std::vector<float> logprobs;
      if (s.ok()) s = ScoreIds(model->net, ids, &logprobs);
      if (!s.ok()) return Fail(s);
      double nll = 0;
      for (float lp : logprobs) nll -= lp;
      const double ppl = logprobs.empty() ? 1.0 : std::exp(nll / logprobs.size());
      if (a->json) {
        Json tokens = Json::array();
        for (int32_t id : ids) tokens.push_back(model->tokenizer->TokenBytes(id));
        Json lp = Json::array();
        lp.push_back(nullptr);  // Position 0 has no context.
        for (float v : logprobs) lp.push_back(v);
        std::cout << DumpJson({{"ids", ids}, {"tokens", tokens}, {"logprobs", lp},
                               {"scored_tokens", logprobs.size()}, {"nll", nll}, {"perplexity", ppl}})
                  << "\n";
      } else {
        for (size_t k = 0; k < ids.size(); ++k) {
          std::string piece = model->tokenizer->TokenBytes(ids[k]);
          if (k == 0) {
            printf("%6d  %10s  %s\n", ids[k], "-", piece.c_str());
          } else {
            printf("%6d  %10.4f  %s\n", ids[k], logprobs[k - 1], piece.c_str());
          }
        }
        printf("tokens %zu, scored %zu, perplexity %.4f\n", ids.size(), logprobs.size(), ppl);
      }
      return 0;
    };
  });
}

void AddEvalCommands(CLI::App& app, Command* selected) {
  auto* eval = app.add_subcommand("eval", "Evaluation");
  eval->require_subcommand(1);
  auto* ppl = eval->add_subcommand("ppl", "Strided sliding-window perplexity and bits per byte of a text file");
  struct Args {
    std::string model, text_file;
    WindowOptions window;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  ppl->add_option("--model", a->model, "Model directory")->required();
  ppl->add_option("--text-file", a->text_file, "Text to evaluate")->required()->check(CLI::ExistingFile);
  ppl->add_option("--window", a->window.window, "Window length in tokens (default: n_positions)")
      ->check(CLI::PositiveNumber);
  ppl->add_option("--stride", a->window.stride, "Stride in tokens (default: window / 2)")->check(CLI::PositiveNumber);
  ppl->add_option("--batch-size", a->window.batch_size, "Windows per forward pass")->capture_default_str()
      ->check(CLI::PositiveNumber);
  ppl->add_flag("--json", a->json, "Machine-readable output");
  ppl->callback([a, selected] {
    *selected = [a] {
      std::unique_ptr<LanguageModel> model;
      Status s = LoadLanguageModel(a->model, &model);
      std::string text;
      if (s.ok()) s = ReadFileToString(a->text_file, &text);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> ids = model->tokenizer->Encode(text);
      if (ids.size() < 2) return Fail(Status::InvalidArgument(a->text_file + ": needs at least two tokens"));
      std::vector<float> logprobs;
      auto start = std::chrono::steady_clock::now();
      s = ScoreLongSequence(model->net, ids, a->window, &logprobs);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!s.ok()) return Fail(s);
      PerplexityReport r;
      r.tokens = static_cast<int64_t>(logprobs.size());
      for (float lp : logprobs) r.nll -= lp;
      // The first token is context only: its bytes are not predicted.
      r.bytes = static_cast<int64_t>(text.size() - model->tokenizer->TokenBytes(ids[0]).size());
      if (a->json) {
        std::cout << DumpJson({{"tokens", r.tokens}, {"bytes", r.bytes}, {"nll", r.nll},
                               {"perplexity", r.perplexity()}, {"bits_per_byte", r.bits_per_byte()},
                               {"seconds", seconds}, {"tokens_per_second", r.tokens / seconds}})
                  << "\n";
      } else {
        printf("tokens %ld  bytes %ld  perplexity %.4f  bits/byte %.4f  (%.0f tokens/s)\n",
               static_cast<long>(r.tokens), static_cast<long>(r.bytes), r.perplexity(), r.bits_per_byte(),
               r.tokens / seconds);
      }
      return 0;
    };
  });
}

void AddGenerateCommand(CLI::App& app, Command* selected) {
  auto* gen = app.add_subcommand("generate", "Continue a prompt");
  struct Args {
    std::string model, prompt;
    GenerateOptions options;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  gen->add_option("--model", a->model, "Model directory")->required();
  gen->add_option("--prompt", a->prompt, "Text to continue")->required();
  gen->add_option("--max-tokens", a->options.max_tokens, "Tokens to generate")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  gen->add_option("--temperature", a->options.sampling.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", a->options.sampling.top_k, "Keep the K most likely tokens (0: all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", a->options.sampling.top_p, "Nucleus sampling mass")->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", a->options.seed, "Random seed")->capture_default_str();
  gen->add_flag("--json", a->json, "Machine-readable output");
  gen->callback([a, selected] {
    *selected = [a] {
      std::unique_ptr<LanguageModel> model;
      Status s = LoadLanguageModel(a->model, &model);
      if (!s.ok()) return Fail(s);
      std::vector<int32_t> prompt = model->tokenizer->Encode(a->prompt);
      GenerateOptions options = a->options;
      options.stop_token = model->tokenizer->eot_id();
      std::vector<int32_t> out;
      const bool stream = !a->json;
      if (stream) std::cout << a->prompt << std::flush;
      auto start = std::chrono::steady_clock::now();
      s = Generate(model->net, prompt, options, &out, [&](int32_t token, float) {
        if (stream && token != options.stop_token) std::cout << model->tokenizer->TokenBytes(token) << std::flush;
        return true;
      });
      if (!s.ok()) return Fail(s);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (a->json) {
        std::cout << DumpJson({{"prompt", a->prompt}, {"text", model->tokenizer->Decode(out)}, {"ids", out},
                               {"prompt_tokens", prompt.size()}, {"completion_tokens", out.size()},
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

void RegisterLmCommands(CLI::App& app, Command* selected) {
  AddTokenizerCommands(app, selected);
  AddCorpusCommands(app, selected);
  AddTrainCommand(app, selected);
  AddScoreCommand(app, selected);
  AddEvalCommands(app, selected);
  AddGenerateCommand(app, selected);
}

}  // namespace mnemo::cli
