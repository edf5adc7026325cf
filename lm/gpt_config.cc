#include "lm/gpt_config.h"

#include <nlohmann/json.hpp>

namespace mnemo {

int64_t GptConfig::NumParameters() const {
  const int64_t d = n_embd;
  const int64_t per_block = 2 * 2 * d                // two layer norms
                            + d * 3 * d + 3 * d      // c_attn
                            + d * d + d              // attn c_proj
                            + d * 4 * d + 4 * d      // mlp c_fc
                            + 4 * d * d + d;         // mlp c_proj
  int64_t memory = has_memory() && memory_mode == "gated" ? 2 * n_head : 0;  // mem_gate, mem_scale
  if (has_memory() && memory_smear) memory += n_head;                        // mem_smear
  return vocab_size * d + n_positions * d + n_layer * per_block + 2 * d + memory;
}

Status GptConfig::Validate() const {
  if (vocab_size <= 0 || n_positions <= 0 || n_embd <= 0 || n_layer <= 0 || n_head <= 0) {
    return Status::InvalidArgument("vocab_size, n_positions, n_embd, n_layer and n_head must be positive");
  }
  if (n_embd % n_head != 0) {
    return Status::InvalidArgument("n_embd (" + std::to_string(n_embd) + ") must be divisible by n_head (" +
                                   std::to_string(n_head) + ")");
  }
  if (!(layer_norm_epsilon > 0)) return Status::InvalidArgument("layer_norm_epsilon must be positive");
  if (activation_function != "gelu_new" && activation_function != "gelu_pytorch_tanh" &&
      activation_function != "gelu") {
    return Status::InvalidArgument("unsupported activation_function \"" + activation_function +
                                   "\" (expected gelu_new, gelu_pytorch_tanh or gelu)");
  }
  if (memory_layer < -1 || memory_layer >= n_layer) {
    return Status::InvalidArgument("memory layer " + std::to_string(memory_layer) + " is out of range: the model has " +
                                   std::to_string(n_layer) + " layers (0.." + std::to_string(n_layer - 1) +
                                   "; -1 for none)");
  }
  if (memory_topk < 1 || memory_topk > 4096) {
    return Status::InvalidArgument("memory top-k " + std::to_string(memory_topk) + " must be in [1, 4096]");
  }
  if (memory_mode != "gated" && memory_mode != "joint") {
    return Status::InvalidArgument("memory mode \"" + memory_mode + "\" must be \"gated\" or \"joint\"");
  }
  if (memory_smear && !has_memory()) return Status::InvalidArgument("smeared keys (--memory-smear) need a memory layer (--memory-layer L)");
  return Status::OK();
}

Status GptConfig::Preset(const std::string& name, int64_t vocab_size, GptConfig* out) {
  GptConfig c;
  c.vocab_size = vocab_size;
  c.bos_token_id = c.eos_token_id = vocab_size - 1;  // mnemo's BPE trainer puts <|endoftext|> last.
  if (name == "tiny") {
    // For tests: builds and trains in seconds.
    c.n_positions = 64, c.n_embd = 32, c.n_layer = 2, c.n_head = 2;
  } else if (name == "default") {
    // The best held-out bits per byte we reached with ~10 minutes of training on 2 CPU cores: 1.3M
    // parameters (with a 4096-token vocabulary) beat 2.6M on the same budget (docs/RESULTS.md).
    c.n_positions = 128, c.n_embd = 128, c.n_layer = 4, c.n_head = 4;
  } else if (name == "medium") {
    // The runner-up of that comparison; better with a longer budget.
    c.n_positions = 128, c.n_embd = 192, c.n_layer = 4, c.n_head = 4;
  } else {
    return Status::InvalidArgument("unknown model config \"" + name + "\" (expected tiny, default or medium)");
  }
  *out = c;
  return Status::OK();
}

std::string GptConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  j["vocab_size"] = vocab_size;
  j["n_positions"] = n_positions;
  j["n_ctx"] = n_positions;
  j["n_embd"] = n_embd;
  j["n_layer"] = n_layer;
  j["n_head"] = n_head;
  j["n_inner"] = nullptr;
  j["layer_norm_epsilon"] = layer_norm_epsilon;
  j["activation_function"] = activation_function;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["tie_word_embeddings"] = true;
  j["resid_pdrop"] = 0.0;
  j["embd_pdrop"] = 0.0;
  j["attn_pdrop"] = 0.0;
  j["initializer_range"] = 0.02;
  j["scale_attn_weights"] = true;
  j["torch_dtype"] = "float32";
  if (has_memory()) {
    j["mnemo_memory_layer"] = memory_layer;
    j["mnemo_memory_topk"] = memory_topk;
    j["mnemo_memory_mode"] = memory_mode;
    if (memory_smear) j["mnemo_memory_smear"] = true;
  }
  return j.dump(2) + "\n";
}

namespace {

Status ReadInt(const nlohmann::json& j, const char* key, const std::string& source, bool required,
               int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Status::Corruption(source + ": missing required field \"" + key + "\"");
    return Status::OK();
  }
  if (!it->is_number_integer()) {
    return Status::Corruption(source + ": field \"" + key + "\" must be an integer");
  }
  *out = it->get<int64_t>();
  return Status::OK();
}

}  // namespace

Status GptConfig::FromJson(const std::string& json_text, const std::string& source, GptConfig* out) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption(source + ": not a JSON object");
  auto type = j.find("model_type");
  if (type == j.end() || !type->is_string() || type->get<std::string>() != "gpt2") {
    return Status::InvalidArgument(source + ": model_type must be \"gpt2\"");
  }
  GptConfig c;
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "vocab_size", source, true, &c.vocab_size));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_embd", source, true, &c.n_embd));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_layer", source, true, &c.n_layer));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_head", source, true, &c.n_head));
  c.n_positions = -1;
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_positions", source, false, &c.n_positions));
  if (c.n_positions < 0) MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_ctx", source, true, &c.n_positions));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", source, false, &c.bos_token_id));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "eos_token_id", source, false, &c.eos_token_id));
  // Read as the other integers are: get<int64_t>() of a float out of range is undefined, of a string it
  // throws; and 4 * n_embd must not overflow (fuzz/regressions/gpt_config/).
  int64_t n_inner = 0, four_embd = 0;
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "n_inner", source, false, &n_inner));
  if (j.contains("n_inner") && !j["n_inner"].is_null() &&
      (__builtin_mul_overflow(c.n_embd, int64_t{4}, &four_embd) || n_inner != four_embd)) {
    return Status::InvalidArgument(source + ": n_inner other than 4*n_embd is not supported");
  }
  auto eps = j.find("layer_norm_epsilon");
  if (eps != j.end()) {
    if (!eps->is_number()) return Status::Corruption(source + ": layer_norm_epsilon must be a number");
    c.layer_norm_epsilon = eps->get<double>();
  }
  auto act = j.find("activation_function");
  if (act != j.end()) {
    if (!act->is_string()) return Status::Corruption(source + ": activation_function must be a string");
    c.activation_function = act->get<std::string>();
  }
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "mnemo_memory_layer", source, false, &c.memory_layer));
  MNEMO_RETURN_IF_ERROR(ReadInt(j, "mnemo_memory_topk", source, false, &c.memory_topk));
  auto mode = j.find("mnemo_memory_mode");
  if (mode != j.end()) {
    if (!mode->is_string()) return Status::Corruption(source + ": mnemo_memory_mode must be a string");
    c.memory_mode = mode->get<std::string>();
  }
  auto smear = j.find("mnemo_memory_smear");
  if (smear != j.end() && !smear->is_null()) {
    if (!smear->is_boolean()) return Status::Corruption(source + ": mnemo_memory_smear must be true or false");
    c.memory_smear = smear->get<bool>();
  }
  Status s = c.Validate();
  if (!s.ok()) return Status::InvalidArgument(source + ": " + s.message());
  *out = c;
  return Status::OK();
}

}  // namespace mnemo
