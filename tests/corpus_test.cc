#include "lm/corpus.h"
#include "util/hash.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;
using testing::WriteFileOrDie;

// dictd base64, most significant digit first.
std::string DictdNumber(uint64_t v) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  do {
    out.insert(out.begin(), kDigits[v % 64]);
    v /= 64;
  } while (v > 0);
  return out;
}

void WriteGzip(const std::string& path, const std::string& data) {
  gzFile gz = gzopen(path.c_str(), "wb");
  ASSERT_NE(gz, nullptr) << path;
  ASSERT_EQ(gzwrite(gz, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

struct Article {
  std::vector<std::string> headwords;
  std::string text;
};

// Writes <dir>/<name>.index and <name>.dict.dz (or a plain <name>.dict) like dictfmt: articles
// back to back, one index line per headword, index lines sorted by headword.
void WriteDictionary(const std::string& dir, const std::string& name, const std::vector<Article>& articles,
                     bool compressed = true) {
  std::string dict;
  std::multimap<std::string, std::string> lines;
  for (const Article& a : articles) {
    for (const std::string& h : a.headwords) {
      lines.emplace(h, h + "\t" + DictdNumber(dict.size()) + "\t" + DictdNumber(a.text.size()) + "\n");
    }
    dict += a.text;
  }
  std::string index;
  for (const auto& [headword, line] : lines) index += line;
  WriteFileOrDie(dir + "/" + name + ".index", index);
  if (compressed) {
    WriteGzip(dir + "/" + name + ".dict.dz", dict);
  } else {
    WriteFileOrDie(dir + "/" + name + ".dict", dict);
  }
}

std::vector<std::string> SplitArticles(const std::string& file) {
  std::vector<std::string> out;
  if (file.empty()) return out;
  EXPECT_EQ(file.back(), '\n');
  const std::string body = file.substr(0, file.size() - 1);
  size_t start = 0;
  while (true) {
    const size_t pos = body.find("\n\n", start);
    out.push_back(body.substr(start, pos - start));
    if (pos == std::string::npos) return out;
    start = pos + 2;
  }
}

// ---- dictd reading.

TEST(CorpusTest, DecodesDictdBase64) {
  uint64_t v = 99;
  EXPECT_TRUE(DecodeDictdNumber("A", &v));
  EXPECT_EQ(v, 0u);
  EXPECT_TRUE(DecodeDictdNumber("/", &v));
  EXPECT_EQ(v, 63u);
  EXPECT_TRUE(DecodeDictdNumber("BA", &v));
  EXPECT_EQ(v, 64u);
  EXPECT_TRUE(DecodeDictdNumber("5I", &v));  // From the real gcide.index: '5' = 57, 'I' = 8.
  EXPECT_EQ(v, 57u * 64 + 8);
  EXPECT_TRUE(DecodeDictdNumber("Fz", &v));
  EXPECT_EQ(v, 5u * 64 + 51);
  EXPECT_TRUE(DecodeDictdNumber("+a", &v));
  EXPECT_EQ(v, 62u * 64 + 26);
  for (uint64_t x : {0ull, 1ull, 63ull, 64ull, 4095ull, 39952321ull, (1ull << 60) - 1}) {
    ASSERT_TRUE(DecodeDictdNumber(DictdNumber(x), &v)) << x;
    EXPECT_EQ(v, x);
  }
  EXPECT_FALSE(DecodeDictdNumber("", &v));
  EXPECT_FALSE(DecodeDictdNumber("A=", &v));
  EXPECT_FALSE(DecodeDictdNumber("-1", &v));
  EXPECT_FALSE(DecodeDictdNumber("AAAAAAAAAAA", &v));  // 11 digits could overflow.
}

TEST(CorpusTest, ReadsEntriesDeduplicatedAndInOffsetOrder) {
  ScratchDir dir;
  WriteDictionary(dir.path(), "d",
                  {{{"00-database-info", "00-d-info"}, "00-database-info\n   About this file.\n\n"},
                   {{"00databseshort"}, "old-style header\n\n"},
                   {{"zebra", "Zebras"}, "Zebra\n   A striped animal.\n\n"},
                   {{"apple"}, "Apple\n   A fruit.\n\n"}});
  std::vector<DictEntry> entries;
  Status s = ReadDictdEntries(dir.File("d.index"), dir.File("d.dict.dz"), &entries);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(entries.size(), 2u);
  // Offset order, not index (alphabetical) order: zebra was written first.
  EXPECT_EQ(entries[0].headwords, (std::vector<std::string>{"Zebras", "zebra"}));
  EXPECT_EQ(entries[0].text, "Zebra\n   A striped animal.\n\n");
  EXPECT_EQ(entries[1].headwords, (std::vector<std::string>{"apple"}));
  EXPECT_EQ(entries[1].text, "Apple\n   A fruit.\n\n");
  EXPECT_EQ(entries[1].offset, entries[0].offset + entries[0].length);
}

TEST(CorpusTest, ReadsUncompressedDict) {
  ScratchDir dir;
  WriteDictionary(dir.path(), "d", {{{"a"}, "A\n   first\n"}, {{"b"}, "B\n   second\n"}}, /*compressed=*/false);
  std::vector<DictEntry> entries;
  ASSERT_TRUE(ReadDictdEntries(dir.File("d.index"), dir.File("d.dict"), &entries).ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].text, "B\n   second\n");
}

TEST(CorpusTest, BadIndexLineIsCorruption) {
  ScratchDir dir;
  WriteGzip(dir.File("d.dict.dz"), std::string(100, 'x'));
  const std::pair<const char*, const char*> cases[] = {
      {"good\tA\tB\nno tabs here\n", "found 1 tab-separated field"},
      {"good\tA\tB\nbad\tA*\tB\n", "bad offset 'A*'"},
      {"good\tA\tB\nbad\tA\t\n", "bad length ''"},
      {"good\tA\tB\nbad\tBk\tB\n", "outside the 100-byte"},  // offset 100 + length 1
  };
  for (const auto& [index, problem] : cases) {
    WriteFileOrDie(dir.File("d.index"), index);
    std::vector<DictEntry> entries;
    Status s = ReadDictdEntries(dir.File("d.index"), dir.File("d.dict.dz"), &entries);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
    // The message names the index file and the line.
    EXPECT_NE(s.message().find(dir.File("d.index") + ":2:"), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find(problem), std::string::npos) << s.ToString();
  }
}

TEST(CorpusTest, MissingFileIsNotFound) {
  ScratchDir dir;
  WriteDictionary(dir.path(), "d", {{{"a"}, "A\n"}});
  std::vector<DictEntry> entries;
  EXPECT_TRUE(ReadDictdEntries(dir.File("nope.index"), dir.File("d.dict.dz"), &entries).IsNotFound());
  EXPECT_TRUE(ReadDictdEntries(dir.File("d.index"), dir.File("nope.dict.dz"), &entries).IsNotFound());
  CorpusOptions options;
  options.dictd_dir = dir.path();
  options.dictionaries = {{"absent", 0.1, 0.1}};
  EXPECT_TRUE(PrepareCorpus(dir.File("out"), options, nullptr).IsNotFound());
}

TEST(CorpusTest, TruncatedGzipIsCorruption) {
  ScratchDir dir;
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i) + "\n";
  WriteDictionary(dir.path(), "d", {{{"a"}, text}});
  std::string gz;
  ASSERT_TRUE(ReadFileToString(dir.File("d.dict.dz"), &gz).ok());
  WriteFileOrDie(dir.File("d.dict.dz"), gz.substr(0, gz.size() / 2));
  std::vector<DictEntry> entries;
  Status s = ReadDictdEntries(dir.File("d.index"), dir.File("d.dict.dz"), &entries);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(dir.File("d.dict.dz")), std::string::npos) << s.ToString();
}

// ---- Cleaning.

TEST(CorpusTest, CleanUnwrapsGcideArticleAndDropsSourceTags) {
  const std::string raw =
      "Abdication \\Ab`di*ca\"tion\\, n. [L. abdicatio: cf. F.\n"
      "   abdication.]\n"
      "   The act of abdicating; the giving up of an office.\n"
      "   [1913 Webster]\n"
      "\n"
      "         The long, steady sweep of the so-called \"paddle\" tried\n"
      "         him almost as much as the breathless strain of the\n"
      "         spurt.                                   --T. Hughes.\n"
      "   [1913 Webster +PJC]\n"
      "\n"
      "   Syn: resignation. [WordNet 1.5]\n";
  EXPECT_EQ(CleanArticle(raw),
            "Abdication \\Ab`di*ca\"tion\\, n. [L. abdicatio: cf. F. abdication.] The act of abdicating; the "
            "giving up of an office.\n"
            "The long, steady sweep of the so-called \"paddle\" tried him almost as much as the breathless "
            "strain of the spurt. --T. Hughes.\n"
            "Syn: resignation.");
}

TEST(CorpusTest, CleanKeepsUsageLabelsAndEtymologies) {
  const std::string raw =
      "Toght \\Toght\\, a.\n   Taut. --Chaucer.\n   [Obs.]\n   [AS. luflic.]\n   [Colloq.]\n   [1913 Webster]\n";
  EXPECT_EQ(CleanArticle(raw), "Toght \\Toght\\, a. Taut. --Chaucer. [Obs.] [AS. luflic.] [Colloq.]");
}

TEST(CorpusTest, CleanDropsTagWrappedOverTwoLines) {
  const std::string raw =
      "Dramatic \\Dra*mat\"ic\\, a.\n   Of or pertaining to the drama; as, dramatic arts. [WordNet\n"
      "   sense 3]\n   [1913 Webster]\n\n   2. Theatrical. [WordNet sense 1] [informal]\n";
  EXPECT_EQ(CleanArticle(raw),
            "Dramatic \\Dra*mat\"ic\\, a. Of or pertaining to the drama; as, dramatic arts.\n"
            "2. Theatrical. [informal]");
}

TEST(CorpusTest, CleanDropsHeadwordsLeakedAfterLastTag) {
  EXPECT_EQ(CleanArticle("Wickiup \\Wick\"i*up\\, n.\n   A hut.\n   [1913 Webster] Ku Klux\n   Kuklux\n\n"),
            "Wickiup \\Wick\"i*up\\, n. A hut.");
}

TEST(CorpusTest, CleanKeepsTextAfterTagWhenMoreFollows) {
  // Run-on derivatives after the final tag, and text followed by another tag, are real.
  EXPECT_EQ(CleanArticle("Sedate \\Se*date\"\\, a.\n   Calm.\n   [1913 Webster] -- {Se*date\"ly}, adv. --\n"
                         "   {Se*date\"ness}, n.\n"),
            "Sedate \\Se*date\"\\, a. Calm. -- {Se*date\"ly}, adv. -- {Se*date\"ness}, n.");
  EXPECT_EQ(CleanArticle("Blade \\Blade\\, n.\n   A leaf.\n   [1913 Webster] Specifically:\n   [1913 Webster]\n"
                         "   (a) The blade of a sword. [Obs.]\n   [1913 Webster]\n"),
            "Blade \\Blade\\, n. A leaf. Specifically: (a) The blade of a sword. [Obs.]");
}

TEST(CorpusTest, CleanFoldocArticle) {
  const std::string raw =
      "actor\n\n   1. <programming> In {object-oriented} programming,  an\n\tobject that\n   acts.\n\n"
      "   [{Jargon File}]\n\n   (1994-11-08)\n\n";
  EXPECT_EQ(CleanArticle(raw), "actor\n1. <programming> In {object-oriented} programming, an object that acts.\n"
                               "[{Jargon File}]");
  EXPECT_EQ(CleanArticle("\n\n   (2001-01-01)\n\n"), "");
  EXPECT_EQ(CleanArticle("date (1994-11-08) inline\n"), "date (1994-11-08) inline");
}

// ---- UTF-8 repair and splitting.

TEST(CorpusTest, RepairUtf8) {
  std::string ok = "caf\xC3\xA9 \xE2\x80\x99 \xF0\x9F\x98\x80";
  const std::string before = ok;
  EXPECT_EQ(RepairUtf8(&ok), 0u);
  EXPECT_EQ(ok, before);

  std::string cp1252 = "market\x92s fa\xE7" "ade";
  EXPECT_EQ(RepairUtf8(&cp1252), 2u);
  EXPECT_EQ(cp1252, "market\xE2\x80\x99s fa\xC3\xA7" "ade");

  std::string undefined = "x\x81y";
  EXPECT_EQ(RepairUtf8(&undefined), 1u);
  EXPECT_EQ(undefined, "x\xEF\xBF\xBDy");  // U+FFFD

  std::string overlong = "\xC0\xAF";  // Overlong '/', never valid.
  EXPECT_EQ(RepairUtf8(&overlong), 2u);
  std::string surrogate = "\xED\xA0\x80";
  EXPECT_EQ(RepairUtf8(&surrogate), 3u);
  std::string cut = "ok\xE2\x80";  // Sequence cut off at the end.
  EXPECT_EQ(RepairUtf8(&cut), 2u);
  EXPECT_EQ(RepairUtf8(&cut), 0u);  // The repaired text is valid.
}

TEST(CorpusTest, Fnv1a64MatchesReferenceVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(CorpusTest, AssignSplitIsStableAndProportional) {
  int counts[3] = {0, 0, 0};
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const std::string key = "word" + std::to_string(i);
    const Split split = AssignSplit(key, 0.05, 0.05);
    ASSERT_EQ(split, AssignSplit(key, 0.05, 0.05));
    ++counts[static_cast<int>(split)];
  }
  EXPECT_NEAR(counts[static_cast<int>(Split::kValid)] / double(n), 0.05, 0.005);
  EXPECT_NEAR(counts[static_cast<int>(Split::kTest)] / double(n), 0.05, 0.005);
  EXPECT_EQ(AssignSplit("anything", 0, 0), Split::kTrain);
  EXPECT_STREQ(SplitName(Split::kValid), "valid");
}

TEST(CorpusTest, SplitKeyIsSmallestLowercasedHeadword) {
  DictEntry e;
  e.headwords = {"Vertebrate", "Vertebrated", "ant"};
  EXPECT_EQ(SplitKey(e), "ant");
  e.headwords = {"Vertebrated", "VERTEBRATE"};
  EXPECT_EQ(SplitKey(e), "vertebrate");
}

// ---- End to end.

std::vector<Article> SyntheticDictionary(int n) {
  std::vector<Article> articles = {{{"00-database-short"}, "00-database-short\n   Synthetic\n\n"}};
  for (int i = 0; i < n; ++i) {
    const std::string word = "word" + std::to_string(i);
    articles.push_back({{word}, word + " \\" + word + "\\, n.\n   Meaning number " + std::to_string(i) +
                                    ",\n   wrapped.\n   [1913 Webster]\n\n"});
    if (i % 10 == 0) {  // A second sense of the same word, as GCIDE has for n. and a.
      articles.push_back({{word, word + "ed"}, word + " \\" + word + "\\, a.\n   Adjective sense.\n\n"});
    }
  }
  articles.push_back({{"market"}, "market\n   The market\x92s drop.\n"});
  return articles;
}

TEST(CorpusTest, PrepareCorpusIsDeterministicAndAccountsForEveryArticle) {
  ScratchDir dir;
  const std::vector<Article> articles = SyntheticDictionary(400);
  WriteDictionary(dir.path(), "tiny", articles);
  WriteDictionary(dir.path(), "other", {{{"x"}, "x\n   only one.\n   (2020-02-02)\n"}});
  CorpusOptions options;
  options.dictd_dir = dir.path();
  options.dictionaries = {{"tiny", 0.15, 0.15}, {"other", 0.0, 0.0}};

  CorpusStats stats1, stats2;
  Status s = PrepareCorpus(dir.File("out1"), options, &stats1);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(PrepareCorpus(dir.File("out2"), options, &stats2).ok());

  for (const char* file : {"tiny/train.txt", "tiny/valid.txt", "tiny/test.txt", "other/train.txt",
                           "other/valid.txt", "other/test.txt", "stats.json"}) {
    std::string a, b;
    ASSERT_TRUE(ReadFileToString(dir.File("out1/") + file, &a).ok()) << file;
    ASSERT_TRUE(ReadFileToString(dir.File("out2/") + file, &b).ok()) << file;
    EXPECT_EQ(a, b) << file << " differs between runs";
  }

  // Every article exactly once across the splits, all senses of one word in one split.
  std::multiset<std::string> expected;
  for (size_t i = 1; i < articles.size(); ++i) {
    std::string text = articles[i].text;
    RepairUtf8(&text);
    expected.insert(CleanArticle(text));
  }
  std::multiset<std::string> seen;
  std::map<std::string, std::string> split_of_word;
  ASSERT_EQ(stats1.dictionaries.size(), 2u);
  const DictionaryStats& tiny = stats1.dictionaries[0];
  EXPECT_EQ(tiny.name, "tiny");
  EXPECT_EQ(tiny.articles_read, static_cast<int64_t>(articles.size() - 1));
  EXPECT_EQ(tiny.repaired_bytes, 1);
  for (const char* split : {"train", "valid", "test"}) {
    std::string contents;
    ASSERT_TRUE(ReadFileToString(dir.File("out1/tiny/") + split + ".txt", &contents).ok());
    EXPECT_EQ(RepairUtf8(&contents), 0u) << "output must be valid UTF-8";
    const std::vector<std::string> got = SplitArticles(contents);
    const SplitStats& ss = std::string(split) == "train" ? tiny.train : std::string(split) == "valid" ? tiny.valid : tiny.test;
    EXPECT_EQ(ss.articles, static_cast<int64_t>(got.size())) << split;
    EXPECT_EQ(ss.bytes, static_cast<int64_t>(contents.size())) << split;
    EXPECT_GT(got.size(), 0u) << split;
    for (const std::string& article : got) {
      seen.insert(article);
      const std::string word = article.substr(0, article.find(' '));
      auto [it, inserted] = split_of_word.emplace(word, split);
      EXPECT_EQ(it->second, split) << word << " straddles splits";
    }
  }
  EXPECT_EQ(seen, expected);
  EXPECT_NE(seen.count("market The market\xE2\x80\x99s drop."), 0u);

  const DictionaryStats& other = stats1.dictionaries[1];
  EXPECT_EQ(other.train.articles, 1);
  EXPECT_EQ(other.valid.articles, 0);
  std::string other_train;
  ASSERT_TRUE(ReadFileToString(dir.File("out1/other/train.txt"), &other_train).ok());
  EXPECT_EQ(other_train, "x only one.\n");

  std::string stats_text;
  ASSERT_TRUE(ReadFileToString(dir.File("out1/stats.json"), &stats_text).ok());
  const nlohmann::json j = nlohmann::json::parse(stats_text);
  EXPECT_EQ(j["dictionaries"][0]["name"], "tiny");
  EXPECT_EQ(j["dictionaries"][0]["splits"]["valid"]["articles"], tiny.valid.articles);
}

TEST(CorpusTest, PrepareCorpusRejectsBadFractions) {
  ScratchDir dir;
  CorpusOptions options;
  options.dictd_dir = dir.path();
  options.dictionaries = {{"tiny", 0.6, 0.5}};
  EXPECT_TRUE(PrepareCorpus(dir.File("out"), options, nullptr).IsInvalidArgument());
  options.dictionaries = {{"tiny", -0.1, 0.1}};
  EXPECT_TRUE(PrepareCorpus(dir.File("out"), options, nullptr).IsInvalidArgument());
  options.dictionaries = {{"../x", 0.1, 0.1}};
  EXPECT_TRUE(PrepareCorpus(dir.File("out"), options, nullptr).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
