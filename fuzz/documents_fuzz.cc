// lm/documents.h: ReadDocuments, the reader of documents files (JSON Lines of {"text", "source"?/"id"?}):
// `mnemo datastore build --documents`, `mnemo memory ingest` and the memorizing-layer corpora. The input is
// the file (written to tmpfs: ReadDocuments takes a path). Documents it reads must be written back by
// DocumentJsonLine and read again unchanged.
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "lm/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mnemo_fuzz::ScratchDir() + "/documents.jsonl";
  mnemo_fuzz::WriteFileOrDie(path, mnemo_fuzz::AsText(data, size));
  std::vector<mnemo::Document> docs;
  const mnemo::Status s = mnemo::ReadDocuments(path, &docs);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsInvalidArgument());
    return 0;
  }
  std::string rewritten;
  for (const mnemo::Document& d : docs) {
    FUZZ_CHECK(!d.source.empty());
    rewritten += mnemo::DocumentJsonLine(d);
  }
  mnemo_fuzz::WriteFileOrDie(path, rewritten);
  std::vector<mnemo::Document> again;
  FUZZ_CHECK(mnemo::ReadDocuments(path, &again).ok());
  FUZZ_CHECK(again.size() == docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    FUZZ_CHECK(again[i].text == docs[i].text && again[i].source == docs[i].source);
  }
  return 0;
}
