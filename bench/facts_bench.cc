// Fact store benchmark (bench/facts.sh runs it): add latency of single ~30-token facts (model + fsync),
// batched ingest rate, delete latency, search latency with 0 / 10K / 100K facts in the segment, and
// start-up time of a state with 100K facts (from its snapshot, and rebuilt from the database).
// Prints one JSON object.
//
// `mnemo_facts_bench encode MODEL TEXT` instead measures fact encoding and the raw forward pass;
// MNEMO_THREADS sets LibTorch's thread count for it and MNEMO_PROFILE=trace.json writes a LibTorch profile.
//
// `mnemo_facts_bench startup DATASTORE WORK_DIR FACTS [TOKENS_PER_FACT=8] [DELETES=100] [CHUNK_FACTS=1024]`
// measures the store alone (no model) at sizes the model would take long to fill: facts whose keys are runs
// of the base datastore's keys (so they fall into its IVF lists as real ones do), then start-up from the
// snapshot, single deletes, start-up after those deletes without a clean close (a crash), and a rebuild.
#include <torch/torch.h>
#include <torch/csrc/autograd/profiler.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lm/checkpoint.h"
#include "memory/datastore.h"
#include "memory/fact_store.h"
#include "memory/state_dir.h"
#include "retriever/fact_encoder.h"
#include "util/blas_kernels.h"
#include "util/blas_threads.h"
#include "util/heap_tuning.h"
#include "util/file_util.h"
#include "util/half.h"

namespace {

using Clock = std::chrono::steady_clock;
using mnemo::Status;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

nlohmann::ordered_json Percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  return {{"n", v.size()}, {"p50_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", v.back()}};
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "facts_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

}  // namespace

// `encode MODEL TEXT_FILE`: fact encoding rate by batch size, and the raw forward rate behind it.
int EncodeRates(const std::string& model_dir, const std::string& text_file) {
  std::unique_ptr<mnemo::LanguageModel> model;
  Check(mnemo::LoadLanguageModel(model_dir, &model), "loading the model");
  std::string text;
  Check(mnemo::ReadFileToString(text_file, &text), "reading the text");
  const auto ids = model->tokenizer->Encode(text);
  std::vector<mnemo::FactText> facts;
  for (size_t b = 0; b + 30 <= ids.size() && facts.size() < 4096; b += 30) {
    facts.push_back({model->tokenizer->Decode(std::vector<int32_t>(ids.begin() + b, ids.begin() + b + 30)), "", ""});
  }
  nlohmann::ordered_json out;
  for (int64_t batch_tokens : {1024, 4096, 16384}) {
    mnemo::FactEncodeOptions options;
    options.batch_tokens = batch_tokens;
    std::vector<mnemo::NewFact> encoded;
    const auto a = Clock::now();
    Check(mnemo::EncodeFacts(*model, facts, options, &encoded), "encoding");
    out["encode_facts_per_second"][std::to_string(batch_tokens)] = facts.size() / (Ms(a, Clock::now()) / 1000);
  }
  torch::InferenceMode inference;
  if (getenv("MNEMO_PROFILE") != nullptr) {
    const auto x = torch::randint(0, model->config.vocab_size, {136, 30}, torch::kLong);
    mnemo::ForwardOptions forward;
    forward.want_knn_key = true;
    forward.want_logits = false;
    forward.want_hidden = false;
    torch::autograd::profiler::RecordProfile guard(getenv("MNEMO_PROFILE"));
    for (int i = 0; i < 10; ++i) model->net->Forward(x, forward);
  }
  const auto x = torch::randint(0, model->config.vocab_size, {136, 30}, torch::kLong);
  // The keys alone (what EncodeFacts runs: no last MLP, no ln_f), the whole stack, and with the head.
  for (int mode = 0; mode < 3; ++mode) {
    mnemo::ForwardOptions forward;
    forward.want_knn_key = true;
    forward.want_hidden = mode > 0;
    forward.want_logits = mode == 2;
    const auto a = Clock::now();
    for (int i = 0; i < 20; ++i) model->net->Forward(x, forward);
    static const char* const kNames[] = {"forward_tokens_per_second_keys_only", "forward_tokens_per_second",
                                         "forward_tokens_per_second_with_logits"};
    out[kNames[mode]] = 20 * 136 * 30 / (Ms(a, Clock::now()) / 1000);
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

// `startup DATASTORE WORK FACTS [TOKENS] [DELETES] [CHUNK_FACTS]` (see the top of the file).
int StartupAfterDeletes(int argc, char** argv) {
  const std::string datastore = argv[2], work = argv[3];
  const int64_t total_facts = std::stoll(argv[4]);
  const int64_t tokens = argc > 5 ? std::stoll(argv[5]) : 8;
  const int deletes = argc > 6 ? std::stoi(argv[6]) : 100;
  mnemo::FactStoreOptions options;
  if (argc > 7) options.snapshot_chunk_facts = std::stoll(argv[7]);
  std::unique_ptr<mnemo::Datastore> base;
  Check(mnemo::Datastore::Open(datastore, mnemo::DatastoreOpenOptions(), &base), "opening the datastore");
  const int dim = base->dim();
  std::filesystem::remove_all(work);
  mnemo::StateConfig config;
  config.model_path = "(none: store-only benchmark)";
  config.datastore_path = std::filesystem::absolute(datastore).string();
  config.model_fingerprint = base->manifest().model_fingerprint;
  config.dim = dim;
  const std::string state = work + "/state";
  Check(mnemo::CreateStateDir(state, config), "creating the state");
  base.reset();

  nlohmann::ordered_json out;
  out["datastore"] = datastore;
  out["facts"] = total_facts;
  out["tokens_per_fact"] = tokens;
  out["snapshot_chunk_facts"] = options.snapshot_chunk_facts;
  std::unique_ptr<mnemo::FactStore> store;
  Check(mnemo::FactStore::Open(state, options, &store), "opening the state");
  out["base_index"] = store->base()->index().spec();
  std::mt19937_64 rng(11);
  const int64_t slots = store->base()->slots();
  std::vector<int64_t> ids;
  auto a = Clock::now();
  for (int64_t next = 0; next < total_facts;) {
    std::vector<mnemo::NewFact> batch;
    for (int i = 0; i < 4096 && next < total_facts; ++i, ++next) {
      mnemo::NewFact f;
      const int64_t start = static_cast<int64_t>(rng() % static_cast<uint64_t>(slots - tokens));
      for (int64_t t = 0; t < tokens; ++t) f.tokens.push_back(store->base()->value(start + t));
      for (int64_t t = 0; t + 1 < tokens; ++t) {
        const uint16_t* k = store->base()->key(start + t);
        f.keys.insert(f.keys.end(), k, k + dim);
      }
      f.text = "synthetic fact " + std::to_string(next);
      batch.push_back(std::move(f));
    }
    std::vector<int64_t> got;
    Check(store->Add(batch, &got), "adding");
    ids.insert(ids.end(), got.begin(), got.end());
    if (next % 65536 < 4096) std::fprintf(stderr, "added %ld facts\n", static_cast<long>(next));
  }
  out["ingest_facts_per_second"] = total_facts / (Ms(a, Clock::now()) / 1000);
  out["fact_entries"] = store->fact_entries();
  a = Clock::now();
  Check(store->Close(), "close");
  out["close_ms"] = Ms(a, Clock::now());
  store.reset();
  std::error_code ec;
  auto snapshot_files = [&] {
    std::vector<std::string> v;
    for (const auto& e : std::filesystem::directory_iterator(mnemo::SnapshotDir(state), ec)) v.push_back(e.path());
    return v;
  };
  uint64_t snapshot_bytes = 0;
  for (const std::string& p : snapshot_files()) snapshot_bytes += std::filesystem::file_size(p, ec);
  out["snapshot_files"] = snapshot_files().size();
  out["snapshot_bytes"] = snapshot_bytes;
  out["database_bytes"] = std::filesystem::file_size(mnemo::FactDbPath(state), ec);

  auto reopen = [&](const char* label) {
    const auto t = Clock::now();
    Check(mnemo::FactStore::Open(state, options, &store), label);
    const double ms = Ms(t, Clock::now());
    const auto& r = store->recovery();
    out[label] = {{"ms", ms}, {"chunks", r.chunks}, {"chunks_loaded", r.chunks_loaded},
                  {"chunks_rebuilt", r.chunks_rebuilt}, {"replayed_changes", r.replayed_changes}};
    std::fprintf(stderr, "%s: %.0f ms (%ld of %ld chunks rebuilt)\n", label, ms, static_cast<long>(r.chunks_rebuilt),
                 static_cast<long>(r.chunks));
  };
  reopen("startup_from_snapshot");
  // Deletes alternate without and with an action log entry (as the server writes one in the transaction).
  std::vector<double> times, times_logged;
  mnemo::ActionRecord action;
  action.actor = "bench";
  action.action = "facts.delete";
  for (int i = 0; i < deletes; ++i) {
    const size_t pick = rng() % ids.size();
    const int64_t id = ids[pick];
    ids.erase(ids.begin() + pick);
    const auto t = Clock::now();
    Check(store->Delete({id}, nullptr, i % 2 == 1 ? &action : nullptr), "delete");
    (i % 2 == 1 ? times_logged : times).push_back(Ms(t, Clock::now()));
  }
  out["delete_single"] = Percentiles(times);
  out["delete_single_logged"] = Percentiles(times_logged);
  std::fprintf(stderr, "delete: p50 %.1f ms (logged %.1f ms)\n", out["delete_single"]["p50_ms"].get<double>(),
               out["delete_single_logged"]["p50_ms"].get<double>());
  store.reset();  // no Close: the process dies right after its deletes
  reopen("startup_after_deletes");
  // What a delete used to cost the next start (the single-file snapshot was unlinked): no usable snapshot,
  // every chunk built from the database.
  store.reset();
  for (const std::string& p : snapshot_files()) std::filesystem::remove(p);
  reopen("startup_rebuild");
  store.reset();
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

int main(int argc, char** argv) {
  mnemo::RunWithBestBlasKernels(argv);  // the kernels and heap settings `mnemo` runs, so the two are comparable
  mnemo::KeepFreedTensorBuffers();
  if (argc >= 5 && std::string(argv[1]) == "startup") return StartupAfterDeletes(argc, argv);
  if (argc == 4 && std::string(argv[1]) == "encode") {
    torch::set_num_threads(getenv("MNEMO_THREADS") ? std::atoi(getenv("MNEMO_THREADS")) : 1);
    return EncodeRates(argv[2], argv[3]);
  }
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s MODEL DATASTORE TEXT_FILE WORK_DIR [FACTS=100000] [TOKENS_PER_FACT=30]\n", argv[0]);
    return 2;
  }
  const std::string model_dir = argv[1], datastore = argv[2], text_file = argv[3], work = argv[4];
  const int64_t total_facts = argc > 5 ? std::stoll(argv[5]) : 100000;
  const int64_t fact_tokens = argc > 6 ? std::stoll(argv[6]) : 30;
  torch::set_num_threads(1);  // as `mnemo` does: OpenBLAS already uses every core
  std::unique_ptr<mnemo::LanguageModel> model;
  Check(mnemo::LoadLanguageModel(model_dir, &model), "loading the model");

  // Facts: consecutive ~30-token spans of the text, decoded back to text.
  std::string text;
  Check(mnemo::ReadFileToString(text_file, &text), "reading the text");
  std::vector<int32_t> ids = model->tokenizer->Encode(text);
  const int64_t probes = 200;
  std::vector<mnemo::FactText> facts;
  for (int64_t begin = 0; begin + fact_tokens <= static_cast<int64_t>(ids.size()) &&
                          static_cast<int64_t>(facts.size()) < total_facts + probes;
       begin += fact_tokens) {
    std::vector<int32_t> span(ids.begin() + begin, ids.begin() + begin + fact_tokens);
    facts.push_back({model->tokenizer->Decode(span), "", ""});
  }
  if (static_cast<int64_t>(facts.size()) < total_facts + probes) {
    std::fprintf(stderr, "facts_bench: the text gives only %zu facts\n", facts.size());
    return 1;
  }
  // The last `probes` spans are never added: their keys are the search queries.
  std::vector<mnemo::FactText> probe_texts(facts.end() - probes, facts.end());
  facts.resize(total_facts);
  std::vector<mnemo::NewFact> probe_facts;
  Check(mnemo::EncodeFacts(*model, probe_texts, {}, &probe_facts), "encoding probes");
  std::vector<float> queries;
  for (const auto& f : probe_facts) {
    const size_t p = f.keys.size() / model->config.n_embd / 2;  // a middle position
    for (int64_t d = 0; d < model->config.n_embd; ++d) queries.push_back(mnemo::HalfToFloat(f.keys[p * model->config.n_embd + d]));
  }

  std::filesystem::remove_all(work);
  mnemo::StateConfig config;
  config.model_path = std::filesystem::absolute(model_dir).string();
  config.datastore_path = std::filesystem::absolute(datastore).string();
  config.model_fingerprint = mnemo::ModelFingerprint(model->net);
  config.dim = static_cast<int>(model->config.n_embd);
  const std::string state = work + "/state";
  Check(mnemo::CreateStateDir(state, config), "creating the state");
  mnemo::FactStoreOptions options;
  std::unique_ptr<mnemo::FactStore> store;
  Check(mnemo::FactStore::Open(state, options, &store), "opening the state");

  nlohmann::ordered_json out;
  out["model"] = model_dir;
  out["datastore"] = datastore;
  out["base_entries"] = store->base()->size();
  out["base_index"] = store->base()->index().spec();
  out["tokens_per_fact"] = fact_tokens;
  mnemo::MemorySearchOptions search;
  search.k = 1024;
  search.nprobe = 8;
  auto measure_search = [&](const char* label) {
    std::vector<double> times;
    std::vector<mnemo::Neighbor> nb;
    for (int64_t q = 0; q < probes; ++q) {
      const auto a = Clock::now();
      Check(store->Search(queries.data() + q * config.dim, 1, search, &nb), "search");
      times.push_back(Ms(a, Clock::now()));
    }
    auto p = Percentiles(times);
    p["fact_entries"] = store->fact_entries();
    out["search_k1024_nprobe8"][label] = p;
    std::fprintf(stderr, "search with %s facts: p50 %.2f ms\n", label, p["p50_ms"].get<double>());
  };
  measure_search("0");

  // Single adds: encode (the model over ~30 tokens) + commit (fsync) + index.
  int64_t next = 0;
  std::vector<double> add_total, add_store;
  std::vector<int64_t> added;
  for (int i = 0; i < 200; ++i, ++next) {
    const auto a = Clock::now();
    std::vector<mnemo::NewFact> encoded;
    Check(mnemo::EncodeFacts(*model, {facts[next]}, {}, &encoded), "encoding");
    const auto b = Clock::now();
    std::vector<int64_t> got;
    Check(store->Add(encoded, &got), "add");
    const auto c = Clock::now();
    add_total.push_back(Ms(a, c));
    add_store.push_back(Ms(b, c));
    added.push_back(got[0]);
  }
  out["add_single"] = Percentiles(add_total);
  out["add_single_store_only"] = Percentiles(add_store);
  std::fprintf(stderr, "single add: p50 %.2f ms\n", out["add_single"]["p50_ms"].get<double>());

  // Batched ingest up to each milestone, then search and delete latencies there. Rounds of 10 batches
  // alternate between one writer (encode a batch, then commit it) and two writers side by side, as the
  // server's two model workers run two clients' POST /v1/facts (each encodes on one core with a
  // one-thread BLAS; the commits take turns on the store's write lock).
  const int64_t batch = 512, round_facts = 10 * batch;
  struct Mode {
    int writers;
    double ms = 0, encode_ms = 0;  // wall time of its rounds; encoding time summed over writers
    int64_t facts = 0;
  };
  Mode modes[2] = {{1}, {2}};
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t round = 0;
  std::mutex next_mu;
  auto writer = [&](int64_t end, Mode* mode) {
    for (;;) {
      std::vector<mnemo::FactText> chunk;
      {
        std::lock_guard<std::mutex> lock(next_mu);
        if (next >= end) return;
        const int64_t n = std::min(batch, end - next);
        chunk.assign(facts.begin() + next, facts.begin() + next + n);
        next += n;
      }
      const auto a = Clock::now();
      std::vector<mnemo::NewFact> encoded;
      Check(mnemo::EncodeFacts(*model, chunk, {}, &encoded), "encoding");
      const auto b = Clock::now();
      std::vector<int64_t> got;
      Check(store->Add(encoded, &got), "batch add");
      std::lock_guard<std::mutex> lock(next_mu);
      mode->encode_ms += Ms(a, b);
      mode->facts += static_cast<int64_t>(chunk.size());
      added.insert(added.end(), got.begin(), got.end());
    }
  };
  auto ingest_to = [&](int64_t target) {
    while (next < target) {
      Mode& mode = modes[round++ % 2];
      mnemo::SetBlasThreads(std::max(1, cores / mode.writers));
      const int64_t end = std::min(target, next + round_facts);
      const auto a = Clock::now();
      std::vector<std::thread> threads;
      for (int w = 1; w < mode.writers; ++w) threads.emplace_back(writer, end, &mode);
      writer(end, &mode);
      for (std::thread& t : threads) t.join();
      mode.ms += Ms(a, Clock::now());
      std::fprintf(stderr, "ingested %ld facts\n", static_cast<long>(next));
    }
  };
  std::mt19937_64 rng(7);
  auto measure_deletes = [&](const char* label, int count) {
    std::vector<double> times;
    for (int i = 0; i < count; ++i) {
      const size_t pick = rng() % added.size();
      const int64_t id = added[pick];
      added.erase(added.begin() + pick);
      const auto a = Clock::now();
      Check(store->Delete({id}, nullptr), "delete");
      times.push_back(Ms(a, Clock::now()));
    }
    std::error_code ec;
    auto p = Percentiles(times);
    p["database_bytes"] = std::filesystem::file_size(mnemo::FactDbPath(state), ec);
    out["delete_single"][label] = p;
    std::fprintf(stderr, "delete at %s facts: p50 %.1f ms\n", label, p["p50_ms"].get<double>());
  };
  const int64_t mid = std::min<int64_t>(10000, total_facts);
  ingest_to(mid);
  measure_search("10000");
  measure_deletes("10000", 50);
  ingest_to(total_facts);
  for (const Mode& mode : modes) {
    const char* key = mode.writers == 1 ? "ingest_batched" : "ingest_batched_two_writers";
    out[key] = {{"batch", batch},
                {"writers", mode.writers},
                {"facts", mode.facts},
                {"facts_per_second", mode.facts / (mode.ms / 1000)},
                {"encode_ms_per_fact", mode.encode_ms / mode.facts}};
    std::fprintf(stderr, "batched ingest, %d writer(s): %.0f facts/s\n", mode.writers, mode.facts / (mode.ms / 1000));
  }
  measure_search(std::to_string(total_facts).c_str());
  measure_deletes(std::to_string(total_facts).c_str(), 10);

  // Start-up right after those deletes, without a clean close (the process died), then from the snapshot
  // Close writes, then with no snapshot (rebuilt from the database).
  store.reset();
  auto a = Clock::now();
  Check(mnemo::FactStore::Open(state, options, &store), "reopen after deletes");
  out["startup_after_deletes_ms"] = Ms(a, Clock::now());
  out["startup_after_deletes_chunks_rebuilt"] = store->recovery().chunks_rebuilt;
  out["startup_chunks"] = store->recovery().chunks;
  Check(store->Close(), "close");
  store.reset();
  a = Clock::now();
  Check(mnemo::FactStore::Open(state, options, &store), "reopen");
  out["startup_from_snapshot_ms"] = Ms(a, Clock::now());
  out["startup_facts"] = store->recovery().facts;
  out["startup_snapshot_seq"] = store->recovery().snapshot_seq;
  const auto snapshots = store->SnapshotPaths();
  store.reset();
  for (const auto& p : snapshots) std::filesystem::remove(p);
  a = Clock::now();
  Check(mnemo::FactStore::Open(state, options, &store), "reopen without snapshot");
  out["startup_rebuild_ms"] = Ms(a, Clock::now());
  out["startup_rebuilt"] = store->recovery().rebuilt;
  std::error_code ec;
  out["database_bytes"] = std::filesystem::file_size(mnemo::FactDbPath(state), ec);
  store.reset();
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
