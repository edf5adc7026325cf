// The toy corpus of the tests' tiny models, in a file of its own without GoogleTest so that fuzz harnesses
// (fuzz/routes_fuzz.cc) train on the same text.
#pragma once

#include <string>

namespace mnemo::testing {

// A few hundred repetitive English sentences (deterministic).
std::string ToyCorpus();

}  // namespace mnemo::testing
