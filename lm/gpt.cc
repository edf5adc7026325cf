#include "lm/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

namespace mnemo {
namespace {

// The memory branch's initial per-head scale of cosine similarities (its queries and keys are unit
// vectors, so 1/sqrt(head_dim) would make its softmax nearly uniform; 10 lets a near-duplicate key win).
constexpr float kInitialMemoryScale = 10.0f;

// Causal attention over at least kTiledAttentionFrom keys with more than AttentionTile() queries (a
// scoring window or a prompt at GPT-2's sizes) runs in blocks of AttentionTile() queries. Shorter
// sequences (the default model's 128-token windows, one decoding step) keep the single product.
// MNEMO_ATTENTION_TILE=N sets the block (0: never tile), for benchmarks that compare the two.
constexpr int64_t kTiledAttentionFrom = 256;

int64_t AttentionTile() {
  static const int64_t tile = [] {
    const char* env = std::getenv("MNEMO_ATTENTION_TILE");
    return env != nullptr ? std::max<int64_t>(0, std::atoll(env)) : int64_t{128};
  }();
  return tile;
}

// Scaled scores of queries [i0, i1) against the keys they may see, 0 .. past + i1 - 1, the later ones masked
// to -inf: row r (query past + i0 + r) sees keys 0 .. past + i0 + r. One query needs no mask.
torch::Tensor CausalScores(const torch::Tensor& q, const torch::Tensor& k, int64_t past, int64_t i0, int64_t i1) {
  const int64_t end = past + i1;
  torch::Tensor scores = torch::matmul(q.slice(2, i0, i1), k.slice(2, 0, end).transpose(-2, -1)) *
                         (1.0 / std::sqrt(static_cast<double>(q.size(3))));
  if (i1 - i0 == 1) return scores;
  auto mask = torch::ones({i1 - i0, end}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
                  .triu(past + i0 + 1);
  return scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
}

// Causal attention in blocks of `tile` queries: block [i0, i1) multiplies by keys 0 .. past + i1 - 1 only,
// so the scores above the diagonal band are never computed (about half of them for a full window) and each
// block's scores stay small enough for the cache. The same softmax as one block of all T queries: the
// columns a block skips are the ones masked to -inf there.
torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t past,
                              int64_t tile) {
  const int64_t T = q.size(2);
  std::vector<torch::Tensor> blocks;
  for (int64_t i0 = 0; i0 < T; i0 += tile) {
    const int64_t i1 = std::min(T, i0 + tile);
    blocks.push_back(torch::matmul(torch::softmax(CausalScores(q, k, past, i0, i1), -1), v.slice(2, 0, past + i1)));
  }
  return blocks.size() == 1 ? blocks[0] : torch::cat(blocks, 2);
}

}  // namespace

bool PackedWeightCache::Applies(const torch::Tensor& weight) {
  return weight.device().is_cpu() && weight.scalar_type() == torch::kFloat && PackedGemmSupported();
}

std::shared_ptr<const PackedWeights> PackedWeightCache::Get(const torch::Tensor& weight, bool transposed) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t version = weight._version();
  if (packed_ == nullptr || version != version_ || weight.data_ptr() != data_) {
    packed_.reset();  // free the old copy before making the new one
    const torch::Tensor kn = (transposed ? weight.t() : weight).contiguous();
    packed_ = PackedWeights::Pack(kn.data_ptr<float>(), kn.size(0), kn.size(1));
    version_ = version, data_ = weight.data_ptr();
  }
  return packed_;
}

torch::Tensor PackedProduct(const torch::Tensor& x2d, const torch::Tensor& weight, bool transposed,
                            const torch::Tensor& bias, PackedWeightCache* cache) {
  const int64_t rows = x2d.size(0);
  if (PackedGemmThreadsSetting() == 0 || rows < 2 || rows > kPackedMaxRows || torch::GradMode::is_enabled() ||
      x2d.scalar_type() != torch::kFloat || !PackedWeightCache::Applies(weight)) {
    return {};
  }
  const std::shared_ptr<const PackedWeights> packed = cache->Get(weight, transposed);
  const torch::Tensor x = x2d.contiguous();
  torch::Tensor y = torch::empty({rows, packed->n()}, x.options());
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  // On the threads this thread allows the kernel (SetPackedGemmThreads: the decoding thread, the cores).
  PackedGemmThreads(x.data_ptr<float>(), rows, *packed, b, y.data_ptr<float>());
  return y;
}

Conv1DImpl::Conv1DImpl(int64_t in, int64_t out) {
  weight = register_parameter("weight", torch::empty({in, out}));
  bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor Conv1DImpl::forward(const torch::Tensor& x) {
  auto shape = x.sizes().vec();
  shape.back() = weight.size(1);
  if (x.numel() == x.size(-1)) {
    // One position (a generation step): as a 1-row matrix product, OpenBLAS 0.3.21 first copies the whole
    // weight into its packed layout on every call (45% of a GPT-2-small generation profile here,
    // `sgemm_itcopy`); its matrix-vector product reads the weight once.
    return torch::addmv(bias, weight.t(), x.reshape({-1})).view(shape);
  }
  const torch::Tensor x2d = x.reshape({-1, x.size(-1)});
  // The packed kernel where this thread turned it on (batched decoding) and it applies.
  const torch::Tensor packed = PackedProduct(x2d, weight, /*transposed=*/false, bias, packed_.get());
  if (packed.defined()) return packed.view(shape);
  return torch::addmm(bias, x2d, weight).view(shape);
}

void Conv1DImpl::Pack() { packed_->Prepare(weight, /*transposed=*/false); }

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GptConfig& config, bool memorizing_)
    : n_head(config.n_head), n_embd(config.n_embd), memorizing(memorizing_),
      gated(memorizing_ && config.memory_mode == "gated"), memory_topk(config.memory_topk) {
  c_attn = register_module("c_attn", Conv1D(n_embd, 3 * n_embd));
  c_proj = register_module("c_proj", Conv1D(n_embd, n_embd));
  if (gated) {
    mem_gate = register_parameter("mem_gate", torch::zeros({n_head}));
    mem_scale = register_parameter("mem_scale", torch::full({n_head}, kInitialMemoryScale));
  }
  if (memorizing && config.memory_smear) mem_smear = register_parameter("mem_smear", torch::zeros({n_head}));
}

void CausalSelfAttentionImpl::InitInductionHeads(int64_t heads, double qk_scale, double ov_scale, uint64_t seed) {
  TORCH_CHECK(mem_smear.defined(), "induction heads need smeared keys");
  TORCH_CHECK(heads >= 0 && heads <= n_head, "induction heads: ", heads, " of ", n_head);
  torch::NoGradGuard no_grad;
  const int64_t C = n_embd, D = n_embd / n_head;
  auto gen = at::detail::createCPUGenerator(seed);
  for (int64_t h = 0; h < heads; ++h) {
    // Orthonormal columns [C, D]: the reduced QR of a Gaussian matrix.
    const torch::Tensor basis = std::get<0>(torch::linalg_qr(torch::randn({C, D}, gen))).to(c_attn->weight.device());
    const int64_t col = h * D;
    c_attn->weight.narrow(1, col, D).copy_(basis * qk_scale);          // W_q
    c_attn->weight.narrow(1, C + col, D).copy_(basis * qk_scale);      // W_k
    c_attn->weight.narrow(1, 2 * C + col, D).copy_(basis);             // W_v
    c_attn->bias.narrow(0, col, D).zero_();
    c_attn->bias.narrow(0, C + col, D).zero_();
    c_attn->bias.narrow(0, 2 * C + col, D).zero_();
    c_proj->weight.narrow(0, col, D).copy_(basis.t() * ov_scale);      // W_o
    mem_smear[h] = 1.0;
  }
}

torch::Tensor CausalSelfAttentionImpl::SmearKeys(const torch::Tensor& k) const {
  const int64_t S = k.size(2);
  if (!mem_smear.defined() || S == 1) return k;
  const torch::Tensor previous = torch::cat({k.narrow(2, 0, 1), k.narrow(2, 0, S - 1)}, 2);
  return k + mem_smear.view({1, n_head, 1, 1}) * (previous - k);
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, torch::Tensor* past_k,
                                               torch::Tensor* past_v, AttentionTap* tap,
                                               const MemoryAccess* memory) {
  const int64_t B = x.size(0), T = x.size(1), D = n_embd / n_head;
  auto qkv = c_attn(x).split(n_embd, /*dim=*/2);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, T, n_head, D}).transpose(1, 2); };
  torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  if (tap != nullptr) *tap = {q, k, v};
  const torch::Tensor v_new = v;
  int64_t past = 0;
  if (past_k != nullptr && past_k->defined()) {
    past = past_k->size(2);
    k = torch::cat({*past_k, k}, 2);
    v = torch::cat({*past_v, v}, 2);
  }
  // The cache keeps the raw keys (a new position's smeared key needs its predecessor's raw one); the
  // smear over all S positions costs S x n_embd multiply-adds, far below the attention's products.
  if (past_k != nullptr) *past_k = k, *past_v = v;
  k = SmearKeys(k);
  const int64_t S = past + T;
  const bool use_memory = memorizing && memory != nullptr && memory->memory != nullptr;
  torch::Tensor y;
  if (use_memory) {
    y = AttendWithMemory(q, k, v, CausalScores(q, k, past, 0, T), *memory);
    if (memory->write) WriteMemory(k.narrow(2, past, T), v_new, past, *memory);
  } else {
    const bool tiled = AttentionTile() > 0 && T > AttentionTile() && S >= kTiledAttentionFrom;
    y = CausalAttention(q, k, v, past, tiled ? AttentionTile() : T);
  }
  return c_proj(y.transpose(1, 2).reshape({B, T, n_embd}));
}

torch::Tensor CausalSelfAttentionImpl::AttendWithMemory(const torch::Tensor& q, const torch::Tensor& k,
                                                        const torch::Tensor& v, const torch::Tensor& local_scores,
                                                        const MemoryAccess& access) {
  KvMemory& memory = *access.memory;
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t K = access.topk > 0 ? access.topk : memory_topk;
  const int64_t L0 = access.first_lane;
  TORCH_CHECK(L0 >= 0 && memory.lanes() >= L0 + B && memory.heads() == H && memory.head_dim() == D, "memory of ", memory.lanes(),
              " lanes x ", memory.heads(), " heads x ", memory.head_dim(), " dims does not fit a batch of ", B,
              " x ", H, " heads x ", D);
  bool any = false;
  for (int64_t b = 0; b < B; ++b) any = any || memory.size(L0 + b) > 0;
  if (!any) {
    // Nothing to retrieve: exactly local attention (the gate applies only to retrieved pairs).
    if (access.retrieved_tags != nullptr) *access.retrieved_tags = torch::full({B, H, T, K}, -1, torch::kLong);
    if (access.retrieved_weights != nullptr) *access.retrieved_weights = torch::zeros({B, H, T, K});
    return torch::matmul(torch::softmax(local_scores, -1), v);
  }
  // The memory branch searches with normalised queries in "gated" mode (its keys were normalised when
  // written), with the raw ones in "joint" mode.
  const torch::Tensor qm = gated ? torch::nn::functional::normalize(
                                       q, torch::nn::functional::NormalizeFuncOptions().p(2).dim(-1))
                                 : q;
  const torch::Tensor queries = qm.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  // Search fills every slot (zero pairs and tag -1 past what a lane holds); only empty lanes are skipped.
  torch::Tensor km = torch::empty({B, H, T, K, D}), vm = torch::empty({B, H, T, K, D});
  torch::Tensor tags = torch::empty({B, H, T, K}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    if (memory.size(L0 + b) == 0) {
      km[b].zero_(), vm[b].zero_(), tags[b].fill_(-1);
      continue;
    }
    const Status s = memory.Search(L0 + b, queries[b].data_ptr<float>(), T, K, km[b].data_ptr<float>(),
                                   vm[b].data_ptr<float>(), tags[b].data_ptr<int64_t>());
    TORCH_CHECK(s.ok(), "memory search: ", s.ToString());
  }
  const torch::Device where = q.device();
  km = km.to(where), vm = vm.to(where);
  const torch::Tensor valid = tags.to(where).ge(0);  // [B, H, T, K]
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // [B, H, T, 1, D] * [B, H, T, K, D] summed over D -> [B, H, T, K] (T x H tiny products: elementwise beats
  // a batched matrix product here).
  torch::Tensor mem_scores = (qm.unsqueeze(-2) * km).sum(-1);
  torch::Tensor y, weights;
  if (gated) {
    mem_scores = (mem_scores * mem_scale.view({1, H, 1, 1})).masked_fill(valid.logical_not(), neg_inf);
    const torch::Tensor has = valid.any(-1, /*keepdim=*/true);  // [B, H, T, 1]
    // A query with nothing retrieved (its lane is empty) gets a zero row instead of NaNs, and no gate.
    weights = torch::softmax(mem_scores.masked_fill(has.logical_not(), 0.0), -1) * has;
    const torch::Tensor y_mem = (weights.unsqueeze(-1) * vm).sum(-2);
    const torch::Tensor y_local = torch::matmul(torch::softmax(local_scores, -1), v);
    const torch::Tensor g = torch::sigmoid(mem_gate).view({1, H, 1, 1}) * has;
    y = g * y_mem + (1 - g) * y_local;
  } else {
    mem_scores = (mem_scores * (1.0 / std::sqrt(static_cast<double>(D)))).masked_fill(valid.logical_not(), neg_inf);
    const int64_t S = local_scores.size(-1);
    // Local scores always hold the query's own position, so no row is all -inf.
    const torch::Tensor p = torch::softmax(torch::cat({local_scores, mem_scores}, -1), -1);
    weights = p.narrow(-1, S, K);
    y = torch::matmul(p.narrow(-1, 0, S), v) + (weights.unsqueeze(-1) * vm).sum(-2);
  }
  if (access.retrieved_tags != nullptr) *access.retrieved_tags = tags;
  if (access.retrieved_weights != nullptr) *access.retrieved_weights = weights.detach().to(torch::kCPU);
  return y;
}

void CausalSelfAttentionImpl::WriteMemory(const torch::Tensor& k, const torch::Tensor& v, int64_t past,
                                          const MemoryAccess& access) {
  const int64_t B = k.size(0), T = k.size(2);
  const int64_t begin = access.write_begin, end = access.write_end < 0 ? T : access.write_end;
  TORCH_CHECK(0 <= begin && begin <= end && end <= T, "memory write range [", begin, ", ", end,
              ") outside the call's ", T, " tokens");
  const int64_t n = end - begin;
  if (n == 0) return;
  const torch::Tensor keys =
      (gated ? torch::nn::functional::normalize(k, torch::nn::functional::NormalizeFuncOptions().p(2).dim(-1)) : k)
          .narrow(2, begin, n).detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const torch::Tensor values = v.narrow(2, begin, n).detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[t] = past + begin + t;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* tags = access.tags != nullptr ? access.tags + b * n : positions.data();
    const Status s = access.memory->Append(access.first_lane + b, keys[b].data_ptr<float>(), values[b].data_ptr<float>(), tags, n);
    TORCH_CHECK(s.ok(), "memory append: ", s.ToString());
  }
}

MlpImpl::MlpImpl(const GptConfig& config) : tanh_gelu(config.activation_function != "gelu") {
  c_fc = register_module("c_fc", Conv1D(config.n_embd, 4 * config.n_embd));
  c_proj = register_module("c_proj", Conv1D(4 * config.n_embd, config.n_embd));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return c_proj(torch::gelu(c_fc(x), tanh_gelu ? "tanh" : "none"));
}

BlockImpl::BlockImpl(const GptConfig& config, bool memorizing) {
  auto ln = torch::nn::LayerNormOptions({config.n_embd}).eps(config.layer_norm_epsilon);
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", CausalSelfAttention(config, memorizing));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(ln));
  mlp = register_module("mlp", Mlp(config));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, torch::Tensor* past_k, torch::Tensor* past_v,
                                 AttentionTap* tap, torch::Tensor* ffn_input, const MemoryAccess* memory,
                                 bool skip_mlp) {
  auto h = x + attn(ln_1(x), past_k, past_v, tap, memory);
  auto normed = ln_2(h);
  if (ffn_input != nullptr) *ffn_input = normed;
  if (skip_mlp) return h;
  return h + mlp(normed);
}

GptImpl::GptImpl(const GptConfig& config) : config_(config) {
  wte = register_module("wte", torch::nn::Embedding(config.vocab_size, config.n_embd));
  wpe = register_module("wpe", torch::nn::Embedding(config.n_positions, config.n_embd));
  h = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layer; ++i) {
    blocks.push_back(Block(config, /*memorizing=*/i == config.memory_layer));
    h->push_back(blocks.back());
  }
  ln_f = register_module(
      "ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd}).eps(config.layer_norm_epsilon)));
  InitWeights(/*seed=*/0);
}

void GptImpl::InitWeights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.n_layer);
  for (auto& p : named_parameters()) {
    const std::string& name = p.key();
    torch::Tensor& t = p.value();
    if (name.find("attn.mem_gate") != std::string::npos || name.find("attn.mem_smear") != std::string::npos) {
      t.zero_();  // the gate: g = sigmoid(0) = 0.5, as in the paper; the smear: none, GPT-2's keys
    } else if (name.find("attn.mem_scale") != std::string::npos) {
      t.fill_(kInitialMemoryScale);
    } else if (name.find("ln_") != std::string::npos) {
      t.fill_(name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 ? 1.0 : 0.0);
    } else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      t.zero_();
    } else if (name.find("c_proj.weight") != std::string::npos) {
      t.normal_(0.0, residual_std, gen);
    } else {
      t.normal_(0.0, 0.02, gen);
    }
  }
}

torch::Tensor GptImpl::Logits(const torch::Tensor& hidden) {
  const int64_t d = hidden.size(-1);
  if (hidden.numel() == d) {
    // One position (a generation step): a matrix-vector product. As a 1-row matrix product, OpenBLAS
    // 0.3.21 first copies the whole vocab x d embedding into its packed layout on every call (12% of
    // a generation profile here, `sgemm_incopy`); its matrix-vector product reads it once.
    std::vector<int64_t> shape(hidden.sizes().begin(), hidden.sizes().end());
    shape.back() = wte->weight.size(0);
    return torch::mv(wte->weight, hidden.reshape({d})).reshape(shape);
  }
  const torch::Tensor packed =
      PackedProduct(hidden.reshape({-1, d}), wte->weight, /*transposed=*/true, {}, packed_head_.get());
  if (packed.defined()) {
    std::vector<int64_t> shape(hidden.sizes().begin(), hidden.sizes().end());
    shape.back() = wte->weight.size(0);
    return packed.view(shape);
  }
  return torch::matmul(hidden, wte->weight.t());
}

void GptImpl::PackForDecoding() {
  torch::NoGradGuard no_grad;
  for (Block& block : blocks) {
    block->attn->c_attn->Pack(), block->attn->c_proj->Pack();
    block->mlp->c_fc->Pack(), block->mlp->c_proj->Pack();
  }
  packed_head_->Prepare(wte->weight, /*transposed=*/true);
}

torch::Tensor GptImpl::LogitsInto(const torch::Tensor& hidden, torch::Tensor* buffer) {
  // Where this thread uses the packed kernel, up to kPackedMaxRows rows go where Logits sends them, so
  // both give the same numbers.
  if (hidden.dim() != 2 || hidden.size(0) < 2 ||
      (PackedGemmThreadsSetting() > 0 && hidden.size(0) <= kPackedMaxRows)) {
    return *buffer = Logits(hidden);
  }
  const torch::Tensor& w = wte->weight;
  if (!buffer->defined() || buffer->size(0) != hidden.size(0) || buffer->size(1) != w.size(0) ||
      buffer->scalar_type() != hidden.scalar_type() || buffer->device() != hidden.device()) {
    *buffer = torch::empty({hidden.size(0), w.size(0)}, hidden.options());
  }
  return at::mm_out(*buffer, hidden, w.t());
}

ForwardResult GptImpl::Forward(const torch::Tensor& input, const ForwardOptions& options) {
  const torch::Device where = device();
  const torch::Tensor ids = input.to(where);
  const int64_t T = ids.size(1);
  KvCache* cache = options.cache;
  const int64_t past = cache != nullptr ? cache->length() : 0;
  TORCH_CHECK(past + T <= config_.n_positions, "sequence of ", past + T, " tokens exceeds n_positions ",
              config_.n_positions);
  if (cache != nullptr && cache->keys.empty()) {
    cache->keys.resize(config_.n_layer);
    cache->values.resize(config_.n_layer);
  }
  auto pos = torch::arange(past, past + T, torch::TensorOptions().dtype(torch::kLong).device(where));
  torch::Tensor x = wte(ids) + wpe(pos);
  ForwardResult result;
  if (options.want_attention) result.attention.resize(config_.n_layer);
  const bool final_norm = options.want_hidden || options.want_logits;
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    const bool last = i + 1 == config_.n_layer;
    x = blocks[i](x, cache ? &cache->keys[i] : nullptr, cache ? &cache->values[i] : nullptr,
                  options.want_attention ? &result.attention[i] : nullptr,
                  last && options.want_knn_key ? &result.knn_key : nullptr,
                  i == config_.memory_layer ? &options.memory : nullptr,
                  /*skip_mlp=*/last && options.want_knn_key && !final_norm);
  }
  if (final_norm) result.hidden = ln_f(x);
  if (options.want_logits) result.logits = Logits(result.hidden);
  if (!options.keep_on_device && !where.is_cpu()) {
    // Undefined tensors (results not asked for) stay undefined.
    auto to_cpu = [](torch::Tensor& t) {
      if (t.defined()) t = t.to(torch::kCPU);
    };
    to_cpu(result.logits), to_cpu(result.hidden), to_cpu(result.knn_key);
    for (AttentionTap& tap : result.attention) to_cpu(tap.q), to_cpu(tap.k), to_cpu(tap.v);
  }
  return result;
}

}  // namespace mnemo
