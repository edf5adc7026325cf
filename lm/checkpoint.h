// Checkpoints ARE Hugging Face GPT-2 directories:
//   config.json        model_type "gpt2" hyperparameters (GptConfig)
//   model.safetensors  HF tensor names, with or without the "transformer." prefix; F32, F16 or BF16
//   vocab.json + merges.txt (or encoder.json + vocab.bpe)   the byte-level BPE tokenizer
// so real GPT-2/distilgpt2 weights load here and models trained here load in other GPT-2 tooling.
// mnemo writes F32 tensors named "transformer.*" (what GPT2LMHeadModel.save_pretrained writes; the
// tied lm_head.weight is omitted, as HF does).
#pragma once

#include <memory>
#include <string>

#include "lm/bpe_tokenizer.h"
#include "lm/gpt.h"
#include "util/status.h"

namespace mnemo {

// A model ready to run: hyperparameters, weights and tokenizer.
struct LanguageModel {
  std::string dir;
  GptConfig config;
  Gpt net{nullptr};
  std::unique_ptr<BpeTokenizer> tokenizer;
};

// Loads config.json, model.safetensors and the tokenizer from `dir`; the network is put in eval mode and
// its parameters moved to `device` (from ParseDevice, lm/device.h) once loaded.
Status LoadLanguageModel(const std::string& dir, std::unique_ptr<LanguageModel>* out,
                         const torch::Device& device = torch::kCPU);

// Copies the weights in `path` into `net` (converting F16/BF16 to F32), checking every name and shape.
// Buffers HF keeps in checkpoints (attn.bias, attn.masked_bias) and the tied lm_head.weight are ignored.
// The memorizing layer's gate and scale may be absent (a plain model turned into a memorizing one): they
// keep their initial values.
Status LoadWeights(const std::string& path, Gpt& net);

// Identifies a model's weights: "fnv1a64:<hex>" over config.json's fields and every parameter's name and
// float32 values. Datastores record it so keys are never searched with another model's hidden states.
// The same on every device (parameters are read through CPU copies).
std::string ModelFingerprint(Gpt& net);

// Writes model.safetensors atomically.
Status SaveWeights(const std::string& path, Gpt& net);

// Writes config.json, model.safetensors and (when given) the tokenizer files into `dir`.
Status SaveCheckpoint(const std::string& dir, Gpt& net, const BpeTokenizer* tokenizer);

}  // namespace mnemo
