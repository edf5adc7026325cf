#include "tests/toy_corpus.h"

namespace mnemo::testing {

std::string ToyCorpus() {
  static const char* kSubjects[] = {"The cat", "A dog", "The old sailor", "My neighbour", "The river"};
  static const char* kVerbs[] = {"sees", "follows", "remembers", "finds", "crosses"};
  static const char* kObjects[] = {"the bridge.", "a red ball.", "the quiet harbour.", "an open door.",
                                   "the long road."};
  std::string text;
  for (int i = 0; i < 400; ++i) {
    text += kSubjects[i % 5];
    text += ' ';
    text += kVerbs[(i / 5) % 5];
    text += ' ';
    text += kObjects[(i * 7) % 5];
    text += (i % 9 == 8) ? "\n\n" : " ";
  }
  return text;
}

std::vector<std::string> ToyParagraphs() {
  const std::string corpus = ToyCorpus();
  std::vector<std::string> out;
  size_t begin = 0;
  while (begin < corpus.size()) {
    size_t end = corpus.find("\n\n", begin);
    if (end == std::string::npos) end = corpus.size();
    if (end > begin) out.push_back(corpus.substr(begin, end - begin));
    begin = end + 2;
  }
  return out;
}

}  // namespace mnemo::testing
