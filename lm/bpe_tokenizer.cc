#include "lm/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>

#include "util/file_util.h"

namespace mnemo {
namespace {

// ---- GPT-2's byte <-> unicode tables -------------------------------------------------------------

// bytes_to_unicode() maps the 188 printable Latin-1 bytes to themselves and the other 68 to
// U+0100.. in ascending byte order, so every code point used is below 256 + 68.
constexpr int kByteLevelCodePoints = 256 + 68;

struct ByteTables {
  std::array<uint8_t, 256> order{};
  std::array<std::string, 256> symbol;
  std::array<int16_t, kByteLevelCodePoints> code_point_to_byte{};

  ByteTables() {
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    code_point_to_byte.fill(-1);
    int next = 0;
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      if (printable[b]) Assign(&next, b, b);
    }
    for (int b = 0; b < 256; ++b) {
      if (!printable[b]) Assign(&next, b, 256 + extra++);
    }
  }

  void Assign(int* next, int byte, int code_point) {
    order[(*next)++] = static_cast<uint8_t>(byte);
    code_point_to_byte[code_point] = static_cast<int16_t>(byte);
    // Every code point here is below U+0800: one or two UTF-8 bytes.
    std::string& s = symbol[byte];
    if (code_point < 0x80) {
      s.push_back(static_cast<char>(code_point));
    } else {
      s.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
      s.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables tables;
  return tables;
}

// ---- UTF-8 -----------------------------------------------------------------------------------------

// Length of the longest prefix of s[0, n) that is valid UTF-8 as PCRE2 defines it (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF). PCRE2 is then run with NO_UTF_CHECK, so this
// must never be more permissive than PCRE2's own check.
size_t ValidUtf8Prefix(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // Allowed range of the second byte.
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c == 0xE0) {
      len = 3, lo = 0xA0;
    } else if (c == 0xED) {
      len = 3, hi = 0x9F;
    } else if (c >= 0xE1 && c <= 0xEF) {
      len = 3;
    } else if (c == 0xF0) {
      len = 4, lo = 0x90;
    } else if (c == 0xF4) {
      len = 4, hi = 0x8F;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = 4;
    } else {
      return i;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return n;
}

// Length of the (valid) UTF-8 sequence starting with lead byte c.
size_t Utf8SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  return 4;
}

// Decodes a byte-level token ("Ġthe") to its raw bytes; false if it holds anything but byte symbols.
bool ByteLevelToBytes(const std::string& token, std::string* bytes, uint32_t* bad_code_point) {
  const auto* s = reinterpret_cast<const unsigned char*>(token.data());
  const size_t n = token.size();
  if (ValidUtf8Prefix(s, n) != n) {
    *bad_code_point = 0xFFFFFFFF;
    return false;
  }
  bytes->clear();
  for (size_t i = 0; i < n;) {
    const size_t len = Utf8SequenceLength(s[i]);
    uint32_t cp = len == 1 ? s[i] : (s[i] & (0x7F >> len));
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    i += len;
    if (cp >= kByteLevelCodePoints || Tables().code_point_to_byte[cp] < 0) {
      *bad_code_point = cp;
      return false;
    }
    bytes->push_back(static_cast<char>(Tables().code_point_to_byte[cp]));
  }
  return true;
}

// ---- The pre-tokenizer regex -----------------------------------------------------------------------

// GPT-2's pattern with \s spelled \p{White_Space} (and \S its negation): that is exactly what \s means
// in Python's `regex` module, which encoder.py used, whereas PCRE2's \s also matches U+180E
// (MONGOLIAN VOWEL SEPARATOR, no longer whitespace since Unicode 6.3). Letters and digits (\p{L},
// \p{N}) follow PCRE2's Unicode tables (14.0 in PCRE2 10.42), so code points assigned after that
// may split differently from a newer Python.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+)"
    R"(|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+)";

class Gpt2Regex {
 public:
  static const Gpt2Regex& Get() {
    static const Gpt2Regex regex;
    return regex;
  }
  const pcre2_code* code() const { return code_; }

 private:
  Gpt2Regex() {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (code_ == nullptr) {
      // A constant pattern that does not compile is a broken build (e.g. PCRE2 without Unicode).
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      std::fprintf(stderr, "mnemo: GPT-2 regex failed to compile at %zu: %s\n",
                   static_cast<size_t>(offset), reinterpret_cast<const char*>(message));
      std::abort();
    }
    // Without JIT (unsupported platform) the interpreter gives the same matches, only slower.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  pcre2_code* code_ = nullptr;
};

// pcre2_match_data is scratch space that one match at a time may use, so each thread has its own.
pcre2_match_data* ThreadMatchData() {
  struct Holder {
    pcre2_match_data* data = nullptr;
    ~Holder() { pcre2_match_data_free(data); }
  };
  thread_local Holder holder;
  if (holder.data == nullptr) {
    holder.data = pcre2_match_data_create_from_pattern(Gpt2Regex::Get().code(), nullptr);
  }
  return holder.data;
}

// Pre-tokenizes a run that is known to be valid UTF-8.
void SplitValidRun(std::string_view run, const std::function<void(std::string_view)>& emit) {
  const pcre2_code* code = Gpt2Regex::Get().code();
  pcre2_match_data* data = ThreadMatchData();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(run.data());
  size_t offset = 0;
  while (offset < run.size()) {
    int rc = pcre2_match(code, subject, run.size(), offset, PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // A resource limit of the JIT stack; the interpreter keeps its backtracking on the heap.
      rc = pcre2_match(code, subject, run.size(), offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data,
                       nullptr);
    }
    size_t end = 0;
    if (rc > 0) {
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
      if (ovector[0] == offset && ovector[1] > offset) end = ovector[1];
    }
    if (end == 0) {
      // Every code point is \s, \p{L}, \p{N} or none of them, so the regex always matches at
      // `offset`; only a PCRE2 resource limit lands here. Degrade to one code point, never fail.
      end = std::min(run.size(), offset + Utf8SequenceLength(static_cast<unsigned char>(run[offset])));
    }
    emit(run.substr(offset, end - offset));
    offset = end;
  }
}

// ---- Loading helpers -------------------------------------------------------------------------------

std::string Quote(std::string_view s) {
  // Byte-level tokens are printable; only cap the length so a bad line cannot flood a log.
  constexpr size_t kMaxShown = 60;
  if (s.size() > kMaxShown) return "\"" + std::string(s.substr(0, kMaxShown)) + "...\"";
  return "\"" + std::string(s) + "\"";
}

Status ParseVocabJson(const std::string& path, const std::string& text,
                      std::vector<std::string>* id_to_token) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Status::Corruption(path + ": not valid JSON");
  if (!json.is_object()) {
    return Status::Corruption(path + ": expected a JSON object mapping token -> id");
  }
  const size_t n = json.size();
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::Corruption(path + ": too many tokens");
  }
  id_to_token->assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (const auto& item : json.items()) {
    const nlohmann::json& value = item.value();
    if (!value.is_number_integer()) {
      return Status::Corruption(path + ": id of token " + Quote(item.key()) + " is " +
                                value.type_name() + ", not an integer");
    }
    // Read unsigned ids as unsigned so a huge one cannot wrap into range.
    const bool in_range = value.is_number_unsigned() ? value.get<uint64_t>() < n
                                                     : value.get<int64_t>() >= 0 &&
                                                           static_cast<uint64_t>(value.get<int64_t>()) < n;
    if (!in_range) {
      return Status::Corruption(path + ": token " + Quote(item.key()) + " has id " + value.dump() +
                                "; ids must be dense 0.." + std::to_string(n - 1) + " for " +
                                std::to_string(n) + " tokens");
    }
    const size_t id = value.get<size_t>();
    if (seen[id]) {
      return Status::Corruption(path + ": id " + std::to_string(id) + " is used by both " +
                                Quote((*id_to_token)[id]) + " and " + Quote(item.key()));
    }
    seen[id] = true;
    (*id_to_token)[id] = item.key();
  }
  return Status::OK();
}

Status ParseMerges(const std::string& path, const std::string& text,
                   std::vector<BpeTokenizer::Merge>* merges, std::vector<int>* lines) {
  size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    size_t newline = text.find('\n', pos);
    if (newline == std::string::npos) newline = text.size();
    std::string_view line(text.data() + pos, newline - pos);
    pos = newline + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Hugging Face writes "#version: 0.2" first; blank lines carry no merge and are harmless.
    if (line.empty() || line.substr(0, 8) == "#version") continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      return Status::Corruption(path + " line " + std::to_string(line_no) +
                                ": expected \"left right\", got " + Quote(line));
    }
    merges->emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
    lines->push_back(line_no);
  }
  return Status::OK();
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Word cache sizing: 32 shards keep lock contention low for a handful of encoding threads; pieces
// longer than 64 bytes rarely repeat, and 32 x 8192 entries bound the memory to a few tens of MB.
constexpr size_t kCacheShards = 32;
constexpr size_t kMaxEntriesPerShard = 8192;
constexpr size_t kMaxCachedPieceBytes = 64;

}  // namespace

// ---- Public helpers --------------------------------------------------------------------------------

std::string_view ByteLevelSymbol(uint8_t byte) { return Tables().symbol[byte]; }

const std::array<uint8_t, 256>& ByteLevelOrder() { return Tables().order; }

void Gpt2PreTokenize(std::string_view text, const std::function<void(std::string_view)>& emit) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const size_t valid = ValidUtf8Prefix(bytes + i, text.size() - i);
    if (valid > 0) {
      SplitValidRun(text.substr(i, valid), emit);
      i += valid;
    } else {
      emit(text.substr(i, 1));  // A byte that starts no valid sequence is a piece of its own.
      ++i;
    }
  }
}

// ---- BpeTokenizer ----------------------------------------------------------------------------------

struct BpeTokenizer::CacheShard {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

BpeTokenizer::BpeTokenizer() : cache_(new CacheShard[kCacheShards]) {}
BpeTokenizer::~BpeTokenizer() = default;

Status BpeTokenizer::Load(const std::string& dir, std::unique_ptr<BpeTokenizer>* out) {
  const std::string hf_vocab = dir + "/vocab.json", hf_merges = dir + "/merges.txt";
  const std::string openai_vocab = dir + "/encoder.json", openai_merges = dir + "/vocab.bpe";
  const bool hf_complete = FileExists(hf_vocab) && FileExists(hf_merges);
  const bool openai_complete = FileExists(openai_vocab) && FileExists(openai_merges);
  if (hf_complete || (!openai_complete && (FileExists(hf_vocab) || FileExists(hf_merges)))) {
    return FromFiles(hf_vocab, hf_merges, out);  // A half pair reports its missing file.
  }
  if (openai_complete || FileExists(openai_vocab) || FileExists(openai_merges)) {
    return FromFiles(openai_vocab, openai_merges, out);
  }
  return Status::NotFound(dir + ": no tokenizer files (expected vocab.json + merges.txt or "
                                "encoder.json + vocab.bpe)");
}

Status BpeTokenizer::FromFiles(const std::string& vocab_json_path, const std::string& merges_path,
                               std::unique_ptr<BpeTokenizer>* out) {
  std::string vocab_text, merges_text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(vocab_json_path, &vocab_text));
  MNEMO_RETURN_IF_ERROR(ReadFileToString(merges_path, &merges_text));
  std::vector<std::string> id_to_token;
  MNEMO_RETURN_IF_ERROR(ParseVocabJson(vocab_json_path, vocab_text, &id_to_token));
  std::vector<Merge> merges;
  std::vector<int> lines;
  MNEMO_RETURN_IF_ERROR(ParseMerges(merges_path, merges_text, &merges, &lines));
  return Build(std::move(id_to_token), std::move(merges), vocab_json_path, merges_path, lines, out);
}

Status BpeTokenizer::FromVocabAndMerges(std::vector<std::string> id_to_token, std::vector<Merge> merges,
                                        std::unique_ptr<BpeTokenizer>* out) {
  Status s = Build(std::move(id_to_token), std::move(merges), "vocabulary", "merges", {}, out);
  // The same checks as for files, but here the caller handed us the bad data.
  if (!s.ok()) return Status::InvalidArgument(s.message());
  return s;
}

Status BpeTokenizer::Build(std::vector<std::string> id_to_token, std::vector<Merge> merges,
                           const std::string& vocab_name, const std::string& merges_name,
                           const std::vector<int>& merge_lines, std::unique_ptr<BpeTokenizer>* out) {
  if (id_to_token.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::Corruption(vocab_name + ": too many tokens");
  }
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  const int32_t n = static_cast<int32_t>(id_to_token.size());
  tok->token_to_id_.reserve(n);
  tok->id_to_bytes_.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& token = id_to_token[id];
    if (token.empty()) return Status::Corruption(vocab_name + ": token " + std::to_string(id) + " is empty");
    auto [it, inserted] = tok->token_to_id_.emplace(token, id);
    if (!inserted) {
      return Status::Corruption(vocab_name + ": token " + Quote(token) + " has two ids, " +
                                std::to_string(it->second) + " and " + std::to_string(id));
    }
    uint32_t bad = 0;
    if (!ByteLevelToBytes(token, &tok->id_to_bytes_[id], &bad)) {
      char what[32];
      if (bad == 0xFFFFFFFF) {
        std::snprintf(what, sizeof(what), "invalid UTF-8");
      } else {
        std::snprintf(what, sizeof(what), "U+%04X", static_cast<unsigned>(bad));
      }
      return Status::Corruption(vocab_name + ": token " + std::to_string(id) + " " + Quote(token) +
                                " contains " + what + ", which is not a GPT-2 byte-level symbol");
    }
  }
  for (int b = 0; b < 256; ++b) {
    auto it = tok->token_to_id_.find(std::string(ByteLevelSymbol(static_cast<uint8_t>(b))));
    if (it == tok->token_to_id_.end()) {
      char byte[8];
      std::snprintf(byte, sizeof(byte), "0x%02X", b);
      return Status::Corruption(vocab_name + ": no token for byte " + byte + " (" +
                                Quote(ByteLevelSymbol(static_cast<uint8_t>(b))) +
                                "); a byte-level vocabulary needs all 256");
    }
    tok->byte_to_id_[b] = it->second;
  }
  tok->merge_ranks_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Merge& merge = merges[rank];
    const std::string where =
        merges_name + (merge_lines.empty() ? " entry " + std::to_string(rank)
                                           : " line " + std::to_string(merge_lines[rank]));
    const std::string result = merge.first + merge.second;
    for (const std::string* part : {&merge.first, &merge.second, &result}) {
      if (tok->token_to_id_.count(*part) == 0) {
        return Status::Corruption(where + ": merge " + Quote(merge.first + " " + merge.second) +
                                  (part == &result ? " produces " : " uses ") + Quote(*part) +
                                  ", which is not in " + vocab_name + " (vocab/merges mismatch)");
      }
    }
    if (rank > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return Status::Corruption(merges_name + ": too many merges");
    }
    // A repeated pair takes its later rank, as in encoder.py's dict(zip(merges, range(...))).
    tok->merge_ranks_[PairKey(tok->token_to_id_[merge.first], tok->token_to_id_[merge.second])] = {
        static_cast<int32_t>(rank), tok->token_to_id_[result]};
  }
  auto eot = tok->token_to_id_.find("<|endoftext|>");
  tok->eot_id_ = eot == tok->token_to_id_.end() ? -1 : eot->second;
  tok->id_to_token_ = std::move(id_to_token);
  tok->merges_ = std::move(merges);
  *out = std::move(tok);
  return Status::OK();
}

Status BpeTokenizer::Save(const std::string& dir) const {
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  // One token per line in id order: same JSON as Hugging Face's, but diffable and readable.
  std::string vocab = "{\n";
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    vocab += "  " + nlohmann::json(id_to_token_[id]).dump() + ": " + std::to_string(id);
    vocab += id + 1 < id_to_token_.size() ? ",\n" : "\n";
  }
  vocab += "}\n";
  // Byte-level symbols never include a space or newline, so "left right" lines are unambiguous.
  std::string merges = "#version: 0.2\n";
  for (const Merge& merge : merges_) merges += merge.first + " " + merge.second + "\n";
  MNEMO_RETURN_IF_ERROR(WriteFileAtomically(dir + "/vocab.json", vocab));
  return WriteFileAtomically(dir + "/merges.txt", merges);
}

int32_t BpeTokenizer::TokenId(std::string_view byte_level_token) const {
  auto it = token_to_id_.find(std::string(byte_level_token));
  return it == token_to_id_.end() ? -1 : it->second;
}

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);  // English averages ~4 bytes per GPT-2 token.
  Gpt2PreTokenize(text, [&](std::string_view piece) { EncodePiece(piece, &ids); });
  return ids;
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    ids->push_back(byte_to_id_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (piece.size() > kMaxCachedPieceBytes) {
    MergePiece(piece, ids);
    return;
  }
  const size_t hash = std::hash<std::string_view>()(piece);
  CacheShard& shard = cache_[hash % kCacheShards];
  std::string key(piece);
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(key);
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = ids->size();
  MergePiece(piece, ids);
  std::vector<int32_t> merged(ids->begin() + start, ids->end());
  std::lock_guard<std::mutex> lock(shard.mu);
  // Dropping a whole shard when full is cruder than LRU but keeps hits lock-and-lookup cheap.
  if (shard.words.size() >= kMaxEntriesPerShard) shard.words.clear();
  shard.words.emplace(std::move(key), std::move(merged));
}

void BpeTokenizer::MergePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  // Symbols form a linked list; candidate merges sit in a min-heap by (rank, position) and are
  // checked on pop, since an earlier merge may have consumed either side. Ties go to the leftmost
  // pair, which reproduces encoder.py's "merge every occurrence of the best pair, left to right"
  // in O(n log n) instead of O(n^2) for long pieces.
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_to_id_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::vector<Candidate> heap;
  auto consider = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    auto it = merge_ranks_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it == merge_ranks_.end()) return;
    heap.push_back({it->second.first, pos, symbols[pos].id, symbols[next].id, it->second.second});
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.pos];
    if (left.id != c.left || left.next < 0 || symbols[left.next].id != c.right) continue;  // Stale.
    Symbol& right = symbols[left.next];
    left.id = c.merged;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[left.next].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    if (left.next >= 0) consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  const int32_t n = vocab_size();
  size_t total = 0;
  for (int32_t id : ids) {
    if (id >= 0 && id < n) total += id_to_bytes_[id].size();
  }
  std::string text;
  text.reserve(total);
  for (int32_t id : ids) {
    if (id >= 0 && id < n) text += id_to_bytes_[id];
  }
  return text;
}

std::string BpeTokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  return id_to_bytes_[id];
}

}  // namespace mnemo
