// lm/gpt_config.h: GptConfig::FromJson, the reader of a checkpoint's config.json (Hugging Face's GPT-2
// config, with mnemo's memory-layer fields), which LoadCheckpoint reads before any weight. A config that
// is accepted must be valid and survive ToJson -> FromJson unchanged (the memory fields when it has a memory
// layer).
#include <string>

#include "fuzz/fuzz_util.h"
#include "lm/gpt_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(mnemo_fuzz::AsText(data, size));
  mnemo::GptConfig c;
  const mnemo::Status s = mnemo::GptConfig::FromJson(text, "config.json", &c);
  if (!s.ok()) {
    FUZZ_CHECK(s.IsCorruption() || s.IsInvalidArgument());
    return 0;
  }
  FUZZ_CHECK(c.Validate().ok());
  FUZZ_CHECK(c.head_dim() * c.n_head == c.n_embd);
  mnemo::GptConfig again;
  const mnemo::Status r = mnemo::GptConfig::FromJson(c.ToJson(), "config.json", &again);
  FUZZ_CHECK(r.ok());
  FUZZ_CHECK(again.vocab_size == c.vocab_size && again.n_positions == c.n_positions && again.n_embd == c.n_embd &&
             again.n_layer == c.n_layer && again.n_head == c.n_head &&
             again.layer_norm_epsilon == c.layer_norm_epsilon && again.activation_function == c.activation_function &&
             again.bos_token_id == c.bos_token_id && again.eos_token_id == c.eos_token_id &&
             again.memory_layer == c.memory_layer);
  // ToJson writes the memory fields only for a model with a memory layer; without one they mean nothing.
  if (c.has_memory()) FUZZ_CHECK(again.memory_topk == c.memory_topk && again.memory_mode == c.memory_mode);
  return 0;
}
