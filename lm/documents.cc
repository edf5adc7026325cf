#include "lm/documents.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <thread>

#include <nlohmann/json.hpp>

#include "lm/corpus.h"
#include "lm/tokenizer.h"
#include "util/file_util.h"
#include "util/parallel.h"

namespace mnemo {

Status ReadDocuments(const std::string& path, std::vector<Document>* out) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  std::vector<Document> docs;
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const nlohmann::json json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) {
      return Status::InvalidArgument(where + ": not a JSON line (a documents file has one {\"text\": ...} object per line)");
    }
    if (!json.is_object()) return Status::InvalidArgument(where + ": a document must be a JSON object");
    const auto t = json.find("text");
    if (t == json.end() || !t->is_string()) {
      return Status::InvalidArgument(where + ": a document needs a string \"text\"");
    }
    Document doc;
    doc.text = t->get<std::string>();
    for (const char* key : {"source", "id"}) {
      const auto s = json.find(key);
      if (s == json.end()) continue;
      if (s->is_string()) {
        doc.source = s->get<std::string>();
      } else if (s->is_number_integer()) {
        doc.source = std::to_string(s->get<int64_t>());
      } else {
        return Status::InvalidArgument(where + ": \"" + key + "\" must be a string or an integer");
      }
      break;
    }
    if (doc.source.empty()) doc.source = "line " + std::to_string(line_no);
    docs.push_back(std::move(doc));
  }
  *out = std::move(docs);
  return Status::OK();
}

std::vector<std::vector<int32_t>> EncodeDocuments(const Tokenizer& tokenizer, const std::vector<Document>& documents) {
  std::vector<std::vector<int32_t>> out(documents.size());
  const size_t workers = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 16));
  ParallelFor(documents.size(), workers, [&](size_t i) { out[i] = tokenizer.Encode(documents[i].text); });
  return out;
}

std::string DocumentJsonLine(const Document& document) {
  nlohmann::ordered_json j = {{"text", document.text}, {"source", document.source}};
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace) + "\n";
}

Status PreparePythonStdlib(const std::string& out_dir, const DocumentCorpusOptions& options,
                           DocumentCorpusStats* stats) {
  if (!(options.valid_fraction >= 0 && options.test_fraction >= 0 &&
        options.valid_fraction + options.test_fraction < 1)) {
    return Status::InvalidArgument("valid and test fractions must be >= 0 and sum below 1");
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root(options.python_dir);
  if (!fs::is_directory(root, ec)) {
    return Status::NotFound(options.python_dir + ": no such directory (Debian's libpython3.11-stdlib puts the "
                            "standard library in /usr/lib/python3.11)");
  }
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) return Status::IOError(options.python_dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return Status::IOError(options.python_dir + ": " + ec.message());
    if (it->path().filename() == "__pycache__") {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec) || !it->is_regular_file(ec) || it->path().extension() != ".py") continue;
    files.push_back(it->path().lexically_relative(root).generic_string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return Status::NotFound(options.python_dir + ": no .py files");

  DocumentCorpusStats result;
  result.files = static_cast<int64_t>(files.size());
  std::string contents[3];
  for (const std::string& rel : files) {
    Document doc;
    MNEMO_RETURN_IF_ERROR(ReadFileToString((root / rel).string(), &doc.text));
    result.repaired_bytes += static_cast<int64_t>(RepairUtf8(&doc.text));
    if (doc.text.find_first_not_of(" \t\r\n") == std::string::npos) {
      ++result.skipped_empty;
      continue;
    }
    doc.source = rel;
    const Split split = AssignSplit(rel, options.valid_fraction, options.test_fraction);
    DocumentSplitStats& ss = split == Split::kTrain ? result.train : split == Split::kValid ? result.valid : result.test;
    ++ss.documents;
    ss.bytes += static_cast<int64_t>(doc.text.size());
    contents[static_cast<int>(split)] += DocumentJsonLine(doc);
  }
  const std::string dir = out_dir + "/python-stdlib";
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  nlohmann::ordered_json splits = nlohmann::ordered_json::object();
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    MNEMO_RETURN_IF_ERROR(
        WriteFileAtomically(dir + "/" + SplitName(split) + ".jsonl", contents[static_cast<int>(split)]));
    const DocumentSplitStats& ss =
        split == Split::kTrain ? result.train : split == Split::kValid ? result.valid : result.test;
    splits[SplitName(split)] = {{"documents", ss.documents}, {"bytes", ss.bytes}};
  }
  const nlohmann::ordered_json j = {{"source", "python-stdlib"},
                                    {"python_dir", options.python_dir},
                                    {"valid_fraction", options.valid_fraction},
                                    {"test_fraction", options.test_fraction},
                                    {"files", result.files},
                                    {"skipped_empty", result.skipped_empty},
                                    {"repaired_bytes", result.repaired_bytes},
                                    {"splits", std::move(splits)}};
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/stats.json", j.dump(2) + "\n"));
  if (stats != nullptr) *stats = result;
  return Status::OK();
}

}  // namespace mnemo
