// Completions (retriever/completion.h): the streamed text of a choice (stop-sequence hold-back, UTF-8-safe
// ends) by itself, against hand-worked cases and a brute force over random texts, token splits and stop
// sequences; then Complete on a random tiny model: events add up to the text, stop sequences cut it.
#include "retriever/completion.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "tests/lm_fixture.h"

namespace mnemo {
namespace {

TEST(StreamedTextTest, WithoutStopSequencesWholeCharactersAreShownAtOnce) {
  StreamedText t({});
  EXPECT_FALSE(t.Append("The"));
  EXPECT_EQ(t.TakeSafe(), "The");
  EXPECT_FALSE(t.Append(" cat"));
  EXPECT_EQ(t.TakeSafe(), " cat");
  EXPECT_EQ(t.TakeSafe(), "");  // nothing new
  EXPECT_EQ(t.TakeRest(), "");
  EXPECT_EQ(t.text(), "The cat");
  EXPECT_FALSE(t.stopped());
}

TEST(StreamedTextTest, HoldsBackOnlyWhatCouldStillStartAStopSequence) {
  StreamedText t({"END"});
  EXPECT_FALSE(t.Append("abcE"));
  EXPECT_EQ(t.TakeSafe(), "abc");  // "E" may begin "END"
  EXPECT_FALSE(t.Append("N"));
  EXPECT_EQ(t.TakeSafe(), "");     // "EN" still may
  EXPECT_FALSE(t.Append("d"));
  EXPECT_EQ(t.TakeSafe(), "ENd");  // "ENd" is not "END": released
  EXPECT_FALSE(t.Append("xE"));
  EXPECT_EQ(t.TakeSafe(), "x");
  EXPECT_FALSE(t.Append("E"));
  EXPECT_EQ(t.TakeSafe(), "E");    // the first "E" can no longer begin it; the second can
  EXPECT_TRUE(t.Append("ND!"));    // straddles two tokens
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.text(), "abcENdxE");
  EXPECT_EQ(t.TakeRest(), "");     // the held "E" was the stop sequence's
}

TEST(StreamedTextTest, HeldBackPartIsTheLongestSuffixThatIsAPrefix) {
  StreamedText aab({"aab"});
  EXPECT_FALSE(aab.Append("aaa"));
  EXPECT_EQ(aab.TakeSafe(), "a");  // "aa" may begin "aab"; the first "a" cannot
  EXPECT_TRUE(aab.Append("b"));
  EXPECT_EQ(aab.text(), "a");
  EXPECT_EQ(aab.TakeRest(), "");

  StreamedText abab({"abab"});
  EXPECT_FALSE(abab.Append("xaba"));
  EXPECT_EQ(abab.TakeSafe(), "x");
  EXPECT_FALSE(abab.Append("c"));
  EXPECT_EQ(abab.TakeSafe(), "abac");
}

TEST(StreamedTextTest, StopInsideOneTokenKeepsTheBytesBeforeIt) {
  StreamedText t({"\n\n"});
  EXPECT_TRUE(t.Append("one\n\ntwo"));
  EXPECT_EQ(t.text(), "one");
  EXPECT_EQ(t.TakeRest(), "one");
  EXPECT_TRUE(t.Append("more"));  // appending after the stop changes nothing
  EXPECT_EQ(t.text(), "one");
  EXPECT_EQ(t.TakeRest(), "");
}

TEST(StreamedTextTest, TheEarliestStopSequenceWins) {
  // Both appear with the same token: the text ends before the one that starts first.
  StreamedText t({"c", "bcd"});
  EXPECT_FALSE(t.Append("ab"));
  EXPECT_EQ(t.TakeSafe(), "a");
  EXPECT_TRUE(t.Append("cd"));
  EXPECT_EQ(t.text(), "a");
  EXPECT_EQ(t.TakeRest(), "");
  // Stops as soon as one appears, even if a longer one might have started earlier.
  StreamedText u({"xyz", "y"});
  EXPECT_FALSE(u.Append("x"));
  EXPECT_TRUE(u.Append("y"));
  EXPECT_EQ(u.text(), "x");
  // An empty stop sequence is ignored, not matched everywhere.
  StreamedText v({"", "!"});
  EXPECT_FALSE(v.Append("hi"));
  EXPECT_EQ(v.TakeSafe(), "hi");
}

TEST(StreamedTextTest, NeverShowsHalfACharacter) {
  StreamedText t({});
  EXPECT_FALSE(t.Append("caf\xC3"));  // é = C3 A9, split across tokens
  EXPECT_EQ(t.TakeSafe(), "caf");
  EXPECT_FALSE(t.Append("\xA9 \xE2"));  // € = E2 82 AC, in three tokens
  EXPECT_EQ(t.TakeSafe(), "\xC3\xA9 ");
  EXPECT_FALSE(t.Append("\x82"));
  EXPECT_EQ(t.TakeSafe(), "");
  EXPECT_FALSE(t.Append("\xAC"));
  EXPECT_EQ(t.TakeSafe(), "\xE2\x82\xAC");
  for (const char* byte : {"\xF0", "\x9F", "\x98"}) {  // 😀 = F0 9F 98 80, one byte per token
    EXPECT_FALSE(t.Append(byte));
    EXPECT_EQ(t.TakeSafe(), "");
  }
  EXPECT_FALSE(t.Append("\x80"));
  EXPECT_EQ(t.TakeSafe(), "\xF0\x9F\x98\x80");
  // An unfinished character at the end of the choice comes out with the rest: nothing is lost.
  EXPECT_FALSE(t.Append("ok\xE2\x82"));
  EXPECT_EQ(t.TakeSafe(), "ok");
  EXPECT_EQ(t.TakeRest(), "\xE2\x82");
}

TEST(StreamedTextTest, StopPrefixAndUnfinishedCharacterTogether) {
  StreamedText t({"\xC3\xA9!"});  // "é!"
  EXPECT_FALSE(t.Append("x\xC3"));
  EXPECT_EQ(t.TakeSafe(), "x");
  EXPECT_FALSE(t.Append("\xA9"));
  EXPECT_EQ(t.TakeSafe(), "");  // a whole "é" now, but the start of "é!"
  EXPECT_FALSE(t.Append("?"));
  EXPECT_EQ(t.TakeSafe(), "\xC3\xA9?");
}

// What may be shown of `text` (a prefix of valid UTF-8), by brute force: drop the longest suffix that is a
// proper prefix of a stop sequence, then back up to the start of an unfinished character.
size_t BruteForceSafe(const std::string& text, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const std::string& s : stop) {
    for (size_t k = 1; k < s.size() && k <= text.size(); ++k) {
      if (text.substr(text.size() - k) == s.substr(0, k)) held = std::max(held, k);
    }
  }
  size_t end = text.size() - held;
  auto is_continuation = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
  auto char_length = [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return u < 0x80 ? 1 : u >= 0xF0 ? 4 : u >= 0xE0 ? 3 : 2;
  };
  size_t lead = end;
  while (lead > 0 && is_continuation(text[lead - 1])) --lead;
  if (lead > 0 && lead - 1 + char_length(text[lead - 1]) > end) end = lead - 1;  // unfinished
  return end;
}

// Random texts of one- to four-byte characters cut into tokens at random bytes (so tokens split characters),
// with random stop sequences: after every token the shown text is exactly what the brute force allows, the
// stop is found as soon as one appears, and everything shown adds up to the text.
TEST(StreamedTextTest, MatchesBruteForceOnRandomTextsSplitsAndStops) {
  const std::vector<std::string> chars = {"a", "b", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
  std::mt19937_64 rng(11);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int stopped_runs = 0;
  for (int run = 0; run < 3000; ++run) {
    std::string full;
    for (size_t i = 0, n = pick(14); i < n; ++i) full += chars[pick(chars.size())];
    std::vector<std::string> stop(pick(3));
    for (std::string& s : stop) {
      for (size_t i = 0, n = 1 + pick(3); i < n; ++i) s += chars[pick(3)];  // a, b, é: frequent matches
    }
    std::vector<size_t> cuts = {0, full.size()};
    for (size_t i = 0, n = pick(8); i < n && !full.empty(); ++i) cuts.push_back(pick(full.size() + 1));
    std::sort(cuts.begin(), cuts.end());
    SCOPED_TRACE("run " + std::to_string(run));

    StreamedText t(stop);
    std::string so_far, shown;
    bool stopped = false;
    for (size_t i = 1; i < cuts.size() && !stopped; ++i) {
      so_far += full.substr(cuts[i - 1], cuts[i] - cuts[i - 1]);
      size_t first = std::string::npos;
      for (const std::string& s : stop) first = std::min(first, so_far.find(s));
      stopped = first != std::string::npos;
      ASSERT_EQ(t.Append(full.substr(cuts[i - 1], cuts[i] - cuts[i - 1])), stopped);
      ASSERT_EQ(t.text(), stopped ? so_far.substr(0, first) : so_far);
      if (stopped) break;  // Complete stops taking at the stop; the rest comes with TakeRest
      shown += t.TakeSafe();
      ASSERT_EQ(shown, t.text().substr(0, BruteForceSafe(t.text(), stop)));
    }
    stopped_runs += stopped;
    shown += t.TakeRest();
    ASSERT_EQ(shown, t.text());
  }
  EXPECT_GT(stopped_runs, 300);  // the random stops do match often
}

struct Streamed {
  std::vector<std::string> texts;  // per event of choice 0
  std::string finish_reason;
};

Status CompleteAndStream(LanguageModel& model, const CompletionRequest& request, Streamed* streamed,
                         CompletionResult* out) {
  return Complete(model, nullptr, request, [&](const CompletionEvent& e) {
    if (e.choice == 0) {
      streamed->texts.push_back(e.text);
      if (e.finished) streamed->finish_reason = e.finish_reason;
    }
    return true;
  }, nullptr, out);
}

TEST(CompleteTest, EventsAddUpToTheTextAndAStopSequenceCutsIt) {
  LanguageModel model;
  ASSERT_NO_FATAL_FAILURE(testing::RandomTinyModel(&model));
  CompletionRequest request;
  request.prompt = model.tokenizer->Encode("The cat sees");
  request.max_tokens = 30;
  request.sampling.temperature = 0;
  request.ignore_eos = true;  // exactly 30 tokens: the run ends by length
  Streamed free_run;
  CompletionResult free;
  Status s = CompleteAndStream(model, request, &free_run, &free);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(free.choices.size(), 1u);
  const CompletionChoice& f = free.choices[0];
  EXPECT_EQ(f.finish_reason, "length");
  EXPECT_EQ(free_run.finish_reason, "length");
  ASSERT_EQ(f.tokens.size(), 30u);
  EXPECT_EQ(free.completion_tokens, 30);
  std::string joined;
  for (const std::string& t : free_run.texts) joined += t;
  EXPECT_EQ(joined, f.text);
  EXPECT_EQ(f.text, model.tokenizer->Decode(f.tokens));
  ASSERT_GE(f.text.size(), 12u) << f.text;

  // A stop sequence from the middle of that text: the same greedy run, cut before its first occurrence.
  const std::string stop = f.text.substr(f.text.size() / 2, 3);
  request.stop = {stop, "never appears \x01"};
  Streamed stopped_run;
  CompletionResult stopped;
  s = CompleteAndStream(model, request, &stopped_run, &stopped);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const CompletionChoice& c = stopped.choices[0];
  const std::string want = f.text.substr(0, f.text.find(stop));
  EXPECT_EQ(c.text, want);
  EXPECT_EQ(c.finish_reason, "stop");
  EXPECT_EQ(stopped_run.finish_reason, "stop");
  joined.clear();
  for (const std::string& t : stopped_run.texts) joined += t;
  EXPECT_EQ(joined, want);
  // The kept tokens are those of the free run before the one that completed the stop sequence: the stop
  // sequence ends in that token's bytes (it may start in kept ones, whose text is then cut).
  ASSERT_LT(c.tokens.size(), f.tokens.size());
  EXPECT_TRUE(std::equal(c.tokens.begin(), c.tokens.end(), f.tokens.begin()));
  const std::string kept = model.tokenizer->Decode(c.tokens);
  const std::string through = kept + model.tokenizer->TokenBytes(f.tokens[c.tokens.size()]);
  EXPECT_GT(want.size() + stop.size(), kept.size());
  EXPECT_LE(want.size() + stop.size(), through.size());
}

// The response's size is bounded by the product n * (max_tokens + echoed prompt) * (1 + logprobs +
// return_neighbors), not by each factor (issue 17, door 6), and stop sequences by their length.
TEST(CompletionRequestTest, ResponseSizeIsCappedAsAProduct) {
  CompletionRequest r;
  r.prompt = {1, 2, 3, 4};
  r.max_response_items = 1000;
  r.n = 4;
  r.max_tokens = 46;
  r.logprobs = 2;
  r.return_neighbors = 1;
  r.echo = true;
  EXPECT_EQ(r.ResponseItems(), 4.0 * (46 + 4) * (1 + 2 + 1));  // 800
  EXPECT_TRUE(r.Validate(300, 64).ok());
  r.max_tokens = 59;  // 4 * 63 * 4 = 1008
  Status s = r.Validate(300, 64);
  ASSERT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_EQ(s.message().substr(0, s.message().find(':')),
            "n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors)");
  EXPECT_NE(s.message().find("4 * (59 + 4) * 4 = 1008 "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("limit of 1000"), std::string::npos) << s.message();
  r.max_tokens = 58;  // 4 * 62 * 4 = 992
  EXPECT_TRUE(r.Validate(300, 64).ok());
  r.echo = false;       // the prompt only counts when echoed
  r.logprobs = -1;      // no log-probabilities: the token alone (and its neighbours)
  r.max_tokens = 125;   // 4 * 125 * 2 = 1000
  EXPECT_TRUE(r.Validate(300, 64).ok());
  r.max_tokens = 126;
  EXPECT_TRUE(r.Validate(300, 64).IsInvalidArgument());
  r.max_tokens = INT64_MAX;  // no overflow
  EXPECT_TRUE(r.Validate(300, 64).IsInvalidArgument());
  r.max_tokens = 1;
  r.stop = {std::string(CompletionRequest::kMaxStopBytes, 'x')};
  EXPECT_TRUE(r.Validate(300, 64).ok());
  r.stop.push_back(std::string(CompletionRequest::kMaxStopBytes + 1, 'y'));
  s = r.Validate(300, 64);
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(s.message().rfind("stop: ", 0), 0u) << s.message();
  // The default limit refuses the request (n 16, max_tokens 128, logprobs 20, return_neighbors 64, echo).
  CompletionRequest attack;
  attack.prompt = {1, 2, 3, 4, 5};
  attack.n = 16;
  attack.max_tokens = 128;
  attack.logprobs = 20;
  attack.return_neighbors = 64;
  attack.echo = true;
  EXPECT_TRUE(attack.Validate(300, 64).IsInvalidArgument());
}

}  // namespace
}  // namespace mnemo
