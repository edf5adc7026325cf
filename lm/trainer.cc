#include "lm/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "lm/bpe_trainer.h"
#include "lm/checkpoint.h"
#include "lm/documents.h"
#include "lm/memory_scorer.h"
#include "util/file_util.h"
#include "util/hash.h"
#include "util/parallel.h"
#include "util/progress.h"

namespace mnemo {
namespace {

// Training defaults per preset: enough steps to converge the preset's size within its time budget.
struct PresetSchedule {
  const char* name;
  int64_t steps, batch_size;
  double learning_rate;
};
// Steps are sized for ~10 minutes on 2 cores at the measured throughput (docs/PERFORMANCE.md).
constexpr PresetSchedule kSchedules[] = {
    {"tiny", 200, 8, 3e-3},
    {"default", 960, 16, 2e-3},
    {"medium", 720, 16, 2e-3},
};

uint64_t TokenizerHash(const BpeTokenizer& tok) {
  uint64_t h = Fnv1a64("mnemo-bpe");
  for (int32_t i = 0; i < tok.vocab_size(); ++i) {
    std::string b = tok.TokenBytes(i);
    uint32_t len = static_cast<uint32_t>(b.size());
    h = Fnv1a64(&len, sizeof(len), h);
    h = Fnv1a64(b.data(), b.size(), h);
  }
  return h;
}

// Encodes `text` on all cores. Chunks are cut between the two newlines of a paragraph break followed by
// text ("a\n|\nb"), where GPT-2's pre-tokenizer splits anyway, so the result equals one Encode call.
std::vector<int32_t> ParallelEncode(const BpeTokenizer& tok, const std::string& text) {
  const size_t workers = std::max(1u, std::thread::hardware_concurrency());
  std::vector<size_t> cuts = {0};
  for (size_t w = 1; w < workers * 8; ++w) {
    size_t pos = text.find("\n\n", std::max(cuts.back(), text.size() * w / (workers * 8)));
    while (pos != std::string::npos && pos + 2 < text.size() && std::isspace(static_cast<unsigned char>(text[pos + 2]))) {
      pos = text.find("\n\n", pos + 1);
    }
    if (pos == std::string::npos || pos + 2 >= text.size()) break;
    cuts.push_back(pos + 1);
  }
  cuts.push_back(text.size());
  std::vector<std::vector<int32_t>> parts(cuts.size() - 1);
  ParallelFor(parts.size(), workers, [&](size_t i) {
    parts[i] = tok.Encode(std::string_view(text).substr(cuts[i], cuts[i + 1] - cuts[i]));
  });
  std::vector<int32_t> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// Tokenizes `path`, caching the ids in out_dir/tokens-<hash>.bin (hash of text and tokenizer).
Status LoadTokens(const std::string& path, const BpeTokenizer& tok, const std::string& out_dir, bool quiet,
                  std::vector<int32_t>* ids) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  if (text.empty()) return Status::InvalidArgument(path + ": file is empty");
  char name[64];
  snprintf(name, sizeof(name), "/tokens-%016llx.bin",
           static_cast<unsigned long long>(Fnv1a64(text.data(), text.size(), TokenizerHash(tok))));
  const std::string cache = out_dir + name;
  std::string bytes;
  if (ReadFileToString(cache, &bytes).ok() && bytes.size() % sizeof(int32_t) == 0 && !bytes.empty()) {
    ids->resize(bytes.size() / sizeof(int32_t));
    std::memcpy(ids->data(), bytes.data(), bytes.size());
    return Status::OK();
  }
  ProgressBar bar("tokenize " + path, 1, "files", !quiet);
  *ids = ParallelEncode(tok, text);
  bar.Update(1, static_cast<int64_t>(text.size()), "bytes", std::to_string(ids->size()) + " tokens");
  bar.Finish();
  return WriteFileAtomically(cache, std::string_view(reinterpret_cast<const char*>(ids->data()),
                                                     ids->size() * sizeof(int32_t)));
}

// Rows of seq_len + 1 tokens at random offsets; the batch of a step depends only on (seed, step).
torch::Tensor SampleBatch(const std::vector<int32_t>& ids, int64_t batch, int64_t seq_len, uint64_t seed,
                          int64_t step) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step));
  std::uniform_int_distribution<int64_t> offset(0, static_cast<int64_t>(ids.size()) - seq_len - 1);
  torch::Tensor out = torch::empty({batch, seq_len + 1}, torch::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t o = offset(rng);
    for (int64_t t = 0; t <= seq_len; ++t) acc[b][t] = ids[o + t];
  }
  return out;
}

double LearningRate(int64_t step, int64_t steps, int64_t warmup, double peak) {
  if (step < warmup) return peak * (step + 1) / warmup;
  const double progress = static_cast<double>(step - warmup) / std::max<int64_t>(1, steps - warmup);
  const double min_lr = peak / 10;
  return min_lr + 0.5 * (peak - min_lr) * (1 + std::cos(M_PI * std::min(1.0, progress)));
}

struct Validation {
  torch::Tensor rows;  // [n, seq_len + 1]
  int64_t bytes = 0;   // Bytes of the predicted tokens.
};

Validation MakeValidation(const std::vector<int32_t>& ids, const BpeTokenizer& tok, int64_t seq_len,
                          int64_t max_tokens) {
  Validation v;
  const int64_t rows = std::max<int64_t>(
      1, std::min<int64_t>(max_tokens, static_cast<int64_t>(ids.size()) - 1) / seq_len);
  v.rows = torch::empty({rows, seq_len + 1}, torch::kLong);
  auto acc = v.rows.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t <= seq_len; ++t) {
      acc[r][t] = ids[r * seq_len + t];
      if (t > 0) v.bytes += static_cast<int64_t>(tok.TokenBytes(ids[r * seq_len + t]).size());
    }
  }
  return v;
}

torch::Tensor LossOn(Gpt& net, const torch::Tensor& rows, const ForwardOptions& options = {}) {
  const int64_t len = rows.size(1) - 1;
  auto logits = net->Forward(rows.slice(1, 0, len), options).logits;
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              rows.slice(1, 1, len + 1).reshape({-1}));
}

// Mean validation loss in nats per token.
double Evaluate(Gpt& net, const Validation& v, int64_t batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  double total = 0;
  const int64_t n = v.rows.size(0);
  for (int64_t i = 0; i < n; i += batch) {
    auto rows = v.rows.slice(0, i, std::min(n, i + batch));
    total += LossOn(net, rows).item<double>() * rows.size(0);
  }
  net->train();
  return total / n;
}

Status SaveOptimizer(const std::string& path, torch::optim::AdamW& optimizer) {
  std::ostringstream out;
  torch::save(optimizer, out);
  return WriteFileAtomically(path, out.str());
}

// Tokenized documents of a JSONL file, cached in out_dir/doc-tokens-<hash>.bin: int64 count, int64
// lengths[count], then the int32 ids.
Status LoadDocumentTokens(const std::string& path, const BpeTokenizer& tok, const std::string& out_dir, bool quiet,
                          std::vector<std::vector<int32_t>>* docs) {
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  char name[64];
  snprintf(name, sizeof(name), "/doc-tokens-%016llx.bin",
           static_cast<unsigned long long>(Fnv1a64(text.data(), text.size(), TokenizerHash(tok))));
  const std::string cache = out_dir + name;
  std::string bytes;
  if (ReadFileToString(cache, &bytes).ok() && bytes.size() >= sizeof(int64_t)) {
    int64_t n = 0;
    std::memcpy(&n, bytes.data(), sizeof(n));
    size_t at = sizeof(int64_t) * (1 + static_cast<size_t>(std::max<int64_t>(n, 0)));
    if (n >= 0 && at <= bytes.size()) {
      std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
      bool ok = true;
      for (int64_t i = 0; i < n && ok; ++i) {
        int64_t len = 0;
        std::memcpy(&len, bytes.data() + sizeof(int64_t) * (1 + i), sizeof(len));
        ok = len >= 0 && at + len * sizeof(int32_t) <= bytes.size();
        if (!ok) break;
        out[i].resize(static_cast<size_t>(len));
        std::memcpy(out[i].data(), bytes.data() + at, len * sizeof(int32_t));
        at += len * sizeof(int32_t);
      }
      if (ok && at == bytes.size()) {
        *docs = std::move(out);
        return Status::OK();
      }
    }
  }
  std::vector<Document> parsed;
  MNEMO_RETURN_IF_ERROR(ReadDocuments(path, &parsed));
  if (parsed.empty()) return Status::InvalidArgument(path + ": no documents");
  ProgressBar bar("tokenize " + path, 1, "files", !quiet);
  *docs = EncodeDocuments(tok, parsed);
  std::string out;
  const int64_t n = static_cast<int64_t>(docs->size());
  out.append(reinterpret_cast<const char*>(&n), sizeof(n));
  int64_t total = 0;
  for (const auto& d : *docs) {
    const int64_t len = static_cast<int64_t>(d.size());
    total += len;
    out.append(reinterpret_cast<const char*>(&len), sizeof(len));
  }
  for (const auto& d : *docs) out.append(reinterpret_cast<const char*>(d.data()), d.size() * sizeof(int32_t));
  bar.Update(1, static_cast<int64_t>(text.size()), "bytes", std::to_string(total) + " tokens");
  bar.Finish();
  return WriteFileAtomically(cache, out);
}

// The repetition curriculum (TrainOptions::repeat_chunk): the chosen documents become chunk 1, chunk 1,
// chunk 2, chunk 2, ... with chunk lengths repeat_chunk >> (0..4). A pure function of (seed, document),
// so resumed runs read the same tokens.
// Documents from index `always` on are repeated whatever the fraction (the random ones below).
void RepeatChunks(int64_t chunk, double fraction, uint64_t seed, size_t always,
                  std::vector<std::vector<int32_t>>* docs) {
  for (size_t i = 0; i < docs->size(); ++i) {
    uint64_t h = Fnv1a64(&i, sizeof(i), seed ^ 0x5EEDC0DEull);
    if (i < always && static_cast<double>(h >> 11) * 0x1.0p-53 >= fraction) continue;
    const std::vector<int32_t>& d = (*docs)[i];
    std::vector<int32_t> out;
    out.reserve(2 * d.size());
    for (size_t at = 0; at < d.size();) {
      h = Fnv1a64(&h, sizeof(h));
      const size_t len = static_cast<size_t>(std::max<int64_t>(1, chunk >> (h % 5)));
      const size_t end = std::min(d.size(), at + len);
      for (int copy = 0; copy < 2; ++copy) out.insert(out.end(), d.begin() + at, d.begin() + end);
      at = end;
    }
    (*docs)[i] = std::move(out);
  }
}

// TrainOptions::repeat_random: appends documents of uniformly random token ids (the tokenizer's end of
// text excluded), 4,096 ids each, until they hold `fraction` of all training tokens. A pure function of
// (seed, vocabulary, the real documents' sizes). Returns the index of the first one.
size_t AddRandomDocuments(double fraction, int32_t vocab, int32_t eot, uint64_t seed,
                          std::vector<std::vector<int32_t>>* docs) {
  const size_t first = docs->size();
  if (fraction <= 0) return first;
  int64_t real = 0;
  for (const auto& d : *docs) real += static_cast<int64_t>(d.size());
  const int64_t want = static_cast<int64_t>(static_cast<double>(real) * fraction / (1.0 - fraction));
  constexpr int64_t kLength = 4096;
  std::mt19937_64 rng(seed ^ 0xC0B1E5D0C5ull);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  for (int64_t have = 0; have < want; have += kLength) {
    std::vector<int32_t> d(kLength);
    for (int32_t& t : d) {
      do t = id(rng); while (t == eot);
    }
    docs->push_back(std::move(d));
  }
  return first;
}

// Which segment each batch lane reads at each step (see trainer.h): a pure function of (seed, step).
class LaneSchedule {
 public:
  LaneSchedule(const std::vector<std::vector<int32_t>>& docs, int64_t lanes, int64_t seq_len, uint64_t seed)
      : docs_(docs), seq_len_(seq_len), seed_(seed), lanes_(static_cast<size_t>(lanes)) {
    for (size_t i = 0; i < docs.size(); ++i) {
      if (static_cast<int64_t>(docs[i].size()) >= seq_len + 1) eligible_.push_back(i);
    }
    for (size_t b = 0; b < lanes_.size(); ++b) Shuffle(b);
  }
  bool empty() const { return eligible_.empty(); }

  // Advances every lane by one segment. rows (may be null): [lanes, seq_len + 1] ids; tags: [lanes,
  // seq_len] (document << 32 | position); new_doc[b]: lane b started a document (clear its memory).
  void Next(torch::Tensor* rows, std::vector<int64_t>* tags, std::vector<char>* new_doc) {
    const int64_t B = static_cast<int64_t>(lanes_.size());
    if (rows != nullptr) *rows = torch::empty({B, seq_len_ + 1}, torch::kLong);
    if (tags != nullptr) tags->assign(static_cast<size_t>(B * seq_len_), 0);
    if (new_doc != nullptr) new_doc->assign(static_cast<size_t>(B), 0);
    for (int64_t b = 0; b < B; ++b) {
      Lane& lane = lanes_[b];
      if (!lane.started || lane.offset + seq_len_ + 1 > static_cast<int64_t>(docs_[Doc(lane)].size())) {
        if (lane.started && ++lane.pos == lane.order.size()) {
          ++lane.epoch;
          Shuffle(static_cast<size_t>(b));
        }
        lane.started = true;
        lane.offset = 0;
        if (new_doc != nullptr) (*new_doc)[b] = 1;
      }
      const size_t d = Doc(lane);
      if (rows != nullptr) {
        auto acc = rows->accessor<int64_t, 2>();
        for (int64_t t = 0; t <= seq_len_; ++t) acc[b][t] = docs_[d][lane.offset + t];
      }
      if (tags != nullptr) {
        for (int64_t t = 0; t < seq_len_; ++t) (*tags)[b * seq_len_ + t] = static_cast<int64_t>(d) << 32 | (lane.offset + t);
      }
      lane.offset += seq_len_;
    }
  }

  // For a resumed run: the segment starts of lane b's current document it already read, oldest first, if
  // its next segment continues that document (else none: the lane's memory will be cleared anyway).
  std::vector<int64_t> ReadSoFar(int64_t b, size_t* doc) const {
    const Lane& lane = lanes_[b];
    std::vector<int64_t> starts;
    if (!lane.started) return starts;
    *doc = Doc(lane);
    if (lane.offset + seq_len_ + 1 > static_cast<int64_t>(docs_[*doc].size())) return starts;
    for (int64_t o = 0; o < lane.offset; o += seq_len_) starts.push_back(o);
    return starts;
  }

 private:
  struct Lane {
    std::vector<size_t> order;
    size_t pos = 0;
    uint64_t epoch = 0;
    int64_t offset = 0;
    bool started = false;
  };
  size_t Doc(const Lane& lane) const { return lane.order[lane.pos]; }
  void Shuffle(size_t b) {
    Lane& lane = lanes_[b];
    lane.order = eligible_;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(b) << 40) ^ lane.epoch);
    std::shuffle(lane.order.begin(), lane.order.end(), rng);
    lane.pos = 0;
  }
  const std::vector<std::vector<int32_t>>& docs_;
  int64_t seq_len_;
  uint64_t seed_;
  std::vector<size_t> eligible_;
  std::vector<Lane> lanes_;
};

}  // namespace

std::string TrainReport::ToJson() const {
  nlohmann::ordered_json j;
  j["steps"] = steps;
  j["tokens_seen"] = tokens_seen;
  j["seconds"] = seconds;
  j["tokens_per_second"] = tokens_per_second;
  j["final_train_loss"] = final_train_loss;
  j["final_valid_loss"] = final_valid_loss;
  j["final_valid_bits_per_byte"] = final_valid_bits_per_byte;
  j["parameters"] = parameters;
  j["resumed"] = resumed;
  j["memory_layer"] = memory_layer;
  j["memory_size"] = memory_size;
  return j.dump();
}

Status Train(const TrainOptions& o, TrainReport* report) {
  const bool documents = !o.train_documents.empty() || !o.valid_documents.empty();
  if (o.repeat_chunk > 0 && !documents) {
    return Status::InvalidArgument("--repeat-chunk needs --documents (it repeats chunks of training documents)");
  }
  if (o.repeat_random > 0 && o.repeat_chunk <= 0) {
    return Status::InvalidArgument("--repeat-random needs --repeat-chunk (the random documents are read as repeated chunks)");
  }
  if (!(o.repeat_random >= 0 && o.repeat_random < 1)) {
    return Status::InvalidArgument("--repeat-random must be in [0, 1)");
  }
  if (documents && (o.train_documents.empty() || o.valid_documents.empty())) {
    return Status::InvalidArgument("train needs both --documents and --valid-documents");
  }
  if (documents && (!o.train_path.empty() || !o.valid_path.empty())) {
    return Status::InvalidArgument("train takes text (--corpus/--valid) or documents (--documents/--valid-documents), not both");
  }
  if ((!documents && (o.train_path.empty() || o.valid_path.empty())) || o.out_dir.empty()) {
    return Status::InvalidArgument("train needs --corpus and --valid (or --documents and --valid-documents) and --out");
  }
  if (!documents && (o.memory_layer >= 0 || o.memory_size > 0)) {
    return Status::InvalidArgument("the memory layer trains on documents: give --documents and --valid-documents");
  }
  if (o.memory_size < 0) return Status::InvalidArgument("--memory-size must be >= 0");
  const PresetSchedule* schedule = nullptr;
  for (const auto& s : kSchedules) {
    if (o.config == s.name) schedule = &s;
  }
  if (schedule == nullptr) {
    return Status::InvalidArgument("unknown model config \"" + o.config + "\" (expected tiny, default or medium)");
  }
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(o.out_dir));
  const std::string state_path = o.out_dir + "/train_state.json";
  const std::string optimizer_path = o.out_dir + "/optimizer.pt";
  const bool resume = FileExists(state_path) && FileExists(optimizer_path);

  // Tokenizer: the run's own when resuming, else the given one, else a new BPE vocabulary.
  std::unique_ptr<BpeTokenizer> tok;
  if (resume) {
    MNEMO_RETURN_IF_ERROR(BpeTokenizer::Load(o.out_dir, &tok));
  } else if (!o.init_from.empty()) {
    MNEMO_RETURN_IF_ERROR(BpeTokenizer::Load(o.init_from, &tok));
  } else if (!o.tokenizer_dir.empty()) {
    MNEMO_RETURN_IF_ERROR(BpeTokenizer::Load(o.tokenizer_dir, &tok));
  } else {
    std::string text;
    if (documents) {
      std::vector<Document> parsed;
      MNEMO_RETURN_IF_ERROR(ReadDocuments(o.train_documents, &parsed));
      for (const Document& d : parsed) text += d.text + "\n\n";
    } else {
      MNEMO_RETURN_IF_ERROR(ReadFileToString(o.train_path, &text));
    }
    ProgressBar bar("train BPE vocabulary", 1, "vocabularies", !o.quiet);
    MNEMO_RETURN_IF_ERROR(TrainBpe(text, static_cast<int>(o.vocab_size), &tok));
    bar.Update(1, static_cast<int64_t>(text.size()), "bytes");
  }
  MNEMO_RETURN_IF_ERROR(tok->Save(o.out_dir));

  GptConfig config;
  if (resume || !o.init_from.empty()) {
    const std::string path = (resume ? o.out_dir : o.init_from) + "/config.json";
    std::string text;
    MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
    MNEMO_RETURN_IF_ERROR(GptConfig::FromJson(text, path, &config));
  } else {
    MNEMO_RETURN_IF_ERROR(GptConfig::Preset(o.config, tok->vocab_size(), &config));
    if (tok->eot_id() >= 0) config.bos_token_id = config.eos_token_id = tok->eot_id();
  }
  if (!resume) {
    if (o.memory_layer >= 0) config.memory_layer = o.memory_layer;
    if (o.memory_topk > 0) config.memory_topk = o.memory_topk;
    if (!o.memory_mode.empty()) config.memory_mode = o.memory_mode;
    if (o.memory_smear) config.memory_smear = true;
    MNEMO_RETURN_IF_ERROR(config.Validate());
    if (o.induction_heads > 0 && !config.memory_smear) {
      return Status::InvalidArgument("--induction-heads needs smeared keys: give --memory-smear");
    }
    if (o.induction_heads > config.n_head) {
      return Status::InvalidArgument("--induction-heads " + std::to_string(o.induction_heads) + ": the memory layer has " +
                                     std::to_string(config.n_head) + " heads");
    }
  }
  if (o.memory_size > 0 && !config.has_memory()) {
    return Status::InvalidArgument("--memory-size needs a memory layer: give --memory-layer L (the model has none)");
  }
  if (o.memory_size > 0 && !o.make_memory) return Status::InvalidArgument("no memory implementation given");
  const int64_t steps = o.steps > 0 ? o.steps : schedule->steps;
  const int64_t batch = o.batch_size > 0 ? o.batch_size : schedule->batch_size;
  const int64_t seq_len = o.seq_len > 0 ? std::min(o.seq_len, config.n_positions) : config.n_positions;
  const double peak_lr = o.learning_rate > 0 ? o.learning_rate : schedule->learning_rate;
  const int64_t warmup = o.warmup_steps >= 0 ? o.warmup_steps : std::max<int64_t>(1, steps / 20);
  const int64_t eval_interval = o.eval_interval > 0 ? o.eval_interval : std::max<int64_t>(1, steps / 10);

  std::vector<int32_t> train_ids, valid_ids;
  std::vector<std::vector<int32_t>> train_docs, valid_docs;
  Validation validation;
  std::unique_ptr<LaneSchedule> schedule_docs;
  std::unique_ptr<KvMemory> memory;
  if (documents) {
    MNEMO_RETURN_IF_ERROR(LoadDocumentTokens(o.train_documents, *tok, o.out_dir, o.quiet, &train_docs));
    MNEMO_RETURN_IF_ERROR(LoadDocumentTokens(o.valid_documents, *tok, o.out_dir, o.quiet, &valid_docs));
    if (o.repeat_chunk > 0) {
      const size_t random = AddRandomDocuments(o.repeat_random, tok->vocab_size(), tok->eot_id(), o.seed, &train_docs);
      RepeatChunks(o.repeat_chunk, o.repeat_fraction, o.seed, random, &train_docs);
    }
    schedule_docs = std::make_unique<LaneSchedule>(train_docs, batch, seq_len, o.seed);
    if (schedule_docs->empty()) {
      return Status::InvalidArgument(o.train_documents + ": no document has more than " + std::to_string(seq_len + 1) +
                                     " tokens (one training segment)");
    }
    if (o.memory_size > 0) {
      MNEMO_RETURN_IF_ERROR(o.make_memory(batch, config.n_head, config.n_embd / config.n_head, o.memory_size, &memory));
    }
  } else {
    MNEMO_RETURN_IF_ERROR(LoadTokens(o.train_path, *tok, o.out_dir, o.quiet, &train_ids));
    MNEMO_RETURN_IF_ERROR(LoadTokens(o.valid_path, *tok, o.out_dir, o.quiet, &valid_ids));
    if (static_cast<int64_t>(train_ids.size()) <= seq_len + 1 || static_cast<int64_t>(valid_ids.size()) <= seq_len) {
      return Status::InvalidArgument("corpus too small: need more than " + std::to_string(seq_len + 1) +
                                     " tokens in both the training and validation text");
    }
    validation = MakeValidation(valid_ids, *tok, seq_len, o.eval_tokens);
  }
  // Mean validation loss (nats/token) and bits/byte.
  auto validate = [&](Gpt& model, double* loss, double* bits_per_byte) -> Status {
    if (!documents) {
      *loss = Evaluate(model, validation, batch);
      *bits_per_byte = *loss * validation.rows.size(0) * seq_len / std::log(2.0) / validation.bytes;
      return Status::OK();
    }
    std::unique_ptr<KvMemory> valid_memory;
    if (o.memory_size > 0) {
      MNEMO_RETURN_IF_ERROR(o.make_memory(1, config.n_head, config.n_embd / config.n_head, o.memory_size, &valid_memory));
    }
    MemoryScoreOptions so;
    so.window.window = seq_len;
    so.memory = valid_memory.get();
    so.skip_base = true;
    so.max_tokens = o.eval_tokens;
    MemoryScoreReport r;
    model->eval();
    const Status st = ScoreDocumentsWithMemory(model, *tok, valid_docs, so, &r);
    model->train();
    MNEMO_RETURN_IF_ERROR(st);
    const PerplexityReport& p = valid_memory ? r.memory : r.base;
    if (p.tokens == 0) return Status::InvalidArgument(o.valid_documents + ": no validation tokens");
    *bits_per_byte = p.bits_per_byte();
    *loss = p.nll / p.tokens;
    return Status::OK();
  };

  Gpt net(config);
  net->InitWeights(o.seed);
  if (!resume && !o.init_from.empty()) MNEMO_RETURN_IF_ERROR(LoadWeights(o.init_from + "/model.safetensors", net));
  if (!resume && o.induction_heads > 0) {
    net->blocks[config.memory_layer]->attn->InitInductionHeads(o.induction_heads, o.induction_qk_scale,
                                                              o.induction_ov_scale, o.seed);
  }
  net->train();
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : net->named_parameters()) {
    (p.value().dim() >= 2 && p.key() != "wpe.weight" ? decay : no_decay).push_back(p.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(peak_lr).betas({0.9, 0.95}).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(peak_lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(groups);

  int64_t start = 0;
  if (resume) {
    std::string text;
    MNEMO_RETURN_IF_ERROR(ReadFileToString(state_path, &text));
    auto state = nlohmann::json::parse(text, nullptr, false);
    if (state.is_discarded() || !state.contains("step") || !state["step"].is_number_integer()) {
      return Status::Corruption(state_path + ": not a valid training state");
    }
    start = state["step"].get<int64_t>();
    MNEMO_RETURN_IF_ERROR(LoadWeights(o.out_dir + "/model.safetensors", net));
    try {
      torch::load(optimizer, optimizer_path);
    } catch (const c10::Error& e) {
      return Status::Corruption(optimizer_path + ": cannot load optimizer state");
    }
    report->resumed = true;
  }

  if (documents) {
    // The lanes' segments before `start`; a resumed run refills each lane's memory by re-reading them.
    for (int64_t s = 0; s < start; ++s) schedule_docs->Next(nullptr, nullptr, nullptr);
    if (memory != nullptr && start > 0) {
      torch::NoGradGuard no_grad;
      net->eval();
      for (int64_t b = 0; b < batch; ++b) {
        size_t doc = 0;
        std::vector<int64_t> starts = schedule_docs->ReadSoFar(b, &doc);
        const int64_t keep = (o.memory_size + seq_len - 1) / seq_len;
        if (static_cast<int64_t>(starts.size()) > keep) starts.erase(starts.begin(), starts.end() - keep);
        for (int64_t at : starts) {
          torch::Tensor row = torch::empty({1, seq_len}, torch::kLong);
          std::vector<int64_t> tags(static_cast<size_t>(seq_len));
          for (int64_t t = 0; t < seq_len; ++t) {
            row[0][t] = static_cast<int64_t>(train_docs[doc][at + t]);
            tags[t] = static_cast<int64_t>(doc) << 32 | (at + t);
          }
          ForwardOptions fo;
          fo.want_logits = false;
          fo.memory.memory = memory.get();
          fo.memory.first_lane = b;
          fo.memory.tags = tags.data();
          net->Forward(row, fo);
        }
      }
      net->train();
    }
  }
  report->parameters = config.NumParameters();
  report->memory_layer = config.memory_layer;
  report->memory_size = o.memory_size;
  ProgressBar bar("train", steps, "steps", !o.quiet);
  bar.Update(start, 0, "tok");
  double last_loss = 0, valid_loss = 0, valid_bpb = 0;
  const int64_t end = o.stop_after > 0 ? std::min(steps, start + o.stop_after) : steps;
  for (int64_t step = start; step < end; ++step) {
    if (o.cancel != nullptr && o.cancel->load()) return Status::Cancelled("training cancelled");
    const double lr = LearningRate(step, steps, warmup, peak_lr);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    torch::Tensor rows;
    ForwardOptions fo;
    std::vector<int64_t> tags;
    if (documents) {
      std::vector<char> new_doc;
      schedule_docs->Next(&rows, &tags, &new_doc);
      if (memory != nullptr) {
        for (int64_t b = 0; b < batch; ++b) {
          if (new_doc[b]) memory->Clear(b);
        }
        fo.memory.memory = memory.get();
        fo.memory.tags = tags.data();
      }
    } else {
      rows = SampleBatch(train_ids, batch, seq_len, o.seed, step);
    }
    optimizer.zero_grad();
    torch::Tensor loss = LossOn(net, rows, fo);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(net->parameters(), o.grad_clip);
    optimizer.step();
    last_loss = loss.item<double>();
    report->tokens_seen += batch * seq_len;

    const bool last = step + 1 == end;
    if ((step + 1) % eval_interval == 0 || last) {
      MNEMO_RETURN_IF_ERROR(validate(net, &valid_loss, &valid_bpb));
      MNEMO_RETURN_IF_ERROR(SaveCheckpoint(o.out_dir, net, nullptr));
      MNEMO_RETURN_IF_ERROR(SaveOptimizer(optimizer_path, optimizer));
      nlohmann::ordered_json state;
      state["step"] = step + 1;
      state["train_loss"] = last_loss;
      state["valid_loss"] = valid_loss;
      state["seed"] = o.seed;
      MNEMO_RETURN_IF_ERROR(WriteFileAtomically(state_path, state.dump(2) + "\n"));
      if (!o.quiet && !last) {
        fprintf(stderr, "step %ld: train loss %.4f, valid loss %.4f (%.4f bits/byte)\n", static_cast<long>(step + 1),
                last_loss, valid_loss, valid_bpb);
      }
    }
    char extra[96];
    snprintf(extra, sizeof(extra), "loss %.4f | lr %.2e", last_loss, lr);
    bar.Update(step + 1, report->tokens_seen, "tok", extra);
  }
  bar.Finish();
  report->steps = end;
  report->seconds = bar.Elapsed();
  report->tokens_per_second = report->seconds > 0 ? report->tokens_seen / report->seconds : 0;
  report->final_train_loss = last_loss;
  if (start >= end) MNEMO_RETURN_IF_ERROR(validate(net, &valid_loss, &valid_bpb));
  report->final_valid_loss = valid_loss;
  report->final_valid_bits_per_byte = valid_bpb;
  return Status::OK();
}

}  // namespace mnemo
