// Long documents for the memorizing layer: JSONL files of {"text", "source"?} (one document per line),
// and a source of them that every Debian 12 machine has: the Python standard library's .py files
// (libpython3.11-stdlib), one document per file.
//
// A documents file is UTF-8 JSON Lines: each non-blank line is an object with a string "text" (the
// document; may be empty) and optionally "source" or "id" (a name for reports; the line number when
// absent) and "metadata" (ignored here). Anything else is an error naming the file and line.
//
// Thread-safety: the functions are independent and keep no global state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace mnemo {

struct Document {
  std::string text;
  std::string source;  // "source" or "id" of the line, else "line N"
};

// Reads a documents file. NotFound for a missing file; InvalidArgument naming the file and line for a
// line that is not a JSON object with a string "text".
Status ReadDocuments(const std::string& path, std::vector<Document>* out);

class Tokenizer;

// Every document's token ids (no <|endoftext|> added), encoded on all cores.
std::vector<std::vector<int32_t>> EncodeDocuments(const Tokenizer& tokenizer, const std::vector<Document>& documents);

// One document per line, as ReadDocuments reads it ({"text", "source"}), newline-terminated.
std::string DocumentJsonLine(const Document& document);

struct DocumentCorpusOptions {
  std::string python_dir = "/usr/lib/python3.11";
  // Split by a stable hash of the path relative to python_dir (lm/corpus.h AssignSplit). The stdlib has
  // ~670 .py files (54 MB with caches; ~30 MB of source), so 5% is ~35 files, ~1.5 MB per held-out split.
  double valid_fraction = 0.05;
  double test_fraction = 0.05;
};

struct DocumentSplitStats {
  int64_t documents = 0;
  int64_t bytes = 0;  // text bytes (before JSON escaping)
};

struct DocumentCorpusStats {
  int64_t files = 0;           // .py files found
  int64_t skipped_empty = 0;   // files with no text
  int64_t repaired_bytes = 0;  // non-UTF-8 bytes replaced (lm/corpus.h RepairUtf8)
  DocumentSplitStats train, valid, test;
};

// Writes <out_dir>/python-stdlib/{train,valid,test}.jsonl and stats.json (atomically; byte-identical
// across runs on the same files): every regular *.py file under python_dir (symlinks and __pycache__
// skipped), sorted by relative path, "source" being that path. NotFound when python_dir holds no .py file.
Status PreparePythonStdlib(const std::string& out_dir, const DocumentCorpusOptions& options,
                           DocumentCorpusStats* stats);

}  // namespace mnemo
