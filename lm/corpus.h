// Corpus preparation: turns Debian's dictd dictionaries (dict-gcide, dict-foldoc) into plain-text
// train/valid/test files for language-model training and evaluation.
//
// dictd format: "<name>.index" has one line per headword, "headword\tOFFSET\tLENGTH", with OFFSET and
// LENGTH written in dictd base64 (digits A-Za-z0-9+/, most significant first, no padding); they give the
// article's byte range in the decompressed "<name>.dict.dz" (dictzip, which is gzip-compatible).
//
// Output: <out_dir>/<name>/{train,valid,test}.txt, one cleaned article per block, articles separated by
// a blank line ("\n\n"), paragraphs inside an article by a single "\n", a final "\n" after the last
// article (a split with no articles is an empty file); and <out_dir>/stats.json with the counts.
// Every output is valid UTF-8 and byte-identical across runs on the same input.
//
// Thread-safety: the functions are independent and keep no global state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace mnemo {

// One article of a dictd dictionary.
struct DictEntry {
  std::vector<std::string> headwords;  // every index headword naming this article, in index order
  uint64_t offset = 0;                 // byte range in the decompressed .dict file
  uint64_t length = 0;
  std::string text;                    // the raw article bytes, as stored (not necessarily UTF-8)
};

// Reads every article of a dictd dictionary, ordered by offset. Several headwords naming the same
// (offset, length) become one entry; articles named by a "00-database..." / "00databse..." header word
// are the database's own info blocks, not dictionary text, and are skipped. The dict file may be
// dictzip/gzip compressed or plain. NotFound for a missing file, Corruption (file and line number) for
// a malformed index line or a range outside the dict.
Status ReadDictdEntries(const std::string& index_path, const std::string& dict_path,
                        std::vector<DictEntry>* out);

// Decodes a dictd base64 number ("Fz" -> 5 * 64 + 51 = 371). False on an empty string, a character
// outside the alphabet, or a value that does not fit in 60 bits.
bool DecodeDictdNumber(std::string_view digits, uint64_t* out);

// Replaces each byte that is not part of well-formed UTF-8 by its Windows-1252 character (U+FFFD for
// the five undefined ones) and returns how many bytes were replaced. GCIDE 0.48 has three such bytes,
// stray cp1252 ("market\x92s" for "market's").
size_t RepairUtf8(std::string* text);

// Turns a raw article into language-model text:
//  - drops GCIDE source tags ("[1913 Webster]", "[WordNet 1.5 +PJC]"; usage labels such as "[Obs.]"
//    and etymologies such as "[AS. luflic.]" are text and stay), and the next entry's headwords that
//    dictfmt sometimes leaks after an article's last tag ("[1913 Webster] Zymologic");
//  - drops FOLDOC's last-updated date lines ("(1994-11-08)");
//  - unwraps hard-wrapped lines of a paragraph into one line, one space between them, and turns every
//    run of spaces and tabs inside a line (column alignment, double spaces after full stops) into one
//    space;
//  - keeps paragraphs apart with a single "\n", with no leading or trailing whitespace.
// Markup such as {cross references}, <domains> and \pro*nun"ci*a`tion\ is kept: it is real text of
// these dictionaries. May return "" for an article with no text left.
std::string CleanArticle(std::string_view raw);


enum class Split { kTrain, kValid, kTest };
const char* SplitName(Split split);  // "train", "valid", "test"

// Maps a key to a split: a uniform draw in [0, 1) from Fnv1a64(key) (bit-mixed) lands in valid below
// `valid_fraction`, in test below `valid_fraction + test_fraction`, else in train.
Split AssignSplit(std::string_view key, double valid_fraction, double test_fraction);

// The split key of an article: its alphabetically smallest headword, lowercased (ASCII). Keying by
// headword rather than by text keeps all articles of one word ("Vertebrate", n. and a.) in the same
// split, so held-out text is not a near-copy of training text.
std::string SplitKey(const DictEntry& entry);

struct DictionarySource {
  std::string name;  // files <name>.index and <name>.dict.dz; also the output subdirectory
  double valid_fraction;
  double test_fraction;
};

struct CorpusOptions {
  std::string dictd_dir = "/usr/share/dictd";
  // Measured on Debian 12's packages: GCIDE has 126K articles (31 MB cleaned), so 1% each is ~1.3K
  // articles, ~0.3 MB (~75K GPT-2 tokens) per held-out split, plenty for perplexity. FOLDOC has only
  // 12K articles (5 MB); 1% would be ~50 KB, too noisy, so it gets 5% (~600 articles, ~0.25 MB).
  std::vector<DictionarySource> dictionaries = {{"gcide", 0.01, 0.01}, {"foldoc", 0.05, 0.05}};
};

struct SplitStats {
  int64_t articles = 0;
  int64_t bytes = 0;  // size of the written file
};

struct DictionaryStats {
  std::string name;
  int64_t articles_read = 0;      // unique articles after skipping database info blocks
  int64_t articles_empty = 0;     // articles with no text left after cleaning (not written)
  int64_t repaired_bytes = 0;     // non-UTF-8 bytes fixed by RepairUtf8
  SplitStats train, valid, test;
};

struct CorpusStats {
  std::vector<DictionaryStats> dictionaries;  // in CorpusOptions::dictionaries order
};

// Reads each dictionary of `options`, cleans and splits its articles (kept in offset order within a
// split) and writes the split files and stats.json atomically. `stats` may be null.
Status PrepareCorpus(const std::string& out_dir, const CorpusOptions& options, CorpusStats* stats);

}  // namespace mnemo
