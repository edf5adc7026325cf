#include "lm/corpus.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "util/file_util.h"
#include "util/hash.h"

namespace mnemo {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::vector<std::string_view> SplitOn(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// Decompresses a whole dictzip/gzip file (or copies a plain one: gzread passes those through).
Status ReadGzipFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::IOError(path + ": cannot open: " + std::strerror(err));
  }
  gzFile gz = gzdopen(fd, "rb");
  if (gz == nullptr) {
    ::close(fd);
    return Status::IOError(path + ": gzdopen failed");
  }
  gzbuffer(gz, 1 << 20);
  out->clear();
  constexpr size_t kChunk = 4 << 20;
  Status status;
  while (true) {
    const size_t old_size = out->size();
    out->resize(old_size + kChunk);
    const int n = gzread(gz, &(*out)[old_size], static_cast<unsigned>(kChunk));
    if (n < 0) {
      int errnum;
      status = Status::Corruption(path + ": cannot decompress: " + gzerror(gz, &errnum));
      out->resize(old_size);
      break;
    }
    out->resize(old_size + static_cast<size_t>(n));
    if (n == 0) {
      // A stream cut short reads as end of file; zlib reports it only through gzerror.
      int errnum = Z_OK;
      const char* msg = gzerror(gz, &errnum);
      if (errnum != Z_OK && errnum != Z_STREAM_END) {
        status = Status::Corruption(path + ": cannot decompress: " + msg);
      }
      break;
    }
  }
  const int close_result = gzclose_r(gz);
  if (status.ok() && close_result != Z_OK) {
    status = Status::Corruption(path + ": compressed stream ends early or is damaged");
  }
  return status;
}

bool IsDatabaseInfoHeadword(std::string_view headword) {
  // "00databse" is not a typo here: older dictfmt versions spelled their header words that way.
  return StartsWith(headword, "00-database") || StartsWith(headword, "00databse");
}

// A GCIDE source tag names where the text came from ("1913 Webster", "Webster 1913 Suppl.",
// "WordNet 1.5 +PJC", "Century Dict. 1906"): every word is a known source name, a qualifier, or a
// number. Usage labels ("Obs.", "Colloq.") and etymologies ("AS. luflic.") contain other words.
bool IsSourceTag(std::string_view content) {
  static constexpr std::string_view kSourceNames[] = {"Webster", "WordNet", "PJC", "PJC.", "AS",   "RDH",
                                                      "GG",      "RP",      "CM",  "JG",   "MW10", "PC",
                                                      "Century"};
  static constexpr std::string_view kQualifiers[] = {"Suppl.", "sense", "Dict.", "Dict.,", "Dictionary"};
  bool has_source = false;
  size_t i = 0;
  while (i < content.size()) {
    if (IsBlank(content[i]) || content[i] == '+') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < content.size() && !IsBlank(content[j]) && content[j] != '+') ++j;
    const std::string_view word = content.substr(i, j - i);
    i = j;
    if (std::find(std::begin(kSourceNames), std::end(kSourceNames), word) != std::end(kSourceNames)) {
      has_source = true;
    } else if (std::find(std::begin(kQualifiers), std::end(kQualifiers), word) == std::end(kQualifiers) &&
               word.find_first_not_of("0123456789.,&") != std::string_view::npos) {
      return false;
    }
  }
  return has_source;
}

// Length of a source tag that starts `line`, or 0.
size_t LeadingSourceTag(std::string_view line) {
  if (line.empty() || line.front() != '[') return 0;
  const size_t close = line.find_first_of("[]", 1);
  if (close == std::string_view::npos || line[close] != ']') return 0;
  return IsSourceTag(line.substr(1, close - 1)) ? close + 1 : 0;
}

// Calls visit(begin, end) for each source tag "[...]" in `text`, in order.
template <typename Visit>
void ForEachSourceTag(std::string_view text, Visit visit) {
  size_t open = text.find('[');
  while (open != std::string_view::npos) {
    const size_t close = text.find_first_of("[]", open + 1);
    if (close == std::string_view::npos) return;
    if (text[close] == '[') {  // "[a [b]": only the inner bracket can be a tag.
      open = close;
      continue;
    }
    if (IsSourceTag(text.substr(open + 1, close - open - 1))) visit(open, close + 1);
    open = text.find('[', close + 1);
  }
}

bool ContainsSourceTag(std::string_view text) {
  bool found = false;
  ForEachSourceTag(text, [&](size_t, size_t) { found = true; });
  return found;
}

// Removes the source tags from an unwrapped paragraph. A tag is removed with the space before it when
// what follows is a space, punctuation or the end ("sense 3] [1913 Webster]", "{Sciuropterus}
// [1913 Webster])"), so no stray space is left; otherwise ("[WordNet sense 1]-- {Her*maph..}") the
// space stays between the neighbours.
std::string RemoveSourceTags(const std::string& paragraph) {
  std::string out;
  size_t copied = 0;
  ForEachSourceTag(paragraph, [&](size_t begin, size_t end) {
    out.append(paragraph, copied, begin - copied);
    const char next = end < paragraph.size() ? paragraph[end] : ' ';
    if (std::strchr(" ).,;:]", next) != nullptr && !out.empty() && out.back() == ' ') out.pop_back();
    copied = end;
  });
  if (copied == 0) return paragraph;
  out.append(paragraph, copied, std::string::npos);
  // A tag at the start of a paragraph leaves the space that followed it.
  return std::string(Trim(out));
}

// FOLDOC's last-updated stamp, "(1994-11-08)", alone on a line.
bool IsDateLine(std::string_view line) {
  static constexpr std::string_view kShape = "(9999-99-99)";
  if (line.size() != kShape.size()) return false;
  for (size_t i = 0; i < line.size(); ++i) {
    const bool digit = line[i] >= '0' && line[i] <= '9';
    if (kShape[i] == '9' ? !digit : line[i] != kShape[i]) return false;
  }
  return true;
}

// Appends `line` to a paragraph, one space before it and every inner run of blanks made one space.
void AppendUnwrapped(std::string_view line, std::string* paragraph) {
  bool pending_space = !paragraph->empty();
  for (char c : line) {
    if (IsBlank(c)) {
      pending_space = true;
      continue;
    }
    if (pending_space) paragraph->push_back(' ');
    pending_space = false;
    paragraph->push_back(c);
  }
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or values past
// U+10FFFF) starting at s[i], or 0.
size_t Utf8SequenceLength(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = byte(i);
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return len;
}

std::string JoinArticles(const std::vector<const std::string*>& articles) {
  std::string out;
  for (size_t i = 0; i < articles.size(); ++i) {
    if (i > 0) out += "\n\n";
    out += *articles[i];
  }
  if (!out.empty()) out += '\n';
  return out;
}

}  // namespace

bool DecodeDictdNumber(std::string_view digits, uint64_t* out) {
  // Ten digits already reach 2^60, far past any dictionary; more could overflow.
  if (digits.empty() || digits.size() > 10) return false;
  uint64_t value = 0;
  for (char c : digits) {
    int d;
    if (c >= 'A' && c <= 'Z') {
      d = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      d = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      d = c - '0' + 52;
    } else if (c == '+') {
      d = 62;
    } else if (c == '/') {
      d = 63;
    } else {
      return false;
    }
    value = value * 64 + static_cast<uint64_t>(d);
  }
  *out = value;
  return true;
}

Status ReadDictdEntries(const std::string& index_path, const std::string& dict_path,
                        std::vector<DictEntry>* out) {
  std::string index;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(index_path, &index));
  std::string dict;
  MNEMO_RETURN_IF_ERROR(ReadGzipFile(dict_path, &dict));

  std::map<std::pair<uint64_t, uint64_t>, std::vector<std::string>> headwords_by_range;
  size_t line_number = 0;
  for (std::string_view line : SplitOn(index, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = index_path + ":" + std::to_string(line_number) + ": ";
    // A fourth field (the original spelling of the headword) is written by some dictfmt options.
    const std::vector<std::string_view> fields = SplitOn(line, '\t');
    if (fields.size() != 3 && fields.size() != 4) {
      return Status::Corruption(where + "expected headword<TAB>offset<TAB>length, found " +
                                std::to_string(fields.size()) + " tab-separated field(s)");
    }
    uint64_t offset, length;
    if (!DecodeDictdNumber(fields[1], &offset)) {
      return Status::Corruption(where + "bad offset '" + std::string(fields[1]) + "'");
    }
    if (!DecodeDictdNumber(fields[2], &length)) {
      return Status::Corruption(where + "bad length '" + std::string(fields[2]) + "'");
    }
    if (offset > dict.size() || length > dict.size() - offset) {
      return Status::Corruption(where + "article [" + std::to_string(offset) + ", " +
                                std::to_string(offset + length) + ") is outside the " +
                                std::to_string(dict.size()) + "-byte " + dict_path);
    }
    headwords_by_range[{offset, length}].emplace_back(fields[0]);
  }

  out->clear();
  for (auto& [range, headwords] : headwords_by_range) {
    // dictfmt files its own info blocks under several names ("00-database-info", "00-web1913-info");
    // one database name among them marks the block.
    if (std::any_of(headwords.begin(), headwords.end(), IsDatabaseInfoHeadword)) continue;
    DictEntry entry;
    entry.headwords = std::move(headwords);
    entry.offset = range.first;
    entry.length = range.second;
    entry.text = dict.substr(range.first, range.second);
    out->push_back(std::move(entry));
  }
  return Status::OK();
}

size_t RepairUtf8(std::string* text) {
  // Windows-1252 for 0x80..0x9F; 0 marks the five undefined bytes.
  static constexpr uint16_t kCp1252High[32] = {
      0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};
  size_t i = 0;
  while (i < text->size()) {  // Fast path: most text is already valid.
    const size_t len = Utf8SequenceLength(*text, i);
    if (len == 0) break;
    i += len;
  }
  if (i == text->size()) return 0;

  std::string fixed = text->substr(0, i);
  size_t repaired = 0;
  while (i < text->size()) {
    const size_t len = Utf8SequenceLength(*text, i);
    if (len > 0) {
      fixed.append(*text, i, len);
      i += len;
      continue;
    }
    const uint8_t c = static_cast<uint8_t>((*text)[i]);
    uint32_t cp = c >= 0xA0 ? c : kCp1252High[c - 0x80];
    if (cp == 0) cp = 0xFFFD;
    AppendUtf8(cp, &fixed);
    ++repaired;
    ++i;
  }
  *text = std::move(fixed);
  return repaired;
}

std::string CleanArticle(std::string_view raw) {
  const std::vector<std::string_view> lines = SplitOn(raw, '\n');
  // dictfmt sometimes glues the next entry's headwords onto the last source tag of an article
  // ("   [1913 Webster] Zymologic", maybe more headwords on the lines below). Text after a tag that
  // begins a line is that leak when no source tag follows it anywhere in the article; otherwise it is
  // real ("[1913 Webster] Specifically: ... [1913 Webster]"), as are run-on derivatives after a final
  // tag ("[1913 Webster] -- {Tax"a*bly}, adv."). Dropping the leak drops the rest of the article.
  size_t end_line = lines.size();
  for (size_t i = 0; i < lines.size() && end_line == lines.size(); ++i) {
    const std::string_view s = Trim(lines[i]);
    const size_t tag_len = LeadingSourceTag(s);
    if (tag_len == 0) continue;
    const std::string_view rest = Trim(s.substr(tag_len));
    if (rest.empty() || StartsWith(rest, "--")) continue;
    // Tags can be wrapped over two lines ("[WordNet\n   sense 3]"), so look for one in the joined rest.
    std::string remainder(rest);
    for (size_t j = i + 1; j < lines.size(); ++j) AppendUnwrapped(lines[j], &remainder);
    if (!ContainsSourceTag(remainder)) end_line = i;
  }

  std::vector<std::string> paragraphs;
  std::string paragraph;
  auto end_paragraph = [&] {
    std::string cleaned = RemoveSourceTags(paragraph);
    if (!cleaned.empty()) paragraphs.push_back(std::move(cleaned));
    paragraph.clear();
  };
  for (size_t i = 0; i < end_line; ++i) {
    const std::string_view s = Trim(lines[i]);
    if (s.empty()) {
      end_paragraph();
    } else if (!IsDateLine(s)) {
      AppendUnwrapped(s, &paragraph);
    }
  }
  end_paragraph();

  std::string out;
  for (size_t i = 0; i < paragraphs.size(); ++i) {
    if (i > 0) out += '\n';
    out += paragraphs[i];
  }
  return out;
}

const char* SplitName(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kValid: return "valid";
    case Split::kTest: return "test";
  }
  return "train";
}

Split AssignSplit(std::string_view key, double valid_fraction, double test_fraction) {
  // FNV-1a alone spreads short keys unevenly over its high bits (measured: 9.0% of FOLDOC headwords
  // fell below 0.05), so MurmurHash3's fmix64 finalizer mixes it first (5.1%).
  uint64_t h = Fnv1a64(key);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  if (u < valid_fraction) return Split::kValid;
  if (u < valid_fraction + test_fraction) return Split::kTest;
  return Split::kTrain;
}

std::string SplitKey(const DictEntry& entry) {
  std::string best;
  for (size_t i = 0; i < entry.headwords.size(); ++i) {
    std::string lower = entry.headwords[i];
    for (char& c : lower) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (i == 0 || lower < best) best = std::move(lower);
  }
  return entry.headwords.empty() ? entry.text : best;
}

Status PrepareCorpus(const std::string& out_dir, const CorpusOptions& options, CorpusStats* stats) {
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(out_dir));
  CorpusStats result;
  nlohmann::ordered_json stats_json = {{"dictionaries", nlohmann::ordered_json::array()}};
  for (const DictionarySource& source : options.dictionaries) {
    if (source.name.empty() || source.name.find('/') != std::string::npos) {
      return Status::InvalidArgument("dictionary name '" + source.name + "' is not a plain file name");
    }
    if (!(source.valid_fraction >= 0 && source.test_fraction >= 0 &&
          source.valid_fraction + source.test_fraction < 1)) {
      return Status::InvalidArgument(source.name + ": valid and test fractions must be >= 0 and sum below 1");
    }
    const std::string base = options.dictd_dir + "/" + source.name;
    // Debian ships dictzip'ed ".dict.dz"; a hand-built dictionary may be a plain ".dict".
    std::string dict_path = base + ".dict.dz";
    if (!FileExists(dict_path) && FileExists(base + ".dict")) dict_path = base + ".dict";
    std::vector<DictEntry> entries;
    MNEMO_RETURN_IF_ERROR(ReadDictdEntries(base + ".index", dict_path, &entries));

    DictionaryStats ds;
    ds.name = source.name;
    ds.articles_read = static_cast<int64_t>(entries.size());
    std::vector<std::string> cleaned(entries.size());
    std::vector<const std::string*> by_split[3];
    for (size_t i = 0; i < entries.size(); ++i) {
      std::string text = std::move(entries[i].text);
      ds.repaired_bytes += static_cast<int64_t>(RepairUtf8(&text));
      cleaned[i] = CleanArticle(text);
      if (cleaned[i].empty()) {
        ++ds.articles_empty;
        continue;
      }
      const Split split = AssignSplit(SplitKey(entries[i]), source.valid_fraction, source.test_fraction);
      by_split[static_cast<int>(split)].push_back(&cleaned[i]);
    }

    const std::string dir = out_dir + "/" + source.name;
    MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
    nlohmann::ordered_json splits_json = nlohmann::ordered_json::object();
    for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
      const std::vector<const std::string*>& articles = by_split[static_cast<int>(split)];
      const std::string contents = JoinArticles(articles);
      MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + SplitName(split) + ".txt", contents));
      SplitStats& ss = split == Split::kTrain ? ds.train : split == Split::kValid ? ds.valid : ds.test;
      ss.articles = static_cast<int64_t>(articles.size());
      ss.bytes = static_cast<int64_t>(contents.size());
      splits_json[SplitName(split)] = {{"articles", ss.articles}, {"bytes", ss.bytes}};
    }
    stats_json["dictionaries"].push_back({{"name", ds.name},
                                          {"valid_fraction", source.valid_fraction},
                                          {"test_fraction", source.test_fraction},
                                          {"articles_read", ds.articles_read},
                                          {"articles_empty", ds.articles_empty},
                                          {"repaired_bytes", ds.repaired_bytes},
                                          {"splits", std::move(splits_json)}});
    result.dictionaries.push_back(std::move(ds));
  }
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/stats.json", stats_json.dump(2) + "\n"));
  if (stats != nullptr) *stats = std::move(result);
  return Status::OK();
}

}  // namespace mnemo
