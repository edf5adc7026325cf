// The memorizing layer's flags on `eval ppl` (and what runs them): documents read in order with a
// memory of their earlier tokens (lm/memory_scorer.h), base and memory side by side.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "api/cli.h"
#include "api/common_flags.h"
#include "lm/generator.h"
#include "lm/scorer.h"

namespace mnemo::cli {

struct MemoryFlags {
  std::string documents;     // JSONL (lm/documents.h); set: score documents instead of --text-file
  int64_t memory_size = 0;   // tokens; 0: no memory (base only)
  int64_t memory_topk = 0;   // 0: the model's
  bool fp16 = false;
  // Search: "exact", "ivf" (needs the model's memory_index.safetensors: `mnemo memory index`) or "auto"
  // (IVF where the index exists and a lane holds at least ivf_from tokens, exact otherwise).
  std::string search = "auto";
  int64_t nprobe = 8;
  int64_t ivf_from = 16384;
  bool copy = false;
  int64_t max_tokens = 0;
  int64_t examples = 0;

  int64_t document = 0;       // generate: which document (0-based)
  int64_t prefix_tokens = 0;  // generate: read only its first N tokens (0: all)

  // `eval ppl` flags; RegisterGenerate and RegisterScore: the ones `generate` and `score` take.
  void Register(CLI::App* app);
  void RegisterGenerate(CLI::App* app);
  void RegisterScore(CLI::App* app);
  bool active() const { return !documents.empty(); }
  // InvalidArgument when memory options are given without --documents.
  Status CheckWithoutDocuments() const;

 private:
  void RegisterMemory(CLI::App* app);  // --memory-size, --memory-topk, --memory-fp16, search
  void RegisterDocument(CLI::App* app, const char* documents_help);  // --documents, --document
};


// `eval ppl --documents`: prints base and memory perplexity and bits/byte (JSON with `json`); returns the
// process exit code.
int RunDocumentPerplexity(const std::string& model_dir, const MemoryFlags& flags, const WindowOptions& window,
                          const DeviceFlag& device, bool json);

// `score --documents`: per-token log-probabilities of document flags.document (its second copy with
// flags.copy) with a memory of its earlier tokens and without, side by side.
int RunDocumentScore(const std::string& model_dir, const MemoryFlags& flags, const DeviceFlag& device, bool json);

// `generate --documents`: reads document `flags.document` (its first prefix_tokens, then `prompt` when
// not empty) with a memory of flags.memory_size tokens, and continues it from its last half window.
int RunDocumentGenerate(const std::string& model_dir, const MemoryFlags& flags, const std::string& prompt,
                        const GenerateOptions& options, const DeviceFlag& device, bool json);

// `memory create|read|ls|rm|verify-deleted --state S`: a state's memories, offline (cli_memories.cc).
void RegisterMemoryStateCommands(CLI::App* memory, Command* selected);

}  // namespace mnemo::cli
