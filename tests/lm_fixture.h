// Tiny language models for tests: a BPE vocabulary trained on a toy corpus and a d=32 GPT.
#pragma once

#include <memory>
#include <string>

#include "lm/bpe_tokenizer.h"
#include "lm/checkpoint.h"
#include "lm/gpt.h"
#include "tests/toy_corpus.h"

namespace mnemo::testing {

// A ~300-token BPE vocabulary trained on ToyCorpus() (cached per process).
const BpeTokenizer& ToyTokenizer();

// The "tiny" preset (d=32, 2 layers, 2 heads, 64 positions) with `vocab_size` tokens, seeded init.
GptConfig TinyConfig(int64_t vocab_size);
Gpt TinyGpt(int64_t vocab_size, uint64_t seed = 7);

// A randomly initialised tiny model with its own copy of the toy tokenizer, in memory (no checkpoint
// directory). Fails the current test on error.
void RandomTinyModel(LanguageModel* model);

// Saves a randomly initialised tiny model (InitWeights(seed)) as a checkpoint directory `dir`; with
// `memory_layer`, layer 1 is a memorizing layer ("joint", top-8: a memory changes its attention from the
// first step). Fails the current test on error.
void SaveRandomTinyModel(const std::string& dir, uint64_t seed, bool memory_layer);

// Trains the "tiny" preset on ToyCorpus() through the mnemo binary: writes dir/train.txt, then a model in
// dir/model (validated on `valid`, default the training text). A few steps give a barely trained model
// quickly; 40 give one that has learnt the toy corpus. Fails the current test on error.
void TrainTinyModelWithCli(const std::string& dir, int steps, const std::string& valid = "");

}  // namespace mnemo::testing
