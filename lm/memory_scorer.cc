#include "lm/memory_scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <queue>

#include "lm/safetensors.h"

namespace mnemo {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Log-probabilities of ids[first .. first + count) from a window's logits [1, T, V] starting at `begin`.
std::vector<float> TargetLogprobs(const torch::Tensor& logits, const std::vector<int32_t>& ids, int64_t begin,
                                  int64_t first, int64_t count) {
  const torch::Tensor rows = torch::log_softmax(logits[0].narrow(0, first - begin - 1, count), -1);
  std::vector<float> out(static_cast<size_t>(count));
  auto acc = rows.accessor<float, 2>();
  for (int64_t i = 0; i < count; ++i) out[i] = acc[i][ids[first + i]];
  return out;
}

struct ExampleOrder {  // min-heap on the gain, so the smallest gain kept is on top
  bool operator()(const MemoryExample& a, const MemoryExample& b) const {
    return a.memory_logprob - a.base_logprob > b.memory_logprob - b.base_logprob;
  }
};

}  // namespace

std::vector<int32_t> MemoryScoredSequence(const std::vector<int32_t>& document, int32_t bos, bool copy,
                                          int64_t* first_target) {
  std::vector<int32_t> ids;
  ids.reserve(1 + document.size() * (copy ? 2 : 1));
  ids.push_back(bos);
  ids.insert(ids.end(), document.begin(), document.end());
  *first_target = 1;
  if (copy) {
    *first_target = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), document.begin(), document.end());
  }
  return ids;
}

Status ReadIntoMemory(Gpt& net, const std::vector<int32_t>& ids, int64_t count, const WindowOptions& window,
                      KvMemory* memory, int64_t lane, int64_t first_tag) {
  if (count < 0 || count > static_cast<int64_t>(ids.size())) return Status::InvalidArgument("count outside the ids");
  if (count == 0) return Status::OK();
  if (!net->config().has_memory()) return Status::InvalidArgument("the model has no memory layer");
  std::vector<Window> windows;
  MNEMO_RETURN_IF_ERROR(PlanWindows(count, net->config().n_positions, window, &windows));
  if (windows.empty()) windows.push_back({0, count, 0});
  torch::InferenceMode inference;
  for (size_t w = 0; w < windows.size(); ++w) {
    const Window& win = windows[w];
    const int64_t next_begin = w + 1 < windows.size() ? windows[w + 1].begin : win.end;
    std::vector<int64_t> tags;
    for (int64_t p = win.begin; p < next_begin; ++p) tags.push_back(first_tag + p);
    ForwardOptions fo;
    fo.want_logits = false;
    fo.memory.memory = memory;
    fo.memory.first_lane = lane;
    fo.memory.write_end = next_begin - win.begin;
    fo.memory.tags = tags.data();
    std::vector<int64_t> input(ids.begin() + win.begin, ids.begin() + win.end);
    net->Forward(torch::tensor(input, torch::kLong).unsqueeze(0), fo);
  }
  return Status::OK();
}

namespace {

// A write-only KvMemory: it keeps every appended pair and reports itself empty, so the layer attends
// locally and nothing is searched.
class PairCollector : public KvMemory {
 public:
  PairCollector(int64_t heads, int64_t head_dim) : heads_(heads), head_dim_(head_dim), keys_(heads), values_(heads) {}
  int64_t lanes() const override { return 1; }
  int64_t heads() const override { return heads_; }
  int64_t head_dim() const override { return head_dim_; }
  int64_t size(int64_t) const override { return 0; }
  Status Search(int64_t, const float*, int64_t, int64_t, float*, float*, int64_t*) const override {
    return Status::InvalidArgument("a pair collector is not searched");
  }
  Status Append(int64_t, const float* keys, const float* values, const int64_t*, int64_t n) override {
    for (int64_t h = 0; h < heads_; ++h) {
      keys_[h].insert(keys_[h].end(), keys + h * n * head_dim_, keys + (h + 1) * n * head_dim_);
      values_[h].insert(values_[h].end(), values + h * n * head_dim_, values + (h + 1) * n * head_dim_);
    }
    return Status::OK();
  }
  void Clear(int64_t) override {}
  static std::vector<float> Join(const std::vector<std::vector<float>>& per_head) {
    std::vector<float> out;
    for (const auto& k : per_head) out.insert(out.end(), k.begin(), k.end());
    return out;
  }
  std::vector<float> Keys() const { return Join(keys_); }      // [heads, count, head_dim]
  std::vector<float> Values() const { return Join(values_); }

 private:
  int64_t heads_, head_dim_;
  std::vector<std::vector<float>> keys_, values_;
};

}  // namespace

// Reads model_dir's memory index: [heads, lists, head_dim] centroids. NotFound when it has none.
Status LoadMemoryIndex(const std::string& model_dir, const GptConfig& config, std::vector<float>* centroids,
                       int64_t* lists) {
  const std::string path = model_dir + "/" + kMemoryIndexFile;
  std::unique_ptr<SafetensorsFile> file;
  MNEMO_RETURN_IF_ERROR(SafetensorsFile::Open(path, &file));
  const TensorView* t = file->Find("centroids");
  const int64_t H = config.n_head, D = config.n_embd / config.n_head;
  if (t == nullptr || t->dtype != DType::kF32 || t->shape.size() != 3 || t->shape[0] != H || t->shape[2] != D ||
      t->shape[1] < 1) {
    return Status::Corruption(path + ": expected an F32 tensor \"centroids\" of [" + std::to_string(H) + ", lists, " +
                              std::to_string(D) + "] (the model's heads and head size)");
  }
  *lists = t->shape[1];
  centroids->resize(t->nbytes / sizeof(float));
  std::memcpy(centroids->data(), t->data, t->nbytes);
  for (float x : *centroids) {
    if (!std::isfinite(x)) return Status::Corruption(path + ": a centroid is not finite");
  }
  return Status::OK();
}

Status ComputeMemoryPairs(Gpt& net, const std::vector<int32_t>& ids, int64_t count, const WindowOptions& window,
                          std::vector<float>* keys, std::vector<float>* values) {
  const GptConfig& config = net->config();
  PairCollector collector(config.n_head, config.n_embd / config.n_head);
  MNEMO_RETURN_IF_ERROR(ReadIntoMemory(net, ids, count, window, &collector, 0, 0));
  *keys = collector.Keys();
  *values = collector.Values();
  return Status::OK();
}

Status ScoreDocumentsWithMemory(Gpt& net, const Tokenizer& tokenizer,
                                const std::vector<std::vector<int32_t>>& documents,
                                const MemoryScoreOptions& options, MemoryScoreReport* report) {
  const GptConfig& config = net->config();
  KvMemory* memory = options.memory;
  if (memory != nullptr) {
    if (config.memory_layer < 0) {
      return Status::InvalidArgument("the model has no memory layer (config.json mnemo_memory_layer); train one "
                                     "with `mnemo train --memory-layer L` or fine-tune with --init-from");
    }
    const int64_t head_dim = config.n_embd / config.n_head;
    if (memory->lanes() < 1 || memory->heads() != config.n_head || memory->head_dim() != head_dim) {
      return Status::InvalidArgument("memory shape does not match the model's heads");
    }
  }
  const int32_t bos = tokenizer.eot_id() >= 0 ? tokenizer.eot_id() : 0;
  *report = MemoryScoreReport();
  std::vector<float> base_lp_all, mem_lp_all;
  int64_t base_bytes = 0;
  std::priority_queue<MemoryExample, std::vector<MemoryExample>, ExampleOrder> best;
  double memory_tokens_sum = 0;
  int64_t windows_scored = 0, scored_tokens = 0;
  torch::InferenceMode inference;
  for (size_t d = 0; d < documents.size(); ++d) {
    if (options.cancel != nullptr && options.cancel->load()) return Status::Cancelled("scoring cancelled");
    if (options.max_tokens > 0 && scored_tokens >= options.max_tokens) break;
    int64_t first_target = 1;
    const std::vector<int32_t> ids = MemoryScoredSequence(documents[d], bos, options.copy, &first_target);
    for (int32_t id : ids) {
      if (id < 0 || id >= config.vocab_size) return Status::InvalidArgument("token id outside the vocabulary");
    }
    if (ids.size() < 2 || first_target >= static_cast<int64_t>(ids.size())) continue;
    std::vector<Window> windows;
    MNEMO_RETURN_IF_ERROR(PlanWindows(static_cast<int64_t>(ids.size()), config.n_positions, options.window, &windows));
    if (memory != nullptr) memory->Clear(0);
    ++report->documents;
    for (size_t w = 0; w < windows.size(); ++w) {
      const Window& win = windows[w];
      const int64_t first = std::max(win.end - win.score_count, first_target);
      const int64_t count = win.end - first;
      const bool scored = count > 0;
      const torch::Tensor input =
          torch::from_blob(const_cast<int32_t*>(ids.data()) + win.begin, {1, win.end - win.begin}, torch::kInt)
              .to(torch::kLong);
      const bool want_base = memory == nullptr || !options.skip_base;
      std::vector<float> base_lp;
      if (scored && want_base) {
        const auto t0 = Clock::now();
        const torch::Tensor logits = net->Forward(input).logits;
        base_lp = TargetLogprobs(logits, ids, win.begin, first, count);
        report->base_seconds += Since(t0);
      }
      if (memory != nullptr) {
        // Tokens leaving the window (those before the next window's start) go to memory after the search.
        const int64_t next_begin = w + 1 < windows.size() ? windows[w + 1].begin : win.end;
        std::vector<int64_t> tags;
        for (int64_t p = win.begin; p < next_begin; ++p) tags.push_back(static_cast<int64_t>(d) << 32 | p);
        torch::Tensor retrieved_tags, retrieved_weights;
        ForwardOptions fo;
        fo.memory.memory = memory;
        fo.memory.topk = options.topk;
        fo.memory.write_begin = 0;
        fo.memory.write_end = next_begin - win.begin;
        fo.memory.tags = tags.data();
        if (options.examples > 0 && scored) {
          fo.memory.retrieved_tags = &retrieved_tags;
          fo.memory.retrieved_weights = &retrieved_weights;
        }
        if (scored) {
          memory_tokens_sum += static_cast<double>(memory->size(0));
          ++windows_scored;
          report->max_memory_tokens = std::max(report->max_memory_tokens, memory->size(0));
        }
        const auto t0 = Clock::now();
        const torch::Tensor logits = net->Forward(input, fo).logits;
        if (scored) {
          const std::vector<float> mem_lp = TargetLogprobs(logits, ids, win.begin, first, count);
          report->memory_seconds += Since(t0);
          for (int64_t i = 0; i < count && want_base && options.examples > 0 && retrieved_tags.defined(); ++i) {
            const float gain = mem_lp[i] - base_lp[i];
            if (static_cast<int64_t>(best.size()) == options.examples &&
                gain <= best.top().memory_logprob - best.top().base_logprob) {
              continue;
            }
            MemoryExample ex;
            ex.document = static_cast<int64_t>(d);
            ex.position = first + i;
            ex.base_logprob = base_lp[i];
            ex.memory_logprob = mem_lp[i];
            // The query that predicts token first + i sits at window position first + i - 1 - begin.
            const int64_t q = first + i - 1 - win.begin;
            auto tg = retrieved_tags[0].select(1, q);        // [H, K]
            auto wt = retrieved_weights[0].select(1, q);     // [H, K]
            for (int64_t h = 0; h < tg.size(0); ++h) {
              for (int64_t s = 0; s < tg.size(1); ++s) {
                const int64_t tag = tg[h][s].item<int64_t>();
                if (tag >= 0) {
                  ex.hits.push_back({tag & 0xffffffffll, static_cast<int>(h), wt[h][s].item<float>()});
                }
              }
            }
            std::sort(ex.hits.begin(), ex.hits.end(),
                      [](const MemoryExample::Hit& a, const MemoryExample::Hit& b) { return a.weight > b.weight; });
            if (ex.hits.size() > 4) ex.hits.resize(4);
            best.push(std::move(ex));
            if (static_cast<int64_t>(best.size()) > options.examples) best.pop();
          }
          mem_lp_all.insert(mem_lp_all.end(), mem_lp.begin(), mem_lp.end());
        } else {
          report->memory_seconds += Since(t0);
        }
      }
      if (scored) {
        scored_tokens += count;
        base_lp_all.insert(base_lp_all.end(), base_lp.begin(), base_lp.end());
        for (int64_t j = first; j < win.end; ++j) base_bytes += static_cast<int64_t>(tokenizer.TokenBytes(ids[j]).size());
      }
    }
  }
  if (memory == nullptr || !options.skip_base) report->base = PerplexityReport::FromLogprobs(base_lp_all, base_bytes);
  if (memory != nullptr) report->memory = PerplexityReport::FromLogprobs(mem_lp_all, base_bytes);
  report->mean_memory_tokens = windows_scored > 0 ? memory_tokens_sum / windows_scored : 0;
  if (options.keep_logprobs) report->base_logprobs = base_lp_all, report->memory_logprobs = mem_lp_all;
  while (!best.empty()) {
    report->examples.push_back(best.top());
    best.pop();
  }
  std::reverse(report->examples.begin(), report->examples.end());
  return Status::OK();
}

}  // namespace mnemo
