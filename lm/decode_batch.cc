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
  DecodeSegment segment;
  segment.slot = slot, segment.tokens = ids, segment.restart = true;
  return Run({segment}, want_knn_key);
}

DecodeOutput DecodeBatch::Step(const std::vector<int64_t>& slots, const std::vector<int32_t>& tokens,
                               bool want_knn_key) {
  TORCH_CHECK(!slots.empty() && tokens.size() == slots.size(), "a step needs one token per slot");
  std::vector<DecodeSegment> segments(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) segments[i].slot = slots[i], segments[i].tokens = {tokens[i]};
  return Run(segments, want_knn_key);
}

DecodeOutput DecodeBatch::Run(const std::vector<DecodeSegment>& segments, bool want_knn_key) {
  const size_t S = segments.size();
  TORCH_CHECK(S >= 1, "a run needs at least one segment");
  // Rows: every segment's positions, segment after segment.
  std::vector<int64_t> start(S), first_row(S), ids, row_slot, row_pos, last_rows;
  std::vector<size_t> singles;  // one-token segments: their attention runs as one batch
  std::vector<bool> seen(static_cast<size_t>(slots_), false);
  for (size_t i = 0; i < S; ++i) {
    const DecodeSegment& seg = segments[i];
    const int64_t s = seg.slot, n = static_cast<int64_t>(seg.tokens.size());
    TORCH_CHECK(s >= 0 && s < slots_ && !seen[static_cast<size_t>(s)], "slot ", s, " is outside the batch or repeated");
    seen[static_cast<size_t>(s)] = true;
    TORCH_CHECK(n >= 1, "a segment needs at least one token");
    const int64_t len = seg.restart ? 0 : lengths_[static_cast<size_t>(s)];
    TORCH_CHECK(seg.restart || len >= 1, "slot ", s, " holds no tokens: only a restarting segment starts it");
    TORCH_CHECK(len + n <= context_, "slot ", s, " would hold ", len + n, " tokens, past the context of ", context_);
    start[i] = len, first_row[i] = static_cast<int64_t>(ids.size());
    for (int64_t j = 0; j < n; ++j) {
      ids.push_back(seg.tokens[static_cast<size_t>(j)]);
      row_slot.push_back(s);
      row_pos.push_back(len + j);
    }
    last_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
    if (n == 1) singles.push_back(i);
  }
  const int64_t N = static_cast<int64_t>(ids.size()), B1 = static_cast<int64_t>(singles.size());
  torch::InferenceMode inference;
  const torch::Device where = net_->device();
  auto on_device = [&](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong).to(where); };
  const torch::Tensor row_slot_t = on_device(row_slot), row_pos_t = on_device(row_pos);
  const torch::Tensor last_t = N == static_cast<int64_t>(S) ? torch::Tensor() : on_device(last_rows);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const int64_t C = net_->config().n_embd;
  using torch::indexing::Slice;

  // The one-token segments' attention: one batch over the columns up to the longest of them (reading all
  // n_positions would read the whole cache every step: 1.2 GB at GPT-2 small's size with 16 slots).
  std::vector<int64_t> one_rows, one_slots, one_pos;
  for (size_t i : singles) one_rows.push_back(first_row[i]), one_slots.push_back(segments[i].slot), one_pos.push_back(start[i]);
  const int64_t span = B1 > 0 ? *std::max_element(one_pos.begin(), one_pos.end()) + 1 : 0;
  bool leading = true;  // slots 0 .. B1-1 in order are a view; any other set is gathered
  for (int64_t i = 0; i < B1; ++i) leading = leading && one_slots[static_cast<size_t>(i)] == i;
  torch::Tensor one_rows_t, one_slots_t, hidden_cols;
  if (B1 > 0) {
    one_rows_t = on_device(one_rows), one_slots_t = on_device(one_slots);
    // Column j of row i is visible when j <= its position (the new token's own key included).
    hidden_cols = torch::arange(span, torch::TensorOptions().dtype(torch::kLong).device(where))
                      .unsqueeze(0)
                      .gt(on_device(one_pos).unsqueeze(1))
                      .view({B1, 1, 1, span});
  }
  auto one_token_attention = [&](size_t l, CausalSelfAttentionImpl& attn, const torch::Tensor& q /* [B1, H, D] */) {
    auto rows = [&](const torch::Tensor& t) {
      const torch::Tensor live = t.narrow(2, 0, span);
      return leading ? live.narrow(0, 0, B1) : live.index_select(0, one_slots_t);
    };
    // The cache holds raw keys; a memory layer with smeared keys smears them as its own forward pass does.
    const torch::Tensor keys = attn.SmearKeys(rows(keys_[l]));
    torch::Tensor scores = torch::matmul(q.view({B1, n_head_, 1, head_dim_}), keys.transpose(-2, -1)) * scale;
    scores.masked_fill_(hidden_cols, -std::numeric_limits<float>::infinity());
    return torch::matmul(torch::softmax(scores, -1), rows(values_[l])).reshape({B1, C});
  };
  // A longer segment: causal attention over its own slot's columns [0, start + n); its mask (the columns
  // past each row's position) is the same in every layer.
  std::vector<torch::Tensor> future(S);
  for (size_t i = 0; i < S; ++i) {
    const int64_t n = static_cast<int64_t>(segments[i].tokens.size());
    if (n > 1) {
      future[i] = torch::ones({n, start[i] + n}, torch::TensorOptions().dtype(torch::kBool).device(where)).triu(start[i] + 1);
    }
  }
  auto segment_attention = [&](size_t l, CausalSelfAttentionImpl& attn, size_t i, const torch::Tensor& q /* [n, H, D] */) {
    const int64_t n = q.size(0), s = segments[i].slot, cols = start[i] + n;
    const torch::Tensor keys = attn.SmearKeys(keys_[l].narrow(0, s, 1).narrow(2, 0, cols));
    torch::Tensor scores = torch::matmul(q.transpose(0, 1).unsqueeze(0), keys.transpose(-2, -1)) * scale;  // [1, H, n, cols]
    scores.masked_fill_(future[i], -std::numeric_limits<float>::infinity());
    const torch::Tensor y = torch::matmul(torch::softmax(scores, -1), values_[l].narrow(0, s, 1).narrow(2, 0, cols));
    return y[0].transpose(0, 1).reshape({n, C});
  };

  torch::Tensor x = net_->wte(on_device(ids)) + net_->wpe(row_pos_t);  // [N, C]
  DecodeOutput out;
  for (size_t l = 0; l < net_->blocks.size(); ++l) {
    Block& block = net_->blocks[l];
    CausalSelfAttentionImpl& attn = *block->attn;
    auto qkv = attn.c_attn(block->ln_1(x)).split(C, /*dim=*/1);
    keys_[l].index_put_({row_slot_t, Slice(), row_pos_t}, qkv[1].view({N, n_head_, head_dim_}));
    values_[l].index_put_({row_slot_t, Slice(), row_pos_t}, qkv[2].view({N, n_head_, head_dim_}));
    const torch::Tensor q = qkv[0].view({N, n_head_, head_dim_});
    torch::Tensor y;
    if (B1 == N) {
      y = one_token_attention(l, attn, q);
    } else {
      y = torch::empty({N, C}, x.options());
      if (B1 > 0) y.index_copy_(0, one_rows_t, one_token_attention(l, attn, q.index_select(0, one_rows_t)));
      for (size_t i = 0; i < S; ++i) {
        const int64_t n = static_cast<int64_t>(segments[i].tokens.size());
        if (n > 1) y.narrow(0, first_row[i], n).copy_(segment_attention(l, attn, i, q.narrow(0, first_row[i], n)));
      }
    }
    x = x + attn.c_proj(y);
    const torch::Tensor normed = block->ln_2(x);
    if (l + 1 == net_->blocks.size() && want_knn_key) out.knn_key = ToCpu(last_t.defined() ? normed.index_select(0, last_t) : normed);
    x = x + block->mlp(normed);
  }
  // The head on each segment's last position only (one row: a matrix-vector product, Logits).
  out.logits = ToCpu(net_->Logits(net_->ln_f(last_t.defined() ? x.index_select(0, last_t) : x)));
  for (size_t i = 0; i < S; ++i) {
    lengths_[static_cast<size_t>(segments[i].slot)] = start[i] + static_cast<int64_t>(segments[i].tokens.size());
  }
  return out;
}

}  // namespace mnemo
