// The toy corpus of the tests' tiny models, in a file of its own without GoogleTest so that fuzz harnesses
// (fuzz/routes_fuzz.cc) train on the same text.
#pragma once

#include <string>
#include <vector>

namespace mnemo::testing {

// A few hundred repetitive English sentences (deterministic).
std::string ToyCorpus();

// ToyCorpus()'s paragraphs (split at blank lines, empty ones dropped), in order: the tests' documents.
std::vector<std::string> ToyParagraphs();

}  // namespace mnemo::testing
