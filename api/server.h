// The HTTP server: an OpenAI-compatible completions endpoint over the kNN-LM, scoring, fact management,
// tokenization, leakage audits, health and Prometheus metrics (cpp-httplib + nlohmann/json).
//
// Threading: one thread reads requests off the connections (api/http_front.h); a pool of HTTP threads
// authenticates and validates complete requests and writes responses. Model work (completions, scoring,
// fact encoding, verification) runs on a WorkQueue of `threads` workers with a bounded queue: when it is
// full the request gets 503 with Retry-After at once.
// Each worker sets LibTorch to one intra-op thread; OpenBLAS gets cores / workers threads, so the
// machine's cores are divided, not oversubscribed. A request that waits longer than `request_timeout_s`
// gets 504 and its work is cancelled; a streaming request is cancelled when its client disconnects.
//
// Lifecycle: Bind() takes the port; Run() starts loading the model and state in the background (GET
// /health answers 503 {"status":"loading"} meanwhile, every other route 503) and serves until Stop(), which
// stops accepting, lets in-flight requests finish, and closes the state (writing its snapshot).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "retriever/knn_lm.h"
#include "util/status.h"

namespace mnemo {

// How many completions batched decoding runs together (ServeOptions::batch_slots, batch_memory_mb),
// decided before anything is allocated: `parameters` of the model, the key/value cache of one slot and
// the packed weights' bytes (0 where the packed kernel does not apply). *why says what decided it.
// InvalidArgument when an explicit count does not fit the budget.
Status PlanBatchSlots(int requested, int64_t parameters, int64_t cache_bytes_per_slot, int64_t packed_bytes,
                      int64_t budget_bytes, int* slots, std::string* why);

struct ServeOptions {
  std::string state;                  // State directory (mnemo init).
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (Bind reports it).
  std::string api_key_file;           // Empty: no authentication, loopback only.
  int threads = 2;                    // Model workers.
  // Completions decoded together by one decoding thread (retriever/completion_batcher.h): requests join
  // the running batch at its next step. 0: each completion runs alone on a worker, as scoring does.
  // -1 (automatic): kAutoBatchSlots for models of kAutoBatchFromParameters parameters or more, else 0
  // (measured: batching gains 2.4x at GPT-2 small's size and loses at the default model's; PERFORMANCE.md).
  int batch_slots = -1;
  static constexpr int kAutoBatchSlots = 16;
  static constexpr int64_t kAutoBatchFromParameters = 10'000'000;
  // Prompt tokens a batched step runs while other completions decode (BatcherOptions::prefill_tokens).
  int batch_prefill_tokens = 64;
  // Most memory batched decoding may take, in MiB: its key/value cache (slots x n_layer x 2 x n_positions x
  // n_embd floats) and, on a CPU with the packed kernel, the packed copy of the weights. Automatic slots
  // shrink to fit (none if not even one fits); explicit --batch-slots past it is refused at start.
  // 0: a quarter of this machine's memory.
  int64_t batch_memory_mb = 0;
  size_t queue = 32;                  // Requests waiting for a worker before 503.
  int http_threads = 16;              // Run requests, write responses (idle connections hold none).
  size_t max_body_bytes = 1 << 20;    // Decoded request body, however it is framed (413 past it).
  // Connection limits (api/http_front.h), so that slow or idle clients cannot take the HTTP threads.
  double header_timeout_s = 10;       // A request's first byte -> the end of its head (408 past it).
  double body_timeout_s = 30;         // The end of the head -> the end of the body (408 past it).
  double keep_alive_timeout_s = 5;    // How long a connection may sit idle before (and between) requests.
  double write_timeout_s = 30;        // Each write of a response (a whole non-streamed body is one write).
  int max_connections = 512;          // Open connections in total (503 past it, after closing an idle one).
  int max_connections_per_ip = 64;    // Open connections from one client address (503 past it).
  int64_t max_tokens_cap = 1024;      // Largest max_tokens a request may ask for.
  // Largest n * (max_tokens + echoed prompt tokens) * (1 + logprobs + return_neighbors) of a completion
  // (CompletionRequest::ResponseItems; about 100 bytes of JSON each): 400 past it. The default is
  // CompletionRequest::kDefaultMaxResponseItems.
  int64_t max_response_items = 65536;
  // Most tokens one /v1/score request may score (400 past it). Scores longer than the model's context
  // run on at most max(1, threads - 1) workers at once, so they never hold every worker.
  int64_t max_score_tokens = 4096;
  double request_timeout_s = 120;
  KnnOptions knn;                     // Defaults of the `knn` request field.
  std::string audit_dir;              // Where audit reports go; empty: <state>/audits.
  bool log_requests = true;
  torch::Device device = torch::kCPU;  // Where the model runs (ParseDevice, lm/device.h).
  int gpu_index = -1;                 // >= 0: the base datastore's index is searched on this GPU.
  // Memories of the memorizing layer: IVF lists scanned per query, and the size from which a memory
  // searches by IVF (where the model has a memory index; memory/layer_memories.h).
  int64_t memory_nprobe = 8;
  int64_t memory_ivf_from = 16384;
};

class Server {
 public:
  explicit Server(ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Validates options (a key file that does not load is an error; a non-loopback host without keys is
  // replaced by 127.0.0.1 with a warning) and binds. *port receives the bound port.
  Status Bind(int* port);
  // Loads in the background and serves until Stop(). Returns the loading error if loading failed
  // (after answering health checks with it), else OK after a clean stop.
  Status Run();
  // Safe from any thread (a signal-waiting thread, a test).
  void Stop();
  bool ready() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mnemo
