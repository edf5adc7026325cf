// Language-model commands: tokenizer train, tokenize, detokenize, corpus prepare, train.
#include <iostream>
#include <nlohmann/json.hpp>

#include "api/cli.h"
#include "lm/bpe_trainer.h"
#include "lm/checkpoint.h"
#include "lm/corpus.h"
#include "lm/documents.h"
#include "lm/trainer.h"
#include "memory/kv_ring.h"
#include "util/file_util.h"

namespace mnemo::cli {
namespace {


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
  auto* corpus = app.add_subcommand("corpus", "Training corpora from Debian packages");
  corpus->require_subcommand(1);
  auto* prepare = corpus->add_subcommand(
      "prepare", "Write train/valid/test splits: GCIDE and FOLDOC (dictionaries, text) or the Python standard "
                 "library (python-stdlib: one JSONL document per .py file, for the memory layer)");
  auto out = std::make_shared<std::string>();
  auto source = std::make_shared<std::string>("dictionaries");
  auto opts = std::make_shared<CorpusOptions>();
  auto doc_opts = std::make_shared<DocumentCorpusOptions>();
  auto json = std::make_shared<bool>(false);
  prepare->add_option("--out", *out, "Output directory")->required();
  prepare->add_option("--source", *source, "dictionaries (-> OUT/gcide, OUT/foldoc) or python-stdlib "
                                           "(-> OUT/python-stdlib/{train,valid,test}.jsonl)")
      ->capture_default_str()->check(CLI::IsMember({"dictionaries", "python-stdlib"}));
  prepare->add_option("--dictd-dir", opts->dictd_dir, "Where dict-gcide and dict-foldoc put their files")
      ->capture_default_str();
  prepare->add_option("--python-dir", doc_opts->python_dir, "The standard library (libpython3.11-stdlib)")
      ->capture_default_str();
  prepare->add_flag("--json", *json, "Machine-readable output");
  prepare->callback([out, source, opts, doc_opts, json, selected] {
    *selected = [out, source, opts, doc_opts, json] {
      const bool stdlib = *source == "python-stdlib";
      Status s = stdlib ? PreparePythonStdlib(*out, *doc_opts, nullptr) : PrepareCorpus(*out, *opts, nullptr);
      if (!s.ok()) return Fail(s);
      std::string text;
      s = ReadFileToString(*out + (stdlib ? "/python-stdlib/stats.json" : "/stats.json"), &text);
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
  train->add_option("--corpus", o->train_path, "Training text file (or --documents)")->check(CLI::ExistingFile);
  train->add_option("--valid", o->valid_path, "Validation text file (or --valid-documents)")->check(CLI::ExistingFile);
  train->add_option("--documents", o->train_documents,
                    "Training documents, JSONL {\"text\", \"source\"?}: each batch lane reads one document at a "
                    "time in consecutive segments (the memory layer's regime)")->check(CLI::ExistingFile);
  train->add_option("--valid-documents", o->valid_documents, "Validation documents (JSONL)")->check(CLI::ExistingFile);
  train->add_option("--memory-layer", o->memory_layer,
                    "Make layer L (0-based) a memorizing layer (default: the model's own; about 3/4 of the depth "
                    "is the usual choice, e.g. 2 of 4)")->check(CLI::NonNegativeNumber);
  train->add_option("--memory-size", o->memory_size,
                    "Tokens of each lane's memory while training (0: none)")->check(CLI::NonNegativeNumber);
  train->add_option("--memory-topk", o->memory_topk, "Pairs each query retrieves from memory (default 32)")
      ->check(CLI::Range(1, 4096));
  train->add_option("--memory-mode", o->memory_mode,
                    "joint: retrieved pairs join the layer's own softmax (no new parameters); gated: the paper's "
                    "separate, normalised memory softmax and learned gate (default: joint for a new layer)")
      ->check(CLI::IsMember({"joint", "gated"}));
  train->add_flag("--memory-smear", o->memory_smear,
                  "Smear the memory layer's keys with their predecessors' (a learned per-head mix that starts "
                  "at 0): one layer can then copy what followed a token earlier, from its window and its memory");
  train->add_option("--induction-heads", o->induction_heads,
                    "With --memory-smear: start the memory layer's first N heads as induction heads (copy what "
                    "followed a repeated token), built from random projections")->check(CLI::NonNegativeNumber);
  train->add_option("--induction-qk-scale", o->induction_qk_scale, "Induction heads' query/key scale")
      ->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--induction-ov-scale", o->induction_ov_scale, "Induction heads' value/output scale")
      ->capture_default_str()->check(CLI::PositiveNumber);
  train->add_option("--repeat-chunk", o->repeat_chunk,
                    "Repetition curriculum: read a fraction of the training documents as chunk 1, chunk 1, "
                    "chunk 2, chunk 2, ... of N tokens, so the second copies lie beyond the window but inside "
                    "the memory; teaches the layer to copy from memory (0: off)")->check(CLI::NonNegativeNumber);
  train->add_option("--repeat-fraction", o->repeat_fraction, "Fraction of training documents repeated")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  train->add_option("--repeat-random", o->repeat_random,
                    "Repetition curriculum: add documents of random token ids, read as repeated chunks, until "
                    "they are this fraction of the training tokens (copying is the only way to predict them)")
      ->capture_default_str()->check(CLI::Range(0.0, 0.99));
  train->add_option("--out", o->out_dir, "Output model directory (HF GPT-2 layout)")->required();
  train->add_option("--tokenizer", o->tokenizer_dir, "Existing tokenizer; default: train a BPE vocabulary first");
  train->add_option("--vocab-size", o->vocab_size, "Vocabulary size when training a tokenizer")
      ->capture_default_str()->check(CLI::Range(257, 1 << 20));
  train->add_option("--config", o->config, "Model size preset: tiny, default or medium")->capture_default_str();
  train->add_option("--init-from", o->init_from, "Fine-tune: start from this model directory (its config, "
                                                 "tokenizer and weights)")->check(CLI::ExistingDirectory);
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
      if (o->memory_layer >= 0 && o->memory_mode.empty()) o->memory_mode = "joint";
      o->make_memory = [](int64_t lanes, int64_t heads, int64_t head_dim, int64_t capacity,
                          std::unique_ptr<KvMemory>* out) { return MakeKvRing(lanes, heads, head_dim, capacity, out); };
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

}  // namespace

void RegisterLmCommands(CLI::App& app, Command* selected) {
  AddTokenizerCommands(app, selected);
  AddCorpusCommands(app, selected);
  AddTrainCommand(app, selected);
}

}  // namespace mnemo::cli
