#include "lm/decode_batch.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mnemo {
namespace {

torch::Tensor ToCpu(const torch::Tensor& t) { return t.defined() && !t.device().is_cpu() ? t.to(torch::kCPU) : t; }

}  // namespace

DecodeBatch::DecodeBatch(Gpt net, int64_t slots)
    : net_(std::move(net)),
      slots_(slots),
      context_(net_->config().n_positions),
      n_head_(net_->config().n_head),
      head_dim_(net_->config().n_embd / net_->config().n_head),
      lengths_(static_cast<size_t>(slots), 0) {
  TORCH_CHECK(slots >= 1, "a decode batch needs at least one slot");
  const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(net_->device());
  for (int64_t l = 0; l < net_->config().n_layer; ++l) {
    // Zeros, not garbage: the masked columns get weight 0, and 0 * NaN would not be 0.
    keys_.push_back(torch::zeros({slots_, n_head_, context_, head_dim_}, options));
    values_.push_back(torch::zeros({slots_, n_head_, context_, head_dim_}, options));
  }
}

DecodeOutput DecodeBatch::Prefill(int64_t slot, const std::vector<int32_t>& ids, bool want_knn_key) {
  TORCH_CHECK(slot >= 0 && slot < slots_, "slot ", slot, " outside [0, ", slots_, ")");
  const int64_t T = static_cast<int64_t>(ids.size());
  TORCH_CHECK(T >= 1 && T <= context_, "a prefill of ", T, " tokens does not fit the context of ", context_);
  torch::InferenceMode inference;
  KvCache cache;
  ForwardOptions fwd;
  fwd.cache = &cache;
  fwd.want_knn_key = want_knn_key;
  fwd.want_logits = false;  // only the last position's: below
  fwd.keep_on_device = true;
  torch::Tensor input = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).unsqueeze(0);
  ForwardResult r = net_->Forward(input, fwd);
  for (size_t l = 0; l < keys_.size(); ++l) {
    keys_[l][slot].narrow(1, 0, T).copy_(cache.keys[l][0]);
    values_[l][slot].narrow(1, 0, T).copy_(cache.values[l][0]);
  }
  lengths_[static_cast<size_t>(slot)] = T;
  DecodeOutput out;
  out.logits = ToCpu(net_->Logits(r.hidden.select(1, T - 1)));
  if (want_knn_key) out.knn_key = ToCpu(r.knn_key.select(1, T - 1));
  return out;
}

DecodeOutput DecodeBatch::Step(const std::vector<int64_t>& slots, const std::vector<int32_t>& tokens,
                               bool want_knn_key) {
  const int64_t B = static_cast<int64_t>(slots.size());
  TORCH_CHECK(B >= 1 && tokens.size() == slots.size(), "a step needs one token per slot");
  std::vector<int64_t> positions(slots.size());
  std::vector<bool> seen(static_cast<size_t>(slots_), false);
  for (size_t i = 0; i < slots.size(); ++i) {
    const int64_t s = slots[i];
    TORCH_CHECK(s >= 0 && s < slots_ && !seen[static_cast<size_t>(s)], "slot ", s, " is outside the batch or repeated");
    seen[static_cast<size_t>(s)] = true;
    positions[i] = lengths_[static_cast<size_t>(s)];
    TORCH_CHECK(positions[i] >= 1 && positions[i] < context_, "slot ", s, " holds ", positions[i],
                " tokens: a step needs a prefilled slot with room for one more");
  }
  torch::InferenceMode inference;
  const torch::Device where = net_->device();
  const auto long_on = torch::TensorOptions().dtype(torch::kLong).device(where);
  const torch::Tensor slot_ids = torch::tensor(slots, torch::kLong).to(where);
  const torch::Tensor pos = torch::tensor(positions, torch::kLong).to(where);
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kLong).to(where);
  // Attention reads the columns up to the longest sequence's new token: reading all n_positions would read
  // the whole cache every step (1.2 GB at GPT-2 small's size with 16 slots).
  const int64_t span = *std::max_element(positions.begin(), positions.end()) + 1;
  // Slots 0 .. B-1 in order are a view; any other set is gathered (span columns only).
  bool leading = true;
  for (int64_t i = 0; i < B; ++i) leading = leading && slots[static_cast<size_t>(i)] == i;
  auto rows = [&](const torch::Tensor& t) {
    const torch::Tensor live = t.narrow(2, 0, span);
    return leading ? live.narrow(0, 0, B) : live.index_select(0, slot_ids);
  };
  // Column j of slot i is visible when j <= its position (the new token's own key included).
  const torch::Tensor hidden_cols =
      torch::arange(span, long_on).unsqueeze(0).gt(pos.unsqueeze(1)).view({B, 1, 1, span});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const int64_t C = net_->config().n_embd;

  torch::Tensor x = net_->wte(ids) + net_->wpe(pos);  // [B, C]
  DecodeOutput out;
  for (size_t l = 0; l < net_->blocks.size(); ++l) {
    Block& block = net_->blocks[l];
    auto qkv = block->attn->c_attn(block->ln_1(x)).split(C, /*dim=*/1);
    const torch::Tensor q = qkv[0].view({B, n_head_, 1, head_dim_});
    using torch::indexing::Slice;
    keys_[l].index_put_({slot_ids, Slice(), pos}, qkv[1].view({B, n_head_, head_dim_}));
    values_[l].index_put_({slot_ids, Slice(), pos}, qkv[2].view({B, n_head_, head_dim_}));
    // The cache holds raw keys; a memory layer with smeared keys smears them as its own forward pass does.
    const torch::Tensor keys = block->attn->SmearKeys(rows(keys_[l]));
    torch::Tensor scores = torch::matmul(q, keys.transpose(-2, -1)) * scale;  // [B, H, 1, span]
    scores.masked_fill_(hidden_cols, -std::numeric_limits<float>::infinity());
    const torch::Tensor y = torch::matmul(torch::softmax(scores, -1), rows(values_[l]));  // [B, H, 1, D]
    x = x + block->attn->c_proj(y.reshape({B, C}));
    const torch::Tensor normed = block->ln_2(x);
    if (l + 1 == net_->blocks.size() && want_knn_key) out.knn_key = ToCpu(normed);
    x = x + block->mlp(normed);
  }
  // One row: a matrix-vector product, which reads the embedding once instead of packing it (Logits).
  out.logits = ToCpu(net_->Logits(net_->ln_f(x)));
  for (int64_t s : slots) ++lengths_[static_cast<size_t>(s)];
  return out;
}

}  // namespace mnemo
